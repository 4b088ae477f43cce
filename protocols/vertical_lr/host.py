"""The host (the safe-room): the platform features of the aligned subjects, no labels. It sends ``[[X_h w_h]]``,
turns the guest's ``[[4 d]]`` into its masked gradient, and steps its own weights."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from gmpy2 import mpz

from protocols import paillier_fast as pf
from protocols.errors import InvalidConfig, InvalidMessage, InvalidTrainingData, ProtocolStateError
from protocols.parallel import ChunkMapper
from protocols.vertical_lr.inputs import VerticalLRConfig
from protocols.vertical_lr.messages import FLAG_STOP, FLAG_WITH_LOSS, MessageType, Party, Stage, setup_body
from protocols.vertical_lr.scoring import HostModel
from protocols.vertical_lr.trainer import _Trainer


class Host(_Trainer):
    """The safe-room's side: platform features of the aligned subjects, no labels."""

    party = Party.HOST

    def __init__(self, features: Any, *, executor: ChunkMapper | None = None) -> None:
        super().__init__(features, "host features")
        self.executor = executor
        self._uh_cts: list[mpz] = []
        self.converged = False
        """set at the end: the guest stopped before the epoch limit (False: it ran to the limit)"""

    def receive_setup(self, data: bytes) -> bytes:
        """Check the guest's SETUP against this side's data; answer SETUP_ACK (row and feature counts)."""
        msg = self._expect(data, MessageType.SETUP, Party.GUEST, Stage.AWAITING_SETUP)
        body = setup_body(msg)
        config = VerticalLRConfig.from_json(json.dumps(body["config"]).encode())
        if body["n_rows"] != self.n_rows:
            raise InvalidTrainingData(
                f"row counts differ: the guest has {body['n_rows']} aligned rows, the host {self.n_rows}"
            )
        batch = self.n_rows if config.batch_size is None else min(config.batch_size, self.n_rows)
        if batch <= body["n_features"] + 1:
            raise InvalidConfig(
                f"batch_size {batch} must exceed the guest's {body['n_features']} features + 1: "
                "with fewer rows per batch the guest could solve its gradients for the host's partial predictions"
            )
        self.session = msg.session
        self._start(config)
        self.stage = Stage.READY_FORWARD
        body_out = json.dumps({"n_rows": self.n_rows, "n_features": self.n_features}, sort_keys=True).encode()
        return self._message(MessageType.SETUP_ACK, body=body_out)

    def batch_rows(self) -> np.ndarray:
        """The rows (indices into the features) of the current batch: what the next FORWARD, or the RESIDUALS
        awaited, reads. A caller that must re-decide whether it may still use those rows asks here first."""
        if self.stage not in (Stage.READY_FORWARD, Stage.AWAITING_RESIDUALS):
            raise ProtocolStateError(f"host: no batch is due while {self.stage.value}")
        return self._batches[self.batch]

    def obfuscators_per_epoch(self) -> int:
        per_batch = self.n_features + (1 if self.config and self.config.compute_loss else 0)
        return self.n_rows + len(self._batches) * per_batch

    def forward(self) -> bytes:
        """FORWARD for the current batch: ``[[X_h w_h]]`` (and the loss term ``[[H]]``)."""
        if self.stage is not Stage.READY_FORWARD:
            raise ProtocolStateError(f"host: forward() while {self.stage.value}")
        assert self.public_key is not None
        assert self.pool is not None
        assert self.config is not None
        t0 = time.perf_counter()
        cfg, pk = self.config, self.public_key
        rows = self._batches[self.batch]
        u = self.x[rows] @ self.weights
        self._uh_cts = pf.encrypt_raw(pk, pf.encode_fixed(pk, u, cfg.value_frac_bits), self.pool)
        values = list(self._uh_cts)
        flags = 0
        if cfg.compute_loss:
            # the host's own terms of the loss: its l2 penalty, and u_h^2/8 of the Taylor loss
            h = len(rows) * cfg.l2 / 2 * float(self.weights @ self.weights)
            if cfg.loss == "taylor":
                h += float(u @ u) / 8
            scale = cfg.value_frac_bits + cfg.feature_frac_bits
            values += pf.encrypt_raw(pk, pf.encode_fixed(pk, np.array([h]), scale), self.pool)
            flags = FLAG_WITH_LOSS
        out = self._message(MessageType.FORWARD, values, flags)
        self.stage = Stage.AWAITING_RESIDUALS
        self._time("encrypt partial predictions", t0)
        return out

    def receive_residuals(self, data: bytes) -> bytes:
        """``[[4 d]]`` from the guest -> this side's masked encrypted gradient, for the coordinator."""
        msg = self._expect(data, MessageType.RESIDUALS, Party.GUEST, Stage.AWAITING_RESIDUALS)
        rows = self._batches[self.batch]
        if len(msg.values) != len(rows):
            raise InvalidMessage(f"RESIDUALS: {len(msg.values)} values for a batch of {len(rows)}")
        assert self.public_key is not None
        t0 = time.perf_counter()
        grads = pf.encrypted_column_dots(
            self.public_key, list(msg.values), self._xq[rows], executor=self.executor
        )
        self._time("encrypted gradient", t0)
        t0 = time.perf_counter()
        out = self._message(MessageType.MASKED_GRADIENT, self._masked(grads))
        self._time("mask + re-randomise", t0)
        self.stage = Stage.AWAITING_DECRYPTED
        return out

    def receive_decrypted(self, data: bytes) -> None:
        msg = self._expect(data, MessageType.DECRYPTED, Party.COORDINATOR, Stage.AWAITING_DECRYPTED)
        assert self.public_key is not None
        assert self.config is not None
        t0 = time.perf_counter()
        cfg = self.config
        plain = self._unmask(msg)
        rows = self._batches[self.batch]
        g = pf.decode_fixed(self.public_key, plain, cfg.value_frac_bits + cfg.feature_frac_bits) / (
            4 * len(rows)
        )
        self.weights = self.weights - cfg.learning_rate_at(self.epoch) * (g + cfg.l2 * self.weights)
        self._time("unmask + update", t0)
        self.stage = Stage.AWAITING_EPOCH_END if self._advance() else Stage.READY_FORWARD

    def receive_epoch_end(self, data: bytes) -> None:
        msg = self._expect(data, MessageType.EPOCH_END, Party.GUEST, Stage.AWAITING_EPOCH_END)
        if msg.epoch != self.epoch:
            raise ProtocolStateError(f"host: EPOCH_END for epoch {msg.epoch}, expected {self.epoch}")
        assert self.config is not None
        if msg.flags & FLAG_STOP or self.epoch + 1 >= self.config.epochs:
            # the guest stopped before the epoch limit: its loss settled (early stopping)
            self.converged = bool(msg.flags & FLAG_STOP) and self.epoch + 1 < self.config.epochs
            self.stage = Stage.DONE
        else:
            self._next_epoch()
            self.stage = Stage.READY_FORWARD

    @property
    def done(self) -> bool:
        return self.stage is Stage.DONE

    def model(self) -> HostModel:
        return HostModel(self.weights.copy())
