"""Vertical (hetero) logistic regression: a bank and the safe-room train one model on aligned rows, with a
key-holding coordinator, in the manner of FATE's coordinated hetero-LR (``CoordinatedLR``).

Parties
-------
* the **guest** (:class:`Guest`) is the bank: the default labels ``y`` in {0, 1} and its own features ``X_g``;
  it owns the intercept and decides early stopping;
* the **host** (:class:`Host`) is the safe-room: the platform features ``X_h`` of the consented subjects;
* the **coordinator** (:class:`Coordinator`) holds the Paillier private key (it will run inside the simulated
  enclave) and decrypts masked values, nothing else.

Rows are aligned beforehand (PSI, :mod:`protocols.psi`): row ``i`` of the guest and of the host are the same
enterprise, in an order both already agreed on. Nobody's raw data crosses: only ciphertexts under the
coordinator's key, masked plaintexts, and control messages.

Messages and stages
-------------------
::

    coordinator                      guest                                   host
    -----------                      -----                                   ----
    public_key_message() -- PUBLIC_KEY -->  receive_public_key()  ------------>  receive_public_key()
    receive_setup()  <------------------  setup(config) -- SETUP ------------>  receive_setup()
                                         receive_setup_ack()  <-- SETUP_ACK --
    per epoch, per mini-batch (same batches on both sides, from config.seed):
                                         receive_forward()  <----- FORWARD ---  forward()
                                            [[u_h]] for the batch, [[H]] (loss term)
                                         ------------------- RESIDUALS ---->  receive_residuals()
                                            [[4 d]] = [[u_h]] (+) (u_g + 2 - 4 y), re-randomised
    decrypt() <-- MASKED_GRADIENT ----  masked_gradient()                     (host: returned by
    decrypt() <-- MASKED_GRADIENT -----------------------------------------   receive_residuals)
    -- DECRYPTED -->                     receive_decrypted()                  receive_decrypted()
    per epoch:
    receive_epoch_end() <-- EPOCH_END -  end_epoch() -- EPOCH_END --------->  receive_epoch_end()

:func:`train_vertical_lr` drives the three in-process, passing the *bytes* of each message through a
:class:`Transport` (by default in memory, counting bytes), so a network or an enclave boundary can be put
between the parties without changing them. Every message is a frame (integers big-endian)::

    frame = "PPVL" | version u8 (=1) | type u8 | sender u8 | session 16 bytes | key_id 16 bytes
            | epoch u32 | batch u32 | flags u8 | body_len u32 | body | count u32 | count x value

where ``type`` is :class:`MessageType`, ``sender`` :class:`Party`, ``key_id`` the first 16 bytes of the
SHA-256 of the Paillier modulus, ``body`` the canonical-JSON setup (SETUP, SETUP_ACK) or the modulus
(PUBLIC_KEY), and the values are fixed-width ciphertexts (width of ``n^2``) or, in DECRYPTED, plaintexts
(width of ``n``). :func:`decode_message` is the one validation point; each party then checks type, sender,
session, key, epoch and batch against its stage and raises :class:`ProtocolStateError` on anything out of
order. Bad training data raises :class:`InvalidTrainingData`; malformed bytes :class:`InvalidMessage`; all are
subclasses of :class:`VerticalLRError` (a ``ValueError``).

What is computed
----------------
The logistic loss ``l(z) = log(1 + e^z) - y z`` is replaced by its second-order Taylor expansion at 0,
``log 2 + (1/2 - y) z + z^2 / 8``, whose derivative is the residual ``d = z / 4 + 1/2 - y`` (FATE's
``0.25 wx - 0.5 y`` with ``y`` in {-1, 1}). With ``z = u_g + u_h``, ``u_g = X_g w_g + b`` (guest),
``u_h = X_h w_h`` (host), per mini-batch ``B``:

1. the host sends ``[[u_h]]`` and ``[[H]]``, ``H = sum u_h^2 / 8 + |B| l2/2 |w_h|^2``;
2. the guest forms ``[[4 d]] = [[u_h]] * Enc(u_g + 2 - 4 y)`` (a fresh encryption: re-randomised) and sends it;
3. each side computes ``[[X^T (4 d)]]`` over its own columns (the guest also ``[[sum 4 d]]`` for the intercept
   and, if the loss is wanted, ``[[L]] = [[sum u_h (1/2 - y + u_g / 4)]] [[H]] Enc(guest's plaintext terms)``),
   adds a uniform mask in ``Z_n`` to every value (a fresh encryption of the mask: re-randomised) and sends it
   to the coordinator, which decrypts and returns the masked plaintexts;
4. each side removes its masks and takes a step ``w -= lr_t (X^T d / |B| + l2 w)`` (no L2 on the intercept),
   ``lr_t = lr / (1 + decay t)`` (or ``/ sqrt(1 + decay t)``), ``t`` the epoch.

The guest learns the epoch's mean Taylor loss (with the L2 term) and stops when it improved by less than
``tol`` for ``patience`` epochs. Values are fixed-point: ``u`` and ``d`` at ``2^value_frac_bits``, feature
exponents at ``2^feature_frac_bits`` (:mod:`protocols.paillier_fast`). :func:`reference_fit` is the same
computation in plaintext floats: the tests check that the protocol follows it to 10^-6.

Who learns what, under which assumptions
----------------------------------------
* **Assumptions.** All three parties are *semi-honest* (they follow the protocol and may analyse what they
  see) and *do not collude*: the coordinator with either side learns everything that side lacks (it can
  decrypt every ciphertext either side holds). Paillier at 2048 bits (112-bit security); obfuscators of the
  short-exponent kind rest on the DJN assumption (:mod:`protocols.paillier_fast`).
* **The coordinator** sees, per batch, one vector of values per side, each uniformly masked in ``Z_n``: it
  learns nothing about gradients, the loss, weights, features or labels — only the shape (feature counts of
  each side, number of batches and epochs) and when training stopped. It decrypts at most one message per
  side per batch, of a length fixed at the first (a guard, not a proof: a malicious guest could send
  ``[[u_h]]`` values instead of its gradient and learn them; semi-honest parties do not).
* **The guest** sees only ciphertexts from the host (``[[u_h]]``, ``[[H]]``) and its own plaintext gradients
  ``X_g^T d / |B|`` for the intercept and its columns, and the loss. It never sees ``u_h``, ``X_h`` or
  ``w_h``. But its gradients are linear in ``d = (u_g + u_h) / 4 + 1/2 - y`` with ``u_g`` and ``y`` known to
  it, i.e. ``p_g + 1`` linear equations per batch in the host's ``u_h`` of that batch: with ``|B| <= p_g + 1``
  it could solve for them, which is why the host refuses such batch sizes. The loss per epoch is one more
  equation (a sum of ``u_h`` terms and ``sum u_h^2``).
* **The host** sees only ciphertexts from the guest (``[[4 d]]``) and its own plaintext gradient
  ``X_h^T d / |B|``: ``p_h`` linear equations per batch in ``d``. This is FATE's known leakage. With zero
  initial weights, the first epoch's gradient of each batch is exactly ``X_h^T (1/2 - y) / |B|``: ``p_h``
  linear measurements of the labels of that batch (the guest refuses ``|B| <= p_h``, where they would
  determine the labels; with binary labels a lattice attack may recover them for somewhat larger ``|B|``).
  Over later epochs each batch gives ``p_h`` more equations in the labels and ``X_g w_g + b``, and the host
  knows its own ``w_h`` trajectory: over many epochs the accumulated equations narrow the labels further.
  The host also learns the learning-rate schedule, the batch composition (both agree on it) and, from
  EPOCH_END, when training stopped (one bit per epoch about the loss). Mitigations not built here: larger
  batches, fewer epochs, random initial weights, noise on the gradients (DP-SGD), or secret-shared updates.
* **Both sides** learn their own half of the model and nothing of the other half's weights (each update is
  applied locally). The trained model scores a new applicant only with both halves:
  :func:`host_score_contribution` releases the host's ``x_h w_h`` encrypted under the *bank's* own Paillier key
  (not the coordinator's), and :func:`guest_score` adds the bank's part after decryption. The bank thus learns
  the applicant's score and ``x_h w_h`` (one number per applicant, as any split model must reveal to the
  party that computes the score), never ``x_h`` or ``w_h``.
* **Re-randomisation.** Every ciphertext that leaves a party carries a fresh obfuscator (Paillier is
  malleable; a deterministic ``[[u_h]] * (1 + v n)`` would let the host divide out its own ciphertext and read
  ``v``). Ciphertexts are bound to the session and to the key (``key_id``); values have fixed scales.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import secrets
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from gmpy2 import mpz

from protocols import paillier_fast as pf
from protocols.paillier_fast import ObfuscatorKind, PrivateKey, PublicKey

if (
    TYPE_CHECKING
):  # an executor of pps.infra.executor (a process pool, Ray) may be passed; nothing else of pps
    from pps.infra.executor import Executor

MAGIC = b"PPVL"
VERSION = 1
SESSION_BYTES = 16
KEY_ID_BYTES = 16
_HEADER = struct.Struct(">4sBBB16s16sIIBI")
MAX_BODY_BYTES = 1 << 20
MAX_VALUES = 1 << 22
SCORE_FRAC_BITS = 40


class VerticalLRError(ValueError):
    """Base of this module's errors."""


