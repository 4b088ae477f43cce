"""The guest (the bank): labels in {0, 1} and its own features; it owns the intercept, early stopping and the
divergence check. It starts the session (SETUP); with ``loss="exact"`` it joins ``[[u_h]]`` and its own part into
``[[z]]`` for the coordinator and turns the answer ``[[4 sigmoid(z)]]`` into the residuals ``[[4 d]]``
(``d = sigmoid(z) - y``; with ``loss="taylor"`` it makes them from ``[[u_h]]`` directly, ``d = z/4 + 1/2 - y``),
and its own masked gradient."""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import Any

import numpy as np
from gmpy2 import mpz

from protocols import paillier_fast as pf
from protocols.errors import (
    InvalidConfig,
    InvalidMessage,
    InvalidTrainingData,
    ProtocolStateError,
    TrainingDiverged,
)
from protocols.parallel import ChunkMapper
from protocols.vertical_lr.inputs import MAX_LOGIT, VerticalLRConfig, check_labels
from protocols.vertical_lr.messages import FLAG_STOP, FLAG_WITH_LOSS, SESSION_BYTES, MessageType, Party, Stage
from protocols.vertical_lr.scoring import GuestModel
from protocols.vertical_lr.trainer import _Trainer

DIVERGENCE_FACTOR = 1.5
"""An epoch's loss above this multiple of the best so far stops training as divergence."""


