"""The ``pps`` command line.

Administrative commands act directly on the database named by the settings (``PPS_DATABASE_URL``, default
the SQLite file under ``.pps/``): they are for the operator of the safe-room host. Everything they change is
written to the audit ledger with the actor ``operator`` via ``cli``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pps.errors import LedgerIntegrityError, PPSError, translate
from pps.infra.settings import get_settings
from pps.infra.storage import migrate
from pps.infra.storage.tables import Role
from pps.ledger.checkpoint import NoteVerifier
from pps.ledger.entry import OPERATOR
from pps.ledger.store import EntryFilter
from pps.runtime import Runtime

app = typer.Typer(
    help="PPS — the data safe-room. Serve the API, manage organisations and tokens, verify the audit ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
admin_app = typer.Typer(help="Operator commands: bootstrap, organisations, tokens.", no_args_is_help=True)
org_app = typer.Typer(help="Organisations.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit ledger: verify, checkpoints, export.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
admin_app.add_typer(org_app, name="org")
admin_app.add_typer(token_app, name="token")
budget_app = typer.Typer(help="Banks' privacy budgets (epsilon) for aggregate queries.", no_args_is_help=True)
admin_app.add_typer(budget_app, name="budget")
app.add_typer(audit_app, name="audit")
data_app = typer.Typer(
    help="Datasets: generate synthetic platform data, upload as a data provider.", no_args_is_help=True
)
keys_app = typer.Typer(
    help="Keys for data at rest: rotate and retire key-encryption keys.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(keys_app, name="keys")
bank_app = typer.Typer(help="A bank's side: encrypted scoring with its own key.", no_args_is_help=True)
app.add_typer(bank_app, name="bank")
consent_app = typer.Typer(help="Consent receipts.", no_args_is_help=True)
app.add_typer(consent_app, name="consent")

console = Console()
err_console = Console(stderr=True)


def _bar(label: str = "{task.description}") -> Progress:
    """The progress bar of long commands: label, bar, done/total, elapsed; on stderr, gone when done."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Report an error raised on purpose (a PPSError, or a protocol or enclave error: :func:`translate`) as a
    one-line message and exit 1, instead of a traceback."""
    try:
        yield
    except Exception as exc:
        error = translate(exc)
        if error is None:
            raise
        fail(f"{error.message} [{error.code}]")


@contextmanager
def runtime(*, migrate_schema: bool = True, open_keys: bool = True) -> Iterator[Runtime]:
    with user_errors():
        rt = Runtime.build(get_settings(), migrate_schema=migrate_schema, open_keys=open_keys)
        try:
            yield rt
        finally:
            rt.close()


# --- serve / db --------------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(help="worker processes (use PostgreSQL for more than one)")] = 1,
) -> None:
    """Start the HTTP API (OpenAPI docs at /docs). Applies migrations first."""
    import uvicorn

    settings = get_settings()
    with runtime():
        pass  # migrate once, before any worker starts
    console.print(
        f"PPS serving on http://{host}:{port} (database: {_redacted(settings.resolved_database_url)})"
    )
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        timeout_worker_healthcheck=60,  # a busy 2-core host starts a worker in more than uvicorn's 5 s
    )


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="target revision")] = "head") -> None:
    """Apply Alembic migrations up to REVISION (default: the newest)."""
    with runtime(migrate_schema=False, open_keys=False) as rt:
        before = migrate.current_revision(rt.db.engine)
        migrate.upgrade(rt.db.engine, revision)
        after = migrate.current_revision(rt.db.engine)
        url = _redacted(rt.settings.resolved_database_url)
    console.print(f"database {url}: {before or 'empty'} → {after}")


@db_app.command("current")
def db_current() -> None:
    """Show the schema revision of the database and whether it is the newest."""
    with runtime(migrate_schema=False, open_keys=False) as rt:
        current, head = migrate.current_revision(rt.db.engine), migrate.head_revision()
    console.print(
        f"current: {current or 'empty'}; newest: {head}"
        + ("" if current == head else " (run `pps db upgrade`)")
    )


# --- admin -------------------------------------------------------------------------------------------


def _print_token(secret: str, token_id: str, expires: datetime) -> None:
    console.print(f"token id: {token_id} (expires {expires.isoformat(timespec='seconds')})")
    console.print("[bold]API token (shown once, store it now):[/]")
    print(secret)  # plain, so it can be piped


@admin_app.command()
def bootstrap(
    name: Annotated[
        str, typer.Option(help="name of the platform operator organisation")
    ] = "Platform operator",
    ttl_days: Annotated[int, typer.Option(min=1, max=3650, help="token lifetime in days")] = 90,
) -> None:
    """Create the first platform_admin organisation and print its API token (once only)."""
    with runtime() as rt, rt.db.transaction() as session:
        if rt.identity.admin_exists(session):
            fail("a platform admin already exists; issue further tokens with `pps admin token issue ORG_ID`")
        org = rt.identity.create_org(session, name=name, role=Role.platform_admin, uscc=None, actor=OPERATOR)
        issued = rt.identity.issue_token(
            session, org=org, label="bootstrap", ttl=timedelta(days=ttl_days), actor=OPERATOR
        )
        console.print(f"created platform admin organisation {org.id} ({org.name})")
        _print_token(issued.secret, issued.token.id, issued.token.expires_at)


@org_app.command("create")
def org_create(
    name: Annotated[str, typer.Argument(help="organisation name (unique)")],
    role: Annotated[Role, typer.Option(help="what the organisation does in the safe-room")],
    uscc: Annotated[str | None, typer.Option(help="18-character USCC; required for subjects")] = None,
    token: Annotated[bool, typer.Option(help="also issue an API token and print it")] = False,
    ttl_days: Annotated[int, typer.Option(min=1, max=3650)] = 90,
) -> None:
    """Onboard an organisation (a bank, a data provider, an auditor, an enterprise, an admin)."""
    with runtime() as rt, rt.db.transaction() as session:
        org = rt.identity.create_org(session, name=name, role=role, uscc=uscc, actor=OPERATOR)
        console.print(f"created {org.role.value} organisation {org.id} ({org.name})")
        if token:
            issued = rt.identity.issue_token(
                session, org=org, label="cli", ttl=timedelta(days=ttl_days), actor=OPERATOR
            )
            _print_token(issued.secret, issued.token.id, issued.token.expires_at)


@org_app.command("disable")
def org_disable(
    org_id: Annotated[str, typer.Argument(help="organisation id (org_...)")],
    reason: Annotated[str, typer.Option(help="why it is offboarded (goes into the ledger)")],
) -> None:
    """Offboard an organisation: its tokens stop working at once; its history stays in the ledger."""
    with runtime() as rt, rt.db.transaction() as session:
        org = rt.identity.disable_org(
            session, rt.identity.get_org(session, org_id), reason=reason, actor=OPERATOR
        )
        console.print(f"disabled {org.id} ({org.name})")


@org_app.command("list")
def org_list(role: Annotated[Role | None, typer.Option(help="only this role")] = None) -> None:
    """List organisations."""
    with runtime() as rt, rt.db.transaction(write=False) as session:
        orgs = rt.identity.list_orgs(session, role=role, limit=10_000)
        table = Table("id", "name", "role", "USCC", "created")
        for o in orgs:
            table.add_row(
                o.id, o.name, o.role.value, o.uscc or "", o.created_at.isoformat(timespec="seconds")
            )
    console.print(table)


@token_app.command("issue")
def token_issue(
    org_id: Annotated[str, typer.Argument(help="organisation id (org_...)")],
    label: Annotated[str, typer.Option(help="what the token is for")] = "cli",
    ttl_days: Annotated[int, typer.Option(min=1, max=3650)] = 90,
) -> None:
    """Issue an API token for an organisation and print it (once)."""
    with runtime() as rt, rt.db.transaction() as session:
        org = rt.identity.get_org(session, org_id)
        issued = rt.identity.issue_token(
            session, org=org, label=label, ttl=timedelta(days=ttl_days), actor=OPERATOR
        )
        _print_token(issued.secret, issued.token.id, issued.token.expires_at)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="token id (tok_...)")]) -> None:
    """Revoke an API token; it stops working at once."""
    with runtime() as rt, rt.db.transaction() as session:
        token = rt.identity.revoke_token(session, rt.identity.get_token(session, token_id), actor=OPERATOR)
        console.print(f"revoked {token.id} of {token.org_id}")


# --- privacy budgets (aggregate queries) -------------------------------------------------------------


@budget_app.command("set")
def budget_set(
    org_id: Annotated[str, typer.Argument(help="the bank's organisation id (org_...)")],
    epsilon: Annotated[float, typer.Argument(help="the bank's total epsilon (spent so far stays spent)")],
) -> None:
    """Set a bank's total privacy budget for aggregate queries (written to the ledger)."""
    with runtime() as rt, rt.db.transaction() as session:
        b = rt.aggregates.set_budget(session, org_id, epsilon, actor=OPERATOR)
    console.print(f"{b.bank_org_id}: total epsilon {b.total:g}, spent {b.spent:g}, remaining {b.remaining:g}")


