"""Guest, host and coordinator (``guest.py``, ``host.py``, ``coordinator.py``): what each sees, the batch sizes
they refuse, and their stages."""

from __future__ import annotations

import numpy as np
import pytest

from protocols import paillier_fast as pf
from protocols import vertical_lr as vl
from tests.protocols.vertical_lr.common import KEY_BITS, run, set_up, small_data


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
    z = guest.receive_forward(fwd)  # loss="exact": the joined linear predictor, for the coordinator
    with pytest.raises(vl.ProtocolStateError, match="out of order"):
        guest.receive_forward(fwd)  # replayed
    with pytest.raises(vl.ProtocolStateError, match="expected RESIDUALS from guest, got LINEAR_PREDICTOR"):
        host.receive_residuals(z)  # the host never gets the linear predictors
    with pytest.raises(vl.ProtocolStateError, match="expected MASKED_GRADIENT"):
        coord.decrypt(z)  # nor does the coordinator decrypt them as a gradient
    probs = coord.sigmoid(z)
    with pytest.raises(vl.ProtocolStateError, match="second LINEAR_PREDICTOR"):
        coord.sigmoid(z)  # one per batch
    with pytest.raises(vl.ProtocolStateError, match="masked_gradient"):
        guest.masked_gradient()  # the residuals first
    res = guest.receive_probabilities(probs)
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


def test_a_step_out_of_order_is_a_protocol_error_with_its_code(coordinator_key: pf.PrivateKey) -> None:
    _guest, host, _coord, _setup = set_up(coordinator_key)
    with pytest.raises(vl.ProtocolStateError) as raised:
        host.forward()
    assert raised.value.code == "vertical_lr_wrong_stage"
    with pytest.raises(vl.ProtocolStateError):
        host.obfuscators_missing()
