"""The ``pps-client`` command line: a bank's (and a provider's) side of PPS, over the API.

Every command talks to the service named by ``--url`` (``PPS_URL``) with the token of ``--token``
(``PPS_TOKEN``). Secret keys stay in local files; progress goes to stderr, a summary to stdout. Exit codes:
1 the service refused or a check failed, 3 a receipt or proof does not verify, 4 the service cannot be reached.
(``cli`` extra; the commands that compute also need ``he``, ``psi``, ``vertical`` or ``federated``.)
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pps_client._client import Client
from pps_client._exceptions import (
    APIError,
    JobFailed,
    JobTimeout,
    PPSClientError,
    TransportError,
    VerificationError,
)
from pps_wire.reasons import advice
from pps_wire.schemas import FederationOut, JobPublic
from pps_wire.subject_sign import SubjectKey

EXIT_FAILED = 1
EXIT_NOT_VERIFIED = 3
EXIT_UNREACHABLE = 4
EXIT_NOTHING_DONE = 5
"""A job that ran but scored (matched, counted) nobody: a script must not take it for success."""
DEFAULT_URL = "http://127.0.0.1:8000"

app = typer.Typer(
    help="PPS for banks and providers: PSI, encrypted scoring, aggregates, consent, joint training, uploads.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
consent_app = typer.Typer(
    help="Consent: banks ask for it; enterprises grant, approve and revoke it, signing with their own key; "
    "anyone verifies receipts.",
    no_args_is_help=True,
)
data_app = typer.Typer(
    help="A data provider's datasets: upload a file as a new version.", no_args_is_help=True
)
keys_app = typer.Typer(
    help="An enterprise's own consent-signing key: generate it here, enrol it, list and revoke.",
    no_args_is_help=True,
)
app.add_typer(consent_app, name="consent")
app.add_typer(data_app, name="data")
app.add_typer(keys_app, name="keys")
KeyFile = Annotated[
    Path,
    typer.Option(
        envvar="PPS_SUBJECT_KEY",
        help="your consent-signing key file (made by `pps-client keys generate`; keep it private)",
    ),
]

console = Console()
err_console = Console(stderr=True)

Url = Annotated[str, typer.Option(envvar="PPS_URL", help="the PPS service")]
Token = Annotated[str, typer.Option(envvar="PPS_TOKEN", help="your organisation's API token")]


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def reported() -> Iterator[None]:
    """One clear line and an exit code instead of a traceback for what the SDK raises."""
    try:
        yield
    except TransportError as exc:
        fail(exc.message, EXIT_UNREACHABLE)
    except VerificationError as exc:
        fail(f"DOES NOT VERIFY: {exc.message}", EXIT_NOT_VERIFIED)
    except APIError as exc:
        fail(f"{exc.message} [{exc.code}]")
    except PPSClientError as exc:
        fail(exc.message)


@contextmanager
def connected(url: str, token: str, *, timeout: float = 30.0) -> Iterator[Client]:
    if not token:
        fail("give your API token with --token or PPS_TOKEN")
    with reported():
        try:
            client = Client(url, token, timeout=timeout)
        except ValueError as exc:
            fail(str(exc))
        with client:
            yield client


def bar(label: str = "{task.description}") -> Progress:
    """The progress bar of long commands: label, bar, done/total, elapsed; on stderr, gone when done."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def wait_with_bar(client: Client, job: JobPublic, label: str, *, timeout: float = 3600.0) -> JobPublic:
    with bar(label) as progress:
        task = progress.add_task(job.id, total=None)

        def show(state: JobPublic) -> None:
            progress.update(task, completed=state.progress.done, total=state.progress.total or None)

        return client.jobs.wait(job.id, timeout=timeout, on_progress=show)


def read_lines(path: Path, what: str) -> list[str]:
    listed = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not listed:
        fail(f"{path} lists no {what}")
    return listed


def split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def summary(title: str, rows: Sequence[tuple[str, str]]) -> None:
    table = Table(show_header=False, title=title)
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


# --- PSI ------------------------------------------------------------------------------------------------------


