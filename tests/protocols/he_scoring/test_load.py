"""The safe-room's validation point for CONTEXT and MODEL (``protocols.he_scoring.load``): the security claims
(a public context cannot decrypt; secret-key, weak and foreign contexts and ciphertexts are refused), limits,
and hostile bytes: random, truncated and mutated contexts and models give a clear error."""

from __future__ import annotations

import contextlib
import math
import os

import numpy as np
import pytest
import tenseal as ts

from protocols.errors import InvalidParameters, MessageTooLarge
from protocols.he_scoring import (
    BankScoringKey,
    ContextHasSecretKey,
    EncryptedModelMessage,
    ForeignCiphertext,
    InvalidCiphertext,
    InvalidContext,
    InvalidScoringModel,
    MessageType,
    ModelKind,
    Packing,
    ScorecardFeature,
    ScoreResultMessage,
    ScoringLimitExceeded,
    ScoringLimits,
    WeakParameters,
    check_public_context,
    decode_ckks_vector,
    decode_model,
    load_model,
    score,
)
from protocols.he_scoring.protobuf import encode_ckks_vector, parse_context, pb_len
from protocols.he_scoring.wire import frame
from tests.protocols.he_scoring.common import (
    SLOTS,
    TOLERANCE,
    crafted_context,
    make_scorecard,
    seal_payload_offset,
    sigmoid,
    truncations,
)


def test_a_public_context_cannot_decrypt(bank, context, loaded, data) -> None:
    public = ts.context_from(bank.public_context_bytes())
    assert public.is_public()
    assert not public.has_secret_key()
    with pytest.raises(ValueError):
        public.secret_key()
    result = score(context, loaded, data[3][:100])
    vector = ts.ckks_vector_from(public, result.ciphertexts[0])
    with pytest.raises(ValueError, match="secret"):
        vector.decrypt()
    assert not hasattr(context, "secret_key")
    assert not hasattr(context, "decryptor")


@pytest.mark.parametrize(
    "serialise",
    [
        pytest.param(lambda c: c.serialize(save_secret_key=True), id="secret-and-all-keys"),
        pytest.param(
            lambda c: c.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False),
            id="secret-key-only",
        ),
    ],
)
def test_a_context_with_the_secret_key_is_refused(serialise) -> None:
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60], n_threads=1)
    ctx.global_scale = 2**40
    with pytest.raises(ContextHasSecretKey, match="secret key"):
        check_public_context(serialise(ctx))


def test_the_sdk_secret_context_is_refused(bank) -> None:
    with pytest.raises(ContextHasSecretKey):
        check_public_context(bank.secret_context_bytes())
    restored = BankScoringKey.from_secret_context_bytes(bank.secret_context_bytes())
    assert restored.context_id == bank.context_id


@pytest.mark.parametrize(
    ("n", "bits", "match"),
    [
        pytest.param(8192, [60, 60, 60, 60], "below 128-bit", id="N8192-240-bits"),
        pytest.param(4096, [60, 40, 40, 60], "too small", id="N4096"),
        pytest.param(8192, [60, 40, 40, 40, 40], "below 128-bit", id="N8192-220-bits"),
    ],
)
def test_weak_parameters_are_refused(n, bits, match) -> None:
    with pytest.raises(WeakParameters, match=match):
        check_public_context(crafted_context(n, bits))


def test_a_crafted_secure_context_is_accepted_and_one_with_a_secret_is_not() -> None:
    checked = check_public_context(crafted_context(8192, [60, 40, 40, 60]))
    assert checked.coeff_modulus_bits == (60, 40, 40, 60)
    with pytest.raises(ContextHasSecretKey):
        check_public_context(crafted_context(8192, [60, 40, 40, 60], with_secret=True))


def test_a_bfv_context_is_refused() -> None:
    ctx = ts.context(ts.SCHEME_TYPE.BFV, 8192, plain_modulus=1032193, n_threads=1)
    with pytest.raises(WeakParameters, match="CKKS"):
        check_public_context(
            ctx.serialize(save_secret_key=False, save_galois_keys=False, save_relin_keys=False)
        )


def test_unneeded_keys_are_refused() -> None:
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60], n_threads=1)
    ctx.global_scale = 2**40
    with pytest.raises(InvalidContext, match="relinearisation"):
        check_public_context(
            ctx.serialize(save_secret_key=False, save_galois_keys=False, save_relin_keys=True)
        )


def test_a_model_of_another_bank_is_refused(context, other_bank, data) -> None:
    names, weights, bias, _ = data
    foreign = other_bank.encrypt_model(dict(zip(names, weights, strict=True)), bias)
    with pytest.raises(ForeignCiphertext, match="another context"):
        load_model(context, foreign.to_bytes())