@budget_app.command("show")
def budget_show(org_id: Annotated[str, typer.Argument(help="the bank's organisation id (org_...)")]) -> None:
    """Show a bank's privacy budget."""
    with runtime() as rt, rt.db.transaction(write=False) as session:
        b = rt.aggregates.budget(session, org_id)
    console.print(f"{b.bank_org_id}: total epsilon {b.total:g}, spent {b.spent:g}, remaining {b.remaining:g}")


# --- objections (pps.governance.objections) --------------------------------------------------------------------


@admin_app.command("objections")
def admin_objections(
    overdue: Annotated[
        bool, typer.Option("--overdue", help="only open objections past their deadline")
    ] = False,
    state: Annotated[str | None, typer.Option(help="only this state: open, accepted, rejected")] = None,
) -> None:
    """List subjects' objections with their deadlines (overdue ones are for the operator to chase)."""
    from pps.infra.storage.tables import ObjectionState, utcnow

    if state is not None and state not in set(ObjectionState):
        fail(f"state must be one of {', '.join(ObjectionState)}")
    wanted = ObjectionState(state) if state else None
    now = utcnow()
    with runtime() as rt, rt.db.transaction(write=False) as session:
        found = rt.objections.list_objections(
            session, state=wanted, overdue=True if overdue else None, now=now, limit=100_000
        )
        table = Table("id", "subject", "dataset", "provider", "fields", "state", "due", "overdue")
        for o in found:
            table.add_row(
                o.id,
                o.subject_uscc,
                o.dataset_id,
                o.provider_org_id,
                ", ".join(json.loads(o.fields_json)),
                o.state.value,
                o.due_at.isoformat(timespec="seconds"),
                "OVERDUE" if o.state is ObjectionState.open and o.due_at <= now else "",
            )
    console.print(table)
    console.print(f"{len(found)} objection(s)")


