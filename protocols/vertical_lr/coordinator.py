"""The coordinator: holds the Paillier private key (inside the simulated enclave, in PPS) and decrypts masked
values, at most one message per side per batch, of the width fixed at the first. Nothing else."""

from __future__ import annotations

import json
import time

from protocols import paillier_fast as pf
from protocols.errors import InvalidMessage, ProtocolStateError
from protocols.paillier_fast import PrivateKey
from protocols.vertical_lr.inputs import VerticalLRConfig, batches_for
from protocols.vertical_lr.messages import (
    FLAG_STOP,
    SESSION_BYTES,
    Message,
    MessageType,
    Party,
    Stage,
    decode_message,
    key_id_of,
    setup_body,
)


class Coordinator:
    """Holds the Paillier private key; decrypts masked values, at most one message per side per batch."""

    def __init__(self, private_key: PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key
        self.session = b""
        self.stage = Stage.AWAITING_SETUP
        self.config: VerticalLRConfig | None = None
        self._seen: set[tuple[Party, int, int]] = set()
        self._widths: dict[Party, int] = {}
        self._n_rows = 0
        self.decryptions = 0
        self.epochs_done = 0
        self.seconds: dict[str, float] = {}

    @classmethod
    def create(cls, key_bits: int = pf.DEFAULT_KEY_BITS) -> Coordinator:
        """A coordinator with a fresh key pair (2048 bits by default)."""
        return cls(pf.generate_keypair(key_bits)[1])

    def public_key_message(self) -> bytes:
        return Message(
            MessageType.PUBLIC_KEY,
            Party.COORDINATOR,
            bytes(SESSION_BYTES),
            key_id_of(self.public_key),
            body=self.public_key.to_bytes(),
        ).to_bytes()

    def receive_setup(self, data: bytes) -> None:
        msg = decode_message(data, self.public_key)
        if (
            self.stage is not Stage.AWAITING_SETUP
            or msg.type is not MessageType.SETUP
            or msg.sender is not Party.GUEST
        ):
            raise ProtocolStateError(f"coordinator: expected SETUP from the guest while {self.stage.value}")
        if msg.key_id != key_id_of(self.public_key):
            raise InvalidMessage("SETUP: under another key")
        body = setup_body(msg)
        self.config = VerticalLRConfig.from_json(json.dumps(body["config"]).encode())
        self._n_rows = int(body["n_rows"])
        # the guest's gradient: its features, the intercept, and the loss if computed (fixed by its SETUP)
        self._widths[Party.GUEST] = int(body["n_features"]) + 1 + int(self.config.compute_loss)
        self.session = msg.session
        self.stage = Stage.TRAINING

    def decrypt(self, data: bytes) -> bytes:
        """DECRYPTED for one MASKED_GRADIENT, addressed back to its sender."""
        msg = decode_message(data, self.public_key)
        if self.stage is not Stage.TRAINING:
            raise ProtocolStateError(f"coordinator: MASKED_GRADIENT while {self.stage.value}")
        if msg.type is not MessageType.MASKED_GRADIENT or msg.sender not in (Party.GUEST, Party.HOST):
            raise ProtocolStateError(f"coordinator: expected MASKED_GRADIENT, got {msg.type.name}")
        if msg.session != self.session:
            raise ProtocolStateError("coordinator: MASKED_GRADIENT from another session")
        if msg.epoch != self.epochs_done:
            raise ProtocolStateError(
                f"coordinator: MASKED_GRADIENT for epoch {msg.epoch}, now {self.epochs_done}"
            )
        assert self.config is not None
        if msg.batch >= len(batches_for(self.config, self._n_rows, msg.epoch)):
            raise ProtocolStateError(
                f"coordinator: MASKED_GRADIENT for batch {msg.batch}, past the epoch's last"
            )
        slot = (msg.sender, msg.epoch, msg.batch)
        if slot in self._seen:
            raise ProtocolStateError(
                f"coordinator: a second MASKED_GRADIENT from the {msg.sender.name.lower()} for epoch "
                f"{msg.epoch} batch {msg.batch} (refused: one decryption per side per batch)"
            )
        width = self._widths.setdefault(msg.sender, len(msg.values))
        if len(msg.values) != width or width == 0:
            raise InvalidMessage(f"coordinator: {len(msg.values)} values, this side sends {width} per batch")
        self._seen.add(slot)
        t0 = time.perf_counter()
        plain = self._key.decrypt_raw(msg.values)
        self.seconds["decrypt"] = self.seconds.get("decrypt", 0.0) + time.perf_counter() - t0
        self.decryptions += len(plain)
        return Message(
            MessageType.DECRYPTED,
            Party.COORDINATOR,
            self.session,
            key_id_of(self.public_key),
            msg.epoch,
            msg.batch,
            0,
            b"",
            tuple(plain),
        ).to_bytes(self.public_key)

    def receive_epoch_end(self, data: bytes) -> None:
        msg = decode_message(data, self.public_key)
        if (
            msg.type is not MessageType.EPOCH_END
            or msg.sender is not Party.GUEST
            or msg.session != self.session
        ):
            raise ProtocolStateError("coordinator: expected EPOCH_END from the guest of this session")
        if self.stage is not Stage.TRAINING or msg.epoch != self.epochs_done:
            raise ProtocolStateError(f"coordinator: EPOCH_END for epoch {msg.epoch} while {self.stage.value}")
        self.epochs_done += 1
        assert self.config is not None
        if msg.flags & FLAG_STOP or self.epochs_done >= self.config.epochs:
            self.stage = Stage.DONE
