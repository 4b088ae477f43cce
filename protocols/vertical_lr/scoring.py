"""The trained model in two halves, and scoring a new applicant with both: the host releases its partial score
encrypted under the *bank's* Paillier key (SCORE_CONTRIBUTION), the bank decrypts it and adds its own half."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols import paillier_fast as pf
from protocols.errors import InvalidTrainingData, ProtocolStateError
from protocols.paillier_fast import PrivateKey, PublicKey
from protocols.vertical_lr.inputs import check_features
from protocols.vertical_lr.messages import (
    SESSION_BYTES,
    Message,
    MessageType,
    Party,
    decode_message,
    key_id_of,
)

SCORE_FRAC_BITS = 40


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -500, 500))))


@dataclass(frozen=True)
class GuestModel:
    """The bank's half: its weights and the intercept, and the standardisation its features were trained under
    (``mean``/``scale`` per column, computed by the bank over its training rows; ``None``: features used as
    given). :meth:`partial_logit` takes raw features and applies it."""

    weights: np.ndarray
    intercept: float
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None

    def partial_logit(self, features: Any) -> np.ndarray:
        x = check_features(features, "guest features")
        if x.shape[1] != len(self.weights):
            raise InvalidTrainingData(f"guest features: {x.shape[1]} columns, model has {len(self.weights)}")
        if self.mean is not None and self.scale is not None:
            x = (x - self.mean) / self.scale
        return np.asarray(x @ self.weights + self.intercept)

    def standardised(self, mean: np.ndarray, scale: np.ndarray) -> GuestModel:
        """This half for raw features: trained on ``(x - mean) / scale``."""
        return GuestModel(self.weights, self.intercept, np.asarray(mean, float), np.asarray(scale, float))


def standardisation(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (1 for a constant column) of a party's training rows: each party
    standardises its own columns locally, and keeps the statistics with its half of the model."""
    arr = check_features(x, "features")
    mean, scale = arr.mean(axis=0), arr.std(axis=0)
    scale[scale == 0] = 1.0
    return mean, scale


@dataclass(frozen=True)
class HostModel:
    """The safe-room's half: its weights."""

    weights: np.ndarray

    def partial_logit(self, features: Any) -> np.ndarray:
        x = check_features(features, "host features")
        if x.shape[1] != len(self.weights):
            raise InvalidTrainingData(f"host features: {x.shape[1]} columns, model has {len(self.weights)}")
        return np.asarray(x @ self.weights)


def host_score_contribution(
    model: HostModel,
    features: Any,
    bank_key: PublicKey,
    pool: pf.ObfuscatorPool | None = None,
) -> bytes:
    """The host's ``x_h w_h`` for new applicants, encrypted under the bank's Paillier key (SCORE_CONTRIBUTION).

    Only the bank can open it (:func:`guest_score`); the host releases no plaintext partial score.
    """
    u = model.partial_logit(features)
    pool = pool if pool is not None else pf.ObfuscatorPool(bank_key)
    cts = pf.encrypt_raw(bank_key, pf.encode_fixed(bank_key, u, SCORE_FRAC_BITS), pool)
    return Message(
        MessageType.SCORE_CONTRIBUTION,
        Party.HOST,
        secrets.token_bytes(SESSION_BYTES),
        key_id_of(bank_key),
        values=tuple(cts),
    ).to_bytes(bank_key)


def guest_score(model: GuestModel, features: Any, contribution: bytes, bank_key: PrivateKey) -> np.ndarray:
    """Probabilities of default for the applicants: the bank's half plus the host's decrypted contribution."""
    msg = decode_message(contribution, bank_key.public_key)
    if msg.type is not MessageType.SCORE_CONTRIBUTION or msg.sender is not Party.HOST:
        raise ProtocolStateError("expected a SCORE_CONTRIBUTION from the host")
    u_g = model.partial_logit(features)
    if len(msg.values) != len(u_g):
        raise InvalidTrainingData(f"the host scored {len(msg.values)} applicants, the bank has {len(u_g)}")
    u_h = pf.decode_fixed(bank_key.public_key, bank_key.decrypt_raw(msg.values), SCORE_FRAC_BITS)
    return sigmoid(u_g + u_h)