def test_a_ciphertext_of_other_parameters_is_refused_even_with_a_forged_context_id(context, data) -> None:
    names, weights, bias, _ = data
    bigger = BankScoringKey.create(poly_modulus_degree=16384, coeff_mod_bit_sizes=(60, 40, 40, 60))
    genuine = bigger.encrypt_model(dict(zip(names[:2], weights[:2], strict=True)), bias)
    forged = EncryptedModelMessage(
        ModelKind.LOGISTIC, context.context_id, genuine.features, genuine.ciphertexts
    )
    with pytest.raises(InvalidCiphertext):
        load_model(context, forged.to_bytes())


def test_limits_are_enforced(bank, data) -> None:
    names, weights, bias, x = data
    public = bank.public_context_bytes()
    model = bank.encrypt_model(dict(zip(names, weights, strict=True)), bias).to_bytes()
    with pytest.raises(ScoringLimitExceeded, match="public context"):
        check_public_context(public, ScoringLimits(max_context_bytes=1000))
    context = check_public_context(public)
    with pytest.raises(ScoringLimitExceeded, match="features"):
        load_model(context, model, ScoringLimits(max_features=5))
    with pytest.raises(ScoringLimitExceeded, match="ciphertexts"):
        load_model(context, model, ScoringLimits(max_model_ciphertexts=3))
    with pytest.raises(ScoringLimitExceeded, match="bytes"):
        load_model(context, model, ScoringLimits(max_model_bytes=100_000))
    with pytest.raises(ScoringLimitExceeded, match="subjects"):
        score(context, model, x[:101], limits=ScoringLimits(max_subjects=100))
    card = bank.encrypt_scorecard(make_scorecard()).to_bytes()
    with pytest.raises(ScoringLimitExceeded, match="bins"):
        load_model(context, card, ScoringLimits(max_bins_per_feature=3))
    with pytest.raises(ScoringLimitExceeded, match="degree"):
        check_public_context(
            crafted_context(16384, [60, 40, 40, 60]), ScoringLimits(allowed_poly_modulus_degrees=(8192,))
        )
    with pytest.raises(InvalidContext, match="not accepted"):
        check_public_context(public, ScoringLimits(allowed_poly_modulus_degrees=(16384,)))
    assert isinstance(ScoringLimitExceeded("x"), MessageTooLarge)
    assert ScoringLimitExceeded("x").code == "he_limit_exceeded"


def test_model_shape_errors(bank, context, data) -> None:
    names, weights, bias, _ = data
    good = bank.encrypt_model(dict(zip(names[:2], weights[:2], strict=True)), bias)
    short = EncryptedModelMessage(ModelKind.LOGISTIC, good.context_id, good.features, good.ciphertexts[:2])
    with pytest.raises(InvalidCiphertext, match="needs 3 ciphertexts"):
        load_model(context, short.to_bytes())
    # tenseal-style vector holding one value instead of a replicated one
    single = bank._encrypt_value(1.0)
    vector = decode_ckks_vector(single)
    one_slot = encode_ckks_vector(vector.seal_bytes, 1, vector.scale)
    odd = EncryptedModelMessage(
        ModelKind.LOGISTIC, good.context_id, good.features, (one_slot, single, single)
    )
    with pytest.raises(InvalidCiphertext, match="replicated"):
        load_model(context, odd.to_bytes())
    duplicate = frame(
        MessageType.MODEL,
        {"kind": "logistic", "context_id": good.context_id, "features": ["a", "a"], "packing": "real"},
        good.ciphertexts,
    )
    with pytest.raises(InvalidScoringModel, match="unique"):
        decode_model(duplicate)
    in_memory = EncryptedModelMessage(ModelKind.LOGISTIC, good.context_id, ("a", "a"), good.ciphertexts)
    with pytest.raises(InvalidScoringModel, match="unique"):
        load_model(context, in_memory)
    unknown = frame(MessageType.MODEL, {"kind": "tree", "context_id": good.context_id, "features": ["a"]}, ())
    with pytest.raises(InvalidScoringModel, match="kind"):
        decode_model(unknown)
    extra = frame(
        MessageType.MODEL,
        {
            "kind": "logistic",
            "context_id": good.context_id,
            "features": ["a"],
            "packing": "real",
            "weights": [1],
        },
        good.ciphertexts[:2],
    )
    with pytest.raises(InvalidScoringModel, match="unexpected"):
        decode_model(extra)
    with pytest.raises(InvalidParameters, match="finite"):
        bank.encrypt_model({"a": math.inf}, 0.0)
    with pytest.raises(InvalidParameters, match="strictly increasing"):
        ScorecardFeature("x", edges=(2.0, 1.0), points=(1, 2, 3))


