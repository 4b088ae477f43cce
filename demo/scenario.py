"""The end-to-end scenario of ``make demo`` on the embedded default (SQLite, in-process).

It grows with the product. Today: bootstrap an operator; onboard data providers, banks, an auditor and
enterprises over the real HTTP API; show that the role and tenant checks refuse what they must; providers
upload synthetic platform data (validated, encrypted at rest); enterprises grant, revoke, approve and deny
consent; the policy engine decides per enterprise with reasons; an enterprise reads its own records and
verifies its access history; the operator rotates the key-encryption key; the auditor checks checkpoint
consistency; the whole ledger is verified offline; and editing one row in the database is caught. Every step is checked; the
demo exits non-zero if any check fails.
"""

from __future__ import annotations

import base64
import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from demo.households import run_household_step
from demo.operator import REP_IDS, operator_bounds
from demo.repair import add_demo_records, months_back, repair_step
from demo.reports import report_step
from demo.training import german_credit_step, horizontal_step, vertical_steps, write_report
from models.synth import generate
from pps import errors
from pps.identity.uscc import ALPHABET, new_uscc
from pps.infra import keyring
from pps.infra.settings import Settings
from pps.infra.storage.tables import Role, utcnow
from pps.ledger.entry import OPERATOR
from pps.ledger.verify import verify_ledger
from pps.runtime import Runtime
from pps_client import (
    APIError,
    AuthenticationError,
    Client,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    Refused,
    note_verifier,
    verify_entry,
    verify_receipt,
)
from pps_wire.schemas import OrgPublic
from pps_wire.subject_sign import SubjectKey
from protocols.he_scoring import BankScoringKey

DEMO_ENTERPRISES = 20_000
DEMO_TIMEOUT_S = 300.0
"""The SDK clients' timeout: on a loaded machine a first aggregate (OpenDP's import) can take over the default 30 s."""


