"""The enclave's half of sealed datasets, against the real enclave process and real CKKS ciphertexts."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tenseal as ts
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from enclave_sim.errors import EnclaveProtocolError, OutputPolicyViolation, ProvisioningError, SealingError
from enclave_sim.host import EnclaveHost
from enclave_sim.model_check import ModelPolicy
from enclave_sim.platform import MODULES, expected_measurement
from enclave_sim.sealed import MIN_SCORE_NOISE_STD
from pps_wire.provision import OutputPolicy, encrypt_for_enclave
from pps_wire.quote import Quote, standard_policy, verify_quote
from pps_wire.sealed import SCORES_JOB, encrypt_score_request, open_scores, report_nonce, score_request
from protocols.he_scoring import check_public_context

pytestmark = pytest.mark.slow

PARAMS = {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 40, 40, 60], "scale_bits": 40}
SLOTS = 4096


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def vendor() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def host(vendor: Ed25519PrivateKey) -> Iterator[EnclaveHost]:
    h = EnclaveHost(vendor_key=vendor, platform_secret=os.urandom(32))
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def keys(host: EnclaveHost) -> dict[str, Any]:
    got = host.call("he_keygen", params=PARAMS)
    public, evaluation = base64.b64decode(got["public_context"]), base64.b64decode(got["eval_context"])
    return {
        "id": got["context_id"],
        "bfv_id": got["bfv_context_id"],
        "sealed": got["sealed"],
        "public": public,
        "pub": ts.context_from(public),
        "eval": ts.context_from(evaluation),
    }


def _column(keys: dict[str, Any], values: np.ndarray[Any, Any]) -> bytes:
    blob: bytes = ts.ckks_vector(keys["pub"], values.tolist()).serialize()
    return blob


def _sum(keys: dict[str, Any], blob: bytes, mask: np.ndarray[Any, Any]) -> bytes:
    out: bytes = (ts.ckks_vector_from(keys["eval"], blob) * mask.tolist()).sum().serialize()
    return out


def _aggregate(host: EnclaveHost, keys: dict[str, Any], ct: bytes, count: int, **kw: Any) -> dict[str, Any]:
    item = {"name": "x", "ciphertext": b64(ct), "count": count, "lower": 0.0, "upper": 1.0}
    reply = host.call(
        "he_aggregate", context_id=keys["id"], epsilon=kw.get("epsilon", 1.0), min_cohort=10, items=[item]
    )
    result: dict[str, Any] = reply["results"]["x"]
    return result


def _raw(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _bank_request(
    host: EnclaveHost,
    keys: dict[str, Any],
    vendor: Ed25519PrivateKey,
    subjects: list[str],
    *,
    dataset_id: str = "ds1",
) -> dict[str, Any]:
    """What a bank does: verify a fresh context quote, provision its recipient key and the query's binding."""
    nonce = os.urandom(32)
    quote = base64.b64decode(host.call("he_quote", context_id=keys["id"], nonce=b64(nonce))["quote"])
    key = X25519PrivateKey.generate()
    output = OutputPolicy(("scores",), os.urandom(32), _raw(key))
    provision = encrypt_score_request(
        quote,
        standard_policy(
            measurements=[expected_measurement()], nonce=report_nonce(keys["id"], nonce, keys["bfv_id"])
        ),
        vendor_key=vendor.public_key(),
        output=output,
        context_id=keys["id"],
        dataset_id=dataset_id,
        subjects=subjects,
    )
    return {
        "key": key,
        "output": output,
        "quote": quote,
        "quote_hash": Quote.parse(quote).quote_hash,
        "provision": provision,
        "subjects": subjects,
        "dataset_id": dataset_id,
    }


def _he_scores(
    host: EnclaveHost,
    keys: dict[str, Any],
    req: dict[str, Any],
    blocks: list[dict[str, Any]],
    **override: Any,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "context_id": keys["id"],
        "query_id": "q1",
        "dataset_id": req["dataset_id"],
        "subjects": req["subjects"],
        "noise_std": MIN_SCORE_NOISE_STD,
        "quote_hash": req["quote_hash"].hex(),
        "provision": b64(req["provision"]),
        "blocks": blocks,
    }
    fields.update(override)
    return host.call("he_scores", **fields)


def _product(keys: dict[str, Any], x: np.ndarray[Any, Any], weight: float) -> bytes:
    w = ts.ckks_vector(keys["pub"], [weight] * SLOTS).serialize()
    out: bytes = (
        ts.ckks_vector_from(keys["eval"], w) * ts.ckks_vector_from(keys["eval"], _column(keys, x))
    ).serialize()
    return out


