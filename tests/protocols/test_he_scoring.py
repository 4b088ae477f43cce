"""Encrypted scoring under CKKS (``protocols.he_scoring``) and its isolated checker (``protocols.he_isolation``).

Correctness against plaintext numpy (logistic regression and scorecards, the SDK and a tenseal-only bank), the
security claims (a public context cannot decrypt; secret-key, weak and foreign contexts and ciphertexts are
refused; results are re-randomised), limits, the stage machine, and hostile bytes: random, truncated and
mutated contexts, models and results give a clear error and the process stays alive; a checker that crashes or
hangs is contained.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as seal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocols.he_scoring as he
from pps.errors import InvalidInput, PayloadTooLarge
from protocols.he_isolation import IsolatedWorker, WorkerCrashed, WorkerRefused, WorkerTimeout
from protocols.he_scoring import (
    BankScoringKey,
    ContextHasSecretKey,
    EncryptedModelMessage,
    ForeignCiphertext,
    InvalidCiphertext,
    InvalidContext,
    InvalidFeatureMatrix,
    InvalidScoringModel,
    ModelKind,
    Packing,
    Scorecard,
    ScorecardFeature,
    ScoreResultMessage,
    ScoringLimitExceeded,
    ScoringLimits,
    ScoringServer,
    ScoringStageError,
    ServerStage,
    WeakParameters,
    check_public_context,
    decode_model,
    decode_result,
    encode_features,
    load_model,
    score,
)

SLOTS = 4096
N_FEATURES = 20
TOLERANCE = 1e-3


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module", autouse=True)
def _stop_checker():
    yield
    he.shutdown_checker()


@pytest.fixture(scope="module")
def bank() -> BankScoringKey:
    return BankScoringKey.create()


@pytest.fixture(scope="module")
def other_bank() -> BankScoringKey:
    return BankScoringKey.create()


@pytest.fixture(scope="module")
def context(bank: BankScoringKey) -> he.PublicScoringContext:
    return check_public_context(bank.public_context_bytes())


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray, float, np.ndarray]:
    rng = np.random.default_rng(20240601)
    names = [f"feature_{i:02d}" for i in range(N_FEATURES)]
    weights = rng.normal(0.0, 0.4, N_FEATURES)
    x = rng.normal(0.0, 1.0, (9000, N_FEATURES))
    x[:, 5] = rng.integers(0, 2, 9000)  # a binary column
    x[2 * SLOTS :, 7] = 0.0  # all zero in the second block: its plaintext is skipped
    return names, weights, -0.8, x


@pytest.fixture(scope="module")
def model_message(bank: BankScoringKey, data) -> EncryptedModelMessage:
    names, weights, bias, _ = data
    return bank.encrypt_model(dict(zip(names, weights, strict=True)), bias)


@pytest.fixture(scope="module")
def model_bytes(model_message: EncryptedModelMessage) -> bytes:
    return model_message.to_bytes()


@pytest.fixture(scope="module")
def loaded(context, model_bytes) -> he.LoadedModel:
    return load_model(context, model_bytes)


# --- correctness ---------------------------------------------------------------------------------------------


def test_logistic_scores_match_plaintext_numpy(bank, data, model_message) -> None:
    names, weights, bias, x = data
    server = ScoringServer()
    server.receive_context(bank.public_context_bytes())
    server.receive_model(model_message.to_bytes())
    assert server.required_features == tuple(names)
    result = server.score(x)
    assert result.packing is Packing.COMPLEX
    assert result.layout.n_ciphertexts == 2
    assert result.layout.locate(5) == (0, 5, "real")
    assert result.layout.locate(SLOTS + 5) == (0, 5, "imag")
    assert result.layout.locate(2 * SLOTS + 3) == (1, 3, "real")
    scores = bank.decrypt_scores(result.to_bytes(), model=model_message)
    logits = x @ weights + bias
    assert scores.kind is ModelKind.LOGISTIC
    assert scores.raw.shape == (9000,)
    assert np.max(np.abs(scores.probabilities - sigmoid(logits))) < TOLERANCE
    assert np.max(np.abs(scores.raw - logits)) < 1e-2
    server.finish()
    assert server.stage is ServerStage.FINISHED


def test_real_packing_one_subject_per_slot(bank, context, data) -> None:
    names, weights, bias, x = data
    message = bank.encrypt_model(dict(zip(names, weights, strict=True)), bias, packing=Packing.REAL)
    result = score(context, message.to_bytes(), x[:5000])
    assert result.packing is Packing.REAL
    assert result.layout.n_ciphertexts == 2
    assert result.layout.locate(SLOTS + 3) == (1, 3, "real")
    scores = bank.decrypt_scores(result.to_bytes(), model=message)
    assert np.max(np.abs(scores.probabilities - sigmoid(x[:5000] @ weights + bias))) < TOLERANCE


def test_without_noise_the_error_is_only_ckks_rounding(bank, context, loaded, data) -> None:
    _names, weights, bias, x = data
    result = score(context, loaded, x[:1000], noise_std=0.0)
    scores = bank.decrypt_scores(result)
    assert np.max(np.abs(scores.raw - (x[:1000] @ weights + bias))) < 1e-6


def test_encoded_columns_are_reused_across_models_of_one_design(bank, context, loaded, data) -> None:
    names, weights, bias, x = data
    encoded = encode_features(context, loaded, x)
    other = load_model(context, bank.encrypt_model(dict(zip(names, -weights, strict=True)), 0.3).to_bytes())
    for model, w, b in ((loaded, weights, bias), (other, -weights, 0.3)):
        scores = bank.decrypt_scores(score(context, model, encoded))
        assert np.max(np.abs(scores.probabilities - sigmoid(x @ w + b))) < TOLERANCE


def test_encoded_columns_of_another_design_are_refused(bank, context, loaded, data) -> None:
    names, weights, bias, x = data
    fewer = load_model(context, bank.encrypt_model(dict(zip(names[:3], weights[:3], strict=True)), bias))
    encoded = encode_features(context, fewer, x[:10, :3])
    with pytest.raises(InvalidFeatureMatrix, match="another model design"):
        score(context, loaded, encoded)
    real = load_model(
        context, bank.encrypt_model(dict(zip(names, weights, strict=True)), bias, packing=Packing.REAL)
    )
    with pytest.raises(InvalidFeatureMatrix, match="packing"):
        score(context, real, encode_features(context, loaded, x[:10]))


def make_scorecard() -> Scorecard:
    return Scorecard(
        features=(
            ScorecardFeature("company_age_years", edges=(1.0, 3.0, 10.0), points=(-30, -5, 10, 25)),
            ScorecardFeature("arrears_months", edges=(1.0, 3.0), points=(20, -10, -40), missing_points=-15.0),
            ScorecardFeature("log_sales", edges=(), points=(7.5,)),
            ScorecardFeature("court_cases", edges=(0.5,), points=(12, -35), missing_points=0.0),
        ),
        base_points=600.0,
    )


def scorecard_data(n: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.uniform(0, 20, n),
            rng.integers(0, 6, n).astype(float),
            rng.normal(10, 2, n),
            rng.integers(0, 3, n).astype(float),
        ]
    )
    x[:, 0][:5] = [1.0, 3.0, 10.0, 0.999, 9.999]  # values on the edges fall in the upper bin
    x[rng.random(n) < 0.1, 1] = np.nan
    x[rng.random(n) < 0.05, 3] = np.nan
    return x


def test_scorecard_matches_its_plaintext_computation(bank) -> None:
    card = make_scorecard()
    x = scorecard_data(3000)
    expected = card.points(x)
    message = bank.encrypt_scorecard(card)
    server = ScoringServer()
    server.receive_context(bank.public_context_bytes())
    server.receive_model(message.to_bytes())
    assert server.required_features == card.feature_names
    scores = bank.decrypt_scores(server.score(x), model=message)
    assert scores.kind is ModelKind.SCORECARD
    assert scores.probabilities is None
    assert np.max(np.abs(scores.raw - expected)) < TOLERANCE


def test_scorecard_bins_in_plaintext() -> None:
    card = make_scorecard()
    row = np.array([[3.0, np.nan, 1.0, 1.0]])
    assert card.points(row)[0] == 600 + 10 - 15 + 7.5 - 35
    with pytest.raises(ValueError, match="missing"):
        card.points(np.array([[np.nan, 0.0, 0.0, 0.0]]))


def test_scorecard_missing_value_without_missing_bin_is_refused(bank, context) -> None:
    model = load_model(context, bank.encrypt_scorecard(make_scorecard()).to_bytes())
    x = scorecard_data(10)
    x[2, 0] = np.nan
    with pytest.raises(InvalidFeatureMatrix, match="no missing bin"):
        score(context, model, x)


def third_party_frame(header: dict, blobs: list[bytes]) -> bytes:
    """A MODEL frame written from the documented format with the standard library only."""
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    out = b"PPHE" + bytes([1, 1]) + struct.pack("!I", len(head)) + head + struct.pack("!I", len(blobs))
    return out + b"".join(struct.pack("!I", len(b)) + b for b in blobs)


def third_party_unframe(data: bytes) -> tuple[dict, list[bytes]]:
    assert data[:6] == b"PPHE" + bytes([1, 2])
    (length,) = struct.unpack_from("!I", data, 6)
    header = json.loads(data[10 : 10 + length])
    pos = 10 + length
    (count,) = struct.unpack_from("!I", data, pos)
    pos += 4
    blobs = []
    for _ in range(count):
        (size,) = struct.unpack_from("!I", data, pos)
        blobs.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return header, blobs


@pytest.mark.parametrize("packing", ["real", "complex"])
def test_a_bank_with_only_tenseal_can_take_part(data, packing, tmp_path) -> None:
    """The wire format as documented, produced and read with tenseal (and its sealapi) and the standard
    library alone: no PPS code on the bank side."""
    names, weights, bias, x = data
    n = 2000 if packing == "real" else 6000
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60], n_threads=1)
    ctx.global_scale = 2**40
    public = ctx.serialize(save_secret_key=False, save_galois_keys=False, save_relin_keys=False)
    blobs = [ts.ckks_vector(ctx, [float(v)] * SLOTS).serialize() for v in [*weights, bias]]
    header = {
        "kind": "logistic",
        "context_id": hashlib.sha256(public).hexdigest(),
        "features": names,
        "packing": packing,
    }
    model = third_party_frame(header, blobs)

    result = score(check_public_context(public), model, x[:n]).to_bytes()  # the safe-room

    head, blocks = third_party_unframe(result)
    assert head["model_digest"] == hashlib.sha256(model).hexdigest()
    assert head["n_subjects"] == n
    if packing == "real":
        values = np.concatenate([ts.ckks_vector_from(ctx, blob).decrypt() for blob in blocks])
    else:  # SEAL's decode_complex through tenseal.sealapi; its objects move through files
        parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(8192)
        parms.set_coeff_modulus(seal.CoeffModulus.Create(8192, [60, 40, 40, 60]))
        seal_ctx = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
        path = str(tmp_path / "object")
        ctx.secret_key().data.save(path)
        secret_key = seal.SecretKey()
        secret_key.load(seal_ctx, path)
        decryptor, encoder = seal.Decryptor(seal_ctx, secret_key), seal.CKKSEncoder(seal_ctx)
        parts = []
        for blob in blocks:
            ts.ckks_vector_from(ctx, blob).ciphertext()[0].save(path)
            ciphertext, plain = seal.Ciphertext(), seal.Plaintext()
            ciphertext.load(seal_ctx, path)
            decryptor.decrypt(ciphertext, plain)
            z = np.array(encoder.decode_complex(plain))
            parts += [z.real, z.imag]
        values = np.concatenate(parts)[:n]
    assert values.shape == (n,)
    assert np.max(np.abs(sigmoid(values) - sigmoid(x[:n] @ weights + bias))) < TOLERANCE


@pytest.mark.slow
def test_synthetic_platform_data_and_a_trained_model(bank) -> None:
    from sklearn.linear_model import LogisticRegression

    from models.features import enterprise_features, feature_matrix
    from models.synth import generate

    platform = generate(3000, seed=11)
    _, features = enterprise_features(platform)
    x = feature_matrix(features)
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    y = np.asarray(platform.labels.columns["defaulted"], dtype=int)
    clf = LogisticRegression(max_iter=500).fit(x, y)
    message = bank.encrypt_model(dict(zip(features, clf.coef_[0], strict=True)), float(clf.intercept_[0]))
    ctx = check_public_context(bank.public_context_bytes())
    scores = bank.decrypt_scores(score(ctx, message.to_bytes(), x), model=message)
    assert np.max(np.abs(scores.probabilities - clf.predict_proba(x)[:, 1])) < TOLERANCE


# --- security claims -------------------------------------------------------------------------------------------


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


def crafted_context(n: int, bits: list[int], *, with_secret: bool = False) -> bytes:
    """A TenSEAL-format public context built with SEAL directly (TenSEAL itself refuses weak parameters)."""
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(n)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(n, bits))
    context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.NONE)
    keygen = seal.KeyGenerator(context)
    public_key = seal.PublicKey()
    keygen.create_public_key(public_key)
    public = (
        he._pb_len(1, he._seal_save(public_key))
        + he._pb_varint(2 << 3)
        + he._pb_varint(7)
        + he._pb_varint(3 << 3 | 1)
        + struct.pack("<d", 2.0**40)
    )
    out = he._pb_len(1, he._seal_save(parms)) + he._pb_len(2, public)
    if with_secret:
        out += he._pb_len(3, he._pb_len(1, he._seal_save(keygen.secret_key())))
    return out


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


def test_weak_parameters_cannot_be_created_by_the_sdk() -> None:
    with pytest.raises(ValueError, match="128-bit"):
        BankScoringKey.create(coeff_mod_bit_sizes=(60, 60, 60, 60))
    with pytest.raises(ValueError, match="poly_modulus_degree"):
        BankScoringKey.create(poly_modulus_degree=4096)
    with pytest.raises(TypeError):
        BankScoringKey(None)


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


def test_a_result_of_another_context_or_model_is_refused_by_the_bank(
    bank, other_bank, context, loaded, model_message, data
) -> None:
    result = score(context, loaded, data[3][:10])
    with pytest.raises(ForeignCiphertext):
        other_bank.decrypt_scores(result)
    other_model = bank.encrypt_model({"a": 1.0}, 0.0)
    with pytest.raises(InvalidCiphertext, match="another model"):
        bank.decrypt_scores(result, model=other_model)
    assert bank.decrypt_scores(result, model=model_message).raw.shape == (10,)


def test_results_are_rerandomised(bank, context, loaded, data) -> None:
    x = data[3][:50]
    first = score(context, loaded, x, noise_std=0.0)
    second = score(context, loaded, x, noise_std=0.0)
    assert first.ciphertexts[0] != second.ciphertexts[0]
    a, b = bank.decrypt_scores(first).raw, bank.decrypt_scores(second).raw
    assert np.max(np.abs(a - b)) < 1e-6


def test_noise_is_added_and_bounded(bank, context, loaded, data) -> None:
    _names, weights, bias, x = data
    noisy = bank.decrypt_scores(score(context, loaded, x[:SLOTS], noise_std=0.01)).raw
    error = noisy - (x[:SLOTS] @ weights + bias)
    assert 0.008 < float(np.std(error)) < 0.012
    with pytest.raises(ValueError, match="noise_std"):
        score(context, loaded, x[:5], noise_std=math.nan)
    with pytest.raises(ValueError, match="noise_std"):
        score(context, loaded, x[:5], noise_std=-1.0)


# --- shapes, limits, stages ---------------------------------------------------------------------------------


def test_feature_matrix_checks(context, loaded, data) -> None:
    x = data[3]
    cases = [
        (x[:10, :5], "columns"),
        (x[:0], "no rows"),
        (x[:10].tolist(), "numpy array"),
        (x[0], "2-D"),
        (np.where(np.arange(20) == 3, np.nan, x[:10]), "NaN"),
        (np.full((2, N_FEATURES), 1e12), "bound"),
        (np.full((2, N_FEATURES), "a"), "numeric"),
    ]
    for features, match in cases:
        with pytest.raises(InvalidFeatureMatrix, match=match):
            score(context, loaded, features)


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
    assert isinstance(ScoringLimitExceeded("x"), PayloadTooLarge)
    assert isinstance(ScoringLimitExceeded("x"), InvalidInput)


def test_limits_validate_themselves() -> None:
    with pytest.raises(ValueError):
        ScoringLimits(max_features=0)
    with pytest.raises(TypeError):
        ScoringLimits(max_subjects=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ScoringLimits(allowed_poly_modulus_degrees=(4096,))


def test_stage_machine(bank, model_bytes) -> None:
    server = ScoringServer()
    with pytest.raises(ScoringStageError):
        server.receive_model(model_bytes)
    with pytest.raises(ScoringStageError):
        server.score(np.zeros((1, N_FEATURES)))
    server.receive_context(bank.public_context_bytes())
    with pytest.raises(ScoringStageError):
        server.receive_context(bank.public_context_bytes())
    with pytest.raises(ScoringStageError):
        _ = server.required_features
    server.receive_model(model_bytes)
    assert server.stage is ServerStage.READY
    server.score(np.zeros((3, N_FEATURES)))
    server.score(np.ones((2, N_FEATURES)))
    assert server.subjects_scored == 5


def test_model_shape_errors(bank, context, data) -> None:
    names, weights, bias, _ = data
    good = bank.encrypt_model(dict(zip(names[:2], weights[:2], strict=True)), bias)
    short = EncryptedModelMessage(ModelKind.LOGISTIC, good.context_id, good.features, good.ciphertexts[:2])
    with pytest.raises(InvalidCiphertext, match="needs 3 ciphertexts"):
        load_model(context, short.to_bytes())
    # tenseal-style vector holding one value instead of a replicated one
    single = bank._encrypt_value(1.0)
    vector = he._decode_ckks_vector(single)
    one_slot = he._encode_ckks_vector(vector.seal_bytes, 1, vector.scale)
    odd = EncryptedModelMessage(
        ModelKind.LOGISTIC, good.context_id, good.features, (one_slot, single, single)
    )
    with pytest.raises(InvalidCiphertext, match="replicated"):
        load_model(context, odd.to_bytes())
    duplicate = he._frame(
        he.MessageType.MODEL,
        {"kind": "logistic", "context_id": good.context_id, "features": ["a", "a"], "packing": "real"},
        good.ciphertexts,
    )
    with pytest.raises(InvalidScoringModel, match="unique"):
        decode_model(duplicate)
    in_memory = EncryptedModelMessage(ModelKind.LOGISTIC, good.context_id, ("a", "a"), good.ciphertexts)
    with pytest.raises(InvalidScoringModel, match="unique"):
        load_model(context, in_memory)
    unknown = he._frame(
        he.MessageType.MODEL, {"kind": "tree", "context_id": good.context_id, "features": ["a"]}, ()
    )
    with pytest.raises(InvalidScoringModel, match="kind"):
        decode_model(unknown)
    extra = he._frame(
        he.MessageType.MODEL,
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
    with pytest.raises(ValueError, match="finite"):
        bank.encrypt_model({"a": math.inf}, 0.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        ScorecardFeature("x", edges=(2.0, 1.0), points=(1, 2, 3))


# --- message round trips ---------------------------------------------------------------------------------------

names_strategy = st.lists(
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20),
    min_size=1,
    max_size=6,
    unique=True,
)


@settings(max_examples=60, deadline=None)
@given(
    names=names_strategy,
    blobs=st.lists(st.binary(max_size=50), min_size=0, max_size=8),
    context_id=st.binary(min_size=32, max_size=32).map(bytes.hex),
    packing=st.sampled_from(list(Packing)),
)
def test_model_message_round_trip(names, blobs, context_id, packing) -> None:
    blobs = (blobs * 10)[: len(names) + 1] if blobs else [b""] * (len(names) + 1)
    message = EncryptedModelMessage(
        ModelKind.LOGISTIC, context_id, tuple(names), tuple(blobs), packing=packing
    )
    decoded = decode_model(message.to_bytes())
    assert decoded == message
    assert decoded.digest == message.digest


@settings(max_examples=60, deadline=None)
@given(
    edges=st.lists(
        st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=4, unique=True).map(
            sorted
        ),
        min_size=1,
        max_size=4,
    ),
    missing=st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_scorecard_message_round_trip(edges, missing) -> None:
    bins = tuple((tuple(e), m) for e, m in zip(edges, missing, strict=False))
    names = tuple(f"f{i}" for i in range(len(bins)))
    count = sum(len(e) + 1 + int(m) for e, m in bins) + 1
    message = EncryptedModelMessage(ModelKind.SCORECARD, "ab" * 32, names, (b"x",) * count, bins)
    assert decode_model(message.to_bytes()) == message


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 5 * SLOTS),
    noise=st.floats(0, 10),
    kind=st.sampled_from(list(ModelKind)),
    packing=st.sampled_from(list(Packing)),
)
def test_result_message_round_trip(n, noise, kind, packing) -> None:
    count = he.SlotLayout(n, SLOTS, packing).n_ciphertexts
    blobs = tuple(b"r" * i for i in range(count))
    message = ScoreResultMessage(kind, "cd" * 32, "ef" * 32, n, SLOTS, packing, noise, blobs)
    assert decode_result(message.to_bytes()) == message


@settings(max_examples=60, deadline=None)
@given(size=st.integers(0, 2**32 - 1), payload=st.binary(max_size=200), scale=st.floats(allow_nan=False))
def test_tenseal_vector_round_trip(size, payload, scale) -> None:
    vector = he._decode_ckks_vector(he._encode_ckks_vector(payload, size, scale))
    assert (vector.size, vector.seal_bytes, vector.scale) == (size, payload, scale)


def test_the_sdk_vector_encoding_is_read_by_tenseal(bank) -> None:
    full = ts.context_from(bank.secret_context_bytes())
    values = ts.ckks_vector_from(full, bank._encrypt_value(0.625)).decrypt()
    assert len(values) == SLOTS
    assert np.allclose(values, 0.625, atol=1e-6)


# --- hostile bytes -----------------------------------------------------------------------------------------


def truncations(data: bytes) -> list[bytes]:
    cuts = {0, 1, 2, 5, 9, 10, 12, 50, 86, 90, 100, 200, len(data) // 3, len(data) // 2, len(data) - 1}
    return [data[:c] for c in sorted(cuts) if c < len(data)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=3000))
def test_random_bytes_are_refused_cleanly(garbage) -> None:
    with pytest.raises(InvalidContext):
        check_public_context(garbage)
    with pytest.raises(InvalidCiphertext):
        decode_model(garbage)
    with pytest.raises(InvalidCiphertext):
        decode_result(garbage)


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


def seal_payload_offset(blob: bytes) -> int:
    vector = he._decode_ckks_vector(blob)
    return blob.index(vector.seal_bytes)


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
        bad = he._encode_ckks_vector(mutated, SLOTS, 2.0**40)
        message = EncryptedModelMessage(
            ModelKind.LOGISTIC,
            context.context_id,
            model_message.features,
            (bad, *model_message.ciphertexts[1:]),
        )
        with pytest.raises(InvalidCiphertext, match="model's ciphertexts"):
            load_model(context, message.to_bytes())
        assert name
    params_garbage = he._pb_len(1, os.urandom(85)) + he._pb_len(2, he._pb_len(1, os.urandom(100)))
    with pytest.raises(InvalidContext, match="cannot be read"):
        check_public_context(params_garbage)
    public = bank.public_context_bytes()
    key_at = public.index(he._parse_context(public).public_key)
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


# --- isolation ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_crashing_or_hanging_checker_is_contained() -> None:
    with IsolatedWorker("protocols.he_isolation", timeout_s=5, memory_limit_bytes=1024**3) as worker:
        assert worker.call("selftest_echo", {"a": 1}, [b"xy", b""]) == {"args": {"a": 1}, "lengths": [2, 0]}
        first = worker.pid
        with pytest.raises(WorkerCrashed) as crashed:
            worker.call("selftest_abort")
        assert crashed.value.exitcode == -6  # SIGABRT, in the child only
        assert worker.call("selftest_echo") == {"args": {}, "lengths": []}
        assert worker.pid != first
        with pytest.raises(WorkerTimeout):
            worker.call("selftest_hang", {"seconds": 60}, timeout_s=0.5)
        with pytest.raises(WorkerRefused) as refused:
            worker.call("selftest_allocate", {"bytes": 4 * 1024**3})
        assert refused.value.error_type == "MemoryError"
        with pytest.raises(WorkerRefused, match="no"):
            worker.call("selftest_raise", {"message": "no"})
        assert worker.call("selftest_echo", {"b": 2}) == {"args": {"b": 2}, "lengths": []}
        assert worker.restarts == 4


class CrashingChecker(IsolatedWorker):
    def __init__(self, error: Exception) -> None:
        super().__init__("protocols.he_isolation")
        self.error = error

    def call(self, *args, **kwargs):  # type: ignore[override]
        raise self.error


@pytest.mark.parametrize(
    ("error", "match"),
    [
        (WorkerCrashed("died", exitcode=-11), "crashed the isolated checker"),
        (WorkerTimeout("slow"), "took more than"),
        (WorkerRefused("bad bytes", error_type="ValueError"), "cannot be read"),
    ],
)
def test_checker_failures_become_clear_errors(bank, context, model_bytes, error, match) -> None:
    checker = CrashingChecker(error)
    with pytest.raises(InvalidContext, match=match):
        check_public_context(bank.public_context_bytes(), worker=checker)
    with pytest.raises(InvalidCiphertext, match=match):
        load_model(context, model_bytes, worker=checker)


HOSTILE_VALUES = [None, True, 7, -1, 1.5, "x", [], ["logistic"], {}, {"a": 1}, [[1]], "0" * 64]


@pytest.mark.parametrize("key", ["kind", "context_id", "features", "packing", "bins"])
def test_every_hostile_header_value_is_a_clear_refusal(bank, key: str) -> None:
    """Each header field replaced by values of every JSON type: always a PPS input error, never a crash."""
    good = bank.encrypt_scorecard(Scorecard((ScorecardFeature("a", (0.0,), (1.0, 2.0)),)))
    base = {
        "kind": "scorecard",
        "context_id": good.context_id,
        "features": ["a"],
        "packing": "real",
        "bins": [{"edges": [0.0], "missing": False}],
    }
    for value in HOSTILE_VALUES:
        frame = he._frame(he.MessageType.MODEL, {**base, key: value}, good.ciphertexts)
        try:
            decode_model(frame)
        except InvalidInput:
            continue
    result_base = {
        "kind": "logistic",
        "context_id": good.context_id,
        "model_digest": good.context_id,
        "n_subjects": 1,
        "slots": 4096,
        "packing": "real",
        "noise_std": 0.0,
    }
    for value in HOSTILE_VALUES:
        head = {**result_base, key: value} if key in result_base else result_base
        try:
            he.decode_result(he._frame(he.MessageType.RESULT, head, good.ciphertexts[:1]))
        except InvalidInput:
            continue