def demo_usccs(n: int, seed: int = 7) -> list[str]:
    """``n`` valid, distinct USCCs of enterprises registered in Xining (630100)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible demo data, not secrets
    codes: set[str] = set()
    while len(codes) < n:
        org_body = "".join(rng.choice(ALPHABET) for _ in range(8))
        codes.add(new_uscc("91" + "630100", org_body))
    return sorted(codes)


def _refused_code(call: Callable[[], Any]) -> str | None:
    try:
        call()
    except APIError as exc:
        return exc.code
    return None


class Checks:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.rows: list[tuple[str, bool, str]] = []

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        self.rows.append((what, ok, detail))
        mark = "[green]✓[/]" if ok else "[bold red]✗[/]"
        self.console.print(f"  {mark} {what}" + (f" [dim]({detail})[/]" if detail else ""))

    def refused(self, what: str, expected: type[APIError], code: str, call: Callable[[], Any]) -> None:
        """``call`` must be refused by the service with ``expected`` and the error code ``code``."""
        try:
            call()
        except expected as exc:
            self.check(what, exc.code == code, f"{exc.code}: {exc.message}")
            return
        except APIError as exc:
            self.check(what, False, f"refused with {type(exc).__name__} {exc.code}, expected {code}")
            return
        self.check(what, False, "was allowed")

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.rows)


def run_demo(data_dir: Path, console: Console) -> bool:
    from api.app import create_app
    from api.live import running_server

    t0 = time.perf_counter()
    shutil.rmtree(data_dir, ignore_errors=True)
    # the demo never touches a configured deployment: its own SQLite file and keys, whatever PPS_* says
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        database_url=f"sqlite:///{(data_dir / 'pps.db').as_posix()}",
        key_dir=data_dir / "keys",
        environment="development",
        checkpoint_interval_seconds=0,
        psi_workers=1,  # a 2-subject set: no worker processes needed
    )
    rt = Runtime.build(settings)
    checks = Checks(console)

    console.rule("[bold]1. Bootstrap the platform operator")
    with rt.db.transaction() as session:
        admin_org = rt.identity.create_org(
            session,
            name="Qinghai credit platform operator (青信融)",
            role=Role.platform_admin,
            uscc=None,
            actor=OPERATOR,
        )
        admin_token = rt.identity.issue_token(
            session, org=admin_org, label="bootstrap", ttl=timedelta(days=1), actor=OPERATOR
        ).secret
    checks.check("operator organisation and first token created", True, admin_org.id)

    app = create_app(runtime=rt)
    with running_server(app) as url:
        console.print(f"  API running at {url}")
        admin = Client(url, admin_token, timeout=DEMO_TIMEOUT_S)

        console.rule("[bold]2. Onboard organisations over the API")
        # the data's window ends last month, so that today's dishonesty records meet tax data of their time
        data = generate(DEMO_ENTERPRISES, seed=11, start=months_back(utcnow().date(), 24))
        enterprises = [str(u) for u in data.registry.columns["uscc"][:5]]
        data, demo_records = add_demo_records(data, enterprises)
        tokens: dict[str, str] = {}
        keys: dict[str, SubjectKey] = {}
        orgs: dict[str, OrgPublic] = {}
        plan: list[tuple[str, str, str | None]] = [
            ("Qinghai Market Regulation", "data_provider", None),
            ("Qinghai Tax Bureau", "data_provider", None),
            ("State Grid Qinghai", "data_provider", None),
            ("Xining Intermediate Court", "data_provider", None),
            ("Bank A", "bank", None),
            ("Bank B", "bank", None),
            ("Bank C", "bank", None),
            ("PBoC Xining audit office", "auditor", None),
        ]
        plan += [(f"Enterprise {i + 1}", "subject", code) for i, code in enumerate(enterprises)]
        anonymous = Client(url)
        for name, role, uscc in plan:
            created = admin.orgs.create(name, role, uscc=uscc)
            orgs[name] = created
            # the code goes to the organisation out of band (a letter); it mints its own first token with it
            tokens[name] = anonymous.orgs.enrol(created.enrolment_code, label="demo").token.token
        table = Table("organisation", "role", "id", "USCC")
        for name, org in orgs.items():
            table.add_row(name, org.role.value, org.id, org.uscc or "")
        console.print(table)
        checks.check(
            f"{len(plan)} organisations onboarded, each minting its first token from a one-time enrolment code",
            len(orgs) == len(plan),
        )
        for i in range(len(enterprises)):  # each enterprise's key, made and kept on its own device
            name = f"Enterprise {i + 1}"
            keys[name] = SubjectKey.generate("sm2" if i == 0 else "ed25519")
            with Client(url, tokens[name]) as itself:
                itself.keys.enrol(
                    keys[name],
                    representative_name=f"Legal representative {i + 1}",
                    representative_id=REP_IDS[i],
                )
        checks.check(
            "each enterprise enrolled its own consent-signing key after the real-name step (Enterprise 1: SM2)",
            len(keys) == len(enterprises),
        )

        client = {
            name: Client(url, token, timeout=DEMO_TIMEOUT_S, subject_key=keys.get(name))
            for name, token in tokens.items()
        }
        bank_a, bank_c = client["Bank A"], client["Bank C"]
        auditor = client["PBoC Xining audit office"]
        enterprise = client["Enterprise 1"]

        console.rule("[bold]3. Roles and tenants are enforced; bad input changes nothing")
        checks.check("Bank A knows who it is", bank_a.me().org.name == "Bank A")
        checks.refused(
            "Bank A may not onboard organisations",
            PermissionDenied,
            "role_not_allowed",
            lambda: bank_a.orgs.create("X", "bank"),
        )
        checks.refused(
            "Bank A cannot see Bank B", NotFound, "not_found", lambda: bank_a.orgs.get(orgs["Bank B"].id)
        )
        checks.refused(
            "Bank A cannot read the whole ledger", PermissionDenied, "role_not_allowed", bank_a.ledger.entries
        )
        size_before = auditor.ledger.checkpoint().tree_size
        checks.refused(
            "an enterprise with a wrong USCC check character is refused",
            InvalidRequest,
            "invalid_uscc",
            lambda: admin.orgs.create("Bad enterprise", "subject", uscc=demo_usccs(1, seed=99)[0][:17] + "0"),
        )
        checks.check(
            "the refused request left no trace", auditor.ledger.checkpoint().tree_size == size_before
        )
        bank_c_token = bank_c.me().token_id
        second_c = bank_c.tokens.issue(orgs["Bank C"].id, label="demo, second token").token
        bank_c.tokens.revoke(bank_c_token)
        checks.refused(
            "Bank C's revoked token stops working at once", AuthenticationError, "token_revoked", bank_c.me
        )
        tokens["Bank C"] = second_c

        console.rule(
            f"[bold]4. Providers upload {DEMO_ENTERPRISES:,} enterprises' data, validated and encrypted"
        )
        synth_dir = data_dir / "synth"
        uploads = {
            "Qinghai Market Regulation": data.registry,
            "Qinghai Tax Bureau": data.tax,
            "State Grid Qinghai": data.utilities,
            "Xining Intermediate Court": data.court,
        }
        datasets: dict[str, str] = {}
        up = Table("provider", "dataset", "rows", "stored as")
        for provider, tbl in uploads.items():
            tbl.write_csv(synth_dir)
            ds = client[provider].datasets.create(tbl.name, tbl.schema, description=f"synthetic {tbl.name}")
            version = client[provider].datasets.upload(
                ds.id, (synth_dir / f"{tbl.name}.csv").read_bytes(), fmt="csv"
            )
            datasets[tbl.name] = ds.id
            up.add_row(provider, tbl.name, f"{version.rows:,}", f"AES-256-GCM, KEK v{version.kek_version}")
        console.print(up)
        checks.check("four datasets uploaded and encrypted at rest", len(datasets) == 4)
        bad_rows = b"uscc,month,taxable_sales,tax_paid\n" + enterprises[0][:17].encode() + b"0,2024-13,x,1\n"
        checks.refused(
            "a malformed upload is refused row by row and stores nothing",
            InvalidRequest,
            "upload_rejected",
            lambda: client["Qinghai Tax Bureau"].datasets.upload(datasets["tax"], bad_rows, fmt="csv"),
        )
        checks.refused(
            "a bank cannot upload data",
            PermissionDenied,
            "role_not_allowed",
            lambda: bank_a.datasets.upload(datasets["tax"], bad_rows, fmt="csv"),
        )
        catalogue = bank_a.datasets.catalog()
        checks.check(
            "Bank A discovers the catalogue: columns, types, classes — no values",
            {c.name for c in catalogue} == set(datasets) and all(c.rows is not None for c in catalogue),
        )

        console.rule("[bold]5. Enterprises decide who may use their data, for what")
        terms: dict[str, Any] = {
            "purpose": "loan_underwriting",
            "scope": {
                datasets["tax"]: ["taxable_sales", "tax_paid"],
                datasets["utilities"]: ["arrears", "electricity_kwh"],
            },
            "operations": ["psi", "score"],
            "granularity": "score",
            "valid_until": utcnow() + timedelta(days=90),
        }
        e = [client[f"Enterprise {i + 1}"] for i in range(5)]
        g1 = e[0].consents.grant(orgs["Bank A"].id, **terms)
        g2 = e[1].consents.grant(orgs["Bank A"].id, **terms)
        e[1].consents.revoke(g2.id)
        r3 = bank_a.consents.request(enterprises[2], **terms, max_uses=12)
        e[2].consents.approve(r3.id)
        r4 = bank_a.consents.request(enterprises[3], **terms)
        e[3].consents.deny(r4.id, "we bank elsewhere")
        console.print(
            "  Enterprise 1 grants Bank A; Enterprise 2 grants and revokes; Enterprise 3 approves Bank A's"
        )
        console.print("  request (12 uses); Enterprise 4 denies it; Enterprise 5 does nothing")
        receipt_key = note_verifier(Client(url).consents.receipt_key().verifier_key)
        receipt = bank_a.consents.receipt(g1.id)
        granted = verify_receipt(receipt, receipt_key)
        checks.check(
            "Bank A verifies Enterprise 1's signed consent receipt offline",
            granted.consent_id == g1.id and granted.subject == enterprises[0],
        )
        checks.refused(
            "a consent for a field that does not exist is refused",
            InvalidRequest,
            "invalid_input",
            lambda: e[4].consents.grant(
                orgs["Bank A"].id, **{**terms, "scope": {datasets["tax"]: ["profit"]}}
            ),
        )
        checks.refused(
            "court case numbers (class C3) can never be granted",
            InvalidRequest,
            "invalid_input",
            lambda: e[4].consents.grant(
                orgs["Bank A"].id, **{**terms, "scope": {datasets["court"]: ["case_id"]}}
            ),
        )

        operator_bounds(console, checks, admin, anonymous, orgs, enterprises, keys, tokens, url)

        console.rule(
            "[bold]6. The policy engine decides, per enterprise, with reasons; PSI finds the consented"
        )
        fields = {datasets["tax"]: ["tax_paid"], datasets["utilities"]: ["arrears"]}
        decided = bank_a.consents.check(
            enterprises, fields=fields, operation="score", purpose="loan_underwriting"
        )
        pol = Table("enterprise", "allowed", "reason / consent")
        for i, d in enumerate(decided.decisions):
            pol.add_row(
                f"Enterprise {i + 1}",
                "yes" if d.allowed else "no",
                (d.consent_id if d.allowed else d.reason) or "",
            )
        console.print(pol)
        checks.check(
            "Bank A may score Enterprises 1 and 3 only; the others are denied with their reasons",
            [d.allowed for d in decided.decisions] == [True, False, True, False, False]
            and decided.denied == {"revoked": 1, "denied": 1, "no_grant": 1},
        )
        checks.check(
            "Bank B, with no consent, may score nobody",
            client["Bank B"]
            .consents.check(enterprises, fields=fields, operation="score", purpose="loan_underwriting")
            .allowed
            == 0,
        )
        applicants = [*enterprises, *demo_usccs(3, seed=5)]  # three applicants are not on the platform
        found = bank_a.psi.run(applicants, purpose="loan_underwriting")
        console.print(
            f"  PSI: Bank A's {len(applicants)} applicants against the {found.server_set_size} enterprises that "
            f"consented to it: {found.size} match"
        )
        checks.check(
            "PSI: Bank A learns exactly which applicants consented to it (Enterprises 1 and 3), nothing more",
            found.intersection == frozenset({enterprises[0], enterprises[2]}) and found.server_set_size == 2,
        )

        console.rule("[bold]6b. Bank A scores its applicants with its own encrypted model")
        features = {f.name: f for f in bank_a.scoring.features()}
        weights = {
            "log_sales_mean_last6": -0.35,
            "tax_months_since_last_filing": 0.30,
            "log_max_arrears": 0.15,
            "arrears_months": 0.10,
        }
        checks.check(
            "the feature catalogue names features, units, resolution and the fields each reads — no values",
            all(features[n].available for n in weights)
            and "values" not in features["log_max_arrears"].model_dump(),
        )
        key = BankScoringKey.create()  # the secret key never leaves Bank A
        vendor = rt.enclave.vendor_public_key
        # a model crafted to read a feature back (all weight on sales) is refused in the enclave, with why
        checks.refused(
            "a model crafted to read sales back is refused in the enclave, naming the rule it breaks",
            Refused,
            "model_refused",
            lambda: bank_a.scoring.approve(
                key,
                {"kind": "logistic", "weights": {"log_sales_mean_last6": 1.0}, "bias": 0.0},
                vendor_key=vendor,
            ),
        )
        spec = {
            "kind": "logistic",
            "weights": weights,
            "bias": -1.0,
            "preprocess": {"log_sales_mean_last6": {"center": 11.0, "scale": 2.0}},
            "release": {"threshold": 0.2},
        }
        approval, model = bank_a.scoring.approve(key, spec, vendor_key=vendor)
        assert model is not None
        shares = ", ".join(f"{k} {v:.0%}" for k, v in approval["verdict"]["shares"].items())
        console.print(
            f"  the enclave approves Bank A's model (variance shares: {shares}) and encrypts it itself"
        )
        checks.check(
            "a bank's own encryption of a model is not run: only the one the enclave approved and encrypted",
            _refused_code(
                lambda: bank_a.scoring.score(
                    key,
                    key.encrypt_model(weights, -1.0),
                    purpose="loan_underwriting",
                    subjects=applicants[:1],
                )
            )
            == "model_not_approved",
        )
        # Enterprise 5 consents at grade granularity: no score leaves about it, only its grade
        e[4].consents.grant(orgs["Bank A"].id, **{**terms, "granularity": "grade"})
        scored = bank_a.scoring.score(key, model, purpose="loan_underwriting", subjects=applicants)
        out = Table("applicant", "probability of default", "or why not scored")
        names = {code: f"Enterprise {i + 1}" for i, code in enumerate(enterprises)}
        probability = scored.as_dict()
        reason = {r.subject: r.reason for r in scored.not_scored}
        for code in applicants:
            out.add_row(
                names.get(code, code),
                f"{probability[code]:.4f}" if code in probability else "",
                reason.get(code, ""),
            )
        console.print(out)
        with rt.db.transaction(write=False) as session:
            feature_table = rt.features.table(session)
        _, rows, _ = feature_table.rows(scored.subjects)
        x = feature_table.matrix(list(weights), rows)
        x[:, 0] = (x[:, 0] - 11.0) / 2.0
        plain = 1 / (1 + np.exp(-(-1.0 + x @ np.array(list(weights.values())))))
        # an approved model's logits carry noise at its release error (its PD rounded to the score resolution,
        # in log-odds): the encrypted path tells no more than the rounded PD would
        tau = float(approval["release_error"])
        checks.check(
            f"Bank A decrypts scores for Enterprises 1 and 3 only, equal to plaintext scoring up to the noise of "
            f"the model's release error ({tau:.3f} log-odds)",
            scored.subjects == [enterprises[0], enterprises[2]]
            and scored.probabilities is not None
            and float(np.max(np.abs(scored.probabilities - plain))) < 5 * tau * 0.25 + 1e-3,
        )
        checks.check(
            "Enterprise 5 consented at grade granularity: the encrypted path gives Bank A no score for it",
            reason.get(enterprises[4]) == "granularity",
        )
        graded = bank_a.scoring.graded(
            approval["id"],
            approval["model_digest"],
            purpose="loan_underwriting",
            vendor_key=vendor,
            subjects=[enterprises[0], enterprises[4]],
        )
        console.print(
            f"  inside the enclave: Enterprise 1 -> {graded[enterprises[0]]}, Enterprise 5 -> {graded[enterprises[4]]}"
        )
        checks.check(
            "Enterprise 5's consent at grade is honoured: Bank A gets a grade and its PD band, no score",
            set(graded[enterprises[4]]) == {"grade", "band"} and "pd" in graded[enterprises[0]],
        )
        seen = e[4].scoring.disclosures()["disclosures"]
        checks.check(
            "Enterprise 5 sees which bank received which model's output about it, at which granularity",
            [(d["bank_org_id"], d["granularity"]) for d in seen] == [(orgs["Bank A"].id, "grade")],
        )
        checks.refused(
            "a context that carries the secret key is refused and never stored",
            InvalidRequest,
            "he_context_has_secret_key",
            lambda: bank_a.request(
                "POST",
                "/v1/scoring",
                json={
                    "purpose": "loan_underwriting",
                    "subjects": enterprises[:1],
                    "context": base64.b64encode(key.secret_context_bytes()).decode(),
                    "model": base64.b64encode(model.to_bytes()).decode(),
                },
            ),
        )
        stats = bank_a.aggregates.query(
            "count", scope="platform", purpose="risk_statistics", epsilon=0.5, group_by=["industry"]
        )
        largest = sorted(stats.cells, key=lambda c: -(c.count or 0))[:3]
        console.print(
            "  Platform statistics (ε = 0.5, cells under "
            f"{stats.min_cohort_size} enterprises suppressed): "
            + ", ".join(f"industry {c.group['industry']} ≈ {c.count or 0:.0f}" for c in largest)
        )
        checks.check(
            "a differentially private count by industry is answered and the budget spent",
            bool(stats.cells) and bank_a.aggregates.budget().spent_epsilon >= 0.5,
        )
        spent = bank_a.aggregates.budget().spent_epsilon
        tiny = bank_a.aggregates.query(
            "count", scope="consented", purpose="loan_underwriting", epsilon=0.1, cohort={"industry": ["C"]}
        )
        checks.check(
            "a cohort below the minimum size (Bank A's consented manufacturers) is suppressed: nothing released, "
            "no budget spent",
            tiny.cells == [] and bank_a.aggregates.budget().spent_epsilon == spent,
            f"minimum cohort {tiny.min_cohort_size}",
        )

        console.rule("[bold]6c. Enterprise 1 disputes a tax record; the bureau corrects it; Bank A is told")
        tax = next(d for d in enterprise.datasets.my_records() if d.dataset == "tax")
        row = max(tax.rows, key=lambda r: str(r["month"]))  # its latest filing
        filed = enterprise.objections.file(
            datasets["tax"],
            ["taxable_sales"],
            "an amended return raised these sales; the bureau still holds the first filing",
            record_key=row["month"],
        )
        console.print(
            f"  Enterprise 1 disputes its taxable sales of {row['taxable_sales']:,.0f} for {row['month']} "
            f"(the bureau must answer by {filed.due_at.date().isoformat()})"
        )
        again = bank_a.scoring.score(key, model, purpose="loan_underwriting", subjects=[enterprises[0]])
        checks.check(
            "while the objection is open, Bank A's new score says which input is disputed (never its value)",
            any(d.subject == enterprises[0] for d in again.disputed),
        )
        bureau = client["Qinghai Tax Bureau"]
        amended = round(float(row["taxable_sales"]) * 1.25 + 1.0, 2)
        bureau.objections.accept(
            bureau.objections.list(state="open")[0].id, {"taxable_sales": amended}, note="amended return"
        )
        corrected = next(d for d in enterprise.datasets.my_records() if d.dataset == "tax")
        fixed = next(r for r in corrected.rows if r["month"] == row["month"])
        notices = bank_a.objections.corrections()
        console.print(
            f"  The bureau accepts: a new version of the tax dataset; Bank A has {len(notices)} correction "
            "notice(s) for results built on the old value"
        )
        checks.check(
            "the correction makes a new dataset version and Bank A is told which results to redo",
            fixed["taxable_sales"] == amended and any(n.subject_uscc == enterprises[0] for n in notices),
        )

        console.rule("[bold]7. An enterprise reads its own records and who touched them, with proofs")
        own = enterprise.datasets.my_records()
        for held in own:
            console.print(f"  {held.provider} / {held.dataset}: {len(held.rows)} row(s) about Enterprise 1")
        checks.check(
            "Enterprise 1 sees its own rows in every dataset, and no one else's",
            bool(own) and all(r["uscc"] == enterprises[0] for held in own for r in held.rows),
        )
        pinned = note_verifier(Client(url).ledger.public_key().verifier_key)
        docs = [verify_entry(item, pinned).entry for item in enterprise.ledger.mine().items]
        for doc in docs:
            console.print(f"  entry {doc.index}: {doc.action} by {doc.actor.role} at {doc.time.isoformat()}")
        actions = [d.action for d in docs]
        checks.check(
            "its history (onboarding, consent, Bank A's policy check, its self-query) is proven against the checkpoint",
            # onboarded by the operator with a one-time code, which the enterprise redeemed itself for its first
            # token, then its own key enrolled after the real-name step (issue 24)
            actions[:5]
            == ["org.create", "org.enrolment_code", "org.enrol", "token.issue", "subject_key.enrol"]
            and {"consent.grant", "policy.admit", "subject.self_query"} <= set(actions),
        )

        console.rule("[bold]7b. Credit repair: a penalty, an application, corroboration, approval, notices")
        made = repair_step(
            console,
            checks.check,
            admin=admin,
            url=url,
            data=data,
            records=demo_records,
            clients={code: client[f"Enterprise {i + 1}"] for i, code in enumerate(enterprises)},
            bank_a=bank_a,
            bank_a_id=orgs["Bank A"].id,
            datasets=datasets,
            names={code: f"Enterprise {i + 1}" for i, code in enumerate(enterprises)},
            bureau=client["Qinghai Tax Bureau"],
            synth_dir=synth_dir,
            vendor_key=rt.enclave.vendor_public_key,
        )

        console.rule("[bold]8. The operator rotates the key-encryption key")
        readable = len(enterprise.datasets.my_records())  # step 7b may have added its dishonesty records
        with rt.db.transaction() as session:
            dataset_keys = sum(rt.datasets.keys_by_kek_version(session).values())
            wrapped_total = sum(keyring.wrapped_counts(session, rt.key_holders).values())
            rotation = keyring.rotate(session, rt.kms, rt.key_holders, rt.ledger, actor=OPERATOR)
        checks.check(
            f"KEK v{rotation.version}: all {rotation.rewrapped} data keys (5 datasets, tax in 2 versions, the "
            "objections, the repair applications) re-wrapped, no data re-encrypted, still readable",
            dataset_keys == 5 + made["datasets"]
            and rotation.rewrapped == wrapped_total == dataset_keys + 1 + made["objections"] + made["repairs"]
            and len(enterprise.datasets.my_records()) == readable >= len(own),
        )

        console.rule("[bold]9. The auditor checks that history only grows")
        first = auditor.ledger.checkpoint()
        saved_note = first.note
        (data_dir / "auditor-checkpoint.note").write_text(saved_note, encoding="utf-8")
        client["Bank B"].tokens.issue(orgs["Bank B"].id, label="rotation")
        second = auditor.ledger.checkpoint()
        auditor.ledger.verify_consistency(saved_note, second.note, pinned)
        checks.check(
            f"checkpoint {second.tree_size} is consistent with saved checkpoint {first.tree_size}",
            second.tree_size > first.tree_size,
        )
        consent_entries = auditor.ledger.entries(action="consent.*", limit=500).items
        checks.check(
            "the auditor filters the ledger: every consent step is there",
            # 7 of steps 2-5; the shadow bank's request (3b) and its denial when two operators offboard the
            # shadow bank; Enterprise 5's grade consent (6b); and the credit-repair step's grants
            len(consent_entries) == 10 + made["consents"],
            f"{len(consent_entries)} consent entries",
        )

        console.rule(
            "[bold]9a. A Haixi herding household: separate consent, 农牧贷 rating, an approved model, free reports"
        )
        run_household_step(
            url,
            admin_token,
            tokens["Bank A"],
            orgs["Bank A"].id,
            data_dir / "pps.db",
            checks,
            console,
            rt.enclave.vendor_public_key,
        )

        console.rule("[bold]9b. Bank A and the platform train a joint model; nobody sees the other's data")
        figures = vertical_steps(
            rt, url, console, checks.check, data, orgs["Bank A"].id, tokens["Bank A"], data_dir
        )
        german_credit_step(console, checks.check, figures)

        console.rule("[bold]9c. Three banks train one model over their own portfolios (secure aggregation)")
        horizontal_step(
            url,
            console,
            checks.check,
            [(b, orgs[b].id, tokens[b]) for b in ("Bank A", "Bank B", "Bank C")],
            figures,
        )

        console.rule("[bold]9d. The standard credit report: a consenting and a non-consenting enterprise")
        report_step(
            console,
            checks.check,
            bank_a=bank_a,
            bank_a_id=orgs["Bank A"].id,
            clients={code: client[f"Enterprise {i + 1}"] for i, code in enumerate(enterprises)},
            names={code: f"Enterprise {i + 1}" for i, code in enumerate(enterprises)},
            datasets=datasets,
            records=demo_records,
            out_dir=data_dir,
        )

    console.rule("[bold]10. Offline verification of the whole ledger")
    with rt.db.transaction(write=False) as session:
        report = verify_ledger(session, rt.ledger, against=saved_note)
    checks.check(
        "pps audit verify: every entry, node and checkpoint re-derived",
        report.consistent_with == first.tree_size,
        f"{report.tree_size} entries, root {report.root_hash.hex()[:16]}…",
    )
    state = rt.check_state()
    checks.check(
        "pps audit verify --state: consents, uses, budgets, objections, subjects' keys and signatures rebuilt from the ledger match their rows",
        state.ok,
        f"{state.entries_replayed} entries replayed, rows compared: "
        + ", ".join(f"{t} {n}" for t, n in sorted(state.rows_checked.items()))
        + (f"; {state.summary()}" if not state.ok else ""),
    )

    console.rule("[bold]11. Tampering is caught")
    tampered_dir = data_dir / "tampered"
    tampered_dir.mkdir(exist_ok=True)
    src_path = settings.resolved_database_url.removeprefix("sqlite:///")
    with sqlite3.connect(src_path) as src, sqlite3.connect(tampered_dir / "pps.db") as dst:
        src.backup(dst)
        # rewrite history: pretend Bank A was onboarded under another name
        (victim,) = dst.execute(
            "SELECT idx FROM ledger_entries WHERE action = 'org.create' AND CAST(entry AS TEXT) LIKE '%Bank A%'"
        ).fetchone()
        changed = dst.execute(
            "UPDATE ledger_entries SET entry = CAST(replace(CAST(entry AS TEXT), 'Bank A', 'Bank Z') AS BLOB) "
            "WHERE idx = ?",
            (victim,),
        ).rowcount
        # and give back the uses a consent has spent (as if to let a bank score again), outside the service
        spent_consent = dst.execute(
            "SELECT id, uses FROM consents WHERE uses > 0 ORDER BY id LIMIT 1"
        ).fetchone()
        if spent_consent is not None:
            dst.execute("UPDATE consents SET uses = 0 WHERE id = ?", (spent_consent[0],))
    console.print(f"  edited entry {victim} directly in a copy of the database ({changed} row)")
    rt_tampered = Runtime.build(
        Settings(
            _env_file=None,
            data_dir=tampered_dir,
            database_url=f"sqlite:///{(tampered_dir / 'pps.db').as_posix()}",
            key_dir=settings.resolved_key_dir,
            environment="development",
            checkpoint_interval_seconds=0,
        )
    )
    try:
        try:
            with rt_tampered.db.transaction(write=False) as session:
                verify_ledger(session, rt_tampered.ledger, against=saved_note)
            checks.check("an edited ledger row is detected", False, "verification passed on a tampered copy")
        except errors.LedgerIntegrityError as exc:
            checks.check(
                "an edited ledger row is detected with its index",
                exc.first_bad_index == victim,
                exc.message,
            )
        if spent_consent is not None:
            console.print(
                f"  reset the uses of consent {spent_consent[0]} from {spent_consent[1]} to 0 in the copy"
            )
            divergent = rt_tampered.check_state()
            checks.check(
                "a consent's uses reset outside the service are named, and the consent refused (state_divergent)",
                [(d.table, d.row_id, d.column) for d in divergent.divergences]
                == [("consents", spent_consent[0], "uses")]
                and rt_tampered.policy.quarantine.holds("consents", spent_consent[0]),
                "; ".join(d.describe() for d in divergent.divergences),
            )
    finally:
        rt_tampered.close()

    elapsed = time.perf_counter() - t0
    console.rule("[bold]Summary")
    summary = Table(show_header=False)
    summary.add_row("checks passed", f"{sum(ok for _, ok, _ in checks.rows)} / {len(checks.rows)}")
    summary.add_row("ledger entries", str(report.tree_size))
    summary.add_row("ledger root", report.root_hash.hex())
    summary.add_row("verifier key", rt.ledger.signer.verifier_key)
    summary.add_row("data directory", str(data_dir))
    summary.add_row("time", f"{elapsed:.1f} s")
    for name, value in figures.rows.items():
        summary.add_row(name, value)
    report_path = data_dir / "report.html"
    summary.add_row("HTML report", str(report_path))
    console.print(summary)
    write_report(
        report_path,
        checks.rows,
        figures,
        {
            "ledger entries": str(report.tree_size),
            "ledger root": report.root_hash.hex(),
            "time": f"{elapsed:.1f} s",
        },
    )
    rt.close()
    if not checks.ok:
        console.print("[bold red]DEMO FAILED[/]: see the ✗ lines above")
    return checks.ok