def test_the_sealed_module_is_measured() -> None:
    assert MODULES.index("enclave_sim.sealed") < MODULES.index("enclave_sim.core")


def test_the_public_context_has_no_secret_key_and_cannot_decrypt(keys: dict[str, Any]) -> None:
    assert hashlib.sha256(keys["public"]).hexdigest() == keys["id"]
    checked = check_public_context(keys["public"])  # the scoring module's own check: public, CKKS, 128-bit
    assert checked.context_id == keys["id"]
    assert not keys["pub"].has_secret_key() and not keys["eval"].has_secret_key()
    ct = ts.ckks_vector(keys["pub"], [1.5] * 8)
    with pytest.raises(ValueError, match="secret"):
        ct.decrypt()
    with pytest.raises(ValueError, match="secret"):
        ts.ckks_vector_from(keys["eval"], ct.serialize()).decrypt()


def test_the_quote_binds_the_context(
    host: EnclaveHost, keys: dict[str, Any], vendor: Ed25519PrivateKey
) -> None:
    nonce = os.urandom(32)
    quote = base64.b64decode(host.call("he_quote", context_id=keys["id"], nonce=b64(nonce))["quote"])
    bid = keys["bfv_id"]  # the quote binds the CKKS and the BFV context ids together
    policy = standard_policy(
        measurements=[expected_measurement()], nonce=report_nonce(keys["id"], nonce, bid)
    )
    verify_quote(quote, policy, vendor_key=vendor.public_key())
    assert Quote.parse(quote).nonce == report_nonce(keys["id"], nonce, bid)
    other = hashlib.sha256(b"another context").hexdigest()  # a swapped context does not match the quote
    for cid, bfv in ((other, bid), (keys["id"], other), (bid, keys["id"]), (keys["id"], None)):
        with pytest.raises(Exception, match="nonce"):
            verify_quote(
                quote,
                standard_policy(measurements=[expected_measurement()], nonce=report_nonce(cid, nonce, bfv)),
                vendor_key=vendor.public_key(),
            )


def test_an_aggregate_is_decrypted_with_noise_and_controls(host: EnclaveHost, keys: dict[str, Any]) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, SLOTS)
    mask = (rng.uniform(0, 1, SLOTS) < 0.5).astype(float)
    got = _aggregate(host, keys, _sum(keys, _column(keys, x), mask), int(mask.sum()), epsilon=5.0)
    true = float((x * mask).sum())
    assert abs(got["sum"] - true) < 20 * got["sum_scale"] and got["sum"] != pytest.approx(true, abs=1e-9)
    assert abs(got["count"] - int(mask.sum())) < 30
    with pytest.raises(OutputPolicyViolation, match="below the minimum"):
        _aggregate(host, keys, _sum(keys, _column(keys, x), mask), 3)


def test_the_enclave_refuses_to_decrypt_a_feature_column(
    host: EnclaveHost, keys: dict[str, Any], vendor: Ed25519PrivateKey
) -> None:
    x = np.random.default_rng(2).uniform(0, 1, SLOTS)
    column = _column(keys, x)
    with pytest.raises(OutputPolicyViolation, match="not result-shaped"):
        _aggregate(host, keys, column, SLOTS)  # the raw column, claimed to be a sum
    masked = (ts.ckks_vector_from(keys["eval"], column) * ([1.0] * SLOTS)).serialize()
    with pytest.raises(OutputPolicyViolation, match="not result-shaped"):
        _aggregate(host, keys, masked, SLOTS)  # masked but not summed: still per-subject values
    req = _bank_request(host, keys, vendor, ["a", "b", "c"])
    with pytest.raises(OutputPolicyViolation, match="fresh ciphertext"):
        _he_scores(
            host, keys, req, [{"ciphertext": b64(column), "slots": [0, 1, 2], "subjects": ["a", "b", "c"]}]
        )