@app.command("psi")
def psi(
    customers: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="your customers' USCCs, one per line")
    ],
    purpose: Annotated[str, typer.Option(help="the purpose the enterprises consented to")],
    size_only: Annotated[bool, typer.Option(help="learn only how many consented, not which")] = False,
    out: Annotated[Path | None, typer.Option(help="write the consented customers here, one per line")] = None,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Which of your customers are on the platform and consented to you for PURPOSE (private set intersection:
    only blinded codes leave; the service learns how many you asked about, not which)."""
    listed = read_lines(customers, "USCC")
    with connected(url, token, timeout=120) as client:
        try:
            with bar() as progress:
                progress.add_task("PSI: blinding, matching", total=None)
                result = client.psi.run(listed, purpose=purpose, reveal_intersection=not size_only)
        except ValueError as exc:
            fail(str(exc))
    rows = [("asked about", f"{result.client_set_size:,}"), ("consented", f"{result.size:,}")]
    if result.intersection is not None and out is not None:
        found = [c for c in dict.fromkeys(c.strip().upper() for c in listed) if c in result.intersection]
        out.write_text("".join(f"{c}\n" for c in found), encoding="utf-8")
        rows.append(("written to", str(out)))
    summary("PSI", rows)


# --- encrypted scoring ----------------------------------------------------------------------------------------


def load_model_file(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"cannot read the model file {path}: {exc}")
    if not isinstance(spec, dict) or spec.get("kind", "logistic") not in ("logistic", "scorecard"):
        fail('the model file must be a JSON object with "kind": "logistic" or "scorecard"')
    return spec


@app.command("score")
def score(
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
    vendor_key: Annotated[
        str,
        typer.Option(
            envvar="PPS_ENCLAVE_VENDOR_KEY",
            help="the enclave vendor's Ed25519 key (hex), pinned: the model is first approved in the enclave, "
            "which encrypts it under your key (a service in production runs no other model)",
        ),
    ] = "",
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Score enterprises with your model, encrypted under your own key: the service never sees the model or
    the scores. With --vendor-key a logistic model is approved in the attested enclave first (its plaintext
    goes only there) and the enclave's encryption of it is scored; the result is decrypted here."""
    from protocols.he_scoring import BankScoringKey, Scorecard, ScorecardFeature

    if not token:
        fail("give a bank's token with --token or PPS_TOKEN")
    spec = load_model_file(model_file)
    listed = read_lines(subjects, "USCC") if subjects is not None else None
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
    preprocess = spec.get("preprocess")
    with connected(url, token) as client:
        if vendor_key and spec.get("kind", "logistic") == "logistic":
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            try:
                pinned = Ed25519PublicKey.from_public_bytes(bytes.fromhex(vendor_key))
            except ValueError:
                fail("--vendor-key must be the enclave vendor's Ed25519 key, 64 hex characters")
            approval, approved = client.scoring.approve(
                bank_key,
                {"kind": "logistic", **{k: v for k, v in spec.items() if k != "kind"}},
                vendor_key=pinned,
            )
            assert approved is not None
            err_console.print(f"approved in the enclave: model {approval['model_digest'][:16]}…")
            model, preprocess = approved, None
        job = client.scoring.submit(bank_key, model, purpose=purpose, subjects=listed, preprocess=preprocess)
        wait_with_bar(client, job, "scoring (job {task.description})")
        result = client.scoring.result(job.id, bank_key, model)
    values = result.as_dict()
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["uscc", "probability" if result.probabilities is not None else "points", "not_scored"]
        )
        for code in result.subjects:
            writer.writerow([code, f"{values[code]:.6f}", ""])
        for item in result.not_scored:
            writer.writerow([item.subject, "", item.reason])
    reasons: dict[str, int] = {}
    for item in result.not_scored:
        reasons[item.reason] = reasons.get(item.reason, 0) + 1
    summary(
        "scored",
        [
            ("job", job.id),
            ("scored", f"{len(result.subjects):,}"),
            ("not scored", ", ".join(f"{n:,} {r}" for r, n in sorted(reasons.items())) or "none"),
            ("written to", str(out)),
        ],
    )
    if reasons:
        err_console.print("why some were not scored, and what to do:", highlight=False)
        for code, n in sorted(reasons.items(), key=lambda item: -item[1]):
            err_console.print(f"  {n:>7,}  {advice(code)}", highlight=False, soft_wrap=True)
    if not result.subjects:
        fail(
            f"job {job.id} scored no enterprise ({len(result.not_scored):,} not scored; reasons above and in "
            f"{out}; every reason is explained in docs/reasons.md)",
            EXIT_NOTHING_DONE,
        )