class Guest(_Trainer):
    """The bank's side: labels in {0, 1} and its own features; owns the intercept and early stopping."""

    party = Party.GUEST

    def __init__(self, features: Any, labels: Any, *, executor: ChunkMapper | None = None) -> None:
        super().__init__(features, "guest features")
        self.executor = executor
        self.y = check_labels(labels, self.n_rows)
        self.intercept = 0.0
        self.losses: list[float] = []
        self.stopped_early = False
        self._pending: tuple[list[mpz], bool] | None = None
        self._uh: list[mpz] = []
        self._host_loss: mpz | None = None
        self._epoch_loss = 0.0
        self._since_improvement = 0

    def setup(self, config: VerticalLRConfig) -> bytes:
        """Start a session: SETUP (session id, row and feature counts, the config) for host and coordinator."""
        if self.stage is not Stage.AWAITING_SETUP:
            raise ProtocolStateError(f"guest: setup() while {self.stage.value}")
        if not isinstance(config, VerticalLRConfig):
            raise InvalidConfig("config must be a VerticalLRConfig")
        self.session = secrets.token_bytes(SESSION_BYTES)
        self._start(config)
        self.stage = Stage.AWAITING_SETUP_ACK
        body = {"config": json.loads(config.to_json()), "n_rows": self.n_rows, "n_features": self.n_features}
        return self._message(MessageType.SETUP, body=json.dumps(body, sort_keys=True).encode())

    def receive_setup_ack(self, data: bytes) -> None:
        msg = self._expect(data, MessageType.SETUP_ACK, Party.HOST, Stage.AWAITING_SETUP_ACK)
        try:
            body = json.loads(msg.body)
            n_rows, n_host = int(body["n_rows"]), int(body["n_features"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidMessage(f"SETUP_ACK: bad body ({exc})") from exc
        if n_rows != self.n_rows:
            raise InvalidTrainingData(
                f"row counts differ: the guest has {self.n_rows} rows, the host {n_rows}"
            )
        assert self.config is not None
        batch = self.n_rows if self.config.batch_size is None else min(self.config.batch_size, self.n_rows)
        if batch <= n_host:
            raise InvalidConfig(
                f"batch_size {batch} must exceed the host's {n_host} features: with fewer rows per batch "
                "the host could solve its gradients for the residuals, hence the labels"
            )
        self.stage = Stage.AWAITING_FORWARD

    def obfuscators_per_epoch(self) -> int:
        per_batch = self.n_features + 1 + (1 if self.config and self.config.compute_loss else 0)
        return self.n_rows + len(self._batches) * per_batch

    def receive_forward(self, data: bytes) -> bytes:
        """``[[u_h]]`` -> with ``loss="exact"``: LINEAR_PREDICTOR ``[[z]] = [[u_h + u_g]]`` for the coordinator
        (then :meth:`receive_probabilities`); with ``loss="taylor"``: RESIDUALS ``[[4 d]]`` for the host (and
        this side's encrypted gradient, kept)."""
        msg = self._expect(data, MessageType.FORWARD, Party.HOST, Stage.AWAITING_FORWARD)
        assert self.public_key is not None
        assert self.pool is not None
        assert self.config is not None
        cfg, pk = self.config, self.public_key
        rows = self._batches[self.batch]
        with_loss = bool(msg.flags & FLAG_WITH_LOSS)
        if with_loss != cfg.compute_loss or len(msg.values) != len(rows) + int(with_loss):
            raise InvalidMessage(f"FORWARD: {len(msg.values)} values for a batch of {len(rows)}")
        t0 = time.perf_counter()
        uh = list(msg.values[: len(rows)])
        u_g = self._partial(rows)
        y = self.y[rows]
        self._host_loss = msg.values[-1] if with_loss else None
        if cfg.loss == "exact":
            # the coordinator decrypts z = u_h + u_g (it must, to take the exact sigmoid); not re-randomised: the
            # coordinator holds the key and could strip any randomness, and nobody else sees these ciphertexts
            z = pf.add_plain(pk, uh, pf.encode_fixed(pk, u_g, cfg.value_frac_bits))
            self._uh = uh
            self._time("linear predictor (encode + add)", t0)
            self.stage = Stage.AWAITING_PROBABILITIES
            return self._message(MessageType.LINEAR_PREDICTOR, z)
        v = pf.encode_fixed(pk, u_g + 2.0 - 4.0 * y, cfg.value_frac_bits)
        d4 = pf.rerandomise(pk, pf.add_plain(pk, uh, v), self.pool)
        self._time("residuals (encrypt + re-randomise)", t0)
        loss = None
        if with_loss:
            t0 = time.perf_counter()
            fb = cfg.feature_frac_bits
            s = pf.quantize(0.5 - y + u_g / 4.0, fb)
            (cross,) = pf.encrypted_column_dots(pk, uh, s[:, None])
            plain = (
                len(rows) * math.log(2.0)
                + float((0.5 - y) @ u_g)
                + float(u_g @ u_g) / 8
                + len(rows) * cfg.l2 / 2 * float(self.weights @ self.weights)
            )
            (p_enc,) = pf.encode_fixed(pk, np.array([plain]), cfg.value_frac_bits + fb)
            assert self._host_loss is not None
            loss = cross * self._host_loss % pk.nsquare * (mpz(1) + p_enc * pk.n) % pk.nsquare
            self._time("encrypted loss", t0)
        return self._residuals(d4, loss)

    def receive_probabilities(self, data: bytes) -> bytes:
        """``[[4 sigmoid(z)]]`` from the coordinator -> RESIDUALS ``[[4 (sigmoid(z) - y)]]`` for the host (and
        this side's encrypted gradient and the exact loss, kept). ``loss="exact"`` only."""
        msg = self._expect(data, MessageType.PROBABILITIES, Party.COORDINATOR, Stage.AWAITING_PROBABILITIES)
        assert self.public_key is not None
        assert self.pool is not None
        assert self.config is not None
        cfg, pk = self.config, self.public_key
        rows = self._batches[self.batch]
        with_loss = bool(msg.flags & FLAG_WITH_LOSS)
        if with_loss != cfg.compute_loss or len(msg.values) != len(rows) + int(with_loss):
            raise InvalidMessage(f"PROBABILITIES: {len(msg.values)} values for a batch of {len(rows)}")
        t0 = time.perf_counter()
        y = self.y[rows]
        p4 = list(msg.values[: len(rows)])
        d4 = pf.rerandomise(
            pk, pf.add_plain(pk, p4, pf.encode_fixed(pk, -4.0 * y, cfg.value_frac_bits)), self.pool
        )
        self._time("residuals (encrypt + re-randomise)", t0)
        loss = None
        if with_loss:
            # sum softplus(z) - y.z + the l2 terms: softplus from the coordinator, y.u_h under encryption
            t0 = time.perf_counter()
            fb = cfg.feature_frac_bits
            u_g = self._partial(rows)
            (cross,) = pf.encrypted_column_dots(pk, self._uh, pf.quantize(-y, fb)[:, None])
            plain = -float(y @ u_g) + len(rows) * cfg.l2 / 2 * float(self.weights @ self.weights)
            (p_enc,) = pf.encode_fixed(pk, np.array([plain]), cfg.value_frac_bits + fb)
            assert self._host_loss is not None
            n2 = pk.nsquare
            loss = cross * self._host_loss % n2 * msg.values[-1] % n2 * (mpz(1) + p_enc * pk.n) % n2
            self._time("encrypted loss", t0)
        self._uh = []
        return self._residuals(d4, loss)

    def _partial(self, rows: np.ndarray) -> np.ndarray:
        """This side's ``x_g w_g + b`` for the batch; a value past any sensible logit is divergence."""
        u_g = np.asarray(self.x[rows] @ self.weights + self.intercept)
        worst = float(np.max(np.abs(u_g))) if u_g.size else 0.0
        if not math.isfinite(worst) or worst > MAX_LOGIT:
            raise TrainingDiverged(
                f"training diverged: the bank's partial linear predictor reached |x w + b| = {worst:.3g} "
                f"(> {MAX_LOGIT:g}) at epoch {self.epoch}, batch {self.batch}; standardise the bank's features "
                "(mean 0, variance 1: the SDK does it unless told not to) and lower the learning rate"
            )
        return u_g

    def _residuals(self, d4: list[mpz], loss: mpz | None) -> bytes:
        """RESIDUALS for the host; this side's encrypted gradient (and loss) kept for :meth:`masked_gradient`."""
        assert self.public_key is not None
        rows = self._batches[self.batch]
        out = self._message(MessageType.RESIDUALS, d4)
        t0 = time.perf_counter()
        total = pf.product(d4, self.public_key.nsquare)
        grads = [
            *pf.encrypted_column_dots(
                self.public_key, d4, self._xq[rows], total=total, executor=self.executor
            ),
            total,
        ]
        self._time("encrypted gradient", t0)
        if loss is not None:
            grads.append(loss)
        self._pending = (grads, loss is not None)
        self.stage = Stage.GRADIENT_DUE
        return out

    def masked_gradient(self) -> bytes:
        """MASKED_GRADIENT for the coordinator: this side's gradient (and loss), uniformly masked."""
        if self.stage is not Stage.GRADIENT_DUE or self._pending is None:
            raise ProtocolStateError(f"guest: masked_gradient() while {self.stage.value}")
        t0 = time.perf_counter()
        grads, with_loss = self._pending
        self._pending = None
        out = self._message(
            MessageType.MASKED_GRADIENT, self._masked(grads), FLAG_WITH_LOSS if with_loss else 0
        )
        self._time("mask + re-randomise", t0)
        self.stage = Stage.AWAITING_DECRYPTED
        return out

    def receive_decrypted(self, data: bytes) -> None:
        msg = self._expect(data, MessageType.DECRYPTED, Party.COORDINATOR, Stage.AWAITING_DECRYPTED)
        assert self.public_key is not None
        assert self.config is not None
        t0 = time.perf_counter()
        cfg, pk = self.config, self.public_key
        plain = self._unmask(msg)
        rows = self._batches[self.batch]
        b = len(rows)
        scale = cfg.value_frac_bits + cfg.feature_frac_bits
        g = pf.decode_fixed(pk, plain[: self.n_features], scale) / (4 * b)
        g_b = float(
            pf.decode_fixed(pk, plain[self.n_features : self.n_features + 1], cfg.value_frac_bits)[0]
        ) / (4 * b)
        if cfg.compute_loss:
            self._epoch_loss += float(pf.decode_fixed(pk, plain[-1:], scale)[0])
        lr = cfg.learning_rate_at(self.epoch)
        self.weights = self.weights - lr * (g + cfg.l2 * self.weights)
        self.intercept -= lr * g_b
        self._time("unmask + update", t0)
        self.stage = Stage.EPOCH_END_DUE if self._advance() else Stage.AWAITING_FORWARD

    def end_epoch(self) -> bytes:
        """EPOCH_END for host and coordinator: whether to stop (early stopping on the loss, or the last epoch)."""
        if self.stage is not Stage.EPOCH_END_DUE:
            raise ProtocolStateError(f"guest: end_epoch() while {self.stage.value}")
        assert self.config is not None
        cfg = self.config
        stop = self.epoch + 1 >= cfg.epochs
        if cfg.compute_loss:
            loss = self._epoch_loss / self.n_rows
            best = min(self.losses, default=math.inf)
            if not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * best:
                raise TrainingDiverged(
                    f"training diverged: the loss rose to {loss:.4g} at epoch {self.epoch} (best so far "
                    f"{best:.4g}); standardise every feature (mean 0, variance 1) and lower the learning rate "
                    f"(now {cfg.learning_rate:g})"
                )
            if self.losses and abs(self.losses[-1] - loss) < cfg.tol:
                self._since_improvement += 1
            else:
                self._since_improvement = 0
            self.losses.append(loss)
            self._epoch_loss = 0.0
            if cfg.early_stopping and self._since_improvement >= cfg.patience and not stop:
                stop = self.stopped_early = True
        out = self._message(MessageType.EPOCH_END, flags=FLAG_STOP if stop else 0)
        if stop:
            self.stage = Stage.DONE
        else:
            self._next_epoch()
            self.stage = Stage.AWAITING_FORWARD
        return out

    @property
    def done(self) -> bool:
        return self.stage is Stage.DONE

    @property
    def converged(self) -> bool:
        """True if training stopped because the loss stopped improving (within ``tol``), False if it ran to its
        epoch limit: a model that hit the limit may be under-fitted — train for more epochs."""
        return self.stopped_early

    def model(self) -> GuestModel:
        return GuestModel(self.weights.copy(), self.intercept)