# --- audit -------------------------------------------------------------------------------------------


@audit_app.command("public-key")
def audit_public_key() -> None:
    """Print the verifier key of the checkpoints (give it to auditors; they pin it)."""
    with runtime() as rt:
        print(rt.ledger.signer.verifier_key)
        console.print(rt.ledger.signer.public_key_pem.rstrip())


@audit_app.command("checkpoint")
def audit_checkpoint(
    out: Annotated[Path | None, typer.Option(help="also write the signed note to this file")] = None,
) -> None:
    """Publish (if the ledger grew) and print the signed checkpoint of the current ledger."""
    with runtime() as rt, rt.db.transaction() as session:
        cp = rt.ledger.publish_checkpoint(session)
    print(cp.note, end="")
    if out is not None:
        out.write_text(cp.note, encoding="utf-8")
        console.print(f"saved to {out}")


INTEGRITY_FAILURE_EXIT = 3
"""Exit code of ``pps audit verify`` when the ledger fails verification (2 is the usage-error code)."""


@audit_app.command("verify")
def audit_verify(
    against: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="a checkpoint note saved earlier: the ledger must be consistent with it",
        ),
    ] = None,
    verifier_key: Annotated[
        list[str] | None,
        typer.Option(
            help="also trust checkpoints signed by this verifier key (e.g. the key before a key file was "
            "replaced); may be given several times"
        ),
    ] = None,
    save: Annotated[
        Path | None, typer.Option(help="write the signed checkpoint of the verified tree here afterwards")
    ] = None,
) -> None:
    """Re-derive the whole Merkle tree from the stored entries and check nodes, checkpoints and consistency.

    Exits 0 if the ledger is intact, 3 (naming the first bad index) if anything was edited, deleted,
    inserted or reordered, 1 on other errors. Without --against it checks the database against itself and
    its own signed checkpoints; keep checkpoints outside the host and pass one with --against to catch a
    rewrite by someone who also controls the database.
    """
    from pps.ledger.verify import verify_ledger

    note = against.read_text(encoding="utf-8") if against else None
    with user_errors():
        trusted = [NoteVerifier.from_string(k) for k in verifier_key or []]
    with runtime(migrate_schema=False) as rt:
        if not migrate.is_up_to_date(rt.db.engine):
            fail("the database schema is not current; run `pps db upgrade` first")
        with (
            _bar() as bar,
            rt.db.transaction(write=False, snapshot=True) as session,
        ):
            tasks: dict[str, Any] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(f"checking {phase}", total=total)
                bar.update(tasks[phase], completed=done, total=total)

            try:
                report = verify_ledger(session, rt.ledger, against=note, trusted=trusted, progress=progress)
            except LedgerIntegrityError as exc:
                bar.stop()
                fail(f"LEDGER INTEGRITY FAILURE: {exc.message}", code=INTEGRITY_FAILURE_EXIT)
        if save is not None:
            with rt.db.transaction() as session:
                cp = rt.ledger.publish_checkpoint(session, size=report.tree_size)
            save.write_text(cp.note, encoding="utf-8")
    table = Table(title="audit ledger verified", show_header=False)
    table.add_row("entries", str(report.tree_size))
    table.add_row("root", report.root_hash.hex())
    table.add_row("nodes checked", str(report.nodes_checked))
    table.add_row("checkpoints checked", str(report.checkpoints_checked))
    table.add_row("latest checkpoint size", str(report.latest_checkpoint_size))
    if report.consistent_with is not None:
        table.add_row("consistent with saved checkpoint of size", str(report.consistent_with))
    if save is not None:
        table.add_row("saved checkpoint", str(save))
    console.print(table)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="JSON Lines file to write")],
    action: Annotated[str | None, typer.Option(help="exact action, or a prefix ending in .*")] = None,
    subject: Annotated[str | None, typer.Option(help="USCC of a touched subject")] = None,
    actor: Annotated[str | None, typer.Option(help="actor organisation id")] = None,
) -> None:
    """Export entries with inclusion proofs against a fresh signed checkpoint, for offline verification.

    Line 1 is a header (origin, verifier key, checkpoint); each further line is one entry with its proof.
    The export itself is recorded in the ledger (action ``audit.export``) in the same transaction that
    puts the file in place. The format is described in docs/audit.md.
    """
    import base64
    import os

    from pps.identity.uscc import validate_uscc
    from pps.ledger.entry import EntryDraft

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    with user_errors():
        flt = EntryFilter(
            actor_org_id=actor, action=action, subject=validate_uscc(subject) if subject else None
        )
    count = 0
    partial = out.with_name(out.name + ".partial")
    with runtime() as rt:
        with rt.db.transaction() as session:
            cp = rt.ledger.publish_checkpoint(session)
        try:
            with (
                partial.open("w", encoding="utf-8") as fh,
                rt.db.transaction(write=False, snapshot=True) as session,
            ):
                header = {
                    "format": "pps-audit-export/1",
                    "origin": rt.ledger.origin,
                    "verifier_key": rt.ledger.signer.verifier_key,
                    "checkpoint": cp.note,
                    "filter": {"action": action, "subject": flt.subject, "actor": actor},
                }
                fh.write(json.dumps(header, ensure_ascii=False) + "\n")
                after = None
                with Progress(console=err_console, transient=True) as bar:
                    task = bar.add_task("exporting", total=cp.tree_size)
                    while True:
                        page = [
                            e
                            for e in rt.ledger.entries(session, flt, after=after, limit=1000)
                            if e.index < cp.tree_size
                        ]
                        if not page:
                            break
                        for e in page:
                            proof = rt.ledger.inclusion_proof(session, e.index, cp.tree_size)
                            line = {
                                "index": e.index,
                                "entry_b64": b64(e.entry),
                                "leaf_hash": b64(e.leaf_hash),
                                "tree_size": cp.tree_size,
                                "inclusion_proof": [b64(p) for p in proof],
                            }
                            fh.write(json.dumps(line) + "\n")
                        count += len(page)
                        after = page[-1].index
                        bar.update(task, completed=after + 1)
            with rt.db.transaction() as session:  # no entry, no export: the file appears only after it
                rt.ledger.append(
                    session,
                    EntryDraft(
                        action="audit.export",
                        actor=OPERATOR,
                        subjects=(flt.subject,) if flt.subject else (),
                        detail={
                            "entries": count,
                            "tree_size": cp.tree_size,
                            "action_filter": action,
                            "actor_filter": actor,
                        },
                    ),
                )
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    console.print(
        f"exported {count} entries with proofs against the checkpoint of size {cp.tree_size} to {out}"
    )