# --- aggregates -----------------------------------------------------------------------------------------------


@app.command("aggregate")
def aggregate(
    statistic: Annotated[str, typer.Argument(help="count, sum, mean or histogram")],
    purpose: Annotated[str, typer.Option(help="the purpose of the query")] = "risk_statistics",
    epsilon: Annotated[float, typer.Option(help="privacy loss this query spends")] = 0.5,
    scope: Annotated[
        str, typer.Option(help="consented, or platform (providers' opt-in C2 fields)")
    ] = "consented",
    dataset: Annotated[
        str | None, typer.Option(help="the measured dataset: tax, ... or a dataset id")
    ] = None,
    field: Annotated[str | None, typer.Option(help="a numeric field of that dataset")] = None,
    months: Annotated[str | None, typer.Option(help="YYYY-MM:YYYY-MM, both inclusive")] = None,
    bounds: Annotated[
        str | None, typer.Option(help="LOWER:UPPER clamp of each enterprise's contribution")
    ] = None,
    bins: Annotated[int | None, typer.Option(help="histogram bins over the bounds")] = None,
    group_by: Annotated[str, typer.Option(help="industry, region, size_class (comma-separated)")] = "",
    industry: Annotated[str, typer.Option(help="cohort: industries (comma-separated)")] = "",
    region: Annotated[str, typer.Option(help="cohort: regions (comma-separated)")] = "",
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Cohort statistics under output controls: small cohorts suppressed, noise added, your budget spent."""
    cohort = {k: split(v) for k, v in (("industry", industry), ("region", region)) if v}
    try:
        month_range = tuple(months.split(":")) if months else None
        bound_pair = tuple(float(b) for b in bounds.split(":")) if bounds else None
        if (month_range and len(month_range) != 2) or (bound_pair and len(bound_pair) != 2):
            raise ValueError("--months and --bounds take two values separated by ':'")
    except ValueError as exc:
        fail(str(exc))
    with connected(url, token) as client:
        try:
            answer = client.aggregates.query(
                statistic,  # type: ignore[arg-type]
                purpose=purpose,
                epsilon=epsilon,
                scope=scope,  # type: ignore[arg-type]
                dataset=dataset,
                field=field,
                months=month_range,  # type: ignore[arg-type]
                cohort=cohort,
                group_by=split(group_by),
                bounds=bound_pair,  # type: ignore[arg-type]
                bins=bins,
            )
        except ValueError as exc:
            fail(f"the query is not valid: {exc}")
    table = Table("group", statistic, "disputed inputs", title=f"{statistic} ({answer.scope})")
    for cell in answer.cells:
        value = getattr(cell, statistic, None)
        shown = (
            "-"
            if value is None
            else (", ".join(map(str, value)) if isinstance(value, list) else f"{value:,.2f}")
        )
        group = ", ".join(f"{k}={v}" for k, v in cell.group.items()) or "all"
        table.add_row(group, shown, "yes" if cell.disputed_inputs else "")
    console.print(table)
    summary(
        "budget",
        [
            ("epsilon spent", f"{answer.epsilon_spent:g}"),
            ("remaining", f"{answer.budget_remaining:g}"),
            ("minimum cohort", str(answer.min_cohort_size)),
        ],
    )


@app.command("budget")
def budget(url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Your privacy budget for aggregate queries: total, spent, remaining epsilon."""
    with connected(url, token) as client:
        b = client.aggregates.budget()
    summary(
        "privacy budget",
        [
            ("total", f"{b.total_epsilon:g}"),
            ("spent", f"{b.spent_epsilon:g}"),
            ("remaining", f"{b.remaining_epsilon:g}"),
            ("most per query", f"{b.max_epsilon_per_query:g}"),
        ],
    )


# --- consent --------------------------------------------------------------------------------------------------


@consent_app.command("request")
def consent_request(
    subjects: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="the enterprises' USCCs, one per line")
    ],
    purpose: Annotated[str, typer.Option(help="what the consent is for (GET /v1/purposes)")],
    dataset: Annotated[str, typer.Option(help="the dataset id the consent covers")],
    valid_until: Annotated[str, typer.Option(help="end of validity, e.g. 2027-01-01T00:00:00Z")],
    fields: Annotated[str, typer.Option(help='field names, comma-separated ("*": every C1 field)')] = "*",
    operations: Annotated[str, typer.Option(help="psi, score, aggregate, train, enclave")] = "psi,score",
    max_uses: Annotated[int | None, typer.Option(help="at most this many uses")] = None,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Ask enterprises for consent (each approves or denies it; the answer is the same whether or not an
    enterprise is on the platform yet)."""
    listed = read_lines(subjects, "USCC")
    try:
        until = datetime.fromisoformat(valid_until.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--valid-until {valid_until!r} is not an ISO time, e.g. 2027-01-01T00:00:00Z")
    if until.tzinfo is None:
        fail("--valid-until needs a timezone, e.g. 2027-01-01T00:00:00Z")
    made = []
    with connected(url, token) as client:
        try:
            with bar("asking for consent") as progress:
                task = progress.add_task("requests", total=len(listed))
                for code in listed:
                    made.append(
                        client.consents.request(
                            code,
                            purpose=purpose,
                            scope={dataset: split(fields)},
                            operations=split(operations),
                            valid_until=until,
                            max_uses=max_uses,
                        )
                    )
                    progress.advance(task)
        except ValueError as exc:
            fail(f"the request is not valid: {exc}")
    table = Table("consent", "subject", "state")
    for c in made:
        table.add_row(c.id, c.subject_uscc, c.state)
    console.print(table)
    console.print(f"{len(made)} request(s) sent; the enterprises decide")


@consent_app.command("verify-receipt")
def consent_verify_receipt(
    receipt: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="a receipt file (signed note)")
    ],
    public_key: Annotated[
        str | None,
        typer.Option(
            envvar="PPS_RECEIPT_KEY",
            help="the platform's receipt verifier key, pinned (default: fetched from --url, which proves less)",
        ),
    ] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Verify a consent receipt and show what was granted. Exits 3 if it does not verify."""
    from pps_client._verify import note_verifier, verify_receipt

    text = receipt.read_text(encoding="utf-8")
    with reported():
        if not public_key:
            with Client(url) as client:
                public_key = client.consents.receipt_key().verifier_key
            err_console.print(f"using the receipt key the service at {url} publishes (pin it: --public-key)")
        try:
            verifier = note_verifier(public_key)
        except ValueError as exc:
            fail(f"--public-key: {exc}")
        granted = verify_receipt(text, verifier)
    rows = [
        ("consent_id", granted.consent_id),
        ("subject", granted.subject),
        ("bank", f"{granted.bank_name} ({granted.bank_id})"),
        ("purpose", granted.purpose),
        ("operations", ", ".join(granted.operations)),
        ("valid_from", granted.valid_from.isoformat()),
        ("valid_until", granted.valid_until.isoformat()),
        ("max_uses", "unlimited" if granted.max_uses is None else str(granted.max_uses)),
        ("granted_at", granted.granted_at.isoformat()),
    ]
    rows += [("scope", f"{item.dataset_id}: {', '.join(item.fields)}") for item in granted.scope]
    summary(f"consent receipt verified ({verifier.name})", rows)


