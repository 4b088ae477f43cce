"""The vertical-LR frame (``protocols.vertical_lr.messages``): round trips, and malformed bytes are a protocol
error with its code."""

from __future__ import annotations

import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import paillier_fast as pf
from protocols import vertical_lr as vl
from tests.protocols.vertical_lr.common import set_up


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


@pytest.fixture(scope="module")
def public_key(coordinator_key: pf.PrivateKey) -> pf.PublicKey:
    return coordinator_key.public_key


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from([t for t in vl.MessageType if t is not vl.MessageType.PUBLIC_KEY]),
    sender=st.sampled_from(list(vl.Party)),
    session=st.binary(min_size=16, max_size=16),
    epoch=st.integers(0, 2**32 - 1),
    batch=st.integers(0, 2**32 - 1),
    flags=st.integers(0, 255),
    body=st.binary(max_size=100),
    values=st.lists(st.integers(1, 2**64), max_size=5),
)
def test_message_round_trip(
    public_key: pf.PublicKey,
    kind: vl.MessageType,
    sender: vl.Party,
    session: bytes,
    epoch: int,
    batch: int,
    flags: int,
    body: bytes,
    values: list[int],
) -> None:
    message = vl.Message(
        kind,
        sender,
        session,
        vl.key_id_of(public_key),
        epoch,
        batch,
        flags,
        body,
        tuple(mpz(v) for v in values),
    )
    assert vl.decode_message(message.to_bytes(public_key), public_key) == message


def test_each_malformed_frame_raises_its_protocol_error_and_code(public_key: pf.PublicKey) -> None:
    good = vl.Message(
        vl.MessageType.FORWARD, vl.Party.HOST, bytes(16), vl.key_id_of(public_key), values=(mpz(5),)
    )
    frame = good.to_bytes(public_key)
    plain = vl.Message(
        vl.MessageType.DECRYPTED,
        vl.Party.COORDINATOR,
        bytes(16),
        vl.key_id_of(public_key),
        values=(mpz(5),),
    )
    plain_frame = plain.to_bytes(public_key)
    width = (public_key.bits + 7) // 8
    cases = [
        lambda: vl.decode_message("PPVL", public_key),  # type: ignore[arg-type]
        lambda: vl.decode_message(frame[:10], public_key),
        lambda: vl.decode_message(frame[:6] + b"\x09" + frame[7:], public_key),  # an unknown sender
        lambda: vl.decode_message(frame, None),  # values before the public key
        lambda: vl.decode_message(frame[:-1], public_key),
        lambda: vl.decode_message(plain_frame[:-width] + public_key.n.to_bytes(width, "big"), public_key),
        lambda: vl.decode_message(vl.Message(vl.MessageType.SETUP, vl.Party.GUEST, bytes(16), bytes(16)).to_bytes() + b"!", public_key),
        lambda: vl.Message(vl.MessageType.FORWARD, vl.Party.HOST, bytes(16), bytes(16), values=(mpz(1),)).to_bytes(),
        lambda: vl.VerticalLRConfig.from_json(b'{"epochs": 1}'),
        lambda: vl.VerticalLRConfig.from_json(b"not json"),
    ]  # fmt: skip
    for call in cases:
        with pytest.raises(vl.InvalidMessage) as raised:
            call()
        assert raised.value.code == "invalid_message"
        assert not isinstance(raised.value, ValueError)