# --- data --------------------------------------------------------------------------------------------

_FORMATS = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".parquet": "parquet"}


@data_app.command("synth")
def data_synth(
    enterprises: Annotated[int, typer.Option(min=1, max=5_000_000, help="how many enterprises")] = 10_000,
    seed: Annotated[int, typer.Option(help="random seed (the same seed gives the same data)")] = 1,
    months: Annotated[int, typer.Option(min=1, max=120, help="months of monthly data")] = 24,
    start: Annotated[str, typer.Option(help="first month, YYYY-MM")] = "2024-01",
    out: Annotated[Path, typer.Option(help="directory for <dataset>.csv and <dataset>.schema.json")] = Path(
        "synth-data"
    ),
    labels: Annotated[bool, typer.Option(help="also write labels.csv (what a bank would know)")] = True,
) -> None:
    """Generate synthetic platform data: one CSV + schema per provider dataset (and the bank-side labels).

    Upload them as a data provider with `pps data upload <dir>/tax.csv` (the schema is found beside it).
    """
    import time

    from models.synth import generate

    t0 = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console, transient=True
    ) as bar:
        task = bar.add_task(f"generating {enterprises:,} enterprises")
        data = generate(enterprises, seed, months=months, start=start)
        generated = time.perf_counter() - t0
        tables = data.tables() if labels else data.provider_tables()
        for table in tables:
            bar.update(task, description=f"writing {table.name}.csv")
            table.write_csv(out)
    table_out = Table("dataset", "provider", "rows", "key", title=f"synthetic platform data → {out}")
    for t in tables:
        table_out.add_row(t.name, t.provider, f"{t.n_rows:,}", " + ".join(t.key_columns))
    console.print(table_out)
    default_rate = float(data.labels.columns["defaulted"].mean())
    console.print(
        f"{enterprises:,} enterprises, seed {seed}: generated in {generated:.1f} s, written in "
        f"{time.perf_counter() - t0 - generated:.1f} s; default rate {default_rate:.1%} (labels.csv is bank-side)"
    )


@data_app.command("upload")
def data_upload(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV, NDJSON or Parquet")
    ],
    schema: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="schema JSON (default: <file stem>.schema.json beside the file)"
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="dataset name (default: the file stem)")] = None,
    description: Annotated[str, typer.Option(help="what the dataset holds")] = "",
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, ndjson or parquet (default: by suffix)")
    ] = None,
    url: Annotated[str, typer.Option(envvar="PPS_URL", help="the PPS service")] = "http://127.0.0.1:8000",
    token: Annotated[str, typer.Option(envvar="PPS_TOKEN", help="a data provider's API token")] = "",
) -> None:
    """Upload a file as a new version of one of your datasets (created on first upload), over the API.

    The service validates every row before storing anything and encrypts what it stores; problems are
    listed with their row numbers.
    """
    from pps.client import PPSClient

    if not token:
        fail("give a data provider's token with --token or PPS_TOKEN")
    fmt = fmt or _FORMATS.get(file.suffix.lower())
    if fmt not in ("csv", "ndjson", "parquet"):
        fail(f"cannot tell the format of {file.name}; pass --format csv|ndjson|parquet")
    schema_path = schema or file.with_name(file.name.split(".")[0] + ".schema.json")
    if not schema_path.exists():
        fail(f"no schema: pass --schema (looked for {schema_path})")
    declared = json.loads(schema_path.read_text(encoding="utf-8"))
    name = name or file.name.split(".")[0]
    size = file.stat().st_size

    with user_errors(), PPSClient(url, token) as client:
        existing = [d for d in client.list_datasets() if d["name"] == name]
        ds = existing[0] if existing else client.create_dataset(name, declared, description=description)
        with _bar("uploading {task.description}") as bar:
            task = bar.add_task(file.name, total=size)

            def chunks() -> Iterator[bytes]:
                with file.open("rb") as fh:
                    while block := fh.read(1 << 20):
                        bar.update(task, advance=len(block))
                        yield block

            try:
                version = client.upload_version(ds["id"], chunks(), fmt=fmt)
            except PPSError as exc:
                bar.stop()
                problems = exc.details.get("problems") or []
                if problems:
                    table = Table("row", "column", "problem", title="upload refused — nothing was stored")
                    for p in problems:
                        table.add_row(str(p["row"]), p["column"] or "", p["message"])
                    err_console.print(table)
                    fail(
                        f"{exc.details.get('problem_count', len(problems))} problem(s); fix the file and retry"
                    )
                raise
    summary = Table(show_header=False, title="uploaded")
    summary.add_row("dataset", f"{ds['name']} ({ds['id']})")
    summary.add_row("version", str(version["version"]))
    summary.add_row("rows", f"{version['rows']:,}")
    summary.add_row("bytes", f"{size:,}")
    summary.add_row("encrypted under KEK version", str(version["kek_version"]))
    console.print(summary)


