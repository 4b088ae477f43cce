"""Vertical LR as a service, over the real HTTP API: PSI alignment on `train` consent, the coordinator in the
enclave, the host half kept in the safe-room, the model registered with its evaluation, applicants scored with
both halves; revocation mid-training, bad frames and strangers change nothing."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from models.metrics import auc, evaluate
from models.synth import PlatformData, generate
from pps.errors import PPSError
from pps.governance.consent import Terms
from pps.governance.objections import affected_releases
from pps.infra.storage.tables import Consent, LedgerEntry, Organization, RegisteredModel, Role, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from pps_client import APIError, Client
from pps_wire.frames import pack_frames
from pps_wire.schemas import VerticalStarted
from protocols import vertical_lr as vl
from tests.conftest import OrgFactory
from tests.helpers import signed
from tests.pps.services.scoring.conftest import upload_platform

pytestmark = [pytest.mark.db, pytest.mark.slow]

PURPOSE = "joint_model_training"
FEATURES = ["company_age_years", "log_registered_capital", "tax_filing_ratio", "log_sales_mean_last6"]
SUBJECT = Actor(None, "subject", "api")
CONFIG = vl.VerticalLRConfig(epochs=3, batch_size=64, learning_rate=0.15, early_stopping=False)


@pytest.fixture(scope="module")
def data() -> PlatformData:
    return generate(400, 2026)


def _labels(data: PlatformData) -> dict[str, int]:
    cols = data.labels.columns
    return dict(zip(cols["uscc"].tolist(), (int(v) for v in cols["defaulted"].tolist()), strict=True))


@pytest.fixture
def world(runtime: Runtime, make_org: OrgFactory, data: PlatformData, tmp_path: Path) -> dict[str, Any]:
    platform = upload_platform(runtime, make_org, data, tmp_path / "csv")
    bank, other = make_org(Role.bank, "Bank A"), make_org(Role.bank, "Bank B")
    auditor = make_org(Role.auditor, "Auditor")
    usccs = data.registry.columns["uscc"].tolist()
    scope = [
        {"dataset_id": platform.datasets["registry"], "fields": ["registered_on", "registered_capital"]},
        {"dataset_id": platform.datasets["tax"], "fields": ["month", "taxable_sales"]},
    ]
    train_and_score, score_only = usccs[:300], usccs[300:340]
    consents = {}
    with runtime.db.transaction() as s:
        org = s.get(Organization, bank.id)
        assert org is not None
        for uscc, ops in [(u, ["train", "score"]) for u in train_and_score] + [
            (u, ["score"]) for u in score_only
        ]:
            terms = Terms(
                purpose=PURPOSE,
                scope=scope,
                operations=ops,
                valid_until=utcnow() + timedelta(days=30),
                granularity="score",  # a host-half contribution is a score
            )
            c = runtime.consents.request(s, bank=org, subject_uscc=uscc, terms=terms, actor=SUBJECT)
            runtime.consents.approve(s, c, signed=signed(runtime, s, c), actor=SUBJECT)
            consents[uscc] = c.id
    labels = _labels(data)
    customers = usccs[:360]  # train+score, score only, and 20 who never consented
    rng = np.random.default_rng(7)
    y = np.array([labels[c] for c in customers])
    # the bank's own features: its credit history, correlated with default, plus noise
    bank_x = np.column_stack([y * 0.8 + rng.normal(0, 1, len(y)), rng.normal(0, 1, len(y))])
    return {
        "bank": bank,
        "other": other,
        "auditor": auditor,
        "customers": customers,
        "labels": y,
        "bank_x": bank_x,
        "train": train_and_score,
        "score_only": score_only,
        "consents": consents,
    }


def _digest(subjects: list[str]) -> str:
    return hashlib.sha256("\n".join(subjects).encode()).hexdigest()


def _entries(rt: Runtime, action: str) -> list[dict[str, Any]]:
    with rt.db.transaction(write=False) as s:
        docs = [
            json.loads(r.entry) for r in s.execute(select(LedgerEntry).order_by(LedgerEntry.idx)).scalars()
        ]
    return [d for d in docs if d["action"] == action]


def _host_matrix(rt: Runtime, subjects: list[str]) -> np.ndarray:
    with rt.db.transaction(write=False) as s:
        table = rt.features.table(s)
    _, rows, _ = table.rows(subjects)
    x = table.matrix(FEATURES, rows)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    return np.asarray((x - x.mean(axis=0)) / scale)


def _start(bank: Client, **kw: Any) -> VerticalStarted:
    return bank.vertical.start(bank.vertical.start_body(**kw))


def _train(bank: Client, rt: Runtime, w: dict[str, Any], **kw: Any) -> Any:
    return bank.vertical.train(
        name="sme default v1",
        purpose=PURPOSE,
        customers=w["customers"],
        features=w["bank_x"],
        labels=w["labels"],
        platform_features=FEATURES,
        vendor_key=rt.enclave.vendor_public_key,
        config=CONFIG,
        key_bits=1024,
        **kw,
    )


def test_a_bank_trains_with_the_platform_and_scores_with_both_halves(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    with Client(base_url, world["bank"].token, timeout=120) as bank:
        result = _train(bank, runtime, world)
        # alignment: only the subjects whose consent allows *training* (PSI on operation "train")
        assert result.subjects == world["train"]
        assert (result.alignment.customers, result.alignment.aligned, result.alignment.used) == (
            360,
            300,
            300,
        )
        assert result.epochs == 3 and len(result.losses) == 3
        # the protocol computed exactly the plaintext model on the same rows
        pos = {c: i for i, c in enumerate(world["customers"])}
        idx = [pos[c] for c in result.subjects]
        # the SDK standardised the bank's columns over the training rows and kept the statistics with its half
        own = world["bank_x"][idx]
        mean, scale = vl.standardisation(own)
        np.testing.assert_allclose(result.guest_model.mean, mean)
        np.testing.assert_allclose(result.guest_model.scale, scale)
        ref_g, _ref_h, _ = vl.reference_fit(
            (own - mean) / scale, _host_matrix(runtime, result.subjects), world["labels"][idx], CONFIG
        )
        np.testing.assert_allclose(result.guest_model.weights, ref_g.weights, atol=1e-6)
        assert result.guest_model.intercept == pytest.approx(ref_g.intercept, abs=1e-6)

        model = result.model
        assert model.kind == "vertical_lr" and model.owners == [world["bank"].id]
        assert model.parts == ["platform"]  # the bank keeps its half; the host half never leaves
        assert model.training["rows"] == 300 and model.training["coordinator"] == "enclave"
        # ran to its epoch limit (early stopping off): recorded as not converged; trained on the exact loss
        assert model.training["converged"] is False and model.training["loss"] == "exact"
        assert len(model.training["consents"]) == 300
        with pytest.raises(APIError) as missing:
            bank.models.parameters(model.id)
        assert missing.value.status == 404

        # score applicants: consented to scoring (40 of them never consented to training), with both halves
        applicants = world["score_only"] + world["customers"][340:]
        ax = world["bank_x"][[pos[c] for c in applicants]]
        scored, p = bank.vertical.scores(
            model.id, result.guest_model, purpose=PURPOSE, subjects=applicants, features=ax
        )
        assert scored == world["score_only"]  # the 20 without any consent are not scored
        with runtime.db.transaction(write=False) as s:
            art = runtime.models.part(s, model.id, "platform")
        with runtime.db.transaction(write=False) as s:
            table = runtime.features.table(s)
        _, rows, _ = table.rows(scored)
        xh = (table.matrix(FEATURES, rows) - np.array(art["mean"])) / np.array(art["scale"])
        expected = vl.sigmoid(
            ((ax[: len(scored)] - mean) / scale) @ result.guest_model.weights
            + result.guest_model.intercept
            + xh @ art["weights"]
        )
        np.testing.assert_allclose(p, expected, atol=1e-8)

        # the bank evaluates where its labels are and posts the evaluation; the report draws it
        y_new = world["labels"][[pos[c] for c in scored]]
        ev = evaluate(y_new, p)
        assert ev.auc == pytest.approx(auc(y_new, p))
        # beside it, the bank-alone baseline: fitted locally on the same training rows, scored on the same rows
        alone = bank.vertical.bank_alone(own, world["labels"][idx])
        ev_alone = evaluate(y_new, vl.sigmoid(alone.partial_logit(ax[: len(scored)])))
        posted = bank.models.post_evaluation(model.id, ev.with_baseline(ev_alone))
        assert posted.metrics is not None and posted.metrics.auc == pytest.approx(ev.auc)
        page = bank.models.report_html(model.id)
        # ROC, KS, calibration, and the ROC against the bank alone; the comparison table with Brier and ECE
        assert page.count("<svg") == 4 and f"{ev.auc:.4f}" in page and f"{ev_alone.auc:.4f}" in page
        assert "Against the bank alone" in page and "ECE" in page
        assert [m.id for m in bank.models.list()] == [model.id]

    # another bank sees nothing; the auditor reads the description
    with Client(base_url, world["other"].token) as other:
        assert other.models.list() == []
        with pytest.raises(APIError) as e:
            other.models.get(model.id)
        assert e.value.status == 404
        with pytest.raises(APIError) as e:
            other.models.report_html(model.id)
        assert e.value.status == 404
        with pytest.raises(APIError) as e:
            other.request(
                "POST",
                f"/v1/models/{model.id}/contributions",
                json={"purpose": PURPOSE, "subjects": world["score_only"][:1], "public_key": "AAAA"},
            )
        assert e.value.status == 404  # not its model: nothing about the key is checked
    with Client(base_url, world["auditor"].token) as auditor:
        assert [m.id for m in auditor.models.list()] == [model.id]

    # on the record: the start, the admission on "train", the release, the registration, the evaluation
    assert len(_entries(runtime, "training.start")) == 1
    admits = [e for e in _entries(runtime, "policy.admit") if e["detail"]["operation"] == "train"]
    assert admits and sum(len(e["subjects"]) for e in admits) == 300  # the aligned subjects, each named
    releases = [e for e in _entries(runtime, "policy.release") if e["detail"]["operation"] == "train"]
    # the PSI alignment (spends nothing), the first batch (spends a use), the model (decided again, spends nothing)
    assert [(e["released"][0]["what"], e["detail"]["spends_uses"]) for e in releases] == [
        ("psi:intersection", False),
        ("vertical_lr:intermediate", True),
        ("model:vertical_lr", False),
    ]
    assert all(len(e["subjects"]) == 300 for e in releases)
    with runtime.db.transaction(write=False) as s:
        uses = {
            c.uses for c in s.execute(select(Consent)).scalars() if c.id in set(model.training["consents"])
        }
    assert uses == {1}  # one training, one use
    # each epoch on the record: its batches and a digest of the subjects each batch used
    epochs = _entries(runtime, "training.epoch")
    per_epoch = [(e, len(vl.batches_for(CONFIG, 300, e))) for e in range(3)]
    assert [(e["detail"]["epoch"], e["detail"]["batches"]) for e in epochs] == per_epoch
    batches = vl.batches_for(CONFIG, 300, 0)
    digests = [_digest([result.subjects[int(i)] for i in b]) for b in batches]
    assert epochs[0]["detail"]["subjects_sha256"] == hashlib.sha256("".join(digests).encode()).hexdigest()
    # a value corrected later reaches the bank once per training (by the model's release), not once per step
    dataset_id, names = next(iter(art["fields"].items()))
    with runtime.db.transaction(write=False) as s:
        hits = affected_releases(runtime.ledger, s, result.subjects[0], dataset_id, names)
    trainings = [h[1] for h in hits if h[1]["objects"][0]["kind"] == "training"]
    assert [(d["objects"][0]["id"], d["released"][0]["what"]) for d in trainings] == [
        (model.training["training"], "model:vertical_lr")
    ]
    assert len(_entries(runtime, "model.register")) == 1
    assert _entries(runtime, "model.evaluate")[0]["detail"]["auc_bp"] == round(ev.auc * 10_000)


@pytest.mark.parametrize(
    ("victim_batch", "ended_before"),
    [(2, "epoch 0 batch 2"), (0, "epoch 1 batch 0")],
    ids=["in-the-batch-under-way", "already-used-this-epoch"],
)
def test_a_revocation_mid_training_stops_that_subjects_features_at_the_next_batch(
    runtime: Runtime,
    base_url: str,
    world: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    victim_batch: int,
    ended_before: str,
) -> None:
    """Issue 24, item 4: a subject revokes while batch 2 of epoch 0 is under way (its FORWARD sent). In batch 2:
    the host never computes batch 2's gradient, nor anything after. In batch 0 (used already): the epoch's other
    batches go on without it and the next epoch's start, which decides for every subject, ends the training.
    Either way its features are never read after the revocation, nothing is registered, and the use the first
    batch spent stays spent."""
    batches = vl.batches_for(CONFIG, 300, 0)
    victim_row = int(batches[victim_batch][0])
    victim = world["train"][victim_row]
    read: list[tuple[str, list[int]]] = []  # every read of the platform's features, in order
    forward, residuals = vl.Host.forward, vl.Host.receive_residuals

    def spy_forward(self: vl.Host) -> bytes:
        read.append(("forward", [int(i) for i in self.batch_rows()]))
        return forward(self)

    def spy_residuals(self: vl.Host, data: bytes) -> bytes:
        read.append(("gradient", [int(i) for i in self.batch_rows()]))
        return residuals(self, data)

    monkeypatch.setattr(vl.Host, "forward", spy_forward)
    monkeypatch.setattr(vl.Host, "receive_residuals", spy_residuals)
    revoked_at: list[int] = []

    def revoke_once(epoch: int, done: int) -> None:
        if not revoked_at and done == 2:  # batches 0 and 1 done; batch 2's FORWARD has left
            with runtime.db.transaction() as s:
                c = s.get(Consent, world["consents"][victim])
                assert c is not None
                runtime.consents.revoke(s, c, actor=SUBJECT)
            revoked_at.append(len(read))

    with Client(base_url, world["bank"].token, timeout=120) as bank:
        with pytest.raises(APIError) as e:
            _train(bank, runtime, world, on_batch=revoke_once)
        assert e.value.status == 409 and "no model was registered" in str(e.value)
        assert "1 subject(s)" in str(e.value) and victim not in str(e.value)  # how many, never who
        trainings = bank.vertical.list()
    assert trainings[0].state == "failed" and trainings[0].model_id is None
    # the reads before the revocation: batches 0 and 1, and batch 2's FORWARD; after it, none of the subject's
    assert revoked_at == [5] and victim_row in read[2 * victim_batch][1]
    assert all(victim_row not in rows for _, rows in read[5:])
    after = [kind for kind, _ in read[5:]]
    assert after == ([] if victim_batch == 2 else ["gradient"] + ["forward", "gradient"] * (len(batches) - 3))
    with runtime.db.transaction(write=False) as s:
        assert s.execute(select(RegisteredModel)).first() is None
        victim_consent = s.get(Consent, world["consents"][victim])
        other = s.get(Consent, world["consents"][world["train"][0]])
        assert victim_consent is not None and other is not None
        assert victim_consent.uses == 1 and other.uses == 1  # spent when the first batch left, kept
    (fail,) = _entries(runtime, "training.fail")
    assert f"before {ended_before}" in fail["detail"]["reason"]
    assert fail["detail"]["uses_spent"] is True
    # what the unfinished epoch used: batches 0-2 of epoch 0, or none of epoch 1 (epoch 0 has its own entry)
    used = [_digest([world["train"][int(i)] for i in b]) for b in batches[:3]] if victim_batch == 2 else []
    assert fail["detail"]["batches_used"] == len(used)
    assert [e["detail"]["epoch"] for e in _entries(runtime, "training.epoch")] == (
        [] if victim_batch == 2 else [0]
    )
    assert fail["detail"]["subjects_sha256"] == hashlib.sha256("".join(used).encode()).hexdigest()
    assert runtime.check_state().ok  # the uses spent are the uses the ledger records


def test_a_cancelled_training_spent_its_use_once_values_left(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    """Cancelled before anything of the platform's left: no use spent; cancelled after the first batch: spent."""
    import base64

    args = {
        "purpose": PURPOSE,
        "subjects": world["train"],
        "platform_features": FEATURES,
        "vendor_key": runtime.enclave.vendor_public_key,
        "key_bits": 1024,
    }
    pos = {c: i for i, c in enumerate(world["customers"])}
    with Client(base_url, world["bank"].token, timeout=120) as bank:
        quiet = _start(bank, name="cancelled at once", **args)
        bank.vertical.cancel(quiet.id)

        def uses() -> set[int]:
            with runtime.db.transaction(write=False) as s:
                return {
                    c.uses for c in s.execute(select(Consent)).scalars() if c.subject_uscc in world["train"]
                }

        assert uses() == {0}
        started = _start(bank, name="cancelled after a batch", **args)
        idx = [pos[c] for c in started.subjects]
        guest = vl.Guest(world["bank_x"][idx], world["labels"][idx])
        guest.receive_public_key(base64.b64decode(started.public_key))
        _ack, forward = bank.vertical.exchange(started.id, [guest.setup(CONFIG)])
        assert vl.decode_message(forward, guest.public_key).type is vl.MessageType.FORWARD
        bank.vertical.cancel(started.id)
        assert bank.vertical.get(started.id).state == "failed"
    assert uses() == {1}
    fails = {e["objects"][0]["id"]: e["detail"] for e in _entries(runtime, "training.fail")}
    assert fails[quiet.id]["uses_spent"] is False and fails[started.id]["uses_spent"] is True
    assert fails[started.id]["batches_used"] == 1
    assert runtime.check_state().ok