# --- vertical training ----------------------------------------------------------------------------------------


@app.command("train-vertical")
def train_vertical(
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
    measurement: Annotated[
        str | None,
        typer.Option(
            envvar="PPS_ENCLAVE_MEASUREMENT",
            help="the trusted enclave build's measurement (hex); default: computed from the enclave source "
            "installed here",
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, max=1000)] = 10,
    batch_size: Annotated[int, typer.Option(min=8)] = 256,
    learning_rate: Annotated[float, typer.Option(min=1e-6)] = 0.1,
    key_bits: Annotated[
        int, typer.Option(hidden=True, help="the coordinator's key size (1024: tests only)")
    ] = 2048,
    out: Annotated[Path, typer.Option(help="where to keep your half of the model (JSON)")] = Path(
        "vertical-model.json"
    ),
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Train a logistic regression on your labels and features joined with the platform's, without either side
    seeing the other's data: PSI alignment on consent to train, the key-holding coordinator in the attested
    enclave, your half kept here. Progress per mini-batch; the model is registered with the platform."""
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from protocols import vertical_lr as vl

    if not token:
        fail("give a bank's token with --token or PPS_TOKEN")
    try:
        pinned = Ed25519PublicKey.from_public_bytes(bytes.fromhex(vendor_key))
    except ValueError:
        fail("give the enclave vendor's key (64 hex characters) with --vendor-key or PPS_ENCLAVE_VENDOR_KEY")
    try:
        trusted = [bytes.fromhex(measurement)] if measurement else None
    except ValueError:
        fail("--measurement must be hex (64 characters)")
    own, names = split(features), split(platform_features)
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
    with connected(url, token, timeout=120) as client, bar() as progress:
        task = progress.add_task("aligning (PSI) and starting", total=None)

        def on_batch(epoch: int, batches: int) -> None:
            progress.update(
                task, description=f"training: epoch {epoch + 1}/{epochs}", completed=epoch, total=epochs
            )

        try:
            result = client.vertical.train(
                name=name,
                purpose=purpose,
                customers=customers,
                features=(x - mean) / scale,  # standardised here: the saved half records it
                labels=y,
                platform_features=names,
                vendor_key=pinned,
                config=config,
                key_bits=key_bits,
                measurements=trusted,
                on_batch=on_batch,
                standardise=False,
            )
        except vl.TrainingDiverged as exc:
            fail(str(exc))
        except ValueError as exc:
            fail(str(exc))
    g = result.guest_model
    doc = {
        "model_id": result.model.id,
        "kind": "vertical_lr",
        "features": own,
        "preprocess": {"mean": mean.tolist(), "scale": scale.tolist()},
        "weights": g.weights.tolist(),
        "intercept": g.intercept,
        "platform_features": names,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    a = result.alignment
    summary(
        "vertical training",
        [
            ("model", result.model.id),
            ("rows", f"{a.used:,} of {a.customers:,} customers (PSI on consent to train)"),
            ("left out", ", ".join(f"{n:,} {r}" for r, n in sorted(result.excluded.items())) or "none"),
            ("epochs", f"{result.epochs}" + (" (stopped early)" if result.stopped_early else "")),
            ("final loss", f"{result.losses[-1]:.5f}" if result.losses else "-"),
            ("time", f"{result.seconds:.1f} s"),
            ("your half", str(out)),
        ],
    )


# --- horizontal training --------------------------------------------------------------------------------------


def portfolio(data: Path, label: str, features: list[str]) -> tuple[Any, Any]:
    """A bank's own labelled rows from a CSV (the columns of the federation's feature schema and the label)."""
    import numpy as np

    with data.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        fail(f"{data} has no rows")
    try:
        y = np.array([int(r[label]) for r in rows], dtype=np.float64)
        x = np.array([[float(r[f]) for f in features] for r in rows], dtype=np.float64)
    except (KeyError, ValueError) as exc:
        fail(f"{data}: needs a 0/1 {label!r} column and numeric columns {features}: {exc}")
    return x.reshape(len(rows), len(features)), y


def _pinned(vendor_key: str | None) -> Any:
    if not vendor_key:
        return None
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(vendor_key))
    except ValueError:
        fail("--vendor-key must be the enclave vendor's Ed25519 key, 64 hex characters")


def take_part(
    client: Client, federation_id: str, x: Any, y: Any, poll: float, vendor_key: str | None = None
) -> FederationOut:
    """Take part until the federation ends, with a progress bar over its rounds (round 0: the joint feature
    statistics)."""
    pinned = _pinned(vendor_key)
    view = client.federations.get(federation_id)
    if view.config.get("aggregation") == "enclave" and pinned is None:
        fail("this federation aggregates in the enclave: pass --vendor-key (the vendor key you pinned)")
    with bar() as progress:
        task = progress.add_task("waiting for the other banks", total=view.rounds)
        while view.state not in ("done", "aborted"):
            view = client.federations.step(federation_id, x, y, vendor_key=pinned)
            if view.state == "running" and view.round is not None:
                progress.update(
                    task,
                    description=f"round {view.current_round}/{view.rounds}: {view.round.phase.replace('_', ' ')}",
                    completed=max(0, view.current_round - 1),
                )
            time.sleep(poll)
        progress.update(task, completed=view.rounds if view.state == "done" else view.current_round)
    return view


def federation_summary(client: Client, view: FederationOut, x: Any, y: Any) -> None:
    rows = [
        ("state", view.state),
        ("rounds", f"{view.current_round} of {view.rounds}"),
        ("banks", str(len(view.participants))),
    ]
    if view.state == "done":
        from pps_client._metrics import auc

        model = client.federations.model(view)
        found = auc(y, model.predict_proba(x)[:, 1])
        if found is not None:
            rows.append(("AUC on your own rows", f"{found:.4f}"))
        rows.append(("model", str(view.model_id)))
    if view.outcome is not None:
        rows.append(
            (
                "stopped",
                f"{view.outcome['stopped'].replace('_', ' ')} after {view.outcome['rounds_run']} rounds "
                f"(converged: {'yes' if view.outcome['converged'] else 'no'})",
            )
        )
    summary(f"federation {view.id}", rows)
    if view.state != "done":
        fail(
            f"the federation was {view.state}: {view.abort_reason or 'fewer banks than the threshold remained'}"
        )


@app.command("federate")
def federate(
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
    aggregation: Annotated[
        str,
        typer.Option(
            help="secagg (pairwise masks) or enclave (the attested enclave clips every bank's update: one bank's "
            "influence bounded; needs --vendor-key)"
        ),
    ] = "secagg",
    vendor_key: Annotated[
        str | None,
        typer.Option(envvar="PPS_ENCLAVE_VENDOR_KEY", help="the enclave vendor's Ed25519 key (hex), pinned"),
    ] = None,
    poll: Annotated[float, typer.Option(hidden=True)] = 0.5,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Start a horizontal training with other banks over your own portfolios (secure aggregation: the safe-room
    learns only the weighted sum of the updates) and take part until it ends. The others join with
    `pps-client join`."""
    names, others = split(features), split(banks)
    x, y = portfolio(data, label, names)
    with connected(url, token, timeout=120) as client:
        me = client.me().org.id
        n = len(others) + 1
        try:
            fed = client.federations.create(
                name=name,
                participants=[me, *others],
                kind="horizontal_lr",
                feature_schema=names,
                rounds=rounds,
                threshold=threshold or n // 2 + 1,
                local_epochs=local_epochs,
                aggregation=aggregation,
            )
        except ValueError as exc:
            fail(f"the federation is not valid: {exc}")
        err_console.print(
            f"federation {fed.id} created; the other banks join with: pps-client join {fed.id} ..."
        )
        view = take_part(client, fed.id, x, y, poll, vendor_key)
        federation_summary(client, view, x, y)