# --- bank: encrypted scoring ---------------------------------------------------------------------------


def _load_model_file(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"cannot read the model file {path}: {exc}")
    if not isinstance(spec, dict) or spec.get("kind", "logistic") not in ("logistic", "scorecard"):
        fail('the model file must be a JSON object with "kind": "logistic" or "scorecard"')
    return spec


@bank_app.command("score")
def bank_score(
    model_file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help='model JSON: {"kind": "logistic", "weights": {feature: w}, "bias": b, "preprocess": {...}} or '
            '{"kind": "scorecard", "base_points": p, "features": [{"name", "edges", "points"}]}',
        ),
    ],
    purpose: Annotated[str, typer.Option(help="the purpose the enterprises consented to")],
    subjects: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="USCCs to score, one per line (default: all consented)"
        ),
    ] = None,
    key: Annotated[
        Path, typer.Option(help="your CKKS secret key file (created, mode 600, if missing); never sent")
    ] = Path("bank-scoring.key"),
    out: Annotated[Path, typer.Option(help="CSV of the scores and of who was not scored and why")] = Path(
        "scores.csv"
    ),
    url: Annotated[str, typer.Option(envvar="PPS_URL", help="the PPS service")] = "http://127.0.0.1:8000",
    token: Annotated[str, typer.Option(envvar="PPS_TOKEN", help="a bank's API token")] = "",
) -> None:
    """Score enterprises with your model, encrypted under your own key: the service never sees the model or
    the scores. The model is encrypted here, the job's progress is shown, and the result decrypted here."""
    import csv
    import os
    import time

    from pps.client import PPSClient
    from protocols.he_scoring import BankScoringKey, Scorecard, ScorecardFeature

    if not token:
        fail("give a bank's token with --token or PPS_TOKEN")
    spec = _load_model_file(model_file)
    listed = None
    if subjects is not None:
        listed = [line.strip() for line in subjects.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not listed:
            fail(f"{subjects} lists no USCC")
    if key.exists():
        bank_key = BankScoringKey.from_secret_context_bytes(key.read_bytes())
    else:
        bank_key = BankScoringKey.create()
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(bank_key.secret_context_bytes())
        err_console.print(f"created a new scoring key in {key} (keep it; it is the only way to read results)")
    try:
        if spec.get("kind", "logistic") == "logistic":
            model = bank_key.encrypt_model(
                {str(k): float(v) for k, v in dict(spec["weights"]).items()}, float(spec.get("bias", 0.0))
            )
        else:
            card = Scorecard(
                tuple(
                    ScorecardFeature(
                        f["name"], tuple(f["edges"]), tuple(f["points"]), f.get("missing_points")
                    )
                    for f in spec["features"]
                ),
                base_points=float(spec.get("base_points", 0.0)),
            )
            model = bank_key.encrypt_scorecard(card)
    except (KeyError, TypeError, ValueError) as exc:
        fail(f"the model file is not a valid {spec.get('kind', 'logistic')} model: {exc}")
    with user_errors(), PPSClient(url, token) as client:
        job = client.submit_scoring(
            bank_key, model, purpose=purpose, subjects=listed, preprocess=spec.get("preprocess")
        )
        with _bar("scoring (job {task.description})") as bar:
            task = bar.add_task(job["id"], total=None)
            while True:
                state = client.job(job["id"])
                progress = state["progress"]
                bar.update(task, completed=progress["done"], total=progress["total"] or None)
                if state["state"] not in ("queued", "running"):
                    break
                time.sleep(0.2)
        client.wait(job["id"])  # raises the job's error if it failed
        result = client.scoring_result(job["id"], bank_key, model)
    values = result.as_dict()
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["uscc", "probability" if result.probabilities is not None else "points", "not_scored"]
        )
        for code in result.subjects:
            writer.writerow([code, f"{values[code]:.6f}", ""])
        for item in result.not_scored:
            writer.writerow([item["subject"], "", item["reason"]])
    reasons: dict[str, int] = {}
    for item in result.not_scored:
        reasons[item["reason"]] = reasons.get(item["reason"], 0) + 1
    summary = Table(show_header=False, title="scored")
    summary.add_row("job", job["id"])
    summary.add_row("scored", f"{len(result.subjects):,}")
    summary.add_row("not scored", ", ".join(f"{n:,} {r}" for r, n in sorted(reasons.items())) or "none")
    summary.add_row("written to", str(out))
    console.print(summary)