def test_scores_leave_only_for_listed_slots_encrypted_to_the_bank(
    host: EnclaveHost, keys: dict[str, Any], vendor: Ed25519PrivateKey
) -> None:
    x = np.random.default_rng(3).uniform(-1, 1, SLOTS)
    product = _product(keys, x, 0.75)
    asked = ["s5", "s0", "s4095", "s7"]
    req = _bank_request(host, keys, vendor, asked)
    reply = _he_scores(
        host, keys, req, [{"ciphertext": b64(product), "slots": [5, 0, 4095], "subjects": asked[:3]}]
    )
    assert reply["released"] == 3 and set(reply) == {"release", "released", "output"}
    assert reply["output"] == req["output"].public()  # the host learns which key, never the result key
    release = base64.b64decode(reply["release"])
    opened = open_scores(
        release,
        req["key"],
        result_key=req["output"].result_key,
        quote_hash=req["quote_hash"],
        query_id="q1",
        dataset_id="ds1",
        subjects=asked,
    )
    assert list(opened) == asked[:3]
    assert np.allclose(list(opened.values()), 0.75 * x[[5, 0, 4095]], atol=1e-3)
    common = {"quote_hash": req["quote_hash"], "dataset_id": "ds1", "subjects": asked}
    with pytest.raises(ProvisioningError):  # bound to its query: not replayable as another's
        open_scores(release, req["key"], result_key=req["output"].result_key, query_id="q3", **common)
    with pytest.raises(ProvisioningError):  # only the bank's key opens it
        open_scores(
            release, X25519PrivateKey.generate(), result_key=req["output"].result_key, query_id="q1", **common
        )
    with pytest.raises(ProvisioningError):  # and only the enclave could have tagged it
        open_scores(release, req["key"], result_key=os.urandom(32), query_id="q1", **common)
    again = _bank_request(host, keys, vendor, asked)
    with pytest.raises(EnclaveProtocolError, match="noise_std"):  # the extraction defence has a floor
        _he_scores(
            host, keys, again, [{"ciphertext": b64(product), "slots": [5], "subjects": ["s5"]}], noise_std=0.0
        )


def test_a_host_substituting_the_recipient_key_gets_a_refusal(
    host: EnclaveHost, keys: dict[str, Any], vendor: Ed25519PrivateKey
) -> None:
    """The host (operator) carries the bank's request; whatever it changes, it gets a refusal, not scores."""
    x = np.random.default_rng(4).uniform(-1, 1, SLOTS)
    block = {"ciphertext": b64(_product(keys, x, 1.0)), "slots": [0, 1], "subjects": ["s0", "s1"]}
    mine = X25519PrivateKey.generate()
    req = _bank_request(host, keys, vendor, ["s0", "s1"])
    with pytest.raises(ProvisioningError, match="named a recipient key"):  # its own key beside the bank's
        _he_scores(host, keys, req, [block], recipient_key=_raw(mine).hex())
    with pytest.raises(EnclaveProtocolError, match="no field"):  # or under another name
        _he_scores(host, keys, req, [block], recipient=_raw(mine).hex())
    for i in (0, 40, len(req["provision"]) - 1):  # an altered provisioning (the key is inside) does not open
        tampered = bytearray(req["provision"])
        tampered[i] ^= 1
        with pytest.raises(ProvisioningError, match="does not decrypt"):
            _he_scores(host, keys, req, [block], provision=b64(bytes(tampered)))
    with pytest.raises(ProvisioningError, match="another context, dataset or list of subjects"):
        _he_scores(host, keys, req, [block], dataset_id="another dataset")
    req = _bank_request(host, keys, vendor, ["s0", "s1"])
    with pytest.raises(ProvisioningError, match="another context, dataset or list of subjects"):
        _he_scores(host, keys, req, [block], subjects=["s0", "s1", "s2"])
    req = _bank_request(host, keys, vendor, ["s0", "s1"])
    wider = {**block, "slots": [0, 1, 2], "subjects": ["s0", "s1", "s2"]}
    with pytest.raises(OutputPolicyViolation, match="did not ask for"):  # a subject the bank did not list
        _he_scores(host, keys, req, [wider])
    nonce = os.urandom(32)
    quote = base64.b64decode(host.call("he_quote", context_id=keys["id"], nonce=b64(nonce))["quote"])
    req = {**req, "quote_hash": Quote.parse(quote).quote_hash}
    bound = score_request(context_id=keys["id"], dataset_id="ds1", subjects=["s0", "s1"])
    no_key = encrypt_for_enclave(  # a request without a recipient key (so the host's would be used)
        quote,
        standard_policy(
            measurements=[expected_measurement()], nonce=report_nonce(keys["id"], nonce, keys["bfv_id"])
        ),
        vendor_key=vendor.public_key(),
        job=SCORES_JOB,
        slot="bank",
        body=bound,
        output=OutputPolicy(("scores",), os.urandom(32)),
    )
    with pytest.raises(ProvisioningError, match="recipient key"):
        _he_scores(host, keys, req, [block], provision=b64(no_key))
    req = _bank_request(host, keys, vendor, ["s0", "s1"])
    _he_scores(host, keys, req, [block])  # the genuine request, once
    with pytest.raises(ProvisioningError, match="used already"):  # and not twice
        _he_scores(host, keys, req, [block], query_id="q2")