@app.command("join")
def join(
    federation_id: Annotated[str, typer.Argument(help="the federation (fed_...) another bank started")],
    data: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV of your own labelled portfolio")
    ],
    label: Annotated[str, typer.Option(help="the label column (1 = default)")],
    vendor_key: Annotated[
        str | None,
        typer.Option(envvar="PPS_ENCLAVE_VENDOR_KEY", help="the enclave vendor's Ed25519 key (hex), pinned"),
    ] = None,
    poll: Annotated[float, typer.Option(hidden=True)] = 0.5,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Join a horizontal training you were invited to (purpose joint_model_training) and take part until it
    ends; your rows stay here, only masked updates leave."""
    with connected(url, token, timeout=120) as client:
        view = client.federations.get(federation_id)
        x, y = portfolio(data, label, list(view.feature_schema))
        if view.state == "inviting":
            client.federations.accept(federation_id)
        view = take_part(client, federation_id, x, y, poll, vendor_key)
        federation_summary(client, view, x, y)


# --- the registry ---------------------------------------------------------------------------------------------


@app.command("models")
def models(url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Your models in the registry, with their held-out AUC and KS."""
    with connected(url, token) as client:
        found = client.models.list()
    if not found:
        console.print("no models yet: train one with `pps-client train-vertical` (or a federation)")
        return
    table = Table("name", "kind", "AUC", "KS", "registered")
    table.add_column("id", no_wrap=True)
    for m in found:
        table.add_row(
            m.name,
            m.kind,
            f"{m.metrics.auc:.4f}" if m.metrics else "-",
            f"{m.metrics.ks:.4f}" if m.metrics else "-",
            m.created_at.date().isoformat(),
            m.id,
        )
    console.print(table)