class InvalidTrainingData(VerticalLRError):
    """Features or labels are malformed: shapes, NaN/inf, labels other than 0/1, mismatched rows."""


class InvalidConfig(VerticalLRError):
    """A training parameter is out of range."""


class InvalidMessage(VerticalLRError):
    """Bytes that are not a well-formed message of this protocol (or not under the expected key)."""


class ProtocolStateError(VerticalLRError):
    """A well-formed message that is not the one expected now (wrong type, sender, session, epoch or batch)."""


class MessageType(enum.IntEnum):
    PUBLIC_KEY = 1
    SETUP = 2
    SETUP_ACK = 3
    FORWARD = 4
    RESIDUALS = 5
    MASKED_GRADIENT = 6
    DECRYPTED = 7
    EPOCH_END = 8
    SCORE_CONTRIBUTION = 9


class Party(enum.IntEnum):
    COORDINATOR = 1
    GUEST = 2
    HOST = 3


FLAG_WITH_LOSS = 1
FLAG_STOP = 2


# --- configuration ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerticalLRConfig:
    """Training parameters, shared by all three parties (the guest sends them in SETUP).

    ``batch_size`` rows per mini-batch (``None``: the whole set); every batch has at least that many rows
    (the remainder is spread over the batches). ``l2`` is the penalty ``l2/2 |w|^2`` on the mean loss (not on
    the intercept): scikit-learn's ``C`` corresponds to ``l2 = 1 / (C n)``.
    """

    epochs: int = 10
    batch_size: int | None = 256
    learning_rate: float = 0.1
    lr_decay: float = 0.0
    lr_decay_sqrt: bool = False
    l2: float = 0.0
    early_stopping: bool = True
    tol: float = 1e-4
    patience: int = 1
    compute_loss: bool = True
    shuffle: bool = True
    seed: int = 0
    value_frac_bits: int = 40
    feature_frac_bits: int = 16
    obfuscators: ObfuscatorKind = "short_exponent"

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> InvalidConfig:
            return InvalidConfig(f"{name}: {why}")

        if not 1 <= self.epochs <= 10_000:
            raise bad("epochs", "must be in [1, 10000]")
        if self.batch_size is not None and not 1 <= self.batch_size <= 10**8:
            raise bad("batch_size", "must be positive or None")
        for name in ("learning_rate", "lr_decay", "l2", "tol"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise bad(name, "must be a finite number >= 0")
        if self.learning_rate <= 0:
            raise bad("learning_rate", "must be > 0")
        if self.patience < 1:
            raise bad("patience", "must be >= 1")
        if self.early_stopping and not self.compute_loss:
            raise bad("early_stopping", "needs compute_loss=True")
        if not 16 <= self.value_frac_bits <= 64:
            raise bad("value_frac_bits", "must be in [16, 64]")
        if not 4 <= self.feature_frac_bits <= 32:
            raise bad("feature_frac_bits", "must be in [4, 32]")
        if self.obfuscators not in ("full", "short_exponent"):
            raise bad("obfuscators", "must be 'full' or 'short_exponent'")

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> VerticalLRConfig:
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or set(raw) != {f.name for f in dataclasses.fields(cls)}:
                raise InvalidMessage("SETUP: the config must have exactly the known keys")
            return cls(**raw)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
            raise InvalidMessage(f"SETUP: bad config ({exc})") from exc

    def learning_rate_at(self, epoch: int) -> float:
        factor = 1.0 + self.lr_decay * epoch
        return self.learning_rate / (math.sqrt(factor) if self.lr_decay_sqrt else factor)


def batches_for(config: VerticalLRConfig, n_rows: int, epoch: int) -> list[np.ndarray]:
    """The row indices of each mini-batch of an epoch (both sides compute the same from the config)."""
    order = (
        np.random.default_rng([config.seed, epoch]).permutation(n_rows)
        if config.shuffle
        else np.arange(n_rows)
    )
    size = n_rows if config.batch_size is None else min(config.batch_size, n_rows)
    return [np.sort(b) for b in np.array_split(order, max(1, n_rows // size))]


# --- messages -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One decoded frame. ``values`` are ciphertexts (or plaintexts in DECRYPTED), as ``mpz``."""

    type: MessageType
    sender: Party
    session: bytes
    key_id: bytes
    epoch: int = 0
    batch: int = 0
    flags: int = 0
    body: bytes = b""
    values: tuple[mpz, ...] = ()

    def to_bytes(self, public_key: PublicKey | None = None) -> bytes:
        width = 0
        if self.values:
            if public_key is None:
                raise InvalidMessage("a message with values needs the public key to encode them")
            width = (
                (public_key.bits + 7) // 8
                if self.type is MessageType.DECRYPTED
                else public_key.ciphertext_bytes
            )
        head = _HEADER.pack(
            MAGIC,
            VERSION,
            int(self.type),
            int(self.sender),
            self.session,
            self.key_id,
            self.epoch,
            self.batch,
            self.flags,
            len(self.body),
        )
        values = b"".join(bytes(v.to_bytes(width, "big")) for v in self.values)
        return head + self.body + struct.pack(">I", len(self.values)) + values


def _key_id(public_key: PublicKey) -> bytes:
    return bytes.fromhex(public_key.fingerprint)[:KEY_ID_BYTES]


def decode_message(data: bytes, public_key: PublicKey | None) -> Message:
    """Parse and check a frame: magic, version, type, sender, lengths, key, every value's range."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidMessage("a message must be bytes")
    data = bytes(data)
    if len(data) < _HEADER.size + 4:
        raise InvalidMessage("message too short")
    magic, version, mtype, sender, session, key_id, epoch, batch, flags, body_len = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InvalidMessage("not a vertical-LR message (bad magic)")
    if version != VERSION:
        raise InvalidMessage(f"unsupported message version {version}")
    try:
        kind, who = MessageType(mtype), Party(sender)
    except ValueError as exc:
        raise InvalidMessage(f"unknown message type {mtype} or sender {sender}") from exc
    if body_len > MAX_BODY_BYTES or _HEADER.size + body_len + 4 > len(data):
        raise InvalidMessage("bad body length")
    body = data[_HEADER.size : _HEADER.size + body_len]
    off = _HEADER.size + body_len
    (count,) = struct.unpack_from(">I", data, off)
    off += 4
    if count > MAX_VALUES:
        raise InvalidMessage("too many values")
    values: tuple[mpz, ...] = ()
    if count:
        if public_key is None:
            raise InvalidMessage("values received before the public key")
        if key_id != _key_id(public_key):
            raise InvalidMessage("the message is under another Paillier key")
        if kind is MessageType.DECRYPTED:
            width = (public_key.bits + 7) // 8
            if len(data) - off != width * count:
                raise InvalidMessage("bad length of the plaintext values")
            n = public_key.n
            vals = [
                mpz.from_bytes(data[off + k * width : off + (k + 1) * width], "big") for k in range(count)
            ]
            if any(not 0 <= v < n for v in vals):
                raise InvalidMessage("plaintext out of range")
            values = tuple(vals)
        else:
            try:
                values = tuple(pf.ciphertexts_from_bytes(public_key, data[off:], count))
            except pf.InvalidCiphertext as exc:
                raise InvalidMessage(str(exc)) from exc
    elif off != len(data):
        raise InvalidMessage("trailing bytes")
    return Message(kind, who, session, key_id, epoch, batch, flags, body, values)


# --- data checks ----------------------------------------------------------------------------------------------------


def check_features(x: Any, name: str, n_rows: int | None = None) -> np.ndarray:
    """A finite 2-D float matrix with at least one row and column (and ``n_rows`` rows if given)."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidTrainingData(f"{name}: not a numeric matrix ({exc})") from exc
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidTrainingData(f"{name}: expected a 2-D matrix (rows x features), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InvalidTrainingData(f"{name}: NaN or infinite value at row {bad[0]}, column {bad[1]}")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise InvalidTrainingData(f"{name}: {arr.shape[0]} rows, expected {n_rows}")
    return arr


def check_labels(y: Any, n_rows: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise InvalidTrainingData(f"labels: expected a vector of {n_rows} values, got shape {arr.shape}")
    try:
        as_float = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidTrainingData("labels: must be 0 or 1") from exc
    if not np.all((as_float == 0) | (as_float == 1)):
        raise InvalidTrainingData("labels: every label must be 0 or 1")
    if as_float.min() == as_float.max():
        raise InvalidTrainingData("labels: both classes must be present")
    return as_float


# --- the model ------------------------------------------------------------------------------------------------------


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -500, 500))))


@dataclass(frozen=True)
class GuestModel:
    """The bank's half: its weights and the intercept."""

    weights: np.ndarray
    intercept: float

    def partial_logit(self, features: Any) -> np.ndarray:
        x = check_features(features, "guest features")
        if x.shape[1] != len(self.weights):
            raise InvalidTrainingData(f"guest features: {x.shape[1]} columns, model has {len(self.weights)}")
        return np.asarray(x @ self.weights + self.intercept)


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
        _key_id(bank_key),
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


# --- the parties ----------------------------------------------------------------------------------------------------


class Stage(enum.Enum):
    AWAITING_KEY = "awaiting_key"
    AWAITING_SETUP = "awaiting_setup"
    AWAITING_SETUP_ACK = "awaiting_setup_ack"
    AWAITING_FORWARD = "awaiting_forward"  # guest
    READY_FORWARD = "ready_forward"  # host: may send the next FORWARD
    AWAITING_RESIDUALS = "awaiting_residuals"  # host
    GRADIENT_DUE = "gradient_due"  # guest: must send its MASKED_GRADIENT
    AWAITING_DECRYPTED = "awaiting_decrypted"
    EPOCH_END_DUE = "epoch_end_due"  # guest
    AWAITING_EPOCH_END = "awaiting_epoch_end"  # host
    TRAINING = "training"  # coordinator
    DONE = "done"


class _Trainer(ABC):
    """What guest and host share: key, session, schedule, weights, masks, obfuscators, timings."""

    party: Party
    executor: Executor | None = None
    """Where gradient row blocks and obfuscators are computed (:mod:`pps.infra.executor`); None: this process."""

    def __init__(self, features: Any, name: str) -> None:
        self.x = check_features(features, name)
        self.n_rows, self.n_features = int(self.x.shape[0]), int(self.x.shape[1])
        self.stage = Stage.AWAITING_KEY
        self.public_key: PublicKey | None = None
        self.config: VerticalLRConfig | None = None
        self.session = b""
        self.pool: pf.ObfuscatorPool | None = None
        self.weights = np.zeros(self.n_features)
        self.epoch = 0
        self.batch = 0
        self._batches: list[np.ndarray] = []
        self._xq = np.zeros((0, 0), dtype=np.int64)
        self._masks: list[mpz] = []
        self.seconds: dict[str, float] = {}

    # plumbing
    def _expect(self, data: bytes, kind: MessageType, sender: Party, *stages: Stage) -> Message:
        msg = decode_message(data, self.public_key)
        if self.stage not in stages:
            raise ProtocolStateError(
                f"{self.party.name.lower()}: got {kind.name} while {self.stage.value} (out of order)"
            )
        if msg.type is not kind or msg.sender is not sender:
            raise ProtocolStateError(
                f"{self.party.name.lower()}: expected {kind.name} from {sender.name.lower()}, "
                f"got {msg.type.name} from {msg.sender.name.lower()}"
            )
        if (
            kind is not MessageType.PUBLIC_KEY
            and kind is not MessageType.SETUP
            and msg.session != self.session
        ):
            raise ProtocolStateError(f"{self.party.name.lower()}: {kind.name} from another session")
        if kind in (MessageType.FORWARD, MessageType.RESIDUALS, MessageType.DECRYPTED) and (
            msg.epoch != self.epoch or msg.batch != self.batch
        ):
            raise ProtocolStateError(
                f"{self.party.name.lower()}: {kind.name} for epoch {msg.epoch} batch {msg.batch}, "
                f"expected epoch {self.epoch} batch {self.batch}"
            )
        return msg

    def _message(
        self, kind: MessageType, values: list[mpz] | None = None, flags: int = 0, body: bytes = b""
    ) -> bytes:
        assert self.public_key is not None
        return Message(
            kind,
            self.party,
            self.session,
            _key_id(self.public_key),
            self.epoch,
            self.batch,
            flags,
            body,
            tuple(values or ()),
        ).to_bytes(self.public_key)

    def _time(self, name: str, start: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def receive_public_key(self, data: bytes) -> None:
        msg = self._expect(data, MessageType.PUBLIC_KEY, Party.COORDINATOR, Stage.AWAITING_KEY)
        try:
            key = PublicKey.from_bytes(msg.body)
        except pf.PaillierError as exc:
            raise InvalidMessage(f"PUBLIC_KEY: {exc}") from exc
        if msg.key_id != _key_id(key):
            raise InvalidMessage("PUBLIC_KEY: key_id does not match the key")
        self.public_key = key
        self.stage = Stage.AWAITING_SETUP

    def _start(self, config: VerticalLRConfig) -> None:
        assert self.public_key is not None
        self.config = config
        self.pool = pf.ObfuscatorPool(self.public_key, config.obfuscators)
        self._xq = pf.quantize(self.x, config.feature_frac_bits)
        self._batches = batches_for(config, self.n_rows, 0)

    @abstractmethod
    def obfuscators_per_epoch(self) -> int:
        """Obfuscators this party uses per epoch (what :meth:`prefill_obfuscators` computes ahead)."""

    def obfuscators_missing(self, epochs: int = 1) -> int:
        """How many obfuscators :meth:`prefill_obfuscators` would compute for ``epochs`` epochs."""
        if self.pool is None:
            raise ProtocolStateError("obfuscators: set up the session first")
        return max(0, self.obfuscators_per_epoch() * epochs - len(self.pool))

    def prefill_obfuscators(self, epochs: int = 1, workers: int = 1) -> int:
        """Compute the obfuscators for ``epochs`` epochs ahead of training (in ``workers`` processes, or on
        this party's executor if it has one)."""
        count = self.obfuscators_missing(epochs)
        assert self.pool is not None
        self.pool.fill(count, workers, executor=self.executor)
        return count

    def _masked(self, values: list[mpz]) -> list[mpz]:
        """Add a fresh uniform mask to each encrypted value and re-randomise; remember the masks."""
        assert self.public_key is not None
        assert self.pool is not None
        self._masks = pf.random_masks(self.public_key, len(values))
        return pf.rerandomise(self.public_key, pf.add_plain(self.public_key, values, self._masks), self.pool)

    def _unmask(self, msg: Message) -> list[mpz]:
        assert self.public_key is not None
        if len(msg.values) != len(self._masks):
            raise InvalidMessage(f"DECRYPTED: {len(msg.values)} values, expected {len(self._masks)}")
        n = self.public_key.n
        out = [(v - m) % n for v, m in zip(msg.values, self._masks, strict=True)]
        self._masks = []
        return out

    def _advance(self) -> bool:
        """Next batch; True if the epoch is over."""
        self.batch += 1
        return self.batch >= len(self._batches)

    def _next_epoch(self) -> None:
        assert self.config is not None
        self.epoch += 1
        self.batch = 0
        self._batches = batches_for(self.config, self.n_rows, self.epoch)


class Host(_Trainer):
    """The safe-room's side: platform features of the aligned subjects, no labels."""

    party = Party.HOST

    def __init__(self, features: Any, *, executor: Executor | None = None) -> None:
        super().__init__(features, "host features")
        self.executor = executor
        self._uh_cts: list[mpz] = []

    def receive_setup(self, data: bytes) -> bytes:
        """Check the guest's SETUP against this side's data; answer SETUP_ACK (row and feature counts)."""
        msg = self._expect(data, MessageType.SETUP, Party.GUEST, Stage.AWAITING_SETUP)
        body = _setup_body(msg)
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
            h = float(u @ u) / 8 + len(rows) * cfg.l2 / 2 * float(self.weights @ self.weights)
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
            self.stage = Stage.DONE
        else:
            self._next_epoch()
            self.stage = Stage.READY_FORWARD

    @property
    def done(self) -> bool:
        return self.stage is Stage.DONE

    def model(self) -> HostModel:
        return HostModel(self.weights.copy())


class Guest(_Trainer):
    """The bank's side: labels in {0, 1} and its own features; owns the intercept and early stopping."""

    party = Party.GUEST

    def __init__(self, features: Any, labels: Any, *, executor: Executor | None = None) -> None:
        super().__init__(features, "guest features")
        self.executor = executor
        self.y = check_labels(labels, self.n_rows)
        self.intercept = 0.0
        self.losses: list[float] = []
        self.stopped_early = False
        self._pending: tuple[list[mpz], bool] | None = None
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
        """``[[u_h]]`` -> RESIDUALS ``[[4 d]]`` for the host (and this side's encrypted gradient, kept)."""
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
        u_g = self.x[rows] @ self.weights + self.intercept
        y = self.y[rows]
        v = pf.encode_fixed(pk, u_g + 2.0 - 4.0 * y, cfg.value_frac_bits)
        d4 = pf.rerandomise(pk, pf.add_plain(pk, uh, v), self.pool)
        out = self._message(MessageType.RESIDUALS, d4)
        self._time("residuals (encrypt + re-randomise)", t0)
        t0 = time.perf_counter()
        n2 = pk.nsquare
        total = pf.product(d4, n2)
        grads = [
            *pf.encrypted_column_dots(pk, d4, self._xq[rows], total=total, executor=self.executor),
            total,
        ]
        self._time("encrypted gradient", t0)
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
            grads.append(cross * msg.values[-1] % n2 * (mpz(1) + p_enc * pk.n) % n2)
            self._time("encrypted loss", t0)
        self._pending = (grads, with_loss)
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

    def model(self) -> GuestModel:
        return GuestModel(self.weights.copy(), self.intercept)


def _setup_body(msg: Message) -> dict[str, Any]:
    try:
        body = json.loads(msg.body)
        if not isinstance(body, dict) or set(body) != {"config", "n_rows", "n_features"}:
            raise InvalidMessage("SETUP: body must have exactly config, n_rows, n_features")
        if not all(isinstance(body[k], int) and body[k] >= 1 for k in ("n_rows", "n_features")):
            raise InvalidMessage("SETUP: n_rows and n_features must be positive integers")
        return body
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"SETUP: bad body ({exc})") from exc


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
            _key_id(self.public_key),
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
        if msg.key_id != _key_id(self.public_key):
            raise InvalidMessage("SETUP: under another key")
        body = _setup_body(msg)
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
            _key_id(self.public_key),
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


# --- the in-process driver -------------------------------------------------------------------------------------------


Transport = Callable[[Party, Party, bytes], bytes]
"""``deliver(sender, recipient, data) -> data as received``: swap in a network or an enclave boundary."""


@dataclass
class InMemoryTransport:
    """Passes bytes unchanged and counts them per message type."""

    bytes_by_type: dict[str, int] = field(default_factory=dict)
    messages: int = 0

    def __call__(self, sender: Party, recipient: Party, data: bytes) -> bytes:
        kind = MessageType(data[5]).name if len(data) > 5 else "?"
        self.bytes_by_type[kind] = self.bytes_by_type.get(kind, 0) + len(data)
        self.messages += 1
        return data


@dataclass
class TrainingReport:
    """What the driver saw: epochs, the guest's losses, seconds per step, bytes per message type."""

    guest_model: GuestModel
    host_model: HostModel
    epochs: int
    losses: list[float]
    stopped_early: bool
    seconds: dict[str, float]
    epoch_seconds: list[float]
    bytes_by_type: dict[str, int]
    decryptions: int


def train_vertical_lr(
    guest: Guest,
    host: Host,
    coordinator: Coordinator,
    config: VerticalLRConfig,
    *,
    transport: Transport | None = None,
    prefill_workers: int = 0,
) -> TrainingReport:
    """Run the whole protocol in-process, every message through ``transport`` as bytes.

    ``prefill_workers > 0`` computes every party's obfuscators for the whole run ahead, in that many
    processes (otherwise each is made when needed); the time is in ``seconds["obfuscator precompute"]``.
    """
    wire = transport if transport is not None else InMemoryTransport()
    g, h, c = Party.GUEST, Party.HOST, Party.COORDINATOR
    seconds: dict[str, float] = {}
    clock = time.perf_counter

    def tick(name: str, t0: float) -> float:
        now = clock()
        seconds[name] = seconds.get(name, 0.0) + now - t0
        return now

    pk_msg = coordinator.public_key_message()
    guest.receive_public_key(wire(c, g, pk_msg))
    host.receive_public_key(wire(c, h, pk_msg))
    setup = guest.setup(config)
    coordinator.receive_setup(wire(g, c, setup))
    guest.receive_setup_ack(wire(h, g, host.receive_setup(wire(g, h, setup))))
    if prefill_workers > 0:
        t = clock()
        if prefill_workers == 1 or host.executor is not None or guest.executor is not None:
            host.prefill_obfuscators(config.epochs)  # on each side's executor, if it has one
            guest.prefill_obfuscators(config.epochs)
        else:  # one process pool for both sides (in a deployment each side fills its own)
            assert host.pool is not None
            assert guest.pool is not None
            pf.fill_pools(
                [
                    (host.pool, host.obfuscators_missing(config.epochs)),
                    (guest.pool, guest.obfuscators_missing(config.epochs)),
                ],
                prefill_workers,
            )
        tick("obfuscator precompute", t)
    epoch_seconds: list[float] = []
    while not guest.done:
        t_epoch = clock()
        while guest.stage is Stage.AWAITING_FORWARD:
            t = clock()
            fwd = host.forward()
            t = tick("host: encrypt partial predictions", t)
            res = guest.receive_forward(wire(h, g, fwd))
            t = tick("guest: residuals + own gradient", t)
            host_grad = host.receive_residuals(wire(g, h, res))
            t = tick("host: gradient + mask", t)
            guest_grad = guest.masked_gradient()
            t = tick("guest: mask", t)
            host_plain = coordinator.decrypt(wire(h, c, host_grad))
            guest_plain = coordinator.decrypt(wire(g, c, guest_grad))
            t = tick("coordinator: decrypt", t)
            host.receive_decrypted(wire(c, h, host_plain))
            guest.receive_decrypted(wire(c, g, guest_plain))
            tick("updates", t)
        end = guest.end_epoch()
        host.receive_epoch_end(wire(g, h, end))
        coordinator.receive_epoch_end(wire(g, c, end))
        epoch_seconds.append(time.perf_counter() - t_epoch)
    return TrainingReport(
        guest_model=guest.model(),
        host_model=host.model(),
        epochs=len(epoch_seconds),
        losses=list(guest.losses),
        stopped_early=guest.stopped_early,
        seconds=seconds,
        epoch_seconds=epoch_seconds,
        bytes_by_type=dict(wire.bytes_by_type) if isinstance(wire, InMemoryTransport) else {},
        decryptions=coordinator.decryptions,
    )


# --- the same computation in plaintext --------------------------------------------------------------------------------


def reference_fit(
    guest_features: Any, host_features: Any, labels: Any, config: VerticalLRConfig
) -> tuple[GuestModel, HostModel, list[float]]:
    """What :func:`train_vertical_lr` computes, in plaintext floats (same batches, schedule, quantised
    features in the gradient, Taylor loss and early stopping). For tests and for checking a deployment."""
    xg = check_features(guest_features, "guest features")
    xh = check_features(host_features, "host features", xg.shape[0])
    y = check_labels(labels, xg.shape[0])
    fb = config.feature_frac_bits
    xgq = pf.quantize(xg, fb) / 2.0**fb
    xhq = pf.quantize(xh, fb) / 2.0**fb
    wg, wh, b = np.zeros(xg.shape[1]), np.zeros(xh.shape[1]), 0.0
    losses: list[float] = []
    since = 0
    for epoch in range(config.epochs):
        total = 0.0
        lr = config.learning_rate_at(epoch)
        for rows in batches_for(config, xg.shape[0], epoch):
            ug = xg[rows] @ wg + b
            uh = xh[rows] @ wh
            z = ug + uh
            d = z / 4 + 0.5 - y[rows]
            total += float(
                np.sum(math.log(2.0) + (0.5 - y[rows]) * z + z * z / 8)
                + len(rows) * config.l2 / 2 * (wg @ wg + wh @ wh)
            )
            gg = xgq[rows].T @ d / len(rows) + config.l2 * wg
            gh = xhq[rows].T @ d / len(rows) + config.l2 * wh
            b -= lr * float(d.mean())
            wg, wh = wg - lr * gg, wh - lr * gh
        if not config.compute_loss:
            continue
        loss = total / xg.shape[0]
        since = since + 1 if losses and abs(losses[-1] - loss) < config.tol else 0
        losses.append(loss)
        if config.early_stopping and since >= config.patience:
            break
    return GuestModel(wg, b), HostModel(wh), losses


__all__ = [
    "Coordinator",
    "Guest",
    "GuestModel",
    "Host",
    "HostModel",
    "InMemoryTransport",
    "InvalidConfig",
    "InvalidMessage",
    "InvalidTrainingData",
    "Message",
    "MessageType",
    "Party",
    "ProtocolStateError",
    "Stage",
    "TrainingReport",
    "VerticalLRConfig",
    "VerticalLRError",
    "batches_for",
    "decode_message",
    "guest_score",
    "host_score_contribution",
    "reference_fit",
    "train_vertical_lr",
]