@bank_app.command("train-vertical")
def bank_train_vertical(
    data: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            help="CSV of your customers: a uscc column, a 0/1 label, your own features",
        ),
    ],
    label: Annotated[str, typer.Option(help="the label column (1 = default)")],
    features: Annotated[str, typer.Option(help="your feature columns, comma-separated")],
    platform_features: Annotated[
        str, typer.Option(help="platform features to train with, comma-separated (see GET /v1/features)")
    ],
    purpose: Annotated[
        str, typer.Option(help="the purpose the enterprises consented to")
    ] = "joint_model_training",
    name: Annotated[str, typer.Option(help="the model's name in the registry")] = "vertical LR",
    vendor_key: Annotated[
        str,
        typer.Option(envvar="PPS_ENCLAVE_VENDOR_KEY", help="the enclave vendor's Ed25519 key (hex), pinned"),
    ] = "",
    epochs: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    batch_size: Annotated[int, typer.Option(min=8)] = 256,
    learning_rate: Annotated[float, typer.Option(min=1e-6)] = 0.1,
    key_bits: Annotated[
        int, typer.Option(hidden=True, help="the coordinator's key size (1024: tests only)")
    ] = 2048,
    out: Annotated[Path, typer.Option(help="where to keep your half of the model (JSON)")] = Path(
        "vertical-model.json"
    ),
    url: Annotated[str, typer.Option(envvar="PPS_URL", help="the PPS service")] = "http://127.0.0.1:8000",
    token: Annotated[str, typer.Option(envvar="PPS_TOKEN", help="a bank's API token")] = "",
) -> None:
    """Train a logistic regression on your labels and features joined with the platform's, without either side
    seeing the other's data: PSI alignment on consent to train, the key-holding coordinator in the attested
    enclave, your half kept here. Progress per mini-batch; the model is registered with the platform."""
    import csv
    import json

    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from pps.client import PPSClient
    from protocols import vertical_lr as vl

    if not token:
        fail("give a bank's token with --token or PPS_TOKEN")
    try:
        pinned = Ed25519PublicKey.from_public_bytes(bytes.fromhex(vendor_key))
    except ValueError:
        fail("give the enclave vendor's key (64 hex characters) with --vendor-key or PPS_ENCLAVE_VENDOR_KEY")
    own = [f.strip() for f in features.split(",") if f.strip()]
    names = [f.strip() for f in platform_features.split(",") if f.strip()]
    with data.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    try:
        customers = [r["uscc"].strip() for r in rows]
        y = np.array([int(r[label]) for r in rows])
        x = np.array([[float(r[f]) for f in own] for r in rows]).reshape(len(rows), len(own))
    except (KeyError, ValueError) as exc:
        fail(f"{data}: needs a uscc column, a 0/1 {label!r} column and numeric {own}: {exc}")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    try:
        config = vl.VerticalLRConfig(
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, l2=1e-3
        )
    except vl.VerticalLRError as exc:
        fail(str(exc))
    with (
        user_errors(),
        PPSClient(url, token, timeout=120) as client,
        _bar() as bar,
    ):
        task = bar.add_task("aligning (PSI) and starting", total=None)

        def on_batch(epoch: int, batches: int) -> None:
            bar.update(
                task, description=f"training: epoch {epoch + 1}/{epochs}", completed=epoch, total=epochs
            )

        result = client.train_vertical(
            name=name,
            purpose=purpose,
            customers=customers,
            features=(x - mean) / scale,
            labels=y,
            platform_features=names,
            vendor_key=pinned,
            config=config,
            key_bits=key_bits,
            on_batch=on_batch,
        )
    g = result.guest_model
    doc = {
        "model_id": result.model["id"],
        "kind": "vertical_lr",
        "features": own,
        "preprocess": {"mean": mean.tolist(), "scale": scale.tolist()},
        "weights": g.weights.tolist(),
        "intercept": g.intercept,
        "platform_features": names,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    summary = Table(show_header=False, title="vertical training")
    summary.add_row("model", result.model["id"])
    summary.add_row(
        "rows", f"{len(result.subjects):,} of {len(customers):,} customers (PSI on consent to train)"
    )
    summary.add_row("left out", ", ".join(f"{n:,} {r}" for r, n in sorted(result.excluded.items())) or "none")
    summary.add_row("epochs", f"{result.epochs}" + (" (stopped early)" if result.stopped_early else ""))
    summary.add_row("final loss", f"{result.losses[-1]:.5f}" if result.losses else "-")
    summary.add_row("time", f"{result.seconds:.1f} s")
    summary.add_row("your half", str(out))
    console.print(summary)


def _portfolio(data: Path, label: str, features: list[str]) -> tuple[Any, Any]:
    """A bank's own labelled rows from a CSV (the columns of the federation's feature schema and the label)."""
    import csv

    import numpy as np

    with data.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    try:
        y = np.array([int(r[label]) for r in rows], dtype=np.float64)
        x = np.array([[float(r[f]) for f in features] for r in rows], dtype=np.float64)
    except (KeyError, ValueError) as exc:
        fail(f"{data}: needs a 0/1 {label!r} column and numeric columns {features}: {exc}")
    if not rows:
        fail(f"{data} has no rows")
    return x.reshape(len(rows), len(features)), y


def _federate(client: Any, federation_id: str, x: Any, y: Any, poll: float) -> dict[str, Any]:
    """Take part until the federation ends, with a progress bar over its rounds."""
    import time

    view: dict[str, Any] = client.federation(federation_id)
    with _bar() as bar:
        task = bar.add_task("waiting for the other banks", total=view["rounds"])
        while view["state"] not in ("done", "aborted"):
            view = client.step(federation_id, x, y)
            rnd = view.get("round") or {}
            if view["state"] == "running" and rnd:
                bar.update(
                    task,
                    description=f"round {view['current_round']}/{view['rounds']}: {rnd['phase'].replace('_', ' ')}",
                    completed=view["current_round"] - 1,
                )
            time.sleep(poll)
        bar.update(task, completed=view["rounds"] if view["state"] == "done" else view["current_round"])
    return view


def _federation_summary(view: dict[str, Any], x: Any, y: Any) -> None:
    from models.metrics import InvalidMetricInput, auc

    summary = Table(show_header=False, title=f"federation {view['id']}")
    summary.add_row("state", view["state"])
    summary.add_row("rounds", f"{view['current_round']} of {view['rounds']}")
    summary.add_row("banks", str(len(view["participants"])))
    if view["state"] == "done":
        from pps.client import FederatedClient

        model = FederatedClient.model(view)
        with suppress(InvalidMetricInput):
            summary.add_row("AUC on your own rows", f"{auc(y, model.predict_proba(x)[:, 1]):.4f}")
        summary.add_row("model", str(view.get("model_id")))
    console.print(summary)
    if view["state"] != "done":
        fail(
            f"the federation was {view['state']}: {view.get('abort_reason') or 'fewer banks than the threshold remained'}"
        )


@bank_app.command("federate")
def bank_federate(
    data: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV of your own labelled portfolio")
    ],
    label: Annotated[str, typer.Option(help="the label column (1 = default)")],
    features: Annotated[str, typer.Option(help="the shared feature schema: column names, comma-separated")],
    banks: Annotated[str, typer.Option(help="the other banks' organisation ids, comma-separated")],
    name: Annotated[str, typer.Option(help="the model's name")] = "horizontal LR",
    rounds: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    threshold: Annotated[
        int | None, typer.Option(help="fewest banks a round may finish with (default: a majority)")
    ] = None,
    local_epochs: Annotated[int, typer.Option(min=1, max=100)] = 1,
    poll: Annotated[float, typer.Option(hidden=True)] = 0.5,
    url: Annotated[str, typer.Option(envvar="PPS_URL", help="the PPS service")] = "http://127.0.0.1:8000",
    token: Annotated[str, typer.Option(envvar="PPS_TOKEN", help="a bank's API token")] = "",
) -> None:
    """Start a horizontal training with other banks over your own portfolios (secure aggregation: the safe-room
    learns only the weighted sum of the updates) and take part until it ends. The others join with
    `pps bank join`."""
    from pps.client import FederatedClient, PPSClient

    names = [f.strip() for f in features.split(",") if f.strip()]
    others = [b.strip() for b in banks.split(",") if b.strip()]
    x, y = _portfolio(data, label, names)
    with user_errors(), PPSClient(url, token, timeout=120) as client:
        me = client.me()["org"]["id"]
        n = len(others) + 1
        fc = FederatedClient(client)
        fed = fc.create(
            name=name,
            participants=[me, *others],
            kind="horizontal_lr",
            feature_schema=names,
            rounds=rounds,
            threshold=threshold or n // 2 + 1,
            local_epochs=local_epochs,
        )
        err_console.print(
            f"federation {fed['id']} created; the other banks join with: pps bank join {fed['id']} ..."
        )
        view = _federate(fc, fed["id"], x, y, poll)
    _federation_summary(view, x, y)


