"""The ``pps`` command line: the operator's.

Administrative commands act directly on the database named by the settings (``PPS_DATABASE_URL``, default
the SQLite file under ``.pps/``): they are for the operator of the safe-room host. Everything they change is
written to the audit ledger with the actor ``operator`` via ``cli``. Banks and providers use the API with the
``pps-client`` command line of the client SDK (``client/``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from pps.errors import LedgerIntegrityError, OperatorBounded, UnknownSigningKey, translate
from pps.identity.service import SELF_CREDENTIALED
from pps.infra.keys import LEDGER_SIGNING_KEY_FILE, load_ed25519
from pps.infra.settings import get_settings
from pps.infra.storage import migrate
from pps.infra.storage.db import Database
from pps.infra.storage.tables import Consent, ConsentState, Role
from pps.ledger.entry import OPERATOR
from pps.ledger.store import EntryFilter, Ledger
from pps.runtime import Runtime
from pps_wire.checkpoint import NoteSigner, NoteVerifier

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
    help="Datasets: generate synthetic platform data (providers upload with `pps-client data upload`).",
    no_args_is_help=True,
)
keys_app = typer.Typer(
    help="Keys for data at rest: rotate and retire key-encryption keys.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(keys_app, name="keys")

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
    os.environ["PPS_SERVER_PID"] = str(os.getpid())  # api.app.SERVER_PID_ENV: workers die with this process
    uvicorn.run(
        "api.app:create_served_app",
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
    token: Annotated[
        bool, typer.Option(help="also issue an API token and print it (not for a bank or an enterprise)")
    ] = False,
    ttl_days: Annotated[int, typer.Option(min=1, max=3650)] = 90,
) -> None:
    """Onboard an organisation (a bank, a data provider, an auditor, an enterprise, an admin) and print its
    one-time enrolment code, to deliver out of band: the organisation redeems it for its first token
    (`pps-client enrol CODE`). A bank's or an enterprise's token is never minted by the operator."""
    if token and role in SELF_CREDENTIALED:
        fail(
            f"the operator does not mint a {role.value}'s token: deliver the enrolment code out of band and "
            "let the organisation redeem it (`pps-client enrol CODE`)"
        )
    with runtime() as rt, rt.db.transaction() as session:
        org = rt.identity.create_org(session, name=name, role=role, uscc=uscc, actor=OPERATOR)
        console.print(f"created {org.role.value} organisation {org.id} ({org.name})")
        code = rt.identity.issue_enrolment_code(session, org=org, actor=OPERATOR)
        console.print(
            f"[bold]one-time enrolment code for {org.name} (deliver it out of band; expires "
            f"{code.code.expires_at.isoformat(timespec='seconds')}):[/]"
        )
        print(code.secret)
        if token:
            issued = rt.identity.issue_token(
                session, org=org, label="cli", ttl=timedelta(days=ttl_days), actor=OPERATOR
            )
            _print_token(issued.secret, issued.token.id, issued.token.expires_at)


def _refuse(rt: Runtime, org_id: str, what: str, exc: OperatorBounded) -> NoReturn:
    with rt.db.transaction() as session:
        rt.identity.record_refusal(
            session, action="operator.refused", actor=OPERATOR, org_id=org_id, reason=f"{what}: {exc.message}"
        )
    raise exc


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
    with runtime() as rt:
        try:
            with rt.db.transaction() as session:
                org = rt.identity.get_org(session, org_id)
                issued = rt.identity.issue_token(
                    session, org=org, label=label, ttl=timedelta(days=ttl_days), actor=OPERATOR
                )
                _print_token(issued.secret, issued.token.id, issued.token.expires_at)
        except OperatorBounded as exc:
            _refuse(rt, org_id, "issue a token", exc)


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="token id (tok_...)")]) -> None:
    """Revoke an API token; it stops working at once."""
    with runtime() as rt:
        with rt.db.transaction() as session:
            token = rt.identity.get_token(session, token_id)
            org_id, role = token.org_id, token.org.role
            if role not in SELF_CREDENTIALED:
                token = rt.identity.revoke_token(session, token, actor=OPERATOR)
                console.print(f"revoked {token.id} of {token.org_id}")
                return
        _refuse(
            rt,
            org_id,
            f"revoke token {token_id}",
            OperatorBounded(
                f"the operator cannot revoke a {role.value}'s credentials alone: two operators do it together "
                "(POST /v1/break-glass, then a second operator approves)"
            ),
        )


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
    state: Annotated[
        str | None, typer.Option(help="only this state: open, accepted, rejected, unverifiable")
    ] = None,
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


@admin_app.command("repairs")
def admin_repairs(
    overdue: Annotated[
        bool, typer.Option("--overdue", help="only open applications past their deadline")
    ] = False,
) -> None:
    """List credit-repair applications with their deadlines (overdue ones are for the operator to chase)."""
    from pps.governance.repair import is_overdue
    from pps.infra.storage.tables import utcnow

    now = utcnow()
    with runtime() as rt, rt.db.transaction(write=False) as session:
        found = rt.repairs.list_applications(
            session, overdue=True if overdue else None, now=now, limit=100_000
        )
        table = Table("id", "subject", "record", "authority", "state", "due", "overdue")
        for a in found:
            table.add_row(
                a.id,
                a.subject_uscc,
                a.record_id,
                a.authority_org_id,
                a.state.value,
                a.due_at.isoformat(timespec="seconds"),
                "OVERDUE" if is_overdue(a, now) else "",
            )
    console.print(table)
    console.print(f"{len(found)} application(s)")


@admin_app.command("records-sweep")
def admin_records_sweep() -> None:
    """Write down the dishonesty records whose maximum publicity or 5-year retention period has ended (a
    ``record.expire`` ledger entry each; their use had already stopped on the day)."""
    from pps.ledger.entry import OPERATOR

    with runtime() as rt, rt.db.transaction() as session:
        counts = rt.repairs.records.sweep(session, actor=OPERATOR)
    console.print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "nothing ended")


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
UNKNOWN_KEY_EXIT = 4
"""Exit code of ``pps audit verify`` when everything checked agrees but checkpoints are signed by a key it was
not given (a restored copy without its key directory): not tampering, and not yet vouched for."""
STATE_DIVERGENT_EXIT = 5
"""Exit code of ``pps audit verify --state`` when the ledger verifies but governed state (consents, their uses,
budgets, objections) differs from what its entries give: a table was edited outside the service."""


@contextmanager
def read_only_ledger() -> Iterator[tuple[Database, Ledger, Path]]:
    """The database and the ledger, opened to be read: no migration, no key made or written (the signing key
    is loaded if its file exists, else the ledger cannot sign), none of the services started."""
    settings = get_settings()
    key_path = settings.resolved_key_dir / LEDGER_SIGNING_KEY_FILE
    with user_errors():
        key = load_ed25519(key_path)
        db = Database(settings.resolved_database_url, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    try:
        signer = NoteSigner(settings.ledger_origin, key) if key is not None else None
        yield db, Ledger(signer, settings.ledger_origin), key_path
    finally:
        db.dispose()


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
    state: Annotated[
        bool,
        typer.Option(
            "--state",
            help="also rebuild consents (terms, state, uses), privacy budgets, objections, subjects' keys and "
            "consent signatures from the entries "
            "and name every row that differs (table, id, column, ledger value, row value)",
        ),
    ] = False,
) -> None:
    """Re-derive the whole Merkle tree from the stored entries and check nodes, checkpoints and consistency.

    Exits 0 if the ledger is intact, 3 (naming the first bad index) if anything was edited, deleted,
    inserted or reordered, or (naming each) if a consent in force does not carry a valid signature by a key
    its subject enrolled, 4 if all of that holds but checkpoints are signed by a key it was not given (a
    restored copy verified without its key directory: pass --verifier-key), 5 with --state if the ledger holds
    but a consent, budget or objection row differs from what its entries give, 1 on other errors. It writes
    nothing (no key is made) unless --save is given. Without --against it checks the database against itself
    and its own signed checkpoints; keep checkpoints outside the host and pass one with --against to catch a
    rewrite by someone who also controls the database.
    """
    from pps.ledger.verify import verify_ledger

    note = against.read_text(encoding="utf-8") if against else None
    with user_errors():
        trusted = [NoteVerifier.from_string(k) for k in verifier_key or []]
    with read_only_ledger() as (db, ledger, key_path):
        if save is not None and not ledger.can_sign:
            fail(f"--save signs a checkpoint with the ledger's signing key, and {key_path} does not exist")
        if not migrate.is_up_to_date(db.engine):
            fail("the database schema is not current; run `pps db upgrade` first")
        with (
            _bar() as bar,
            db.transaction(write=False, snapshot=True) as session,
        ):
            tasks: dict[str, Any] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(f"checking {phase}", total=total)
                bar.update(tasks[phase], completed=done, total=total)

            unknown_key: UnknownSigningKey | None = None
            try:
                report = verify_ledger(session, ledger, against=note, trusted=trusted, progress=progress)
            except LedgerIntegrityError as exc:
                bar.stop()
                fail(f"LEDGER INTEGRITY FAILURE: {exc.message}", code=INTEGRITY_FAILURE_EXIT)
            except UnknownSigningKey as exc:
                if not state:
                    bar.stop()
                    fail(exc.message, code=UNKNOWN_KEY_EXIT)
                unknown_key = exc  # the entries are intact: governed state can still be checked against them
            state_report = _check_state(session, ledger) if state else None
            from pps.governance.signatures import ConsentSignatures, consents_in_force_unsigned
            from pps.infra.storage.tables import utcnow

            unsigned = consents_in_force_unsigned(session, ConsentSignatures(), utcnow())
            consents_checked = session.execute(
                select(func.count()).select_from(Consent).where(Consent.state == ConsentState.active)
            ).scalar_one()
            bar.stop()
        if state_report is not None and not state_report.ok:
            _print_divergences(state_report)
        if unsigned:
            lines = [
                f"  {c.id} (subject {c.subject_uscc}, bank {c.bank_org_id}, {c.purpose}): {why}"
                for c, why in unsigned[:50]
            ]
            more = f"\n  ... and {len(unsigned) - 50} more" if len(unsigned) > 50 else ""
            fail(
                f"CONSENT WITHOUT THE SUBJECT'S SIGNATURE: {len(unsigned)} consent(s) in force do not carry a "
                "valid signature by a key their subject enrolled; the policy engine treats them as no "
                "consent:\n" + "\n".join(lines) + more,
                code=INTEGRITY_FAILURE_EXIT,
            )
        if state_report is not None and not state_report.ok:
            fail(
                f"GOVERNED STATE DIVERGES FROM THE LEDGER: {len(state_report.divergences)} difference(s) in "
                f"{', '.join(sorted({d.table for d in state_report.divergences}))}",
                code=STATE_DIVERGENT_EXIT,
            )
        if unknown_key is not None:
            fail(unknown_key.message, code=UNKNOWN_KEY_EXIT)
        if save is not None:
            with db.transaction() as session:
                cp = ledger.publish_checkpoint(session, size=report.tree_size)
            save.write_text(cp.note, encoding="utf-8")
    table = Table(title="audit ledger verified", show_header=False)
    table.add_row("entries", str(report.tree_size))
    table.add_row("root", report.root_hash.hex())
    table.add_row("nodes checked", str(report.nodes_checked))
    table.add_row("checkpoints checked", str(report.checkpoints_checked))
    table.add_row("latest checkpoint size", str(report.latest_checkpoint_size))
    table.add_row("signed consents", f"{consents_checked} active, each signed by its subject")
    if report.consistent_with is not None:
        table.add_row("consistent with saved checkpoint of size", str(report.consistent_with))
    if save is not None:
        table.add_row("saved checkpoint", str(save))
    if state_report is not None:
        table.add_row("state entries replayed", str(state_report.entries_replayed))
        for name, rows in sorted(state_report.rows_checked.items()):
            table.add_row(f"{name} rows agree with the ledger", str(rows))
    console.print(table)


def _check_state(session: Any, ledger: Ledger) -> Any:
    from pps.governance import state as governed  # registers the reducers of consents, budgets, objections
    from pps.ledger.replay import Reconciler

    return Reconciler(ledger, governed.registered_reducers()).run(session)


def _print_divergences(report: Any) -> None:
    """One line per difference (table, id, column, the row's value, the ledger's), unwrapped: easy to grep."""
    for d in report.divergences:
        print(d.describe())


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

    Upload them as a data provider with `pps-client data upload <dir>/tax.csv` (the schema is found beside it).
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


# --- keys --------------------------------------------------------------------------------------------


@keys_app.command("status")
def keys_status() -> None:
    """Check every KEK version against its canary and show how many data keys each wraps (exit 1 on a fault).
    Writes nothing: on a copy restored without its key directory it reports the missing keys, it makes none."""
    from pps.data.datasets.service import DatasetService
    from pps.governance.objections import ObjectionService
    from pps.governance.repair import RepairService
    from pps.infra import keyring
    from pps.infra.kms import LocalFileKMS
    from pps.services.registry import ModelRegistry

    settings = get_settings()
    with read_only_ledger() as (db, ledger, _):
        if not migrate.is_up_to_date(db.engine):
            fail("the database schema is not current; run `pps db upgrade` first")
        with user_errors():
            kms = LocalFileKMS(settings.resolved_key_dir, create=False)
        datasets = DatasetService(ledger, kms)
        holders = (
            datasets,
            ObjectionService(ledger, kms, datasets),
            RepairService(ledger, kms, datasets),
            ModelRegistry(ledger, kms),
        )
        with db.transaction(write=False) as session:
            rows = keyring.status(session, kms, holders)
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
