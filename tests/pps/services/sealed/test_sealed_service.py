"""Sealed datasets end to end: the real enclave process, real CKKS ciphertexts, the HTTP API and the SDK."""

from __future__ import annotations

import base64
import json
import os
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import tenseal as ts
from sqlalchemy import func, select

from pps.governance.consent import Terms
from pps.infra.storage.tables import (
    Consent,
    Dataset,
    LedgerEntry,
    Organization,
    Role,
    SealedBlock,
    SealedDataset,
    utcnow,
)
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from pps_client import APIError, AttestationError, Client, encrypt_sealed_columns
from tests.conftest import OrgFactory
from tests.helpers import signed, uscc_for

pytestmark = [pytest.mark.db, pytest.mark.slow]

PURPOSE = "loan_underwriting"
SUBJECT = Actor(None, "subject", "api")
N = 60
BOUNDS = {"sales": (0.0, 100.0), "arrears": (0.0, 10.0)}


def _data() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    subjects = [uscc_for(900_000 + i) for i in range(N)]
    return {
        "subjects": subjects,
        "columns": {
            "sales": rng.uniform(0, 100, N).round(2),
            "arrears": rng.integers(0, 10, N).astype(float),
        },
        "attributes": {"industry": ["A" if i % 3 else "B" for i in range(N)]},
    }


def _consent(
    rt: Runtime, bank_id: str, dataset_id: str, usccs: list[str], granularity: str = "score"
) -> dict[str, str]:
    ids = {}
    with rt.db.transaction() as s:
        bank = s.get(Organization, bank_id)
        assert bank is not None
        for u in usccs:
            terms = Terms(
                purpose=PURPOSE,
                scope=[{"dataset_id": dataset_id, "fields": ["sales", "arrears"]}],
                operations=["aggregate", "score"],
                valid_until=utcnow() + timedelta(days=30),
                granularity=granularity,
            )
            c = rt.consents.request(s, bank=bank, subject_uscc=u, terms=terms, actor=SUBJECT)
            rt.consents.approve(s, c, signed=signed(rt, s, c), actor=SUBJECT)
            ids[u] = c.id
    return ids


def _revoke(rt: Runtime, consent_ids: list[str]) -> None:
    with rt.db.transaction() as s:
        for cid in consent_ids:
            c = s.get(Consent, cid)
            assert c is not None
            rt.consents.revoke(s, c, actor=SUBJECT)


def _actions(rt: Runtime) -> list[str]:
    with rt.db.transaction(write=False) as s:
        return [
            json.loads(e)["action"]
            for e in s.execute(select(LedgerEntry.entry).order_by(LedgerEntry.idx)).scalars()
        ]


def _state(rt: Runtime) -> tuple[int, int, int, int]:
    with rt.db.transaction(write=False) as s:
        return (
            int(s.scalar(select(func.count()).select_from(SealedDataset)) or 0),
            int(s.scalar(select(func.count()).select_from(SealedBlock)) or 0),
            int(s.scalar(select(func.count()).select_from(Dataset)) or 0),
            rt.ledger.size(s),
        )


@pytest.fixture
def world(runtime: Runtime, make_org: OrgFactory, base_url: str) -> dict[str, Any]:
    provider = make_org(Role.data_provider, "tax bureau")
    bank, other = make_org(Role.bank, "Bank A"), make_org(Role.bank, "Bank B")
    admin = make_org(Role.platform_admin, "operator")
    data = _data()
    vendor = runtime.enclave.vendor_public_key
    with Client(base_url, provider.token, timeout=120) as p:
        context = p.sealed.context(vendor_key=vendor)
        up = p.sealed.upload(
            "sealed tax",
            context=context,
            subjects=data["subjects"],
            columns={k: v.tolist() for k, v in data["columns"].items()},
            bounds=BOUNDS,
            attributes=data["attributes"],
        )
    consented, revoked = data["subjects"][:40], data["subjects"][40:45]
    ids = _consent(runtime, bank.id, up.dataset_id, consented + revoked)
    graded = data["subjects"][45:47]  # consented to a grade only: a sealed score is a score
    ids.update(_consent(runtime, bank.id, up.dataset_id, graded, granularity="grade"))
    _revoke(runtime, [ids[u] for u in revoked])
    return {
        **data,
        "provider": provider,
        "bank": bank,
        "other": other,
        "admin": admin,
        "context": context,
        "dataset_id": up.dataset_id,
        "consented": consented,
        "revoked": revoked,
        "graded": graded,
        "consent_ids": ids,
        "vendor": vendor,
    }