@app.command("report")
def report(
    model_id: Annotated[str, typer.Argument(help="the model (mdl_...)")],
    out: Annotated[Path, typer.Option(help="where to write the HTML page")] = Path("model-report.html"),
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Save a model's evaluation page (ROC and KS curves) to open in a browser."""
    with connected(url, token) as client:
        page = client.models.report_html(model_id)
    out.write_text(page, encoding="utf-8")
    console.print(f"wrote {out} ({len(page):,} bytes)")


# --- a provider's upload --------------------------------------------------------------------------------------

FORMATS = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".parquet": "parquet"}


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
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Upload a file as a new version of one of your datasets (created on first upload), as a data provider.

    The service validates every row before storing anything and encrypts what it stores; problems are listed
    with their row numbers.
    """
    if not token:
        fail("give a data provider's token with --token or PPS_TOKEN")
    fmt = fmt or FORMATS.get(file.suffix.lower())
    if fmt not in ("csv", "ndjson", "parquet"):
        fail(f"cannot tell the format of {file.name}; pass --format csv|ndjson|parquet")
    schema_path = schema or file.with_name(file.name.split(".")[0] + ".schema.json")
    if not schema_path.exists():
        fail(f"no schema: pass --schema (looked for {schema_path})")
    try:
        declared = json.loads(schema_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        fail(f"{schema_path} is not JSON: {exc}")
    name = name or file.name.split(".")[0]
    size = file.stat().st_size
    with connected(url, token) as client:
        existing = [d for d in client.datasets.list() if d.name == name]
        try:
            ds = existing[0] if existing else client.datasets.create(name, declared, description=description)
        except ValueError as exc:
            fail(f"{schema_path} is not a dataset schema: {exc}")
        with bar("uploading {task.description}") as progress:
            task = progress.add_task(file.name, total=size)

            def chunks() -> Iterator[bytes]:
                with file.open("rb") as fh:
                    while block := fh.read(1 << 20):
                        progress.update(task, advance=len(block))
                        yield block

            try:
                version = client.datasets.upload(ds.id, chunks(), fmt=fmt)  # type: ignore[arg-type]
            except APIError as exc:
                progress.stop()
                problems = exc.details.get("problems") or []
                if problems:
                    table = Table("row", "column", "problem", title="upload refused — nothing was stored")
                    for p in problems:
                        table.add_row(str(p.get("row")), p.get("column") or "", str(p.get("message")))
                    err_console.print(table)
                    fail(
                        f"{exc.details.get('problem_count', len(problems))} problem(s); fix the file and retry"
                    )
                raise
    summary(
        "uploaded",
        [
            ("dataset", f"{ds.name} ({ds.id})"),
            ("version", str(version.version)),
            ("rows", f"{version.rows:,}"),
            ("bytes", f"{size:,}"),
            ("encrypted under KEK version", str(version.kek_version)),
        ],
    )


def main() -> None:
    try:
        app()
    except (JobFailed, JobTimeout) as exc:
        err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()


# --- enrolment and an enterprise's own key (issue 24) ---------------------------------------------------


@app.command("enrol")
def enrol(
    code: Annotated[
        str, typer.Argument(help="the one-time enrolment code you received out of band (enr_...)")
    ],
    label: Annotated[str, typer.Option(help="what the token is for")] = "enrolment",
    url: Url = DEFAULT_URL,
) -> None:
    """Redeem your organisation's one-time enrolment code for its first API token (printed once)."""
    with reported(), Client(url) as client:
        enrolled = client.orgs.enrol(code, label=label)
    err_console.print(
        f"enrolled {enrolled.org.name} ({enrolled.org.id}); token {enrolled.token.id} expires "
        f"{enrolled.token.expires_at.isoformat(timespec='seconds')}. API token (shown once, store it now):"
    )
    print(enrolled.token.token)


