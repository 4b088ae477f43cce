"""A bank without the SDK: the scoring wire format of ``docs/protocols.md``, followed to the letter.

The client half (:class:`BareBank` and the functions above it) uses only ``tenseal``, ``httpx``, ``json``,
``struct``, ``base64``, ``hashlib`` and ``numpy``: nothing from ``pps``, ``protocols`` or ``api``. It makes its
own CKKS context, frames the MODEL by hand, posts it, polls the job, parses the ``PPSS`` result and the
``PPHE`` RESULT frame by hand and decrypts with TenSEAL alone (real packing) or with ``tenseal.sealapi``
(complex packing). The fixtures set up the platform, the bank and the consents through the repository, as
``test_scoring_service.py`` does; the expected scores are computed in plaintext from the feature table and the
documented preprocessing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as seal

# the repository, for the fixtures only (the world: platform, bank, consents); the client does not use these
from pps.governance.consent import Terms
from pps.infra.storage.tables import Organization, Role, utcnow
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from tests.conftest import OrgFactory, OrgHandle
from tests.helpers import signed, uscc_for
from tests.pps.services.scoring.conftest import Platform

# --- the bare client: tenseal, httpx, json, struct, base64, hashlib, numpy; nothing else -----------------

N = 8192
SLOTS = N // 2
MODEL, RESULT = 1, 2


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def make_context() -> ts.Context:
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=N, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2.0**40
    return ctx


def public_context(ctx: ts.Context) -> bytes:
    return bytes(
        ctx.serialize(
            save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
        )
    )


def frame(kind: int, header: dict[str, Any], blobs: list[bytes]) -> bytes:
    head = canonical_json(header)
    parts = [b"PPHE", struct.pack("!BBI", 1, kind, len(head)), head, struct.pack("!I", len(blobs))]
    for blob in blobs:
        parts += [struct.pack("!I", len(blob)), blob]
    return b"".join(parts)


def unframe(data: bytes, kind: int) -> tuple[dict[str, Any], list[bytes]]:
    magic, version, got, head_len = struct.unpack_from("!4sBBI", data, 0)
    assert (magic, version, got) == (b"PPHE", 1, kind)
    pos = 10
    header = json.loads(data[pos : pos + head_len])
    pos += head_len
    (count,) = struct.unpack_from("!I", data, pos)
    pos += 4
    blobs = []
    for _ in range(count):
        (length,) = struct.unpack_from("!I", data, pos)
        blobs.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    assert pos == len(data), "trailing bytes after the last ciphertext"
    return header, blobs


def encrypt_value(ctx: ts.Context, value: float) -> bytes:
    """One model value, replicated across all N/2 slots."""
    return bytes(ts.ckks_vector(ctx, [value] * SLOTS).serialize())


def logistic_model(
    ctx: ts.Context, context_id: str, weights: dict[str, float], bias: float, packing: str
) -> bytes:
    header = {"kind": "logistic", "context_id": context_id, "features": list(weights), "packing": packing}
    blobs = [encrypt_value(ctx, w) for w in weights.values()] + [encrypt_value(ctx, bias)]
    return frame(MODEL, header, blobs)


def scorecard_model(
    ctx: ts.Context,
    context_id: str,
    card: dict[str, tuple[list[float], list[float], float | None]],
    base: float,
    packing: str,
) -> bytes:
    """``card``: feature -> (edges, points of bins 0..k-1, points for a missing value or None)."""
    header = {
        "kind": "scorecard",
        "context_id": context_id,
        "features": list(card),
        "packing": packing,
        "bins": [{"edges": edges, "missing": missing is not None} for edges, _, missing in card.values()],
    }
    values: list[float] = []
    for _, points, missing in card.values():
        values += points
        if missing is not None:
            values.append(missing)
    values.append(base)
    return frame(MODEL, header, [encrypt_value(ctx, v) for v in values])


def decrypt_block(ctx: ts.Context, blob: bytes, packing: str, used: int) -> np.ndarray[Any, Any]:
    """The ``used`` scores of one RESULT ciphertext, in slot order."""
    vector = ts.ckks_vector_from(ctx, blob)
    if packing == "real":
        values = np.asarray(vector.decrypt(), dtype=np.float64)
    else:  # complex: subject r in the real part of slot r, subject N/2 + r in its imaginary part
        plain = seal.Plaintext()
        seal.Decryptor(ctx.seal_context().data, ctx.secret_key().data).decrypt(vector.ciphertext()[0], plain)
        z = np.asarray(seal.CKKSEncoder(ctx.seal_context().data).decode_complex(plain), dtype=np.complex128)
        values = np.concatenate([z.real, z.imag])
    return values[:used]


@dataclass
class Scores:
    header: dict[str, Any]
    result_header: dict[str, Any]
    logits: dict[str, float]


class BareBank:
    def __init__(self, base_url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60.0
        )
        self.ctx = make_context()
        self.public = public_context(self.ctx)
        self.context_id = hashlib.sha256(self.public).hexdigest()

    def close(self) -> None:
        self.http.close()

    def features(self) -> dict[str, dict[str, Any]]:
        response = self.http.get("/v1/features")
        assert response.status_code == 200, response.text
        return {f["name"]: f for f in response.json()}

    def submit(
        self,
        model: bytes,
        *,
        purpose: str,
        subjects: list[str] | str,
        preprocess: dict[str, dict[str, Any]],
    ) -> httpx.Response:
        body = {
            "purpose": purpose,
            "subjects": subjects,
            "context": base64.b64encode(self.public).decode(),
            "model": base64.b64encode(model).decode(),
            "preprocess": preprocess,
        }
        return self.http.post("/v1/scoring", json=body)

    def wait(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job: dict[str, Any] = self.http.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in ("succeeded", "failed", "cancelled"):
                return job
            assert job["state"] in ("queued", "running")
            assert time.monotonic() < deadline, f"job {job_id} is still {job['state']}"
            time.sleep(0.1)

    def result(self, job_id: str, model: bytes) -> Scores:
        response = self.http.get(f"/v1/jobs/{job_id}/result")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/vnd.pps.score-result"
        data = response.content
        magic, head_len = struct.unpack_from("!4sI", data, 0)
        assert magic == b"PPSS"
        header: dict[str, Any] = json.loads(data[8 : 8 + head_len].decode())
        rest = data[8 + head_len :]
        if not rest:  # nobody was scored
            assert header["subjects"] == []
            return Scores(header, {}, {})
        result_header, blobs = unframe(rest, RESULT)
        assert result_header["context_id"] == self.context_id == header["context_id"]
        assert result_header["model_digest"] == hashlib.sha256(model).hexdigest() == header["model_digest"]
        n, slots, packing = result_header["n_subjects"], result_header["slots"], result_header["packing"]
        assert n == len(header["subjects"]) and slots == SLOTS
        per = slots * (2 if packing == "complex" else 1)
        assert len(blobs) == -(-n // per)
        raw = np.concatenate(
            [decrypt_block(self.ctx, blob, packing, min(per, n - i * per)) for i, blob in enumerate(blobs)]
        )
        return Scores(header, result_header, dict(zip(header["subjects"], raw.tolist(), strict=True)))


def sigmoid(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


# --- the world: set up through the repository --------------------------------------------------------------

pytestmark = [pytest.mark.db, pytest.mark.slow]

SUBJECT = Actor(None, "subject", "api")
PURPOSE = "loan_underwriting"
WEIGHTS = {
    "log_sales_mean_last6": 0.8,
    "tax_filing_ratio": -0.6,
    "tax_months_since_last_filing": -0.3,
    "company_age_years": 0.45,
    "log_registered_capital": 0.25,
    "industry_c": -0.7,
}
BIAS = -1.1
PREPROCESS: dict[str, dict[str, Any]] = {
    "log_sales_mean_last6": {"center": 11.0, "scale": 2.0},
    "company_age_years": {"center": 8.0, "scale": 5.0, "clip": [0.0, 30.0]},
    "log_registered_capital": {"center": 5.0, "scale": 2.0},
}


@dataclass
class World:
    bank: OrgHandle
    consented: list[str]
    narrow: list[str]
    strangers: list[str]


def _consent(rt: Runtime, bank_id: str, usccs: list[str], scope: list[dict[str, Any]]) -> None:
    with rt.db.transaction() as s:
        bank = s.get(Organization, bank_id)
        assert bank is not None
        for uscc in usccs:
            terms = Terms(
                purpose=PURPOSE,
                scope=scope,
                operations=["score"],
                granularity="score",
                valid_until=utcnow() + timedelta(days=30),
            )
            c = rt.consents.request(s, bank=bank, subject_uscc=uscc, terms=terms, actor=SUBJECT)
            rt.consents.approve(s, c, signed=signed(rt, s, c), actor=SUBJECT)


@pytest.fixture
def world(runtime: Runtime, platform: Platform, make_org: OrgFactory) -> World:
    bank = make_org(Role.bank, "Bare Bank")
    usccs = platform.data.registry.columns["uscc"].tolist()
    registry = {"dataset_id": platform.datasets["registry"], "fields": ["*"]}
    tax = {"dataset_id": platform.datasets["tax"], "fields": ["taxable_sales"]}
    consented, narrow = usccs[:40], usccs[40:43]
    _consent(runtime, bank.id, consented, [tax, registry])
    _consent(runtime, bank.id, narrow, [registry])  # not the tax field the model reads
    return World(bank, consented, narrow, [uscc_for(900_001), uscc_for(900_002)])


def plaintext_logits(rt: Runtime, subjects: list[str]) -> np.ndarray[Any, Any]:
    """bias + w . x over the feature table, with the preprocessing as documented: (clip(x) - center) / scale."""
    names = list(WEIGHTS)
    with rt.db.transaction(write=False) as s:
        table = rt.features.table(s)
    found, rows, _ = table.rows(subjects)
    assert found == subjects
    x = np.array(table.matrix(names, rows), dtype=np.float64)
    for j, name in enumerate(names):
        p = PREPROCESS.get(name, {})
        if "clip" in p:
            x[:, j] = np.clip(x[:, j], *p["clip"])
        x[:, j] = (x[:, j] - p.get("center", 0.0)) / p.get("scale", 1.0)
    return np.asarray(BIAS + x @ np.array([WEIGHTS[n] for n in names]))


@pytest.fixture
def bare(base_url: str, world: World) -> Iterator[BareBank]:
    client = BareBank(base_url, world.bank.token)
    yield client
    client.close()


def _score(bare: BareBank, world: World, packing: str, subjects: list[str]) -> tuple[bytes, Scores]:
    model = logistic_model(bare.ctx, bare.context_id, WEIGHTS, BIAS, packing)
    response = bare.submit(model, purpose=PURPOSE, subjects=subjects, preprocess=PREPROCESS)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "score" and job["state"] in ("queued", "running", "succeeded")
    assert job["params"]["context_id"] == bare.context_id
    assert job["params"]["model_digest"] == hashlib.sha256(model).hexdigest()
    done = bare.wait(job["id"])
    assert done["state"] == "succeeded", done["error"]
    assert done["result_available"]
    assert set(done["summary"]) >= {
        "scored",
        "not_scored",
        "not_scored_by_reason",
        "model_digest",
        "ciphertexts",
    }
    return model, bare.result(job["id"], model)


def test_a_bank_without_the_sdk_scores_with_real_packing(
    bare: BareBank, world: World, runtime: Runtime
) -> None:
    catalogue = bare.features()
    assert all(catalogue[name]["available"] for name in WEIGHTS)
    asked = world.strangers[:1] + world.consented + world.narrow + world.strangers[1:]
    _, scores = _score(bare, world, "real", asked)

    header = scores.header
    assert header["subjects"] == world.consented  # the request's order, those admitted
    assert {r["subject"]: r["reason"] for r in header["not_scored"]} == {
        **dict.fromkeys(world.narrow, "field_not_covered"),
        **dict.fromkeys(world.strangers, "no_grant"),
    }
    assert all(set(r) == {"subject", "reason", "detail"} for r in header["not_scored"])
    assert header["features"] == list(WEIGHTS)
    assert set(header["resolution"]) == set(WEIGHTS)
    assert header["preprocess"]["company_age_years"] == {"center": 8.0, "scale": 5.0, "clip": [0.0, 30.0]}
    assert header["preprocess"]["industry_c"] == {"center": 0.0, "scale": 1.0}  # identity when not named
    assert set(header["feature_window"]) == {"first_month", "months"}
    assert scores.result_header["kind"] == "logistic" and scores.result_header["packing"] == "real"

    got = sigmoid(np.array([scores.logits[s] for s in world.consented]))
    expected = sigmoid(plaintext_logits(runtime, world.consented))
    assert np.max(np.abs(got - expected)) < 1e-3


def test_a_bank_without_the_sdk_reads_complex_packing_with_sealapi(
    bare: BareBank, world: World, runtime: Runtime
) -> None:
    subjects = world.consented[:7]
    _, scores = _score(bare, world, "complex", subjects)
    assert scores.result_header["packing"] == "complex"
    got = np.array([scores.logits[s] for s in subjects])
    assert np.max(np.abs(got - plaintext_logits(runtime, subjects))) < 1e-3


def test_a_bank_without_the_sdk_scores_a_scorecard_after_preprocessing(
    bare: BareBank, world: World, runtime: Runtime
) -> None:
    card: dict[str, tuple[list[float], list[float], float | None]] = {
        "log_sales_mean_last6": ([-1.0, 0.0, 1.0], [-20.0, 5.0, 15.0, 30.0], None),
        "tax_months_since_last_filing": ([1.0, 3.0], [25.0, 0.0, -40.0], -60.0),
        "industry_c": ([0.5], [0.0, 12.0], None),
    }
    preprocess = {"log_sales_mean_last6": {"center": 11.0, "scale": 2.0}}  # applied before binning
    model = scorecard_model(bare.ctx, bare.context_id, card, 600.0, "real")
    response = bare.submit(model, purpose=PURPOSE, subjects="all_consented", preprocess=preprocess)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    assert bare.wait(job_id)["state"] == "succeeded"
    scores = bare.result(job_id, model)
    subjects = scores.header["subjects"]
    assert subjects == sorted(world.consented)  # all consented: in USCC order
    with runtime.db.transaction(write=False) as s:
        table = runtime.features.table(s)
    _, rows, _ = table.rows(subjects)
    x = table.matrix(list(card), rows)
    x[:, 0] = (x[:, 0] - 11.0) / 2.0
    expected = np.full(len(subjects), 600.0)
    for j, (edges, points, _) in enumerate(card.values()):
        expected += np.asarray(points)[np.searchsorted(edges, x[:, j], side="right")]
    got = np.array([scores.logits[s] for s in subjects])
    assert np.max(np.abs(got - expected)) < 1e-3


def test_nobody_admitted_gives_a_header_and_no_result_frame(bare: BareBank, world: World) -> None:
    model, scores = _score(bare, world, "real", world.strangers)
    assert scores.header["subjects"] == [] and scores.logits == {}
    assert scores.header["model_digest"] == hashlib.sha256(model).hexdigest()


def test_the_documented_context_mistakes_are_refused_with_their_codes(bare: BareBank) -> None:
    model = logistic_model(bare.ctx, bare.context_id, {"log_sales_mean_last6": 1.0}, 0.0, "real")
    mistakes = {
        # TenSEAL's defaults keep the relinearisation keys: invalid_he_context
        "invalid_he_context": bytes(bare.ctx.serialize(save_secret_key=False)),
        "he_context_has_secret_key": bytes(bare.ctx.serialize(save_secret_key=True)),
    }
    for code, context in mistakes.items():
        body = {
            "purpose": PURPOSE,
            "subjects": "all_consented",
            "context": base64.b64encode(context).decode(),
            "model": base64.b64encode(model).decode(),
        }
        response = bare.http.post("/v1/scoring", json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == code and error["message"] and error["request_id"]
    other = make_context()
    foreign = logistic_model(
        other, hashlib.sha256(public_context(other)).hexdigest(), {"log_sales_mean_last6": 1.0}, 0.0, "real"
    )
    response = bare.submit(foreign, purpose=PURPOSE, subjects="all_consented", preprocess={})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "ciphertext_from_another_context"