@bank_app.command("join")
def bank_join(
    federation_id: Annotated[str, typer.Argument(help="the federation (fed_...) another bank started")],
    data: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV of your own labelled portfolio")
    ],
    label: Annotated[str, typer.Option(help="the label column (1 = default)")],
    poll: Annotated[float, typer.Option(hidden=True)] = 0.5,
    url: Annotated[str, typer.Option(envvar="PPS_URL", help="the PPS service")] = "http://127.0.0.1:8000",
    token: Annotated[str, typer.Option(envvar="PPS_TOKEN", help="a bank's API token")] = "",
) -> None:
    """Join a horizontal training you were invited to (purpose joint_model_training) and take part until it
    ends; your rows stay here, only masked updates leave."""
    from pps.client import FederatedClient, PPSClient

    with user_errors(), PPSClient(url, token, timeout=120) as client:
        fc = FederatedClient(client)
        view = fc.federation(federation_id)
        x, y = _portfolio(data, label, list(view["feature_schema"]))
        if view["state"] == "inviting":
            fc.accept(federation_id)
        view = _federate(fc, federation_id, x, y, poll)
    _federation_summary(view, x, y)


@bank_app.command("models")
def bank_models(
    url: Annotated[str, typer.Option(envvar="PPS_URL", help="the PPS service")] = "http://127.0.0.1:8000",
    token: Annotated[str, typer.Option(envvar="PPS_TOKEN", help="a bank's API token")] = "",
) -> None:
    """Your models in the registry, with their held-out AUC and KS."""
    from pps.client import PPSClient

    with user_errors(), PPSClient(url, token) as client:
        models = client.models()
    if not models:
        console.print("no models yet: train one with `pps bank train-vertical` (or a federation)")
        return
    table = Table("name", "kind", "AUC", "KS", "registered")
    table.add_column("id", no_wrap=True)
    for m in models:
        metrics = m.get("metrics") or {}
        table.add_row(
            m["name"],
            m["kind"],
            f"{metrics['auc']:.4f}" if metrics else "-",
            f"{metrics['ks']:.4f}" if metrics else "-",
            m["created_at"][:10],
            m["id"],
        )
    console.print(table)