def test_random_bytes_in_valid_frames_are_refused(context, bank) -> None:
    rng = np.random.default_rng(3)
    for length in (0, 1, 16, 1000, 200_000):
        blob = rng.bytes(length)
        message = EncryptedModelMessage(ModelKind.LOGISTIC, context.context_id, ("a",), (blob, blob))
        with pytest.raises(InvalidCiphertext):
            load_model(context, message.to_bytes())
        result = ScoreResultMessage(
            ModelKind.LOGISTIC, bank.context_id, "00" * 32, 1, SLOTS, Packing.COMPLEX, 0.0, (blob,)
        )
        with pytest.raises(InvalidCiphertext):
            bank.decrypt_scores(result.to_bytes())


def test_truncated_contexts_models_and_results_are_refused(bank, context, loaded, model_bytes, data) -> None:
    for cut in [b"", *truncations(bank.public_context_bytes())]:
        with pytest.raises(InvalidContext):
            check_public_context(cut)
    for cut in [b"", *truncations(model_bytes)]:
        with pytest.raises(InvalidCiphertext):
            load_model(context, cut)
    result = score(context, loaded, data[3][:10]).to_bytes()
    for cut in [b"", *truncations(result)]:
        with pytest.raises(InvalidCiphertext):
            bank.decrypt_scores(cut)


@pytest.mark.slow
def test_mutated_seal_payloads_reach_the_checker_and_are_refused(bank, context, model_message, data) -> None:
    """Bytes that pass the Python framing and protobuf checks and are judged by SEAL in the isolated checker."""
    _names, weights, bias, x = data
    blob = model_message.ciphertexts[0]
    start = seal_payload_offset(blob)
    payload = blob[start:]
    mutations = {
        "seal-magic": bytes([payload[0] ^ 0xFF]) + payload[1:],
        "seal-size-field": payload[:8] + b"\xff\xff\xff\xff\xff\xff\x00\x00" + payload[16:],
        "truncated-payload": payload[: len(payload) // 2],
        "compressed-body": payload[:40] + os.urandom(len(payload) - 40),
    }
    for name, mutated in mutations.items():
        bad = encode_ckks_vector(mutated, SLOTS, 2.0**40)
        message = EncryptedModelMessage(
            ModelKind.LOGISTIC,
            context.context_id,
            model_message.features,
            (bad, *model_message.ciphertexts[1:]),
        )
        with pytest.raises(InvalidCiphertext, match="model's ciphertexts"):
            load_model(context, message.to_bytes())
        assert name
    params_garbage = pb_len(1, os.urandom(85)) + pb_len(2, pb_len(1, os.urandom(100)))
    with pytest.raises(InvalidContext, match="cannot be read"):
        check_public_context(params_garbage)
    public = bank.public_context_bytes()
    key_at = public.index(parse_context(public).public_key)
    for offset, always_refused in ((key_at, True), (key_at + 9, True), (len(public) // 2, False)):
        flipped = bytearray(public)
        flipped[offset] ^= 0x5A
        if always_refused:
            with pytest.raises(InvalidContext, match="cannot be read"):
                check_public_context(bytes(flipped))
        else:  # a changed coefficient of the public key is still a public key: no crash is the claim
            with contextlib.suppress(InvalidContext):
                check_public_context(bytes(flipped))
    # the checker recovered: a good context and model still go through
    checked = check_public_context(public)
    scores = bank.decrypt_scores(score(checked, model_message.to_bytes(), x[:20]))
    assert np.max(np.abs(scores.probabilities - sigmoid(x[:20] @ weights + bias))) < TOLERANCE


def test_bad_contexts_and_models_raise_protocol_errors_with_codes(bank, context, other_bank, data) -> None:
    names, weights, bias, _ = data
    foreign = other_bank.encrypt_model(dict(zip(names, weights, strict=True)), bias).to_bytes()
    cases = [
        (lambda: check_public_context("context"), InvalidContext),
        (lambda: check_public_context(b""), InvalidContext),
        (lambda: check_public_context(b"\x0a\xff"), InvalidContext),
        (lambda: check_public_context(bank.secret_context_bytes()), ContextHasSecretKey),
        (lambda: check_public_context(crafted_context(8192, [60, 60, 60, 60])), WeakParameters),
        (lambda: check_public_context(bank.public_context_bytes(), ScoringLimits(max_context_bytes=10)), ScoringLimitExceeded),
        (lambda: load_model(context, foreign), ForeignCiphertext),
        (lambda: load_model(context, b"PPHE"), InvalidCiphertext),
    ]  # fmt: skip
    for call, error in cases:
        with pytest.raises(error) as raised:
            call()
        assert raised.value.code == error.code
