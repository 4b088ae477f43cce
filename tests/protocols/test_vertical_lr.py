"""Vertical logistic regression: the protocol follows its plaintext reference, matches a centralised fit on
real data, keeps what it promises hidden, and refuses bad input and messages out of order.

Coordinator keys are 1024-bit here for speed (the default is 2048).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from models import datasets, metrics
from protocols import paillier_fast as pf
from protocols import vertical_lr as vl

KEY_BITS = 1024  # test-only size


@pytest.fixture(scope="module")
def coordinator_key() -> pf.PrivateKey:
    return pf.generate_keypair(KEY_BITS)[1]


@pytest.fixture(scope="module")
def breast() -> datasets.VerticalSplit:
    return datasets.breast_cancer_vertical()


def small_data(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xg, xh = rng.normal(size=(n, 3)), rng.normal(size=(n, 4))
    y = (xg[:, 0] - xh[:, 1] + rng.normal(size=n) > 0).astype(float)
    return xg, xh, y


def run(
    xg: np.ndarray,
    xh: np.ndarray,
    y: np.ndarray,
    key: pf.PrivateKey,
    config: vl.VerticalLRConfig,
    **kw: object,
) -> vl.TrainingReport:
    return vl.train_vertical_lr(vl.Guest(xg, y), vl.Host(xh), vl.Coordinator(key), config, **kw)  # type: ignore[arg-type]


def compare_with_centralised(
    split: datasets.VerticalSplit, report: vl.TrainingReport
) -> tuple[float, float, float, float]:
    x_train, x_test = split.centralised()
    central = LogisticRegression(C=1.0, max_iter=5000).fit(x_train, split.y_train)
    z_central = central.decision_function(x_test)
    z_fed = report.guest_model.partial_logit(split.guest_test) + report.host_model.partial_logit(
        split.host_test
    )
    return (
        metrics.auc(split.y_test, z_fed),
        metrics.auc(split.y_test, z_central),
        metrics.ks(split.y_test, z_fed),
        metrics.ks(split.y_test, z_central),
    )


# --- correctness and quality ---------------------------------------------------------------------------------------


def test_breast_cancer_matches_reference_and_centralised(
    breast: datasets.VerticalSplit, coordinator_key: pf.PrivateKey
) -> None:
    n = len(breast.y_train)
    config = vl.VerticalLRConfig(epochs=10, batch_size=64, learning_rate=0.1, l2=1 / n)
    report = run(breast.guest_train, breast.host_train, breast.y_train, coordinator_key, config)
    ref_g, ref_h, ref_losses = vl.reference_fit(breast.guest_train, breast.host_train, breast.y_train, config)
    np.testing.assert_allclose(report.guest_model.weights, ref_g.weights, atol=1e-6)
    np.testing.assert_allclose(report.host_model.weights, ref_h.weights, atol=1e-6)
    assert report.guest_model.intercept == pytest.approx(ref_g.intercept, abs=1e-6)
    np.testing.assert_allclose(report.losses, ref_losses, atol=1e-5)
    assert report.losses[-1] < report.losses[0]
    auc_fed, auc_central, ks_fed, ks_central = compare_with_centralised(breast, report)
    print(
        f"breast cancer: AUC fed {auc_fed:.4f} central {auc_central:.4f}; KS fed {ks_fed:.4f} central {ks_central:.4f}"
    )
    assert abs(auc_fed - auc_central) <= 0.01
    assert abs(ks_fed - ks_central) <= 0.05


@pytest.mark.slow
def test_german_credit_matches_centralised(coordinator_key: pf.PrivateKey) -> None:
    split = datasets.german_credit_vertical()
    assert split.guest_train.shape == (700, 6) and split.host_train.shape == (700, 56)
    assert all(f.startswith(("credit_history", "number_of_existing")) for f in split.guest_features)
    n = len(split.y_train)
    config = vl.VerticalLRConfig(epochs=10, batch_size=100, learning_rate=0.3, l2=1 / n, tol=1e-5)
    report = run(split.guest_train, split.host_train, split.y_train, coordinator_key, config)
    auc_fed, auc_central, ks_fed, ks_central = compare_with_centralised(split, report)
    print(
        f"German credit: AUC fed {auc_fed:.4f} central {auc_central:.4f}; KS fed {ks_fed:.4f} central {ks_central:.4f}"
    )
    assert abs(auc_fed - auc_central) <= 0.01


def test_datasets_are_aligned_and_preprocessed(breast: datasets.VerticalSplit) -> None:
    assert breast.guest_train.shape[1] == 10 and breast.host_train.shape[1] == 20
    assert len(breast.y_train) + len(breast.y_test) == 569
    x_train, _ = breast.centralised()
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-12)
    assert abs(breast.y_train.mean() - breast.y_test.mean()) < 0.01  # stratified


def test_early_stopping_and_lr_schedule(coordinator_key: pf.PrivateKey) -> None:
    xg, xh, y = small_data()
    config = vl.VerticalLRConfig(epochs=8, batch_size=40, learning_rate=0.2, lr_decay=0.5, tol=0.05)
    report = run(xg, xh, y, coordinator_key, config)
    assert report.stopped_early and report.epochs < 8 and len(report.losses) == report.epochs
    _, _, ref_losses = vl.reference_fit(xg, xh, y, config)
    assert len(ref_losses) == report.epochs
    assert config.learning_rate_at(2) == pytest.approx(0.1)
    sqrt = vl.VerticalLRConfig(learning_rate=0.2, lr_decay=0.5, lr_decay_sqrt=True)
    assert sqrt.learning_rate_at(2) == pytest.approx(0.2 / np.sqrt(2))


def test_full_obfuscators_and_prefill_work_alike(coordinator_key: pf.PrivateKey) -> None:
    xg, xh, y = small_data(60)
    config = vl.VerticalLRConfig(epochs=2, batch_size=None, obfuscators="full", early_stopping=False)
    report = run(xg, xh, y, coordinator_key, config, prefill_workers=1)
    _, ref_h, _ = vl.reference_fit(xg, xh, y, config)
    np.testing.assert_allclose(report.host_model.weights, ref_h.weights, atol=1e-6)
    assert "obfuscator precompute" in report.seconds


def test_scoring_needs_both_halves_and_the_banks_key(coordinator_key: pf.PrivateKey) -> None:
    xg, xh, y = small_data()
    report = run(xg, xh, y, coordinator_key, vl.VerticalLRConfig(epochs=2, batch_size=40))
    bank_pk, bank_sk = pf.generate_keypair(KEY_BITS)
    contribution = vl.host_score_contribution(report.host_model, xh[:5], bank_pk)
    msg = vl.decode_message(contribution, bank_pk)
    assert msg.type is vl.MessageType.SCORE_CONTRIBUTION and len(msg.values) == 5
    # no plaintext partial score in the bytes: decrypting needs the bank's key
    partial = report.host_model.partial_logit(xh[:5])
    assert (
        pf.encode_fixed(bank_pk, partial[:1], vl.SCORE_FRAC_BITS)[0].to_bytes(128, "big") not in contribution
    )
    p = vl.guest_score(report.guest_model, xg[:5], contribution, bank_sk)
    z = report.guest_model.partial_logit(xg[:5]) + partial
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z)), atol=1e-9)
    with pytest.raises(vl.InvalidMessage, match="another Paillier key"):
        vl.guest_score(report.guest_model, xg[:5], contribution, coordinator_key)
    with pytest.raises(vl.InvalidTrainingData, match="scored 5 applicants"):
        vl.guest_score(report.guest_model, xg[:4], contribution, bank_sk)


# --- what each party sees -------------------------------------------------------------------------------------------


def test_coordinator_sees_only_masked_values(coordinator_key: pf.PrivateKey) -> None:
    xg, xh, y = small_data()
    seen: list[bytes] = []

    def tap(sender: vl.Party, recipient: vl.Party, data: bytes) -> bytes:
        if recipient is vl.Party.COORDINATOR and data[5] == vl.MessageType.MASKED_GRADIENT:
            seen.append(data)
        return data

    config = vl.VerticalLRConfig(epochs=1, batch_size=40, early_stopping=False)
    run(xg, xh, y, coordinator_key, config, transport=tap)
    pk = coordinator_key.public_key
    plain = [v for data in seen for v in coordinator_key.decrypt_raw(vl.decode_message(data, pk).values)]
    assert len(plain) == 3 * (4 + 3 + 2)  # 3 batches x (host 4, guest 3 + intercept + loss)
    # a gradient at scale 2^56 is below 2^70; masked values are spread over Z_n
    assert all(min(int(v), int(pk.n - v)) > 2**200 for v in plain)


def test_residuals_are_rerandomised(coordinator_key: pf.PrivateKey) -> None:
    """The host cannot divide its own [[u_h]] out of [[4 d]] to read the guest's u_g + 2 - 4 y."""
    xg, xh, y = small_data()
    captured: dict[int, vl.Message] = {}
    pk = coordinator_key.public_key

    def tap(sender: vl.Party, recipient: vl.Party, data: bytes) -> bytes:
        kind = data[5]
        if kind in (vl.MessageType.FORWARD, vl.MessageType.RESIDUALS) and kind not in captured:
            captured[kind] = vl.decode_message(data, pk)
        return data

    run(xg, xh, y, coordinator_key, vl.VerticalLRConfig(epochs=1, batch_size=40), transport=tap)
    fwd, res = captured[vl.MessageType.FORWARD], captured[vl.MessageType.RESIDUALS]
    for uh, d in zip(fwd.values, res.values, strict=False):
        ratio = d * pow(int(uh), -1, int(pk.nsquare)) % pk.nsquare
        assert (ratio - 1) % pk.n != 0