@bank_app.command("report")
def bank_report(
    model_id: Annotated[str, typer.Argument(help="the model (mdl_...)")],
    out: Annotated[Path, typer.Option(help="where to write the HTML page")] = Path("model-report.html"),
    url: Annotated[str, typer.Option(envvar="PPS_URL", help="the PPS service")] = "http://127.0.0.1:8000",
    token: Annotated[str, typer.Option(envvar="PPS_TOKEN", help="a bank's API token")] = "",
) -> None:
    """Save a model's evaluation page (ROC and KS curves) to open in a browser."""
    from pps.client import PPSClient

    with user_errors(), PPSClient(url, token) as client:
        page = client.model_report_html(model_id)
    out.write_text(page, encoding="utf-8")
    console.print(f"wrote {out} ({len(page):,} bytes)")


# --- keys --------------------------------------------------------------------------------------------


@keys_app.command("status")
def keys_status() -> None:
    """Check every KEK version against its canary and show how many data keys each wraps (exit 1 on a fault)."""
    from pps.infra import keyring

    with runtime(open_keys=False) as rt, rt.db.transaction(write=False) as session:
        rows = keyring.status(session, rt.kms, rt.key_holders)
    table = Table("KEK version", "data keys wrapped", "state")
    for row in rows:
        table.add_row(
            str(row.version), str(row.wrapped), row.state if row.ok else f"[bold red]{row.state}[/]"
        )
    console.print(table)
    if not all(row.ok for row in rows):
        fail("some key-encryption keys do not fit the stored data (see above); the service will not start")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Add a KEK version and re-wrap every data key under it (the data itself is not decrypted)."""
    from pps.infra import keyring

    with runtime() as rt, rt.db.transaction() as session:
        done = keyring.rotate(session, rt.kms, rt.key_holders, rt.ledger, actor=OPERATOR)
    console.print(f"KEK version {done.version} is current; re-wrapped {done.rewrapped} data key(s) under it")
    console.print("older KEK versions still decrypt until retired: `pps keys retire --below VERSION`")


@keys_app.command("retire")
def keys_retire(
    below: Annotated[int, typer.Option(min=2, help="refuse to decrypt with KEK versions below this one")],
) -> None:
    """Retire old KEK versions (raise the minimum decryption version). Refused while they still wrap keys."""
    from pps.infra import keyring

    with user_errors(), runtime() as rt, rt.db.transaction() as session:
        rt.datasets.lock_data_keys(session)
        keyring.retire_below(session, rt.kms, rt.key_holders, rt.ledger, below, actor=OPERATOR)
    console.print(f"KEK versions below {below} are retired")


# --- consent -----------------------------------------------------------------------------------------


@consent_app.command("verify-receipt")
def consent_verify_receipt(
    receipt: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="a receipt file (signed note)")
    ],
    public_key: Annotated[
        str | None,
        typer.Option(
            envvar="PPS_RECEIPT_KEY",
            help="the platform's receipt verifier key (GET /v1/consent/public-key); default: this host's key",
        ),
    ] = None,
) -> None:
    """Verify a consent receipt offline and show what was granted. Exits 3 if it does not verify."""
    from pps.errors import ProofVerificationError
    from pps.governance.consent import verify_receipt

    text = receipt.read_text(encoding="utf-8")
    with user_errors():
        if public_key:
            verifier = NoteVerifier.from_string(public_key)
        else:
            with runtime() as rt:
                verifier = rt.consents.receipt_verifier
        try:
            doc = verify_receipt(text, verifier)
        except ProofVerificationError as exc:
            fail(f"RECEIPT DOES NOT VERIFY: {exc.message}", code=INTEGRITY_FAILURE_EXIT)
    table = Table(show_header=False, title=f"consent receipt verified ({verifier.name})")
    for key in (
        "consent_id",
        "subject",
        "purpose",
        "operations",
        "valid_from",
        "valid_until",
        "max_uses",
        "granted_at",
    ):
        table.add_row(
            key, json.dumps(doc[key], ensure_ascii=False) if not isinstance(doc[key], str) else doc[key]
        )
    table.add_row("bank", f"{doc['bank']['name']} ({doc['bank']['id']})")
    for item in doc["scope"]:
        table.add_row("scope", f"{item['dataset_id']}: {', '.join(item['fields'])}")
    console.print(table)


def main() -> None:
    try:
        app()
    except Exception as exc:
        error = translate(exc)
        if error is None:
            raise
        err_console.print(f"[bold red]error ({error.code}):[/] {error.message}")
        sys.exit(1)


if __name__ == "__main__":
    main()