def _load_key(path: Path) -> SubjectKey:
    try:
        return SubjectKey.from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read the key file {path}: {exc.strerror}")
    except ValueError as exc:
        fail(f"{path}: {exc}")


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option(help="where to write the new key (refused if it exists)")],
    algorithm: Annotated[str, typer.Option(help="ed25519, or sm2 (GB/T 32918, the 国密 option)")] = "ed25519",
) -> None:
    """Make a consent-signing key on this machine. Only its public half is ever sent (at enrolment)."""
    if out.exists():
        fail(f"{out} exists; not overwriting a key")
    try:
        key = SubjectKey.generate(algorithm)
    except ValueError as exc:
        fail(str(exc))
    out.write_text(key.to_json(), encoding="utf-8")
    out.chmod(0o600)
    console.print(f"key {key.key_id} ({key.algorithm}) written to {out}")


@keys_app.command("enrol")
def keys_enrol(
    key: KeyFile,
    representative_name: Annotated[str, typer.Option(help="your legal representative's name")],
    representative_id: Annotated[
        str, typer.Option(help="the representative's resident ID number (checked, never stored)")
    ],
    endorse_with: Annotated[
        Path | None, typer.Option(help="rotation: a key file of one of your active keys")
    ] = None,
    label: Annotated[str, typer.Option(help="a name for the key")] = "default",
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Enrol your key (an enterprise) after the real-name check of your legal representative."""
    subject_key = _load_key(key)
    endorser = _load_key(endorse_with) if endorse_with else None
    with connected(url, token) as client:
        enrolled = client.keys.enrol(
            subject_key,
            representative_name=representative_name,
            representative_id=representative_id,
            label=label,
            endorse_with=endorser,
        )
    console.print(
        f"enrolled key {enrolled.key_id} ({enrolled.algorithm}); real-name check {enrolled.verification_ref}"
    )


@keys_app.command("list")
def keys_list(url: Url = DEFAULT_URL, token: Token = "") -> None:
    """Your enrolled keys."""
    with connected(url, token) as client:
        found = client.keys.list()
    table = Table("key", "algorithm", "label", "enrolled", "revoked")
    for k in found:
        table.add_row(
            k.key_id,
            k.algorithm,
            k.label,
            k.enrolled_at.isoformat(timespec="seconds"),
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="sk_...")], url: Url = DEFAULT_URL, token: Token = ""
) -> None:
    """Revoke one of your keys: what it signed before stays valid, nothing it signs later is accepted."""
    with connected(url, token) as client:
        client.keys.revoke(key_id)
    console.print(f"revoked {key_id}")


@consent_app.command("grant")
def consent_grant(
    bank: Annotated[str, typer.Argument(help="the bank's organisation id (org_...)")],
    purpose: Annotated[str, typer.Option(help="what the consent is for (GET /v1/purposes)")],
    dataset: Annotated[str, typer.Option(help="the dataset id the consent covers")],
    valid_until: Annotated[str, typer.Option(help="end of validity, e.g. 2027-01-01T00:00:00Z")],
    key: KeyFile,
    fields: Annotated[str, typer.Option(help='field names, comma-separated ("*": every C1 field)')] = "*",
    operations: Annotated[str, typer.Option(help="psi, score, aggregate, train, enclave")] = "psi,score",
    max_uses: Annotated[int | None, typer.Option(help="at most this many uses")] = None,
    granularity: Annotated[
        str | None,
        typer.Option(help="what a score may release: decision, grade or score (default: the purpose's own)"),
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Grant a bank consent (an enterprise), signed here with your own key (the granularity is signed too)."""
    try:
        until = datetime.fromisoformat(valid_until.replace("Z", "+00:00"))
    except ValueError:
        fail(f"--valid-until {valid_until!r} is not an ISO time, e.g. 2027-01-01T00:00:00Z")
    if until.tzinfo is None:
        fail("--valid-until needs a timezone, e.g. 2027-01-01T00:00:00Z")
    signer = _load_key(key)
    with connected(url, token) as client:
        try:
            granted = client.consents.grant(
                bank,
                purpose=purpose,
                scope={dataset: split(fields)},
                operations=split(operations),
                valid_until=until,
                max_uses=max_uses,
                granularity=granularity,
                key=signer,
            )
        except ValueError as exc:
            fail(f"the grant is not valid: {exc}")
    console.print(f"granted {granted.id} to {granted.bank_org_id}, signed with {signer.key_id}")


@consent_app.command("approve")
def consent_approve(
    consent_id: Annotated[str, typer.Argument(help="the bank's request (cns_...)")],
    key: KeyFile,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Approve a bank's request (an enterprise), signing its terms here with your own key."""
    signer = _load_key(key)
    with connected(url, token) as client:
        approved = client.consents.approve(consent_id, key=signer)
    console.print(f"approved {approved.id} for {approved.bank_org_id}, signed with {signer.key_id}")


@consent_app.command("revoke")
def consent_revoke(
    consent_id: Annotated[str, typer.Argument(help="the consent to withdraw (cns_...)")],
    key: Annotated[
        Path | None, typer.Option(envvar="PPS_SUBJECT_KEY", help="sign the withdrawal too (optional)")
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = "",
) -> None:
    """Withdraw a consent (an enterprise), effective at once."""
    signer = _load_key(key) if key else None
    with connected(url, token) as client:
        revoked = client.consents.revoke(consent_id, key=signer)
    console.print(f"revoked {revoked.id}")