# --- bad input ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: vl.Guest(np.ones(5), np.zeros(5)), "2-D"),
        (lambda: vl.Guest(np.ones((5, 0)), np.zeros(5)), "2-D"),
        (lambda: vl.Guest(np.array([[1.0], [np.nan]]), np.array([0, 1])), "NaN or infinite value at row 1"),
        (lambda: vl.Host(np.array([[1.0], [np.inf]])), "NaN or infinite"),
        (lambda: vl.Guest(np.ones((3, 2)), np.array([0, 1, 2])), "0 or 1"),
        (lambda: vl.Guest(np.ones((3, 2)), np.array([0, 1, -1])), "0 or 1"),
        (lambda: vl.Guest(np.ones((3, 2)), np.array([1, 1, 1])), "both classes"),
        (lambda: vl.Guest(np.ones((3, 2)), np.array([0, 1])), "vector of 3"),
        (lambda: vl.Guest(np.ones((3, 2)), np.array(["a", "b", "c"])), "0 or 1"),
        (lambda: vl.Host([["a", "b"]]), "not a numeric matrix"),
    ],
)
def test_bad_training_data(make: object, match: str) -> None:
    with pytest.raises(vl.InvalidTrainingData, match=match):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"l2": -1.0}, "l2"),
        ({"tol": float("nan")}, "tol"),
        ({"batch_size": 0}, "batch_size"),
        ({"early_stopping": True, "compute_loss": False}, "compute_loss"),
        ({"feature_frac_bits": 60}, "feature_frac_bits"),
        ({"obfuscators": "none"}, "obfuscators"),
    ],
)
def test_bad_config(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(vl.InvalidConfig, match=match):
        vl.VerticalLRConfig(**kwargs)  # type: ignore[arg-type]


def set_up(
    key: pf.PrivateKey, n_guest: int = 60, n_host: int = 60, batch: int = 20
) -> tuple[vl.Guest, vl.Host, vl.Coordinator, bytes]:
    xg, xh, y = small_data(max(n_guest, n_host))
    guest, host, coord = vl.Guest(xg[:n_guest], y[:n_guest]), vl.Host(xh[:n_host]), vl.Coordinator(key)
    pk_msg = coord.public_key_message()
    guest.receive_public_key(pk_msg)
    host.receive_public_key(pk_msg)
    setup = guest.setup(vl.VerticalLRConfig(epochs=2, batch_size=batch))
    coord.receive_setup(setup)
    return guest, host, coord, setup


def test_mismatched_row_counts(coordinator_key: pf.PrivateKey) -> None:
    _, host, _, setup = set_up(coordinator_key, n_guest=60, n_host=59)
    with pytest.raises(vl.InvalidTrainingData, match=r"row counts differ: the guest has 60 .* the host 59"):
        host.receive_setup(setup)


def test_batches_too_small_for_the_feature_counts(coordinator_key: pf.PrivateKey) -> None:
    _, host, _, setup = set_up(coordinator_key, batch=4)  # guest has 3 features + intercept
    with pytest.raises(vl.InvalidConfig, match="guest's 3 features"):
        host.receive_setup(setup)
    xg, xh, y = small_data(60)
    guest, host = vl.Guest(xg, y), vl.Host(np.hstack([xh, xh]))  # 8 host features
    pk_msg = vl.Coordinator(coordinator_key).public_key_message()
    guest.receive_public_key(pk_msg)
    host.receive_public_key(pk_msg)
    ack = host.receive_setup(guest.setup(vl.VerticalLRConfig(batch_size=8)))
    with pytest.raises(vl.InvalidConfig, match="host's 8 features"):
        guest.receive_setup_ack(ack)  # 8 rows per batch > 3 + 1 but not > 8


def test_messages_out_of_order(coordinator_key: pf.PrivateKey) -> None:
    guest, host, coord, setup = set_up(coordinator_key)
    with pytest.raises(vl.ProtocolStateError, match="forward\\(\\) while awaiting_setup"):
        host.forward()
    guest.receive_setup_ack(host.receive_setup(setup))
    with pytest.raises(vl.ProtocolStateError, match="out of order"):
        host.receive_setup(setup)  # a second SETUP
    with pytest.raises(vl.ProtocolStateError, match="masked_gradient"):
        guest.masked_gradient()  # before any FORWARD
    fwd = host.forward()
    with pytest.raises(vl.ProtocolStateError):
        host.forward()  # twice without the residuals
    with pytest.raises(vl.ProtocolStateError, match="expected FORWARD from host, got SETUP"):
        guest.receive_forward(setup)
    res = guest.receive_forward(fwd)
    with pytest.raises(vl.ProtocolStateError, match="out of order"):
        guest.receive_forward(fwd)  # replayed
    host_grad = host.receive_residuals(res)
    guest_grad = guest.masked_gradient()
    host_plain = coord.decrypt(host_grad)
    with pytest.raises(vl.ProtocolStateError, match="second MASKED_GRADIENT"):
        coord.decrypt(host_grad)  # one decryption per side per batch
    with pytest.raises(vl.ProtocolStateError, match="expected DECRYPTED"):
        guest.receive_decrypted(host_grad)
    guest.receive_decrypted(coord.decrypt(guest_grad))
    host.receive_decrypted(host_plain)
    with pytest.raises(vl.ProtocolStateError, match="end_epoch"):
        guest.end_epoch()  # two more batches to go
    # a FORWARD of the batch just done (epoch 0, batch 0) is refused now that batch 1 is due
    with pytest.raises(vl.ProtocolStateError, match="epoch 0 batch 0, expected epoch 0 batch 1"):
        guest.receive_forward(fwd)


def test_foreign_session_and_key(coordinator_key: pf.PrivateKey) -> None:
    guest, host, _, setup = set_up(coordinator_key)
    guest.receive_setup_ack(host.receive_setup(setup))
    other_guest, other_host, _, other_setup = set_up(coordinator_key)
    other_guest.receive_setup_ack(other_host.receive_setup(other_setup))
    with pytest.raises(vl.ProtocolStateError, match="another session"):
        guest.receive_forward(other_host.forward())
    other_key = pf.generate_keypair(KEY_BITS)[1]
    g2, h2, _, s2 = set_up(other_key)
    g2.receive_setup_ack(h2.receive_setup(s2))
    with pytest.raises(vl.InvalidMessage, match="another Paillier key"):
        guest.receive_forward(h2.forward())


def test_malformed_bytes(coordinator_key: pf.PrivateKey) -> None:
    guest, host, _, setup = set_up(coordinator_key)
    guest.receive_setup_ack(host.receive_setup(setup))
    fwd = host.forward()
    pk = coordinator_key.public_key
    for bad, match in [
        (b"", "too short"),
        (b"XXXX" + fwd[4:], "magic"),
        (fwd[:4] + b"\x09" + fwd[5:], "version"),
        (fwd[:5] + b"\x63" + fwd[6:], "unknown message type"),
        (fwd[:-1], "expected 21 ciphertexts"),
        (fwd[: -pk.ciphertext_bytes] + b"\xff" * pk.ciphertext_bytes, "out of range"),
    ]:
        with pytest.raises(vl.InvalidMessage, match=match):
            guest.receive_forward(bad)
    guest.receive_forward(fwd)  # the genuine message still works afterwards
