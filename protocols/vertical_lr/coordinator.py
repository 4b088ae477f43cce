"""The coordinator: holds the Paillier private key (inside the simulated enclave, in PPS) and decrypts masked
values, at most one message per side per batch, of the width fixed at the first; with ``loss="exact"`` it also
decrypts the guest's joined linear predictors ``[[z]]`` (once per batch, one per row) and answers the exact
sigmoid ``[[4 sigmoid(z)]]`` (and ``[[sum softplus(z)]]`` for the loss) encrypted. Nothing else."""

from __future__ import annotations

import json
import time

import numpy as np

from protocols import paillier_fast as pf
from protocols.errors import InvalidMessage, ProtocolStateError, TrainingDiverged
from protocols.paillier_fast import PrivateKey
from protocols.vertical_lr.inputs import MAX_LOGIT, VerticalLRConfig, batches_for
from protocols.vertical_lr.messages import (
    FLAG_STOP,
    FLAG_WITH_LOSS,
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
        self._sigmoids: set[tuple[int, int]] = set()
        self._pool: pf.ObfuscatorPool | None = None
        self._widths: dict[Party, int] = {}
        self._n_rows = 0
        self.decryptions = 0
        self.sigmoids = 0
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
        self._pool = pf.ObfuscatorPool(self.public_key, self.config.obfuscators)
        self.stage = Stage.TRAINING

    def _check_batch(self, kind: str, epoch: int, batch: int) -> int:
        """The batch's row count, after checking that (epoch, batch) is one of this epoch's batches."""
        assert self.config is not None
        if epoch != self.epochs_done:
            raise ProtocolStateError(f"coordinator: {kind} for epoch {epoch}, now {self.epochs_done}")
        batches = batches_for(self.config, self._n_rows, epoch)
        if batch >= len(batches):
            raise ProtocolStateError(f"coordinator: {kind} for batch {batch}, past the epoch's last")
        return len(batches[batch])

    def sigmoid(self, data: bytes) -> bytes:
        """PROBABILITIES ``[[4 sigmoid(z_i)]]`` (and ``[[sum_i softplus(z_i)]]`` with the loss) for one
        LINEAR_PREDICTOR ``[[z]]`` of the guest: once per batch, one value per row of the batch.

        The coordinator learns the batch's linear predictors ``z`` (the model's logits on training rows), and
        nothing of labels, features, weights or gradients; what it returns is encrypted under its own key, so
        the guest learns nothing from it."""
        msg = decode_message(data, self.public_key)
        if self.stage is not Stage.TRAINING:
            raise ProtocolStateError(f"coordinator: LINEAR_PREDICTOR while {self.stage.value}")
        if msg.type is not MessageType.LINEAR_PREDICTOR or msg.sender is not Party.GUEST:
            raise ProtocolStateError(
                f"coordinator: expected LINEAR_PREDICTOR from the guest, got {msg.type.name}"
            )
        if msg.session != self.session:
            raise ProtocolStateError("coordinator: LINEAR_PREDICTOR from another session")
        assert self.config is not None
        if self.config.loss != "exact":
            raise ProtocolStateError("coordinator: LINEAR_PREDICTOR in a session trained with loss='taylor'")
        rows = self._check_batch("LINEAR_PREDICTOR", msg.epoch, msg.batch)
        if (msg.epoch, msg.batch) in self._sigmoids:
            raise ProtocolStateError(
                f"coordinator: a second LINEAR_PREDICTOR for epoch {msg.epoch} batch {msg.batch} "
                "(refused: one per batch)"
            )
        if len(msg.values) != rows:
            raise InvalidMessage(f"LINEAR_PREDICTOR: {len(msg.values)} values for a batch of {rows} rows")
        self._sigmoids.add((msg.epoch, msg.batch))
        cfg, pk = self.config, self.public_key
        t0 = time.perf_counter()
        z = pf.decode_fixed(pk, self._key.decrypt_raw(msg.values), cfg.value_frac_bits)
        self.seconds["decrypt"] = self.seconds.get("decrypt", 0.0) + time.perf_counter() - t0
        self.sigmoids += len(z)
        worst = float(np.max(np.abs(z)))
        if worst > MAX_LOGIT:
            raise TrainingDiverged(
                f"training diverged: a linear predictor reached |z| = {worst:.3g} (> {MAX_LOGIT:g}) at epoch "
                f"{msg.epoch}, batch {msg.batch}; standardise every feature (mean 0, variance 1) and lower the "
                "learning rate"
            )
        t0 = time.perf_counter()
        p4 = 4.0 / (1.0 + np.exp(-z))
        values = pf.encode_fixed(pk, p4, cfg.value_frac_bits)
        flags = 0
        if cfg.compute_loss:
            softplus = float(np.sum(np.logaddexp(0.0, z)))
            values += pf.encode_fixed(pk, np.array([softplus]), cfg.value_frac_bits + cfg.feature_frac_bits)
            flags = FLAG_WITH_LOSS
        assert self._pool is not None
        cts = pf.encrypt_raw(pk, values, self._pool)
        self.seconds["sigmoid + encrypt"] = (
            self.seconds.get("sigmoid + encrypt", 0.0) + time.perf_counter() - t0
        )
        return Message(
            MessageType.PROBABILITIES,
            Party.COORDINATOR,
            self.session,
            key_id_of(pk),
            msg.epoch,
            msg.batch,
            flags,
            b"",
            tuple(cts),
        ).to_bytes(pk)

    def decrypt(self, data: bytes) -> bytes:
        """DECRYPTED for one MASKED_GRADIENT, addressed back to its sender."""
        msg = decode_message(data, self.public_key)
        if self.stage is not Stage.TRAINING:
            raise ProtocolStateError(f"coordinator: MASKED_GRADIENT while {self.stage.value}")
        if msg.type is not MessageType.MASKED_GRADIENT or msg.sender not in (Party.GUEST, Party.HOST):
            raise ProtocolStateError(f"coordinator: expected MASKED_GRADIENT, got {msg.type.name}")
        if msg.session != self.session:
            raise ProtocolStateError("coordinator: MASKED_GRADIENT from another session")
        self._check_batch("MASKED_GRADIENT", msg.epoch, msg.batch)
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