def test_bad_frames_and_strangers_change_nothing(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    """A session survives garbage, replays and other banks' calls; training then completes normally."""
    from protocols import paillier_fast as pf

    state: dict[str, Any] = {}
    real_request = httpx.Client.request

    def real_post(self: httpx.Client, url: Any, **kw: Any) -> httpx.Response:
        return real_request(self, "POST", url, **kw)

    def spy(self: httpx.Client, method: str, url: Any, *a: Any, **kw: Any) -> httpx.Response:
        response = real_request(self, method, url, *a, **kw)
        if method == "POST" and str(url).endswith("/exchange") and "first" not in state:
            state["first"] = (str(url), kw["content"])
            bad = [
                b"garbage",
                pack_frames([b"\x00" * 10]),
                pack_frames(
                    [vl.Message(vl.MessageType.FORWARD, vl.Party.HOST, bytes(16), bytes(16)).to_bytes()]
                ),
            ]
            headers = {"content-type": "application/vnd.pps.vlr-frames"}
            for body in bad:
                r = real_post(self, url, content=body, headers=headers)
                assert r.status_code == 422, r.text
            # a replayed SETUP (a retry whose answer was lost) gets the same answer; it is not applied twice
            r = real_post(self, url, content=kw["content"], headers=headers)
            assert r.status_code == 200 and r.content == response.content
            with httpx.Client(
                base_url=base_url, headers={"authorization": f"Bearer {world['other'].token}"}
            ) as o:
                r = o.post(str(url).replace(base_url, ""), content=kw["content"])
                assert r.status_code == 404
                assert (
                    o.post(str(url).replace("/exchange", "/finish").replace(base_url, "")).status_code == 404
                )
        return response

    with Client(base_url, world["bank"].token, timeout=120) as bank:
        pytest.MonkeyPatch().setattr(httpx.Client, "request", spy)
        try:
            result = _train(bank, runtime, world)
        finally:
            pytest.MonkeyPatch().undo()
            httpx.Client.request = real_request  # type: ignore[method-assign]
        assert "first" in state, "the spy saw no exchange"
        assert result.model.kind == "vertical_lr"
        # a finished session accepts nothing more
        url, _body = state["first"]
        with pytest.raises(APIError) as e:
            bank.vertical.finish(url.split("/")[-2])
        assert e.value.status == 409
        # a contribution under a key too short for production is refused, nothing spent
        small, _ = pf.generate_keypair(1024)
        import base64

        with pytest.raises(APIError) as e:
            bank.request(
                "POST",
                f"/v1/models/{result.model.id}/contributions",
                json={
                    "purpose": PURPOSE,
                    "subjects": world["score_only"][:2],
                    "public_key": base64.b64encode(small.to_bytes()).decode(),
                },
            )
        assert e.value.status == 422 and "2048" in str(e.value)
    # too few aligned rows: refused before anything runs
    with Client(base_url, world["bank"].token, timeout=120) as bank:
        with pytest.raises(APIError) as e:
            bank.vertical.train(
                name="tiny",
                purpose=PURPOSE,
                customers=world["customers"][:30],
                features=world["bank_x"][:30],
                labels=world["labels"][:30],
                platform_features=FEATURES,
                vendor_key=runtime.enclave.vendor_public_key,
                config=CONFIG,
                key_bits=1024,
            )
        assert e.value.status == 422


@pytest.mark.e2e  # heavy: run by `make test-e2e` and .ci/run, not `make test`
def test_a_restart_mid_training_fails_the_session_cleanly(
    runtime: Runtime, settings: Any, base_url: str, world: dict[str, Any]
) -> None:
    """The host's weights and the coordinator's key live in the serving process: after a restart the session
    says it was interrupted, is marked failed on the record, and nothing is registered."""
    with Client(base_url, world["bank"].token, timeout=120) as bank:
        started = _start(
            bank,
            name="interrupted",
            purpose=PURPOSE,
            subjects=world["train"],
            platform_features=FEATURES,
            vendor_key=runtime.enclave.vendor_public_key,
            key_bits=1024,
        )
    restarted = Runtime.build(settings)  # a new process on the same database and keys
    try:
        actor = Actor(world["bank"].id, "bank")
        with pytest.raises(PPSError) as e:
            restarted.training.exchange(started.id, [b"x" * 8], actor=actor)
        assert "interrupted" in str(e.value)
        with restarted.db.transaction(write=False) as s:
            row = restarted.training.get(s, started.id, org_id=world["bank"].id, sees_everything=False)
            assert row.state.value == "failed" and row.model_id is None
        with pytest.raises(PPSError) as e:
            restarted.training.finish(started.id, actor=actor)
        assert "failed" in str(e.value)
    finally:
        restarted.close()
    assert [d["detail"]["reason"][:41] for d in _entries(runtime, "training.fail")] == [
        "the service restarted during the training"
    ]


@pytest.mark.e2e  # heavy: run by `make test-e2e` and .ci/run, not `make test`
def test_the_cli_trains_keeps_the_bank_half_and_lists_the_model(
    runtime: Runtime, base_url: str, world: dict[str, Any], tmp_path: Path
) -> None:
    import csv

    from typer.testing import CliRunner

    from pps_client.cli import app

    data = tmp_path / "customers.csv"
    with data.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["uscc", "defaulted", "history", "noise"])
        for c, y, x in zip(world["customers"], world["labels"], world["bank_x"], strict=True):
            w.writerow([c, int(y), f"{x[0]:.6f}", f"{x[1]:.6f}"])
    out = tmp_path / "half.json"
    common = ["--url", base_url, "--token", world["bank"].token]
    vendor = runtime.enclave.vendor_public_bytes().hex()
    args = ["train-vertical", str(data), "--label", "defaulted", "--features", "history,noise"]
    args += ["--platform-features", ",".join(FEATURES), "--vendor-key", vendor, "--epochs", "2"]
    args += ["--batch-size", "64", "--key-bits", "1024", "--out", str(out), *common]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "300 of 360 customers" in result.output and "20 " not in result.output.split("left out")[0]
    half = json.loads(out.read_text())
    assert (
        half["kind"] == "vertical_lr" and len(half["weights"]) == 2 and half["platform_features"] == FEATURES
    )
    listed = CliRunner().invoke(app, ["models", *common])
    assert listed.exit_code == 0 and half["model_id"] in listed.output
    page = tmp_path / "report.html"
    saved = CliRunner().invoke(app, ["report", half["model_id"], "--out", str(page), *common])
    assert saved.exit_code == 0 and "No held-out evaluation" in page.read_text()
    # a wrong vendor key: refused before anything is sent to the enclave
    bad = CliRunner().invoke(app, [*args[:-6], "--vendor-key", "00" * 32, "--out", str(out), *common])
    assert bad.exit_code != 0