def test_aggregates_and_scoring_over_a_sealed_dataset(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    with runtime.db.transaction(write=False) as s:
        stored = s.get(SealedDataset, world["dataset_id"])
        assert stored is not None and stored.n_subjects == N and stored.state == "ready"
        blobs = s.execute(select(SealedBlock.ciphertext)).scalars().all()
    raw = b"".join(blobs)
    assert len(blobs) == 2 and b"sales" not in raw  # one ciphertext per column and block, no plaintext
    sales = world["columns"]["sales"]
    index = {u: i for i, u in enumerate(world["subjects"])}
    with Client(base_url, world["bank"].token, timeout=120) as bank:
        got = bank.sealed.aggregate(
            purpose=PURPOSE,
            dataset_id=world["dataset_id"],
            column="sales",
            epsilon=1.0,
            where={"industry": "A"},
        )
        cohort = [index[u] for u in world["consented"] if world["attributes"]["industry"][index[u]] == "A"]
        true = float(sales[cohort].sum())
        assert abs(got.sum - true) < 25 * got.noise.sum
        assert abs(got.count - len(cohort)) < 25 * got.noise.count
        assert got.sum != pytest.approx(true, abs=1e-6)  # noised inside the enclave

        stranger = uscc_for(123_456)
        asked = world["consented"][:12] + world["revoked"][:2] + world["graded"] + [stranger]
        scored = bank.sealed.score(
            vendor_key=world["vendor"],
            purpose=PURPOSE,
            dataset_id=world["dataset_id"],
            subjects=asked,
            weights={"sales": 0.01, "arrears": -0.2},
        )
        assert set(scored.scores) == set(world["consented"][:12])
        grid = {"sales": 100 / 100, "arrears": 10 / 100}  # the published grid: 1 % of the clipping range
        for u, score in scored.scores.items():
            on_grid = {k: round(v[index[u]] / grid[k]) * grid[k] for k, v in world["columns"].items()}
            assert score == pytest.approx(0.01 * on_grid["sales"] - 0.2 * on_grid["arrears"], abs=1e-4)
        assert scored.not_used == {"revoked": 2, "no_grant": 1, "granularity": 2}
    actions = _actions(runtime)
    for action in ("sealed.keygen", "sealed.quote", "sealed.upload", "sealed.aggregate", "sealed.score"):
        assert action in actions
    assert actions.count("policy.release") >= 2 and actions.count("policy.admit") >= 2


def test_consent_refusals(runtime: Runtime, base_url: str, world: dict[str, Any]) -> None:
    with Client(base_url, world["other"].token, timeout=120) as other:  # no consent for this bank
        with pytest.raises(APIError) as exc:
            other.sealed.score(
                vendor_key=world["vendor"],
                purpose=PURPOSE,
                dataset_id=world["dataset_id"],
                subjects=world["consented"][:3],
                weights={"sales": 1.0},
            )
        assert exc.value.code == "output_policy_violation"
        with pytest.raises(APIError) as exc:
            other.sealed.aggregate(
                purpose=PURPOSE, dataset_id=world["dataset_id"], column="sales", epsilon=0.5
            )
        assert exc.value.code == "output_policy_violation" and "minimum cohort" in str(exc.value)
    with Client(base_url, world["bank"].token, timeout=120) as bank:  # a cohort below the minimum
        with pytest.raises(APIError) as exc:
            bank.sealed.aggregate(
                purpose=PURPOSE,
                dataset_id=world["dataset_id"],
                column="sales",
                epsilon=0.5,
                where={"industry": "nope"},
            )
        assert exc.value.code == "output_policy_violation"


def test_a_consent_revoked_during_the_computation_stops_the_release(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    """The enclave has decrypted, the host holds the encrypted release; the second decision discards it."""
    victim = world["consented"][0]
    real_call = runtime.sealed._call

    def revoke_then_call(host: Any, op: str, **fields: Any) -> dict[str, Any]:
        reply = real_call(host, op, **fields)
        if op in ("he_scores", "he_aggregate"):
            _revoke(runtime, [world["consent_ids"][victim]])
        return reply

    runtime.sealed._call = revoke_then_call  # type: ignore[method-assign]
    before = _actions(runtime).count("sealed.score")
    with Client(base_url, world["bank"].token, timeout=120) as bank:
        with pytest.raises(APIError) as exc:
            bank.sealed.score(
                vendor_key=world["vendor"],
                purpose=PURPOSE,
                dataset_id=world["dataset_id"],
                subjects=world["consented"][:5],
                weights={"sales": 1.0},
            )
        assert exc.value.code == "conflict"
    assert _actions(runtime).count("sealed.score") == before


def _upload_body(world: dict[str, Any], **override: Any) -> dict[str, Any]:
    blocks = encrypt_sealed_columns(world["context"].public_context, {"sales": [1.0] * N}, BOUNDS)
    body = {
        "name": "bad " + os.urandom(4).hex(),
        "context_id": world["context"].context_id,
        "subjects": world["subjects"],
        "attributes": {},
        "columns": {
            "sales": {
                "lower": 0.0,
                "upper": 100.0,
                "blocks": [base64.b64encode(b).decode() for b in blocks["sales"]],
            }
        },
    }
    body.update(override)
    return body


def _column(blob: bytes) -> dict[str, Any]:
    return {"sales": {"lower": 0.0, "upper": 100.0, "blocks": [base64.b64encode(blob).decode()]}}


def test_bad_uploads_are_refused_before_storage(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    public = ts.context_from(world["context"].public_context)
    n16k = ts.context(ts.SCHEME_TYPE.CKKS, 16384, coeff_mod_bit_sizes=[60, 40, 40, 60])
    n16k.global_scale = 2**40
    fresh = ts.ckks_vector(public, [1.0] * 4096)
    lowered = fresh * ([1.0] * 4096)  # no evaluation keys needed for a plain product: one level down
    cases = {
        "foreign context": (_upload_body(world, context_id=os.urandom(32).hex()), "stale_context"),
        "wrong block count": (
            _upload_body(world, columns={"sales": {"lower": 0, "upper": 1, "blocks": []}}),
            None,
        ),
        "wrong level": (_upload_body(world, columns=_column(lowered.serialize())), "invalid_sealed_data"),
        "wrong scale": (
            _upload_body(
                world, columns=_column(ts.ckks_vector(public, [1.0] * 4096, scale=2**30).serialize())
            ),
            "invalid_sealed_data",
        ),
        "wrong size": (
            _upload_body(world, columns=_column(ts.ckks_vector(public, [1.0] * 10).serialize())),
            "invalid_sealed_data",
        ),
        "wrong ring": (
            _upload_body(world, columns=_column(ts.ckks_vector(n16k, [1.0] * 4096).serialize())),
            None,
        ),
        "garbage": (_upload_body(world, columns=_column(os.urandom(3000))), "invalid_sealed_data"),
    }
    before = _state(runtime)
    with Client(base_url, world["provider"].token, timeout=120) as p:
        for name, (body, code) in cases.items():
            with pytest.raises(APIError) as exc:
                p.request("POST", "/v1/sealed/datasets", json=body)  # as sent, unchecked here
            if code is not None:
                assert exc.value.code == code, (name, exc.value.code, str(exc.value))
            assert _state(runtime) == before, name
        with pytest.raises(AttestationError) as refused:  # a quote from a build this provider does not trust
            p.sealed.context(vendor_key=world["vendor"], measurements=[b"\x00" * 32])
        assert refused.value.reason == "measurement"


@pytest.mark.e2e  # heavy: run by `make test-e2e` and .ci/run, not `make test`
def test_rotating_the_he_key_is_an_audited_migration(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    old = world["context"].context_id
    with Client(base_url, world["admin"].token, timeout=120) as admin:
        rotated = admin.sealed.rotate()
    assert rotated.retired == old and rotated.context_id != old
    assert rotated.needs_reupload == [world["dataset_id"]]
    with runtime.db.transaction(write=False) as s:
        sealed = s.get(SealedDataset, world["dataset_id"])
        assert sealed is not None and sealed.state == "needs_reupload" and sealed.context_id == old
    with Client(base_url, world["bank"].token, timeout=120) as bank:
        with pytest.raises(APIError) as exc:
            bank.sealed.aggregate(
                purpose=PURPOSE, dataset_id=world["dataset_id"], column="sales", epsilon=0.5
            )
        assert exc.value.code == "needs_reupload"
    before = _state(runtime)
    with Client(base_url, world["provider"].token, timeout=120) as p:
        with pytest.raises(APIError) as exc:  # the old context is refused after rotation
            p.request("POST", "/v1/sealed/datasets", json=_upload_body(world))
        assert exc.value.code == "stale_context"
        assert _state(runtime) == before
        fresh = p.sealed.context(vendor_key=world["vendor"])
        assert fresh.context_id == rotated.context_id
        again = p.sealed.upload(
            "sealed tax v2",
            context=fresh,
            subjects=world["subjects"],
            columns={k: v.tolist() for k, v in world["columns"].items()},
            bounds=BOUNDS,
        )
    assert again.context_id == rotated.context_id and again.state == "ready"
    assert "sealed.rotate" in _actions(runtime)


def test_a_host_substituting_the_recipient_key_gets_a_refusal(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    """A malicious host rewrites what it hands the enclave: its own key, or more subjects than the bank asked
    for. The enclave releases only to the key the bank provisioned under its quote, for what it bound."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    operator_key = (
        X25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )
    real_call = runtime.sealed._call
    attacks = {
        "its own recipient key": lambda f: {**f, "recipient_key": operator_key},
        "subjects the bank did not ask for": lambda f: {
            **f,
            "subjects": [*f["subjects"], world["consented"][-1]],
        },
    }
    for name, rewrite in attacks.items():
        replies: list[dict[str, Any]] = []

        def malicious(host: Any, op: str, rewrite: Any = rewrite, **fields: Any) -> dict[str, Any]:
            reply = real_call(host, op, **(rewrite(fields) if op == "he_scores" else fields))
            replies.append(reply)
            return reply

        runtime.sealed._call = malicious  # type: ignore[method-assign]
        before = _actions(runtime).count("sealed.score")
        with (
            Client(base_url, world["bank"].token, timeout=120) as bank,
            pytest.raises(APIError) as exc,
        ):
            bank.sealed.score(
                vendor_key=world["vendor"],
                purpose=PURPOSE,
                dataset_id=world["dataset_id"],
                subjects=world["consented"][:3],
                weights={"sales": 1.0},
            )
        assert exc.value.code == "provisioning_failed", (name, str(exc.value))
        assert not any("release" in r for r in replies), name  # the enclave released nothing to anyone
        assert _actions(runtime).count("sealed.score") == before, name
    runtime.sealed._call = real_call  # type: ignore[method-assign]


def test_a_plaintext_upload_into_a_sealed_dataset_is_refused(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    before = _state(runtime)
    csv = ("uscc,sales,arrears,industry\n" + f"{world['subjects'][0]},1.0,0.0,A\n").encode()
    with Client(base_url, world["provider"].token, timeout=120) as p, pytest.raises(APIError) as exc:
        p.datasets.upload(world["dataset_id"], csv, fmt="csv")
    assert exc.value.code == "conflict" and "sealed" in str(exc.value)
    assert _state(runtime) == before
    with runtime.db.transaction(write=False) as s:
        ds = s.get(Dataset, world["dataset_id"])
        assert ds is not None and ds.current_version is None


@pytest.mark.e2e  # heavy: run by `make test-e2e` and .ci/run, not `make test`
def test_sealed_aggregates_are_under_the_differencing_control(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    """The aggregates' exact differencing refusal, over the same per-bank record of released cohorts."""
    ask = {"purpose": PURPOSE, "dataset_id": world["dataset_id"], "column": "sales", "epsilon": 0.2}
    with Client(base_url, world["bank"].token, timeout=120) as bank:
        bank.sealed.aggregate(**ask)
        bank.sealed.aggregate(**ask)  # the same cohort again differs by none: answered
        spent = bank.aggregates.budget().spent_epsilon
        _revoke(runtime, [world["consent_ids"][world["consented"][0]]])  # now one fewer: it would single out
        before = _state(runtime)[:3]
        with pytest.raises(APIError) as exc:
            bank.sealed.aggregate(**ask)
        assert exc.value.code == "refused" and "differencing" in str(exc.value)
        assert bank.aggregates.budget().spent_epsilon == pytest.approx(
            spent
        )  # nothing spent, nothing released
        assert _state(runtime)[:3] == before
        bank.sealed.aggregate(**ask, where={"industry": "A"})  # differs by at least the minimum: answered
    actions = _actions(runtime)
    assert actions.count("sealed.refused") == 1 and actions.count("sealed.aggregate") == 3