def test_a_ciphertext_under_another_context_is_refused(host: EnclaveHost, keys: dict[str, Any]) -> None:
    other = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 60])
    other.global_scale = 2**40
    with pytest.raises(ProvisioningError):
        _aggregate(host, keys, ts.ckks_vector(other, [1.0] * SLOTS).serialize(), SLOTS)


def test_the_secret_key_survives_a_restart_only_sealed(vendor: Ed25519PrivateKey) -> None:
    secret = os.urandom(32)
    h = EnclaveHost(vendor_key=vendor, platform_secret=secret)
    try:
        h.start()
        got = h.call("he_keygen", params=PARAMS)
        h.start()  # a new instance: the key is gone from memory
        with pytest.raises(ProvisioningError, match="no key"):
            h.call("he_quote", context_id=got["context_id"], nonce=b64(os.urandom(32)))
        assert (
            h.call("he_load", context_id=got["context_id"], sealed=got["sealed"])["context_id"]
            == got["context_id"]
        )
        tampered = bytearray(base64.b64decode(got["sealed"]))
        tampered[-1] ^= 1
        with pytest.raises(SealingError):
            h.call("he_load", context_id=got["context_id"], sealed=b64(bytes(tampered)))
    finally:
        h.stop()
    other = EnclaveHost(vendor_key=vendor, platform_secret=os.urandom(32))  # another platform
    try:
        other.start()
        with pytest.raises(SealingError):
            other.call("he_load", context_id=got["context_id"], sealed=got["sealed"])
    finally:
        other.stop()


# --- sealed scoring at the published grid, under the model policy (issue 24 item 3, issue 17) ---------------

RANGE = (0.0, 1000.0)
STEP = (RANGE[1] - RANGE[0]) / 100  # pps.services.sealed.grid_step: 1 % of the clipping range