def _guest_message(
    guest: vl.Guest, kind: vl.MessageType, values: list[Any], *, epoch: int, batch: int
) -> bytes:
    """A frame as a (malicious) bank could build it: its own session and key, any epoch, batch and values."""
    assert guest.public_key is not None
    return vl.Message(
        kind,
        vl.Party.GUEST,
        guest.session,
        vl.key_id_of(guest.public_key),
        epoch,
        batch,
        0,
        b"",
        tuple(values),
    ).to_bytes(guest.public_key)


def test_the_bank_cannot_make_the_coordinator_decrypt_what_it_chooses(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    """One bank gradient per batch, of the batch just answered, of the width its SETUP declared: a frame that
    carries the host's encrypted partial scores (or anything else) is refused before the enclave sees it."""
    import base64

    with Client(base_url, world["bank"].token, timeout=120) as bank:
        started = _start(
            bank,
            name="probe",
            purpose=PURPOSE,
            subjects=world["train"],
            platform_features=FEATURES,
            vendor_key=runtime.enclave.vendor_public_key,
            key_bits=1024,
        )
        pos = {c: i for i, c in enumerate(world["customers"])}
        idx = [pos[c] for c in started.subjects]
        guest = vl.Guest(world["bank_x"][idx], world["labels"][idx])
        tid = started.id
        guest.receive_public_key(base64.b64decode(started.public_key))
        ack, forward = bank.vertical.exchange(tid, [guest.setup(CONFIG)])
        guest.receive_setup_ack(ack)
        host_scores = list(vl.decode_message(forward, guest.public_key).values[:3])  # [[x_h w_h]] of 3 rows
        z = guest.receive_forward(forward)  # loss="exact": the joined linear predictors, for the enclave
        (probabilities,) = bank.vertical.exchange(tid, [z])
        assert bank.vertical.exchange(tid, [z]) == [
            probabilities
        ]  # a retry gets the same answer, applied once
        # a second, different set of linear predictors for the same batch (say the host's own scores, to read
        # them through the sigmoid): refused before the enclave sees it, and the session goes on
        zs = list(vl.decode_message(z, guest.public_key).values)
        forged = _guest_message(guest, vl.MessageType.LINEAR_PREDICTOR, zs[::-1], epoch=0, batch=0)
        with pytest.raises(APIError) as e:
            bank.vertical.exchange(tid, [forged])
        assert e.value.status == 422 and "one per batch" in str(e.value)
        residuals = guest.receive_probabilities(probabilities)
        gradient = guest.masked_gradient()
        fake = _guest_message(guest, vl.MessageType.MASKED_GRADIENT, host_scores, epoch=0, batch=1000)
        # the host's ciphertexts dressed as a gradient of a batch that does not exist: refused, nothing changed
        with pytest.raises(APIError) as e:
            bank.vertical.exchange(tid, [fake])
        assert e.value.status == 422
        # a second gradient after the honest one: refused; the honest frames were applied, so the session ends
        with pytest.raises(APIError) as e:
            bank.vertical.exchange(tid, [residuals, gradient, fake])
        assert e.value.status == 422 and "the session was ended" in str(e.value)
        assert bank.vertical.get(started.id).state == "failed"
        # and in a fresh session, the right batch with the wrong width (the host's scores) is refused too
        again = _start(
            bank,
            name="probe again",
            purpose=PURPOSE,
            subjects=world["train"],
            platform_features=FEATURES,
            vendor_key=runtime.enclave.vendor_public_key,
            key_bits=1024,
        )
        guest = vl.Guest(world["bank_x"][idx], world["labels"][idx])
        tid = again.id
        guest.receive_public_key(base64.b64decode(again.public_key))
        ack, forward = bank.vertical.exchange(tid, [guest.setup(CONFIG)])
        guest.receive_setup_ack(ack)
        scores = list(vl.decode_message(forward, guest.public_key).values[:3])
        (probabilities,) = bank.vertical.exchange(tid, [guest.receive_forward(forward)])
        residuals = guest.receive_probabilities(probabilities)
        wide = _guest_message(guest, vl.MessageType.MASKED_GRADIENT, scores, epoch=0, batch=0)
        with pytest.raises(APIError) as e:
            bank.vertical.exchange(tid, [residuals, wide])
        assert e.value.status == 422 and "the SETUP declared" in str(e.value)
    with runtime.db.transaction(write=False) as s:
        assert s.execute(select(RegisteredModel)).first() is None


def test_sessions_are_limited_per_bank_cancelled_reaped_and_retried(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    import base64

    args = {
        "name": "limits",
        "purpose": PURPOSE,
        "subjects": world["train"],
        "platform_features": FEATURES,
        "vendor_key": runtime.enclave.vendor_public_key,
        "key_bits": 1024,
    }
    with Client(base_url, world["bank"].token, timeout=120) as bank:
        first, second = _start(bank, **args), _start(bank, **args)
        with pytest.raises(APIError) as e:
            _start(bank, **args)
        assert e.value.status == 429 and "DELETE" in str(e.value)
        bank.vertical.cancel(first.id)  # frees a slot
        third = _start(bank, **args)
        # a retried exchange (its first answer lost) gets the same answer, not a protocol error
        pos = {c: i for i, c in enumerate(world["customers"])}
        idx = [pos[c] for c in third.subjects]
        guest = vl.Guest(world["bank_x"][idx], world["labels"][idx])
        guest.receive_public_key(base64.b64decode(third.public_key))
        setup = guest.setup(CONFIG)
        assert bank.vertical.exchange(third.id, [setup]) == bank.vertical.exchange(third.id, [setup])
        # a SETUP whose body is not JSON is a clear error, not a crash
        broken = bytearray(setup)
        broken[-10:] = b"\xff" * 10
        with pytest.raises(APIError) as e:
            bank.vertical.exchange(second.id, [bytes(broken)])
        assert e.value.status == 422
        # sessions nobody touches are failed and their slots freed
        runtime.training.idle_timeout_s = 0.0
        fourth = _start(bank, **args)
        runtime.training.idle_timeout_s = 900.0
        states = {t.id: t.state for t in bank.vertical.list()}
        assert states[second.id] == states[third.id] == "failed" and states[fourth.id] == "training"


def test_a_coordinator_key_under_2048_bits_is_refused_unless_unsafe(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    runtime.training.unsafe_small_keys = False
    try:
        with Client(base_url, world["bank"].token, timeout=120) as bank:
            with pytest.raises(APIError) as e:
                _start(
                    bank,
                    name="small key",
                    purpose=PURPOSE,
                    subjects=world["train"],
                    platform_features=FEATURES,
                    vendor_key=runtime.enclave.vendor_public_key,
                    key_bits=1024,
                )
            assert e.value.status == 422 and "2048" in str(e.value)
            assert bank.vertical.list() == []  # refused before admission: no row
    finally:
        runtime.training.unsafe_small_keys = True
