"""The safe-room's evaluation (``protocols.he_scoring.server``): scores match plaintext numpy (logistic and
scorecards, both packings, the SDK and a tenseal-only bank), results are re-randomised and noised, feature
matrices are checked, and the stage machine holds."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as seal

from protocols.errors import InvalidParameters
from protocols.he_scoring import (
    InvalidFeatureMatrix,
    ModelKind,
    Packing,
    ScoringLimitExceeded,
    ScoringLimits,
    ScoringServer,
    ScoringStageError,
    ServerStage,
    check_public_context,
    encode_features,
    load_model,
    score,
)
from tests.protocols.he_scoring.common import (
    N_FEATURES,
    SLOTS,
    TOLERANCE,
    make_scorecard,
    scorecard_data,
    sigmoid,
    third_party_frame,
    third_party_unframe,
)


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


def test_scorecard_missing_value_without_missing_bin_is_refused(bank, context) -> None:
    model = load_model(context, bank.encrypt_scorecard(make_scorecard()).to_bytes())
    x = scorecard_data(10)
    x[2, 0] = np.nan
    with pytest.raises(InvalidFeatureMatrix, match="no missing bin"):
        score(context, model, x)


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
    with pytest.raises(InvalidParameters, match="noise_std"):
        score(context, loaded, x[:5], noise_std=math.nan)
    with pytest.raises(InvalidParameters, match="noise_std"):
        score(context, loaded, x[:5], noise_std=-1.0)


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


def test_bad_evaluation_inputs_raise_protocol_errors_with_codes(context, loaded, model_bytes) -> None:
    cases = [
        (lambda: score(context, loaded, np.zeros((2, 3))), InvalidFeatureMatrix),
        (lambda: score(context, loaded, np.zeros((2, N_FEATURES)), noise_std=2e3), InvalidParameters),
        (lambda: score(context, loaded, np.zeros((3, N_FEATURES)), limits=ScoringLimits(max_subjects=2)), ScoringLimitExceeded),
        (lambda: ScoringServer().receive_model(model_bytes), ScoringStageError),
    ]  # fmt: skip
    for call, error in cases:
        with pytest.raises(error) as raised:
            call()
        assert raised.value.code == error.code