def _model_payload(
    keys: dict[str, Any],
    columns: dict[str, np.ndarray[Any, Any]],
    weights: dict[str, float],
    policy: dict[str, Any] | None,
    *,
    weight_blobs: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    blobs = weight_blobs or {
        k: ts.ckks_vector(keys["pub"], [w] * SLOTS).serialize() for k, w in weights.items()
    }
    return {
        "weights": {k: b64(v) for k, v in blobs.items()},
        "columns": {
            k: {
                "blocks": [b64(_column(keys, columns[k]))],
                "resolution": STEP,
                "lower": RANGE[0],
                "upper": RANGE[1],
            }
            for k in weights
        },
        "n": SLOTS,
        "policy": policy,
    }


def _linear(
    keys: dict[str, Any], columns: dict[str, np.ndarray[Any, Any]], weights: dict[str, float]
) -> bytes:
    acc = None
    for k, w in weights.items():
        term = ts.ckks_vector_from(keys["eval"], ts.ckks_vector(keys["pub"], [w] * SLOTS).serialize()) * (
            ts.ckks_vector_from(keys["eval"], _column(keys, columns[k]))
        )
        acc = term if acc is None else acc + term
    assert acc is not None
    out: bytes = acc.serialize()
    return out


def _open(req: dict[str, Any], reply: dict[str, Any]) -> dict[str, float]:
    return open_scores(
        base64.b64decode(reply["release"]),
        req["key"],
        result_key=req["output"].result_key,
        quote_hash=req["quote_hash"],
        query_id="q1",
        dataset_id="ds1",
        subjects=req["subjects"],
    )


def test_the_read_back_attack_recovers_no_more_than_the_published_grid(
    host: EnclaveHost, keys: dict[str, Any], vendor: Ed25519PrivateKey
) -> None:
    """Issue 24: weight 1.0 on a sealed 0-1000 column read 40 values back within 1.5e-4. At the published grid
    (1 % of the range) the bank learns each value's grid cell and nothing finer, even with the policy off."""
    x = np.random.default_rng(11).uniform(*RANGE, SLOTS)
    cols = {"sales": x}
    asked = [f"s{i}" for i in range(40)]
    req = _bank_request(host, keys, vendor, asked)
    block = {
        "ciphertext": b64(_linear(keys, cols, {"sales": 1.0})),
        "slots": list(range(40)),
        "subjects": asked,
        "block": 0,
    }
    reply = _he_scores(host, keys, req, [block], model=_model_payload(keys, cols, {"sales": 1.0}, None))
    got = np.array(list(_open(req, reply).values()))
    grid = np.round(x[:40] / STEP) * STEP
    assert np.allclose(got, grid, atol=1e-3)  # the grid value, plus the release noise: no finer
    errors = np.abs(got - x[:40])
    assert errors.max() > 0.3 * STEP and errors.max() <= STEP / 2 + 1e-3  # vs 1.5e-4 before
    assert np.median(errors) > 0.1 * STEP


def test_a_crafted_sealed_model_is_refused_before_any_score(
    host: EnclaveHost, keys: dict[str, Any], vendor: Ed25519PrivateKey
) -> None:
    from enclave_sim.errors import ModelRefused
    from enclave_sim.model_check import ModelPolicy

    rng = np.random.default_rng(12)
    cols = {k: rng.uniform(*RANGE, SLOTS) for k in ("a", "b", "c", "d")}
    asked = [f"s{i}" for i in range(10)]
    policy = ModelPolicy().as_dict()
    crafted = {
        "one-hot": {"a": 0.004},
        "packed": {"a": 1e-6, "b": 1e-3, "c": 1.0},
    }
    for name, weights in crafted.items():
        req = _bank_request(host, keys, vendor, asked)
        block = {
            "ciphertext": b64(_linear(keys, cols, weights)),
            "slots": list(range(10)),
            "subjects": asked,
            "block": 0,
        }
        with pytest.raises(ModelRefused, match="model policy"):
            _he_scores(host, keys, req, [block], model=_model_payload(keys, cols, weights, policy))
        with pytest.raises(ProvisioningError, match="used already"):  # the request is spent: nothing left
            _he_scores(host, keys, req, [block], model=_model_payload(keys, cols, weights, None))
    honest = {"a": 0.001, "b": -0.0012, "c": 0.0008, "d": 0.0009}
    req = _bank_request(host, keys, vendor, asked)
    block = {
        "ciphertext": b64(_linear(keys, cols, honest)),
        "slots": list(range(10)),
        "subjects": asked,
        "block": 0,
    }
    reply = _he_scores(host, keys, req, [block], model=_model_payload(keys, cols, honest, policy))
    got = np.array(list(_open(req, reply).values()))
    want = sum(w * np.round(cols[k][:10] / STEP) * STEP for k, w in honest.items())
    assert np.allclose(got, want, atol=1e-3)
    assert len(reply["model_digest"]) == 64


def test_a_score_ciphertext_that_is_not_the_checked_model_is_refused(
    host: EnclaveHost, keys: dict[str, Any], vendor: Ed25519PrivateKey
) -> None:
    """The host shows the enclave an honest model but multiplies a column by another weight: refused."""
    rng = np.random.default_rng(13)
    cols = {k: rng.uniform(*RANGE, SLOTS) for k in ("a", "b", "c", "d")}
    honest = {"a": 0.001, "b": -0.0012, "c": 0.0008, "d": 0.0009}
    asked = ["s0", "s1"]
    req = _bank_request(host, keys, vendor, asked)
    block = {
        "ciphertext": b64(_product(keys, cols["a"], 1.0)),
        "slots": [0, 1],
        "subjects": asked,
        "block": 0,
    }
    with pytest.raises(OutputPolicyViolation, match="not the bank's weights"):
        _he_scores(
            host, keys, req, [block], model=_model_payload(keys, cols, honest, ModelPolicy().as_dict())
        )
    req = _bank_request(host, keys, vendor, asked)
    spread = ts.ckks_vector(keys["pub"], list(rng.uniform(0, 1, SLOTS))).serialize()  # not one weight
    blobs = {k: ts.ckks_vector(keys["pub"], [w] * SLOTS).serialize() for k, w in honest.items()}
    with pytest.raises(ProvisioningError, match="replicated"):
        _he_scores(
            host,
            keys,
            req,
            [{**block, "ciphertext": b64(_linear(keys, cols, honest))}],
            model=_model_payload(keys, cols, honest, None, weight_blobs={**blobs, "a": spread}),
        )
