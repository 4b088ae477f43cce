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
from enclave_sim.platform import MODULES, expected_measurement
from enclave_sim.quote import Quote, standard_policy, verify_quote
from enclave_sim.sealed import MIN_SCORE_NOISE_STD, open_scores, report_nonce
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
    policy = standard_policy(measurements=[expected_measurement()], nonce=report_nonce(keys["id"], nonce))
    verify_quote(quote, policy, vendor_key=vendor.public_key())
    assert Quote.parse(quote).nonce == report_nonce(keys["id"], nonce)
    other = hashlib.sha256(b"another context").hexdigest()  # a swapped context does not match the quote
    with pytest.raises(Exception, match="nonce"):
        verify_quote(
            quote,
            standard_policy(measurements=[expected_measurement()], nonce=report_nonce(other, nonce)),
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


def test_the_enclave_refuses_to_decrypt_a_feature_column(host: EnclaveHost, keys: dict[str, Any]) -> None:
    x = np.random.default_rng(2).uniform(0, 1, SLOTS)
    column = _column(keys, x)
    with pytest.raises(OutputPolicyViolation, match="not result-shaped"):
        _aggregate(host, keys, column, SLOTS)  # the raw column, claimed to be a sum
    masked = (ts.ckks_vector_from(keys["eval"], column) * ([1.0] * SLOTS)).serialize()
    with pytest.raises(OutputPolicyViolation, match="not result-shaped"):
        _aggregate(host, keys, masked, SLOTS)  # masked but not summed: still per-subject values
    recipient = X25519PrivateKey.generate().public_key()
    with pytest.raises(OutputPolicyViolation, match="fresh ciphertext"):
        host.call(
            "he_scores",
            context_id=keys["id"],
            bind="q1",
            recipient_key=recipient.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            ).hex(),
            noise_std=MIN_SCORE_NOISE_STD,
            blocks=[{"ciphertext": b64(column), "slots": [0, 1, 2]}],
        )


def test_scores_leave_only_for_listed_slots_encrypted_to_the_bank(
    host: EnclaveHost, keys: dict[str, Any]
) -> None:
    x = np.random.default_rng(3).uniform(-1, 1, SLOTS)
    w = ts.ckks_vector(keys["pub"], [0.75] * SLOTS).serialize()
    product = (
        ts.ckks_vector_from(keys["eval"], w) * ts.ckks_vector_from(keys["eval"], _column(keys, x))
    ).serialize()
    key = X25519PrivateKey.generate()
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    reply = host.call(
        "he_scores",
        context_id=keys["id"],
        bind="q2",
        recipient_key=pub,
        noise_std=MIN_SCORE_NOISE_STD,
        blocks=[{"ciphertext": b64(product), "slots": [5, 0, 4095]}],
    )
    assert reply["released"] == 3 and set(reply) == {"encrypted", "released"}
    scores = open_scores(base64.b64decode(reply["encrypted"]), key, bind="q2")
    assert np.allclose(scores, 0.75 * x[[5, 0, 4095]], atol=1e-3)
    with pytest.raises(ProvisioningError):  # bound to its query: not replayable as another's
        open_scores(base64.b64decode(reply["encrypted"]), key, bind="q3")
    with pytest.raises(ProvisioningError):
        open_scores(base64.b64decode(reply["encrypted"]), X25519PrivateKey.generate(), bind="q2")
    with pytest.raises(EnclaveProtocolError, match="noise_std"):  # the extraction defence has a floor
        host.call(
            "he_scores",
            context_id=keys["id"],
            bind="q2",
            recipient_key=pub,
            noise_std=0.0,
            blocks=[{"ciphertext": b64(product), "slots": [5]}],
        )


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
