"""Encrypted scoring: a bank's private model evaluated over the safe-room's plaintext features under CKKS.

Two parties:

* the **bank** (:class:`BankScoringKey`) owns a CKKS key pair, encrypts its model (logistic-regression weights
  and bias, or scorecard points per bin) and decrypts the scores;
* the **safe-room** (:class:`ScoringServer`, or the functions :func:`check_public_context`,
  :func:`load_model`, :func:`encode_features`, :func:`score`) holds the plaintext features of the subjects
  the policy engine admitted and evaluates the encrypted model over them.

Messages and stages
-------------------
::

    bank                                              safe-room (ScoringServer)
    ----                                              -------------------------
    BankScoringKey.create()                           stage AWAITING_CONTEXT
    public_context_bytes()  ---- CONTEXT ---------->  receive_context()  = check_public_context() -> AWAITING_MODEL
    encrypt_model() / encrypt_scorecard()
                            ---- MODEL ------------>  receive_model()    = load_model()           -> READY
                                                      (caller checks required_features against consent and
                                                       builds the feature matrix of the admitted subjects)
                            <--- RESULT ------------  score(features)    (may be called per chunk of subjects)
    decrypt_scores(RESULT) -> raw scores, probabilities

``CONTEXT`` is TenSEAL's own serialisation of a *public* context (``TenSEALContextProto``: encryption
parameters and public key only; no secret, relinearisation or Galois keys: scoring needs no rotations and no
ciphertext-ciphertext multiplication). Its SHA-256 is the **context id**.

``MODEL`` and ``RESULT`` are framed (integers big-endian)::

    frame  = "PPHE" | version u8 (=1) | type u8 (1 MODEL, 2 RESULT) | header_len u32 | header | count u32
             | count x (length u32 | ciphertext)
    header = canonical JSON (UTF-8, sorted keys, no spaces)
    MODEL  header {"kind": "logistic", "context_id": hex, "features": [name, ...], "packing": p}
           ciphertexts: one per feature, in that order, then the bias
    MODEL  header {"kind": "scorecard", "context_id": hex, "features": [name, ...], "packing": p,
                   "bins": [{"edges": [e1, ..., ek-1], "missing": bool}, ...]}   (one entry per feature)
           ciphertexts: per feature, the points of bins 0..k-1, then (if "missing") the points for a missing
           value; after all features, the base points
    RESULT header {"kind", "context_id", "model_digest": sha256(MODEL) hex, "n_subjects", "slots",
                   "packing", "noise_std"}
           ciphertexts: one per block of subjects, laid out as :class:`SlotLayout` says

``packing`` (:class:`Packing`) is the bank's choice of result layout: ``"complex"`` (default) puts two subjects
in every slot, one in the real and one in the imaginary part (N subjects per ciphertext: subject ``r`` of a
block in slot ``r`` for ``r < N/2``, in the imaginary part of slot ``r - N/2`` above), read with SEAL's
``CKKSEncoder.decode_complex``; ``"real"`` puts one subject per slot (N/2 per ciphertext), read with TenSEAL's
``CKKSVector.decrypt()``. The weights are real, so a product scales both parts of a slot alike.

Every ciphertext is a TenSEAL ``CKKSVector`` serialisation (``CKKSVectorProto``: one SEAL ciphertext, its
``sizes`` and scale), so a bank with only ``tenseal`` can take part: a model value ``v`` is
``ts.ckks_vector(ctx, [v] * (N // 2)).serialize()`` (the value *replicated across all slots*), a result block
is read with ``ts.ckks_vector_from(ctx, blob).decrypt()`` (real packing) or, for complex packing, by loading the
SEAL ciphertext with ``tenseal.sealapi`` and ``decode_complex``. Scorecard bin ``b`` of a feature with edges
``e1 < ... < ek-1`` is the interval ``[e_b, e_b+1)`` with ``e0 = -inf`` and ``ek = +inf`` (numpy
``searchsorted(edges, x, side="right")``); a NaN falls in the "missing" bin, and is refused if there is none.

:func:`check_public_context`, :func:`decode_model` / :func:`load_model` and :func:`decode_result` are the one
validation point per message; whatever fails raises a subclass of :class:`pps.errors.InvalidInput`
(:class:`InvalidContext`, :class:`ContextHasSecretKey`, :class:`WeakParameters`, :class:`InvalidCiphertext`,
:class:`ForeignCiphertext`, :class:`InvalidScoringModel`, :class:`InvalidFeatureMatrix`,
:class:`ScoringLimitExceeded`) that says what is wrong.

Who learns what, under which assumptions
----------------------------------------
* **Assumptions.** The safe-room is *semi-honest*: it runs this code as written and may look at everything it
  holds. The bank keeps its secret key; the safe-room never receives it and refuses a context that carries one
  (:class:`ContextHasSecretKey`). CKKS at >= 128-bit security (HomomorphicEncryption.org table, enforced by
  SEAL's ``tc128`` check and by :data:`ALLOWED_POLY_MODULUS_DEGREES`) keeps the model hidden from the
  safe-room. The bank is trusted to encrypt honestly (fresh randomness, small noise); the safe-room cannot
  check that (see "residual risk").
* **The safe-room learns** the model's *shape*: its kind, feature names, scorecard bin edges (plaintext by
  design: binning parameters are not secret), the number of ciphertexts, and the CKKS parameters. It never
  learns weights, points or scores: it only ever holds ciphertexts under the bank's key.
* **The bank learns** one score per admitted subject (plus calibrated noise, ``noise_std``) and the number of
  subjects scored. It does *not* learn the features beyond what the scores reveal: every result ciphertext is
  re-randomised with a fresh encryption under the bank's public key (otherwise the second ciphertext component,
  ``sum_j c1_j * m_j`` with the bank's own ``c1_j``, would hand it a second linear combination of the feature
  encodings per query, enough to solve for all features after a few queries), and Gaussian noise of standard
  deviation ``noise_std`` (default :data:`DEFAULT_SCORE_NOISE_STD`) is added to every slot before release,
  which also drowns (by a factor of about 2^13 at the defaults) the term ``sum_j m_j * e_j`` in which the
  bank's known encryption noise ``e_j`` multiplies the feature encodings. That smudging is heuristic, not the
  2^40 of formal circuit privacy, which would cost more bits than these parameters have.
* **The shape of the computation is the safe-room's.** An encrypted model is opaque, so which features and
  which subjects are used is fixed by the caller from the *consent* (:attr:`LoadedModel.required_features`,
  the rows of the feature matrix), never from the ciphertexts; the ciphertexts only decide the values.
* **No decrypted value ever comes back.** CKKS decryptions carry the decryption noise, and whoever holds the
  ciphertexts and sees decryptions can recover the secret key (Li & Micciancio, 2021). Nothing in this module
  accepts decrypted values, scores or probabilities from the bank; the service must not either.
* **Residual risk.** A bank may craft a model (one non-zero weight, or huge encryption noise) to read a raw
  feature back through its scores: encryption hides the weights from any check. The controls belong to the
  service (per-subject use counts from consent, rate limits, score noise); see ``docs/security.md``. A model
  encrypted under another context with the *same* parameters cannot be told apart from a good one
  cryptographically; the context id in the MODEL header catches mix-ups (:class:`ForeignCiphertext`), and a
  liar only gets results it cannot decrypt.
* **Complex packing pairs subjects.** A bank that encrypts a *non-real* weight ``a + bi`` (the safe-room
  cannot tell) gets, for the two subjects sharing a slot, values that mix both subjects' features
  (``a x1 - b x2`` and ``a x2 + b x1``). That is still two linear functionals of the pair's features per
  query, as with real packing, but not one per subject: per-subject use counts must count both subjects of a
  pair (they are in the same job anyway), and a service that needs strict per-subject separation chooses
  ``"real"`` packing (half the throughput).
* **Scores must stay small.** With the standard parameters a result has scale ~2^40 in a 60-bit modulus:
  ``|score| < 2^19`` or it wraps around. Features should be standardised (the feature pipeline does this).

Hostile bytes
-------------
TenSEAL and SEAL are native code. Every CONTEXT and MODEL is first parsed by pure-Python framing and protobuf
readers (strict: unknown fields, duplicate fields and trailing bytes are refused), then loaded and described by
SEAL and TenSEAL in an isolated ``spawn`` worker (:mod:`protocols.he_isolation`: crash, hang and memory blow-up
contained, timeout ``check_timeout_s``); only bytes that passed there are loaded in-process. Random, truncated
or crafted bytes therefore end as :class:`InvalidContext` / :class:`InvalidCiphertext`, never as a crash of the
caller. A ciphertext whose parameters are not the context's is refused by SEAL's own validity check.

Method and throughput
---------------------
N = 8192 gives 4096 slots; with complex packing one ciphertext holds one feature column for 8192 subjects.
Each model value arrives in its own ciphertext, replicated across all slots. Per model, once, the safe-room
mod-switches the model ciphertexts to the lowest level whose modulus still holds ``scale^2 * 2^19`` (two
primes, 100 bits, for the standard chain), so every product costs 2 RNS limbs instead of 3, and multiplies the
bias by an encoded ``1`` (``1 + 1i``). Per block of subjects it multiplies each feature column (a SEAL
plaintext) into its weight, sums the products, adds the bias, rescales once (halving the result on the wire),
adds the noise and a fresh encryption, and serialises. No relinearisation, no rotation, no rescale per product.
Feature columns can be encoded once per (dataset version, model design) with :func:`encode_features` and
reused: encoding costs more than the multiplication it feeds.

TenSEAL's Python API cannot do this: a ``CKKSVector`` re-encodes a plain vector on every ``mul_plain``, has
no encoded-plaintext object, packs no complex values, and rescales after every product when ``auto_rescale``
is on. The SEAL objects TenSEAL ships as ``tenseal.sealapi`` can (``CKKSEncoder``, ``Plaintext``,
``Evaluator.multiply_plain``, complex encoding), so this module uses them for the hot path and keeps TenSEAL's
serialisation on the wire. Their one awkwardness is that ``save``/``load`` take a file path; this module goes
through an in-memory file (``memfd``). Measured on this machine (one core, 20 features, 10^5 enterprises,
``benchmarks/bench_scoring.py``, medians): ~1.5 million enterprises/s with cached columns, ~580,000/s encoding
per query, against ~230,000/s for the same packing through TenSEAL's API, ~25,000/s for TenSEAL's encrypted
vector x plain matrix, ~120/s for one ciphertext per enterprise, and ~10^8/s for plaintext numpy. Per block of
8192 subjects: ~2.1 ms of products and sums (20 x ``multiply_plain`` + ``add`` at ~0.1 ms), ~2.2 ms for the
noise and the fresh public-key encryption, ~0.3 ms each for the rescale and the serialisation; encoding a
column costs ~0.3 ms. Beyond this, a small pybind11/SEAL extension could fuse the multiply-accumulate with lazy
modular reduction (about 2x on the products), and blocks can be fanned out over cores (they are independent).
"""

from __future__ import annotations

import atexit
import enum
import hashlib
import itertools
import json
import math
import os
import re
import struct
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import tenseal as ts
import tenseal.sealapi as seal

from pps_wire.errors import InvalidInput, PayloadTooLarge
from protocols.he_isolation import (
    IsolatedWorker,
    IsolationError,
    WorkerCrashed,
    WorkerRefused,
    WorkerTimeout,
)

__all__ = [
    "ALLOWED_POLY_MODULUS_DEGREES",
    "DEFAULT_COEFF_MOD_BIT_SIZES",
    "DEFAULT_LIMITS",
    "DEFAULT_POLY_MODULUS_DEGREE",
    "DEFAULT_SCALE_BITS",
    "DEFAULT_SCORE_NOISE_STD",
    "ISOLATED_OPERATIONS",
    "BankScoringKey",
    "CKKSVectorBlob",
    "ContextHasSecretKey",
    "DecryptedScores",
    "EncodedColumns",
    "EncryptedModelMessage",
    "ForeignCiphertext",
    "InvalidCiphertext",
    "InvalidContext",
    "InvalidFeatureMatrix",
    "InvalidScoringModel",
    "LoadedModel",
    "MessageType",
    "ModelKind",
    "PublicScoringContext",
    "ScoreResultMessage",
    "Scorecard",
    "ScorecardFeature",
    "ScoringLimitExceeded",
    "ScoringLimits",
    "ScoringServer",
    "ScoringStageError",
    "ServerStage",
    "SlotLayout",
    "WeakParameters",
    "check_public_context",
    "context_id_of",
    "decode_ckks_vector",
    "decode_model",
    "decode_result",
    "design_matrix",
    "encode_features",
    "load_model",
    "run_isolated",
    "score",
    "shutdown_checker",
]

FloatArray = npt.NDArray[np.float64]

# --- constants -------------------------------------------------------------------------------------------

MAGIC: Final = b"PPHE"
VERSION: Final = 1
DEFAULT_POLY_MODULUS_DEGREE: Final = 8192
DEFAULT_COEFF_MOD_BIT_SIZES: Final = (60, 40, 40, 60)
DEFAULT_SCALE_BITS: Final = 40
ALLOWED_POLY_MODULUS_DEGREES: Final = (8192, 16384)
"""Ring dimensions accepted at all; security is then checked against SEAL's 128-bit table for the modulus."""
MIN_SCALE_BITS: Final = 20
MAX_SCALE_BITS: Final = 60
HEADROOM_BITS: Final = 20
"""Bits kept above the scale in every modulus: results must satisfy ``|score| < 2^(HEADROOM_BITS - 1)``."""
MIN_RESULT_SCALE_BITS: Final = 20
"""The final rescale is done only if the result keeps at least this much scale (precision)."""
DEFAULT_SCORE_NOISE_STD: Final = 2.0**-16
"""Standard deviation of the Gaussian noise added to every released score (in score units: logits or points)."""
MAX_SCORE_NOISE_STD: Final = 1.0e3
MAX_FEATURE_NAME_LENGTH: Final = 128
MAX_HEADER_BYTES: Final = 1024 * 1024
CIPHERTEXT_SLACK_BYTES: Final = 4096
"""Allowance above the raw size of a ciphertext for SEAL and TenSEAL headers."""

_FRAME_HEAD = struct.Struct("!4sBBI")
_U32 = struct.Struct("!I")
_FEATURE_NAME = re.compile(r"^[^\x00-\x1f\x7f]+$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class MessageType(enum.IntEnum):
    MODEL = 1
    """bank -> safe-room: the encrypted model."""
    RESULT = 2
    """safe-room -> bank: encrypted scores, one ciphertext per block of subjects."""


class ModelKind(enum.StrEnum):
    LOGISTIC = "logistic"
    """score = bias + sum_j w_j x_j; the bank applies the sigmoid."""
    SCORECARD = "scorecard"
    """score = base + sum_f points[f][bin(x_f)]."""


class Packing(enum.StrEnum):
    COMPLEX = "complex"
    """N subjects per ciphertext: subject r of a block is in slot r (real part) for r < N/2 and in slot r - N/2
    (imaginary part) above. The weights are real, so they scale both parts alike. Read with SEAL's
    ``CKKSEncoder.decode_complex`` (``tenseal.sealapi``). Twice the throughput of REAL."""
    REAL = "real"
    """N/2 subjects per ciphertext, one per slot: TenSEAL's ``CKKSVector.decrypt()`` reads them directly."""


DEFAULT_PACKING: Final = Packing.COMPLEX


class ServerStage(enum.Enum):
    AWAITING_CONTEXT = "awaiting_context"
    AWAITING_MODEL = "awaiting_model"
    READY = "ready"
    FINISHED = "finished"


# --- errors ------------------------------------------------------------------------------------------------


class InvalidContext(InvalidInput):
    """Bytes that are not a usable public CKKS context for scoring."""

    code = "invalid_he_context"


class ContextHasSecretKey(InvalidContext):
    """The context carries a secret key (or a private part); it is refused and never stored."""

    code = "he_context_has_secret_key"


class WeakParameters(InvalidContext):
    """The encryption parameters are below 128-bit security (or not of the kind this service accepts)."""

    code = "he_parameters_too_weak"


class InvalidCiphertext(InvalidInput):
    """Bytes that are not a well-formed encrypted model or result, or ciphertexts that cannot be used."""

    code = "invalid_ciphertext"


class ForeignCiphertext(InvalidCiphertext):
    """A ciphertext (or message) that was made under another context than the one it is used with."""

    code = "ciphertext_from_another_context"


class InvalidScoringModel(InvalidInput):
    """A well-formed model message whose plaintext description (features, bins) is not acceptable."""

    code = "invalid_scoring_model"


class InvalidFeatureMatrix(InvalidInput):
    """The plaintext feature matrix does not fit the model (shape, type, non-finite or too large values)."""

    code = "invalid_feature_matrix"


class ScoringLimitExceeded(PayloadTooLarge, InvalidInput):
    """A size limit is exceeded (bytes, ciphertexts, features, bins, subjects)."""

    code = "he_limit_exceeded"


class ScoringStageError(InvalidInput):
    """A protocol step was taken out of order."""

    code = "he_scoring_wrong_stage"


# --- limits ------------------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class ScoringLimits:
    """Size limits the safe-room applies before any work. Checked once, here."""

    max_context_bytes: int = 4 * 1024 * 1024
    max_model_bytes: int = 128 * 1024 * 1024
    max_model_ciphertexts: int = 1024
    max_features: int = 256
    max_bins_per_feature: int = 32
    max_subjects: int = 10_000_000
    max_abs_feature: float = 2.0**30
    allowed_poly_modulus_degrees: tuple[int, ...] = ALLOWED_POLY_MODULUS_DEGREES
    check_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in (
            "max_context_bytes",
            "max_model_bytes",
            "max_model_ciphertexts",
            "max_features",
            "max_bins_per_feature",
            "max_subjects",
        ):
            _check_positive_int(name, getattr(self, name))
        for name in ("max_abs_feature", "check_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value!r}")
        degrees = self.allowed_poly_modulus_degrees
        if not isinstance(degrees, tuple) or not degrees:
            raise TypeError("allowed_poly_modulus_degrees must be a non-empty tuple")
        for n in degrees:
            if n not in ALLOWED_POLY_MODULUS_DEGREES:
                raise ValueError(
                    f"allowed_poly_modulus_degrees may only hold {ALLOWED_POLY_MODULUS_DEGREES}, got {n!r}"
                )


DEFAULT_LIMITS: Final = ScoringLimits()


# --- protobuf (TenSEAL's wire formats), strict ----------------------------------------------------------------


class _ProtoError(ValueError):
    pass


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            raise _ProtoError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if result >= 1 << 64:
                raise _ProtoError("varint out of range")
            return result, pos
    raise _ProtoError("varint too long")


def _proto_fields(data: bytes, schema: Mapping[int, int]) -> list[tuple[int, int | bytes]]:
    """Split a protobuf message into (field, value); ``schema`` maps field numbers to allowed wire types.

    Wire type 2 of a field declared as varint (0) is accepted as a packed repeated field and returned raw.
    """
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if number not in schema:
            raise _ProtoError(f"unexpected field {number}")
        if wire != schema[number] and not (wire == 2 and schema[number] == 0):
            raise _ProtoError(f"field {number} has wire type {wire}, expected {schema[number]}")
        value: int | bytes
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 1:
            if pos + 8 > len(data):
                raise _ProtoError(f"field {number} is truncated")
            value = data[pos : pos + 8]
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise _ProtoError(f"field {number} is truncated")
            value = data[pos : pos + length]
            pos += length
        else:  # pragma: no cover - excluded by the schema check
            raise _ProtoError(f"wire type {wire} is not supported")
        out.append((number, value))
    return out


def _single(fields: list[tuple[int, int | bytes]], number: int) -> int | bytes | None:
    values = [v for n, v in fields if n == number]
    if len(values) > 1:
        raise _ProtoError(f"field {number} appears {len(values)} times")
    return values[0] if values else None


def _pb_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pb_len(number: int, payload: bytes) -> bytes:
    return _pb_varint(number << 3 | 2) + _pb_varint(len(payload)) + payload


def _encode_ckks_vector(seal_ciphertext: bytes, size: int, scale: float) -> bytes:
    """A TenSEAL ``CKKSVectorProto`` holding one SEAL ciphertext of ``size`` meaningful slots."""
    return (
        _pb_len(1, _pb_varint(size))
        + _pb_len(2, seal_ciphertext)
        + _pb_varint(3 << 3 | 1)
        + struct.pack("<d", scale)
    )


@dataclass(frozen=True)
class CKKSVectorBlob:
    """A TenSEAL CKKS vector as parsed without SEAL: its meaningful slots, SEAL ciphertext bytes and scale."""

    size: int
    seal_bytes: bytes
    scale: float


def decode_ckks_vector(blob: bytes) -> CKKSVectorBlob:
    """Parse a serialised TenSEAL CKKS vector (protobuf) without loading it into SEAL; ``ValueError`` if it is
    not one. The SEAL ciphertext inside is still unchecked: check it with :func:`run_isolated`."""
    fields = _proto_fields(blob, {1: 0, 2: 2, 3: 1})
    sizes: list[int] = []
    for number, value in fields:
        if number != 1:
            continue
        if isinstance(value, int):
            sizes.append(value)
        else:
            pos = 0
            while pos < len(value):
                item, pos = _read_varint(value, pos)
                sizes.append(item)
    ciphertexts = [v for n, v in fields if n == 2]
    if len(ciphertexts) != 1 or len(sizes) != 1:
        raise _ProtoError(
            f"expected one ciphertext chunk, got {len(ciphertexts)} ciphertexts and {len(sizes)} sizes"
        )
    scale_raw = _single(fields, 3)
    scale = struct.unpack("<d", scale_raw)[0] if isinstance(scale_raw, bytes) else 0.0
    ciphertext = ciphertexts[0]
    assert isinstance(ciphertext, bytes)
    return CKKSVectorBlob(size=sizes[0], seal_bytes=ciphertext, scale=scale)


_decode_ckks_vector = decode_ckks_vector
"""The former private name, still used by ``tests/protocols/test_he_scoring.py``."""


@dataclass(frozen=True)
class _ContextParts:
    parameters: bytes
    public_key: bytes
    scale: float | None


def _parse_context(data: bytes) -> _ContextParts:
    """Strictly parse a ``TenSEALContextProto`` and refuse anything scoring does not need."""
    try:
        top = _proto_fields(data, {1: 2, 2: 2, 3: 2, 4: 0})
        parameters = _single(top, 1)
        public = _single(top, 2)
        private = _single(top, 3)
        encryption_type = _single(top, 4)
        if private is not None:
            assert isinstance(private, bytes)
            private_fields = _proto_fields(private, {1: 2, 2: 0, 3: 0})
            secret = _single(private_fields, 1)
            if secret:
                raise ContextHasSecretKey(
                    "the context carries a secret key; send the public context only "
                    "(TenSEAL: context.serialize(save_secret_key=False))"
                )
            raise ContextHasSecretKey("the context carries a private part; send the public context only")
        if encryption_type not in (None, 0):
            raise InvalidContext(
                "the context uses symmetric encryption and has no public key; scoring needs an asymmetric "
                "context (the safe-room re-randomises results under the public key)"
            )
        if not isinstance(parameters, bytes) or not parameters:
            raise InvalidContext("the context has no encryption parameters")
        if not isinstance(public, bytes) or not public:
            raise InvalidContext("the context has no public part (no public key)")
        public_fields = _proto_fields(public, {1: 2, 2: 0, 3: 1, 4: 2, 5: 2})
        public_key = _single(public_fields, 1)
        scale_raw = _single(public_fields, 3)
        _single(public_fields, 2)
        if _single(public_fields, 5):
            raise InvalidContext(
                "the context carries Galois keys; encrypted scoring needs no rotations "
                "(serialise with save_galois_keys=False)"
            )
        if _single(public_fields, 4):
            raise InvalidContext(
                "the context carries relinearisation keys; encrypted scoring needs none "
                "(serialise with save_relin_keys=False)"
            )
        if not isinstance(public_key, bytes) or not public_key:
            raise InvalidContext("the context has no public key")
    except _ProtoError as exc:
        raise InvalidContext(f"not a TenSEAL context: {exc}") from None
    scale = struct.unpack("<d", scale_raw)[0] if isinstance(scale_raw, bytes) else None
    return _ContextParts(parameters=parameters, public_key=public_key, scale=scale)


def context_id_of(public_context: bytes) -> str:
    """The context id: SHA-256 (hex) of the public context exactly as sent."""
    return hashlib.sha256(public_context).hexdigest()


# --- SEAL objects in and out of bytes (the sealapi bindings only take file paths) ------------------------------


class _Scratch(threading.local):
    """A per-thread in-memory file (memfd on Linux, a private temporary file elsewhere)."""

    fd: int = -1
    path: str = ""
    pid: int = -1

    def get(self) -> tuple[int, str]:
        if self.pid != os.getpid():  # first use in this thread, or inherited across fork(): never share
            if self.fd >= 0:
                with suppress(OSError):
                    os.close(self.fd)
            self.fd, self.pid = -1, os.getpid()
        if self.fd < 0:
            if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
                self.fd = os.memfd_create("pps-he-scratch", getattr(os, "MFD_CLOEXEC", 0))
                self.path = f"/proc/self/fd/{self.fd}"
            else:  # pragma: no cover - not Linux
                self.fd, self.path = tempfile.mkstemp(prefix="pps-he-")
                atexit.register(os.unlink, self.path)
        return self.fd, self.path

    def __del__(self) -> None:
        if self.fd >= 0:
            with suppress(OSError):
                os.close(self.fd)


_scratch = _Scratch()


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _seal_save(obj: Any) -> bytes:
    fd, path = _scratch.get()
    os.ftruncate(fd, 0)
    obj.save(path)
    return _read_all(fd)


def _seal_write(data: bytes) -> str:
    fd, path = _scratch.get()
    os.ftruncate(fd, 0)
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)
    return path


def _seal_load(obj: Any, context: Any, data: bytes) -> Any:
    obj.load(context, _seal_write(data))
    return obj


def _load_parameters(data: bytes) -> Any:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.NONE)
    parms.load(_seal_write(data))
    return parms


def _parms_key(parms_id: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in parms_id)


# --- parameters: the modulus chain and the working level ---------------------------------------------------


@dataclass(frozen=True)
class _Level:
    parms_id: tuple[int, ...]
    chain_index: int
    prime_bits: tuple[int, ...]

    @property
    def bits(self) -> int:
        return sum(self.prime_bits)


def _data_levels(context: Any) -> list[_Level]:
    """The data levels of a SEAL context, from the first (most primes) down to the last."""
    levels: list[_Level] = []
    data = context.first_context_data()
    while data is not None:
        levels.append(
            _Level(
                parms_id=_parms_key(data.parms_id()),
                chain_index=int(data.chain_index()),
                prime_bits=tuple(int(m.bit_count()) for m in data.parms().coeff_modulus()),
            )
        )
        data = data.next_context_data()
    return levels


def _working_level(levels: Sequence[_Level], scale_bits: float) -> _Level | None:
    """The lowest level whose modulus holds a product of two values at ``scale`` with headroom."""
    need = 2 * scale_bits + HEADROOM_BITS
    usable = [level for level in levels if level.bits >= need]
    return min(usable, key=lambda level: level.chain_index) if usable else None


def _build_seal_context(poly_modulus_degree: int, primes: Sequence[int]) -> Any:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(poly_modulus_degree)
    parms.set_coeff_modulus([seal.Modulus(p) for p in primes])
    context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise WeakParameters(
            f"the encryption parameters are not usable at 128-bit security: {context.parameters_error_message()}"
        )
    return context


# --- framing -------------------------------------------------------------------------------------------------


def _canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _frame(kind: MessageType, header: Mapping[str, Any], blobs: Sequence[bytes]) -> bytes:
    head = _canonical_json(header)
    parts = [_FRAME_HEAD.pack(MAGIC, VERSION, kind, len(head)), head, _U32.pack(len(blobs))]
    for blob in blobs:
        parts += [_U32.pack(len(blob)), blob]
    return b"".join(parts)


def _unframe(
    data: object, expected: MessageType, *, max_bytes: int, max_count: int
) -> tuple[dict[str, Any], list[bytes]]:
    what = expected.name
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidCiphertext(f"a {what} message must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > max_bytes:
        raise ScoringLimitExceeded(f"the {what} message of {len(raw)} bytes exceeds the limit of {max_bytes}")
    if len(raw) < _FRAME_HEAD.size:
        raise InvalidCiphertext(f"a {what} message of {len(raw)} bytes is too short to be one")
    magic, version, kind, header_len = _FRAME_HEAD.unpack_from(raw)
    if magic != MAGIC:
        raise InvalidCiphertext(f"not an encrypted-scoring message (expected it to start with {MAGIC!r})")
    if version != VERSION:
        raise InvalidCiphertext(f"message version {version} is not supported (expected {VERSION})")
    if kind != expected:
        name = MessageType(kind).name if kind in MessageType._value2member_map_ else f"unknown type {kind}"
        raise InvalidCiphertext(f"expected a {what} message, got {name}")
    if header_len > MAX_HEADER_BYTES:
        raise ScoringLimitExceeded(f"the {what} header of {header_len} bytes exceeds {MAX_HEADER_BYTES}")
    pos = _FRAME_HEAD.size
    if len(raw) < pos + header_len + _U32.size:
        raise InvalidCiphertext(f"the {what} message is truncated in its header")
    try:
        header = json.loads(raw[pos : pos + header_len].decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidCiphertext(f"the {what} header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidCiphertext(f"the {what} header must be a JSON object")
    pos += header_len
    (count,) = _U32.unpack_from(raw, pos)
    pos += _U32.size
    if count > max_count:
        raise ScoringLimitExceeded(f"the {what} message holds {count} ciphertexts; the limit is {max_count}")
    blobs: list[bytes] = []
    for i in range(count):
        if len(raw) < pos + _U32.size:
            raise InvalidCiphertext(f"the {what} message is truncated before ciphertext {i}")
        (length,) = _U32.unpack_from(raw, pos)
        pos += _U32.size
        if len(raw) < pos + length:
            raise InvalidCiphertext(f"the {what} message is truncated inside ciphertext {i}")
        blobs.append(raw[pos : pos + length])
        pos += length
    if pos != len(raw):
        raise InvalidCiphertext(f"the {what} message has {len(raw) - pos} bytes after its last ciphertext")
    return header, blobs


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _check_keys(header: Mapping[str, Any], required: set[str], what: str) -> None:
    keys = set(header)
    if keys != required:
        missing, extra = sorted(required - keys), sorted(keys - required)
        raise InvalidScoringModel(
            f"the {what} header fields are wrong (missing {missing}, unexpected {extra})"
        )


def _check_feature_names(names: object, max_features: int) -> tuple[str, ...]:
    if not isinstance(names, list | tuple) or not names:
        raise InvalidScoringModel("features must be a non-empty list of names")
    if len(names) > max_features:
        raise ScoringLimitExceeded(f"the model has {len(names)} features; the limit is {max_features}")
    for name in names:
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_FEATURE_NAME_LENGTH:
            raise InvalidScoringModel(
                f"feature names must be strings of 1 to {MAX_FEATURE_NAME_LENGTH} characters, got {name!r}"
            )
        if not _FEATURE_NAME.match(name):
            raise InvalidScoringModel(f"feature name {name!r} contains control characters")
    if len(set(names)) != len(names):
        raise InvalidScoringModel("feature names must be unique")
    return tuple(names)


# --- model descriptions --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScorecardFeature:
    """One scorecard characteristic: bin edges (plaintext, not secret) and points per bin (to be encrypted).

    Bin ``b`` is ``[edges[b-1], edges[b])`` with ``edges[-1] = -inf`` and ``edges[k-1] = +inf``; ``points`` has
    ``len(edges) + 1`` entries. ``missing_points`` (optional) is scored for a NaN value.
    """

    name: str
    edges: tuple[float, ...]
    points: tuple[float, ...]
    missing_points: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", tuple(float(e) for e in self.edges))
        object.__setattr__(self, "points", tuple(float(p) for p in self.points))
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("name must be a non-empty string")
        _check_edges(list(self.edges), self.name, ValueError)
        if len(self.points) != len(self.edges) + 1:
            raise ValueError(
                f"feature {self.name!r}: points must have len(edges) + 1 = {len(self.edges) + 1} entries, "
                f"got {len(self.points)}"
            )
        values = [*self.points, *([] if self.missing_points is None else [float(self.missing_points)])]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"feature {self.name!r}: points must be finite")

    @property
    def bins(self) -> int:
        return len(self.edges) + 1


def _check_edges(edges: list[Any], name: str, error: type[Exception]) -> None:
    for e in edges:
        if isinstance(e, bool) or not isinstance(e, int | float) or not math.isfinite(e):
            raise error(f"feature {name!r}: bin edges must be finite numbers, got {e!r}")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise error(f"feature {name!r}: bin edges must be strictly increasing")


@dataclass(frozen=True)
class Scorecard:
    """A scorecard: base points plus, per characteristic, the points of the bin the value falls in."""

    features: tuple[ScorecardFeature, ...]
    base_points: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        if not self.features:
            raise ValueError("a scorecard needs at least one feature")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("scorecard feature names must be unique")
        if not math.isfinite(float(self.base_points)):
            raise ValueError("base_points must be finite")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def points(self, features: npt.ArrayLike) -> FloatArray:
        """The plaintext score of every row of ``features`` (columns in :attr:`feature_names` order)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"features must have shape (n, {len(self.features)})")
        total = np.full(x.shape[0], float(self.base_points))
        for j, f in enumerate(self.features):
            column = x[:, j]
            missing = np.isnan(column)
            if missing.any() and f.missing_points is None:
                raise ValueError(f"feature {f.name!r} has missing values and no missing bin")
            bins = np.searchsorted(np.asarray(f.edges), np.where(missing, 0.0, column), side="right")
            points = np.asarray(f.points)[bins]
            total += np.where(missing, 0.0 if f.missing_points is None else f.missing_points, points)
        return total


@dataclass(frozen=True)
class _Design:
    """What the safe-room computes, in plaintext terms: which columns, from which features."""

    kind: ModelKind
    features: tuple[str, ...]
    bins: tuple[tuple[tuple[float, ...], bool], ...] = ()
    """Scorecards only: per feature (edges, has missing bin)."""

    @property
    def n_ciphertexts(self) -> int:
        if self.kind is ModelKind.LOGISTIC:
            return len(self.features) + 1
        return sum(len(edges) + 1 + int(missing) for edges, missing in self.bins) + 1

    @property
    def n_columns(self) -> int:
        """Plaintext design columns (scorecards: bins 1..k-1 and the missing bin; bin 0 is the reference)."""
        if self.kind is ModelKind.LOGISTIC:
            return len(self.features)
        return sum(len(edges) + int(missing) for edges, missing in self.bins)

    @property
    def design_id(self) -> str:
        spec: dict[str, Any] = {"kind": self.kind.value, "features": list(self.features)}
        if self.kind is ModelKind.SCORECARD:
            spec["bins"] = [{"edges": list(e), "missing": m} for e, m in self.bins]
        return hashlib.sha256(b"pps/he-scoring/design/v1\n" + _canonical_json(spec)).hexdigest()

    def header(self, context_id: str) -> dict[str, Any]:
        head: dict[str, Any] = {
            "kind": self.kind.value,
            "context_id": context_id,
            "features": list(self.features),
        }
        if self.kind is ModelKind.SCORECARD:
            head["bins"] = [{"edges": list(e), "missing": m} for e, m in self.bins]
        return head


# --- messages ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptedModelMessage:
    """MODEL: the bank's encrypted model (see the module docstring for the layout)."""

    kind: ModelKind
    context_id: str
    features: tuple[str, ...]
    ciphertexts: tuple[bytes, ...]
    """TenSEAL ``CKKSVector`` serialisations, in the documented order."""
    bins: tuple[tuple[tuple[float, ...], bool], ...] = ()
    packing: Packing = DEFAULT_PACKING
    """How the bank wants its RESULT packed."""
    _digest: str = field(default="", compare=False, repr=False)

    @property
    def design(self) -> _Design:
        return _Design(self.kind, self.features, self.bins)

    def to_bytes(self) -> bytes:
        header = self.design.header(self.context_id) | {"packing": self.packing.value}
        return _frame(MessageType.MODEL, header, self.ciphertexts)

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the message as sent; a RESULT names it."""
        return self._digest or hashlib.sha256(self.to_bytes()).hexdigest()


def decode_model(data: bytes, limits: ScoringLimits = DEFAULT_LIMITS) -> EncryptedModelMessage:
    """Parse and check a MODEL's framing and plaintext header (the ciphertexts are checked by :func:`load_model`)."""
    header, blobs = _unframe(
        data, MessageType.MODEL, max_bytes=limits.max_model_bytes, max_count=limits.max_model_ciphertexts
    )
    kind_raw = header.get("kind")
    if not isinstance(kind_raw, str) or kind_raw not in ModelKind._value2member_map_:
        raise InvalidScoringModel(
            f"unknown model kind {kind_raw!r} (expected one of {[k.value for k in ModelKind]})"
        )
    kind = ModelKind(str(kind_raw))
    required = {"kind", "context_id", "features", "packing"} | (
        {"bins"} if kind is ModelKind.SCORECARD else set()
    )
    _check_keys(header, required, "MODEL")
    context_id = header["context_id"]
    if not isinstance(context_id, str) or not _HEX64.match(context_id):
        raise InvalidScoringModel(
            "context_id must be 64 lowercase hex characters (SHA-256 of the public context)"
        )
    features = _check_feature_names(header["features"], limits.max_features)
    if not isinstance(header["packing"], str) or header["packing"] not in Packing._value2member_map_:
        raise InvalidScoringModel(
            f"unknown packing {header['packing']!r} (expected one of {[p.value for p in Packing]})"
        )
    packing = Packing(header["packing"])
    bins: tuple[tuple[tuple[float, ...], bool], ...] = ()
    if kind is ModelKind.SCORECARD:
        raw_bins = header["bins"]
        if not isinstance(raw_bins, list) or len(raw_bins) != len(features):
            raise InvalidScoringModel("bins must be a list with one entry per feature")
        parsed: list[tuple[tuple[float, ...], bool]] = []
        for name, entry in zip(features, raw_bins, strict=True):
            if not isinstance(entry, dict) or set(entry) != {"edges", "missing"}:
                raise InvalidScoringModel(
                    f"feature {name!r}: a bins entry must be {{'edges': [...], 'missing': bool}}"
                )
            edges, missing = entry["edges"], entry["missing"]
            if not isinstance(edges, list) or not isinstance(missing, bool):
                raise InvalidScoringModel(f"feature {name!r}: edges must be a list and missing a boolean")
            if len(edges) + 1 > limits.max_bins_per_feature:
                raise ScoringLimitExceeded(
                    f"feature {name!r} has {len(edges) + 1} bins; the limit is {limits.max_bins_per_feature}"
                )
            _check_edges(edges, name, InvalidScoringModel)
            parsed.append((tuple(float(e) for e in edges), missing))
        bins = tuple(parsed)
    message = EncryptedModelMessage(kind, context_id, features, tuple(blobs), bins, packing)
    expected = message.design.n_ciphertexts
    if len(blobs) != expected:
        raise InvalidCiphertext(
            f"a {kind.value} model of this shape needs {expected} ciphertexts, got {len(blobs)}"
        )
    if expected > limits.max_model_ciphertexts:
        raise ScoringLimitExceeded(
            f"the model needs {expected} ciphertexts; the limit is {limits.max_model_ciphertexts}"
        )
    digest = hashlib.sha256(bytes(data)).hexdigest()
    return EncryptedModelMessage(kind, context_id, features, tuple(blobs), bins, packing, _digest=digest)


@dataclass(frozen=True)
class SlotLayout:
    """Where each subject's score is. A ciphertext holds ``per_ciphertext`` subjects (``slots``, or twice that
    with complex packing): subject ``i`` (row ``i`` of the feature matrix) is in ciphertext
    ``i // per_ciphertext``; within it, at ``r = i % per_ciphertext``, in slot ``r % slots``, real part if
    ``r < slots``, imaginary part otherwise."""

    n_subjects: int
    slots: int
    packing: Packing = DEFAULT_PACKING

    @property
    def per_ciphertext(self) -> int:
        return self.slots * (2 if self.packing is Packing.COMPLEX else 1)

    @property
    def n_ciphertexts(self) -> int:
        return -(-self.n_subjects // self.per_ciphertext)

    def locate(self, subject: int) -> tuple[int, int, Literal["real", "imag"]]:
        """(ciphertext, slot, part) of a subject."""
        if not 0 <= subject < self.n_subjects:
            raise IndexError(f"subject {subject} is not in [0, {self.n_subjects})")
        ciphertext, r = divmod(subject, self.per_ciphertext)
        return ciphertext, r % self.slots, "real" if r < self.slots else "imag"

    def used(self, ciphertext: int) -> int:
        """How many subjects ciphertext ``ciphertext`` holds."""
        return min(self.per_ciphertext, self.n_subjects - ciphertext * self.per_ciphertext)

    def used_slots(self, ciphertext: int) -> int:
        """How many slots of ciphertext ``ciphertext`` hold at least one subject (TenSEAL's ``sizes``)."""
        return min(self.slots, self.used(ciphertext))


@dataclass(frozen=True)
class ScoreResultMessage:
    """RESULT: encrypted scores for the bank, one TenSEAL ``CKKSVector`` per block of ``slots`` subjects."""

    kind: ModelKind
    context_id: str
    model_digest: str
    n_subjects: int
    slots: int
    packing: Packing
    noise_std: float
    ciphertexts: tuple[bytes, ...]

    @property
    def layout(self) -> SlotLayout:
        return SlotLayout(self.n_subjects, self.slots, self.packing)

    def to_bytes(self) -> bytes:
        header = {
            "kind": self.kind.value,
            "context_id": self.context_id,
            "model_digest": self.model_digest,
            "n_subjects": self.n_subjects,
            "slots": self.slots,
            "packing": self.packing.value,
            "noise_std": self.noise_std,
        }
        return _frame(MessageType.RESULT, header, self.ciphertexts)


def decode_result(
    data: bytes, *, max_bytes: int = 1 << 34, max_ciphertexts: int = 1 << 20
) -> ScoreResultMessage:
    """Parse and check a RESULT's framing and header (the bank side)."""
    header, blobs = _unframe(data, MessageType.RESULT, max_bytes=max_bytes, max_count=max_ciphertexts)
    required = {"kind", "context_id", "model_digest", "n_subjects", "slots", "packing", "noise_std"}
    if set(header) != required:
        raise InvalidCiphertext(f"the RESULT header fields are wrong: {sorted(header)}")
    kind, n, slots, noise = header["kind"], header["n_subjects"], header["slots"], header["noise_std"]
    if not isinstance(kind, str) or kind not in ModelKind._value2member_map_:
        raise InvalidCiphertext(f"unknown model kind {kind!r} in RESULT")
    for name in ("context_id", "model_digest"):
        if not isinstance(header[name], str) or not _HEX64.match(header[name]):
            raise InvalidCiphertext(f"{name} in RESULT must be 64 lowercase hex characters")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidCiphertext("n_subjects in RESULT must be a non-negative integer")
    if isinstance(slots, bool) or not isinstance(slots, int) or slots <= 0:
        raise InvalidCiphertext("slots in RESULT must be a positive integer")
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise >= 0:
        raise InvalidCiphertext("noise_std in RESULT must be a non-negative number")
    if not isinstance(header["packing"], str) or header["packing"] not in Packing._value2member_map_:
        raise InvalidCiphertext(f"unknown packing {header['packing']!r} in RESULT")
    message = ScoreResultMessage(
        ModelKind(kind),
        header["context_id"],
        header["model_digest"],
        n,
        slots,
        Packing(header["packing"]),
        float(noise),
        tuple(blobs),
    )
    if len(blobs) != message.layout.n_ciphertexts:
        raise InvalidCiphertext(
            f"a RESULT for {n} subjects at {slots} per ciphertext needs {message.layout.n_ciphertexts} "
            f"ciphertexts, got {len(blobs)}"
        )
    return message


# --- the bank ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecryptedScores:
    """What the bank gets back: one raw score per subject (row order of the safe-room's feature matrix)."""

    kind: ModelKind
    raw: FloatArray
    """Logistic: the logit ``bias + w.x``; scorecard: the total points."""
    probabilities: FloatArray | None
    """Logistic: ``sigmoid(raw)``, computed here on the bank side; scorecard: ``None``."""


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


def _check_scheme_arguments(
    poly_modulus_degree: object, coeff_mod_bit_sizes: object, scale_bits: object
) -> None:
    if poly_modulus_degree not in ALLOWED_POLY_MODULUS_DEGREES:
        raise ValueError(
            f"poly_modulus_degree must be one of {ALLOWED_POLY_MODULUS_DEGREES}, got {poly_modulus_degree!r}"
        )
    if not isinstance(coeff_mod_bit_sizes, Sequence) or len(coeff_mod_bit_sizes) < 3:
        raise ValueError(
            "coeff_mod_bit_sizes must list at least 3 prime sizes (data primes and the special prime)"
        )
    for bits in coeff_mod_bit_sizes:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 20 <= bits <= 60:
            raise ValueError(f"every coefficient modulus size must be an int in [20, 60], got {bits!r}")
    assert isinstance(poly_modulus_degree, int)
    limit = int(seal.CoeffModulus.MaxBitCount(poly_modulus_degree, seal.SEC_LEVEL_TYPE.TC128))
    if sum(coeff_mod_bit_sizes) > limit:
        raise ValueError(
            f"coeff_mod_bit_sizes total {sum(coeff_mod_bit_sizes)} bits; 128-bit security at N={poly_modulus_degree} "
            f"allows at most {limit}"
        )
    if (
        isinstance(scale_bits, bool)
        or not isinstance(scale_bits, int)
        or not MIN_SCALE_BITS <= scale_bits <= MAX_SCALE_BITS
    ):
        raise ValueError(
            f"scale_bits must be an int in [{MIN_SCALE_BITS}, {MAX_SCALE_BITS}], got {scale_bits!r}"
        )


class BankScoringKey:
    """The bank's half: a CKKS key pair whose secret key never leaves this object (except by
    :meth:`secret_context_bytes`, for the bank's own key storage).

    Make one with :meth:`create`; send :meth:`public_context_bytes` and the bytes of :meth:`encrypt_model` /
    :meth:`encrypt_scorecard`; open the safe-room's RESULT with :meth:`decrypt_scores`.
    """

    def __init__(self, tenseal_context: Any, *, _token: object = None) -> None:
        if _token is not _CREATE_TOKEN:
            raise TypeError("use BankScoringKey.create() or BankScoringKey.from_secret_context_bytes()")
        self._ts = tenseal_context
        self._public = bytes(
            tenseal_context.serialize(
                save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
            )
        )
        parts = _parse_context(self._public)
        parms = _load_parameters(parts.parameters)
        self._seal = _build_seal_context(
            int(parms.poly_modulus_degree()), [int(m.value()) for m in parms.coeff_modulus()]
        )
        self._secret_key = _seal_load(
            seal.SecretKey(), self._seal, _seal_save(tenseal_context.secret_key().data)
        )
        self._encryptor = seal.Encryptor(self._seal, self._secret_key)
        self._decryptor = seal.Decryptor(self._seal, self._secret_key)
        self._encoder = seal.CKKSEncoder(self._seal)
        self.scale = float(tenseal_context.global_scale)
        self.slots = int(self._encoder.slot_count())
        level = _working_level(_data_levels(self._seal), math.log2(self.scale))
        if level is None:
            raise ValueError("the coefficient modulus chain is too short for a product at this scale")
        self._level = level

    @classmethod
    def create(
        cls,
        *,
        poly_modulus_degree: int = DEFAULT_POLY_MODULUS_DEGREE,
        coeff_mod_bit_sizes: Sequence[int] = DEFAULT_COEFF_MOD_BIT_SIZES,
        scale_bits: int = DEFAULT_SCALE_BITS,
    ) -> BankScoringKey:
        """A fresh key pair at >= 128-bit security (defaults: N=8192, moduli [60, 40, 40, 60], scale 2^40)."""
        _check_scheme_arguments(poly_modulus_degree, coeff_mod_bit_sizes, scale_bits)
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=poly_modulus_degree,
            coeff_mod_bit_sizes=list(coeff_mod_bit_sizes),
            encryption_type=ts.ENCRYPTION_TYPE.ASYMMETRIC,
            n_threads=1,
        )
        context.global_scale = 2.0**scale_bits
        return cls(context, _token=_CREATE_TOKEN)

    @classmethod
    def from_secret_context_bytes(cls, data: bytes) -> BankScoringKey:
        """Restore a key saved with :meth:`secret_context_bytes` (the bank's own storage: trusted bytes)."""
        context = ts.context_from(bytes(data), n_threads=1)
        if not context.has_secret_key():
            raise ValueError("these bytes hold no secret key")
        return cls(context, _token=_CREATE_TOKEN)

    def secret_context_bytes(self) -> bytes:
        """DANGER: the full context *with the secret key*, for the bank's own key storage. Never send it."""
        return bytes(self._ts.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False))

    def public_context_bytes(self) -> bytes:
        """CONTEXT: the public context (parameters and public key; no secret, relinearisation or Galois keys)."""
        return self._public

    @property
    def context_id(self) -> str:
        return context_id_of(self._public)

    def _encrypt_value(self, value: float) -> bytes:
        plain = seal.Plaintext()
        self._encoder.encode(float(value), list(self._level.parms_id), self.scale, plain)
        ciphertext = _seal_save(self._encryptor.encrypt_symmetric(plain))
        return _encode_ckks_vector(ciphertext, self.slots, self.scale)

    def encrypt_model(
        self, weights: Mapping[str, float], bias: float, *, packing: Packing = DEFAULT_PACKING
    ) -> EncryptedModelMessage:
        """MODEL for a logistic regression ``sigmoid(bias + sum w_j x_j)`` over the named features (in order).

        Each value is encrypted in its own ciphertext, replicated across all slots, at the level the
        safe-room computes at, with the secret key (seeded: about half the size of a public-key ciphertext).
        ``packing`` chooses how the RESULT is packed (see :class:`Packing`).
        """
        packing = Packing(packing)
        if not isinstance(weights, Mapping) or not weights:
            raise ValueError("weights must be a non-empty mapping of feature name to weight")
        names = _check_feature_names(list(weights), DEFAULT_LIMITS.max_features)
        values = [*(weights[n] for n in names), bias]
        for name, value in zip([*names, "bias"], values, strict=True):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float | np.floating)
                or not math.isfinite(value)
            ):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        blobs = tuple(self._encrypt_value(float(v)) for v in values)
        return EncryptedModelMessage(ModelKind.LOGISTIC, self.context_id, names, blobs, packing=packing)

    def encrypt_scorecard(
        self, scorecard: Scorecard, *, packing: Packing = DEFAULT_PACKING
    ) -> EncryptedModelMessage:
        """MODEL for a scorecard: bin edges in plaintext, the points of every bin encrypted."""
        packing = Packing(packing)
        if not isinstance(scorecard, Scorecard):
            raise TypeError(f"scorecard must be a Scorecard, got {type(scorecard).__name__}")
        values: list[float] = []
        bins: list[tuple[tuple[float, ...], bool]] = []
        for f in scorecard.features:
            values += f.points
            if f.missing_points is not None:
                values.append(f.missing_points)
            bins.append((f.edges, f.missing_points is not None))
        values.append(float(scorecard.base_points))
        blobs = tuple(self._encrypt_value(v) for v in values)
        return EncryptedModelMessage(
            ModelKind.SCORECARD, self.context_id, scorecard.feature_names, blobs, tuple(bins), packing
        )

    def decrypt_scores(
        self, result: bytes | ScoreResultMessage, *, model: EncryptedModelMessage | None = None
    ) -> DecryptedScores:
        """Open a RESULT: raw scores and, for a logistic model, probabilities (sigmoid applied here).

        Refuses a result made under another context (:class:`ForeignCiphertext`) or, if ``model`` is given, for
        another model. Decrypted values stay with the bank: never send them back to the safe-room.
        """
        message = result if isinstance(result, ScoreResultMessage) else decode_result(result)
        if message.context_id != self.context_id:
            raise ForeignCiphertext("this result was made under another context than this key's")
        if model is not None and message.model_digest != model.digest:
            raise InvalidCiphertext("this result is for another model than the one given")
        if message.slots != self.slots:
            raise InvalidCiphertext(
                f"the result has {message.slots} slots per ciphertext; this key has {self.slots}"
            )
        layout = message.layout
        raw = np.empty(message.n_subjects, dtype=np.float64)
        plain = seal.Plaintext()
        complex_packing = message.packing is Packing.COMPLEX
        for i, blob in enumerate(message.ciphertexts):
            used, used_slots = layout.used(i), layout.used_slots(i)
            try:
                vector = decode_ckks_vector(blob)
                if vector.size != used_slots:
                    raise InvalidCiphertext(
                        f"result ciphertext {i} says {vector.size} used slots, expected {used_slots}"
                    )
                ciphertext = _seal_load(seal.Ciphertext(), self._seal, vector.seal_bytes)
                self._decryptor.decrypt(ciphertext, plain)
                if complex_packing:
                    z = np.asarray(self._encoder.decode_complex(plain), dtype=np.complex128)
                    values = np.concatenate([z.real, z.imag])
                else:
                    values = np.asarray(self._encoder.decode_double(plain), dtype=np.float64)
            except (ValueError, RuntimeError, MemoryError, IndexError) as exc:
                raise InvalidCiphertext(
                    f"result ciphertext {i} cannot be decrypted with this key: {exc}"
                ) from None
            start = i * layout.per_ciphertext
            raw[start : start + used] = values[:used]
        probabilities = _sigmoid(raw) if message.kind is ModelKind.LOGISTIC else None
        return DecryptedScores(message.kind, raw, probabilities)


_CREATE_TOKEN: Final = object()


# --- the safe-room: the isolated checker ------------------------------------------------------------------------

_checker_lock = threading.Lock()
_checker: IsolatedWorker | None = None
_checker_pid = -1


def _default_checker() -> IsolatedWorker:
    """The module's isolated checker, one per process (a forked process starts its own)."""
    global _checker, _checker_pid
    with _checker_lock:
        if _checker is None or _checker_pid != os.getpid():
            _checker, _checker_pid = IsolatedWorker(__name__), os.getpid()
            atexit.register(_checker.close)
        return _checker


def shutdown_checker() -> None:
    """Stop the module's default isolated checker (a new one starts on the next check)."""
    global _checker
    with _checker_lock:
        if _checker is not None:
            _checker.close()
            _checker = None


def run_isolated(
    worker: IsolatedWorker | None,
    op: str,
    args: Mapping[str, Any],
    blobs: Sequence[bytes],
    *,
    timeout_s: float,
    error: type[InvalidInput],
    what: str,
) -> Any:
    """Run ``op`` of the isolated SEAL checker (``worker``, or this module's default one) over untrusted
    ``blobs``; a refusal, a time-out or a crash of the checker becomes ``error`` naming ``what``."""
    checker = worker or _default_checker()
    try:
        return checker.call(op, args, blobs, timeout_s=timeout_s)
    except WorkerRefused as exc:
        raise error(f"{what} cannot be read: {exc}") from None
    except WorkerTimeout:
        raise error(f"{what} took more than {timeout_s:g} s to check and was refused") from None
    except WorkerCrashed as exc:
        raise error(
            f"{what} crashed the isolated checker (exit code {exc.exitcode}) and was refused"
        ) from None
    except IsolationError as exc:  # pragma: no cover - every subclass is handled above
        raise error(f"{what} could not be checked: {exc}") from None


# --- the safe-room: context --------------------------------------------------------------------------------------


class PublicScoringContext:
    """A checked public context: parameters, public key and the SEAL objects to compute with. No secret key."""

    def __init__(
        self,
        *,
        context_bytes: bytes,
        poly_modulus_degree: int,
        primes: tuple[int, ...],
        public_key: bytes,
        global_scale: float | None,
    ) -> None:
        self.context_bytes = context_bytes
        """The public context exactly as received (it holds no secret key: checked); what the service stores."""
        self.context_id = context_id_of(context_bytes)
        self.poly_modulus_degree = poly_modulus_degree
        self.primes = primes
        self.global_scale = global_scale
        self.seal_context = _build_seal_context(poly_modulus_degree, primes)
        self.public_key = _seal_load(seal.PublicKey(), self.seal_context, public_key)
        self.evaluator = seal.Evaluator(self.seal_context)
        self.encoder = seal.CKKSEncoder(self.seal_context)
        self.encryptor = seal.Encryptor(self.seal_context, self.public_key)
        self.levels = _data_levels(self.seal_context)
        self.slots = int(self.encoder.slot_count())
        self.lock = threading.Lock()
        """SEAL's encryptor and evaluator are not documented as thread-safe; :func:`score` holds this."""

    @property
    def coeff_modulus_bits(self) -> tuple[int, ...]:
        return tuple(p.bit_length() for p in self.primes)

    def max_ciphertext_bytes(self) -> int:
        limbs = len(self.primes) - 1
        return 2 * limbs * self.poly_modulus_degree * 8 + CIPHERTEXT_SLACK_BYTES

    def __repr__(self) -> str:
        return (
            f"PublicScoringContext(id={self.context_id[:16]}..., N={self.poly_modulus_degree}, "
            f"bits={list(self.coeff_modulus_bits)})"
        )


def check_public_context(
    data: bytes, limits: ScoringLimits = DEFAULT_LIMITS, *, worker: IsolatedWorker | None = None
) -> PublicScoringContext:
    """CONTEXT's validation point: a public CKKS context at >= 128-bit security, within limits, or an error.

    Refuses (each with its own error): bytes that are not a TenSEAL context (:class:`InvalidContext`), a context
    with a secret key or any private part (:class:`ContextHasSecretKey`), a scheme other than CKKS or
    parameters below 128-bit security (:class:`WeakParameters`), a context over ``limits``
    (:class:`ScoringLimitExceeded`), Galois or relinearisation keys, a symmetric context without public key.
    The bytes are loaded by SEAL and TenSEAL in the isolated checker first; this process then loads only the
    parts that passed.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidContext(f"a public context must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise InvalidContext("the public context is empty")
    if len(raw) > limits.max_context_bytes:
        raise ScoringLimitExceeded(
            f"the public context of {len(raw)} bytes exceeds the limit of {limits.max_context_bytes}"
        )
    parts = _parse_context(raw)
    report = run_isolated(
        worker,
        "check_context",
        {},
        [parts.parameters, parts.public_key, raw],
        timeout_s=limits.check_timeout_s,
        error=InvalidContext,
        what="the public context",
    )
    if not isinstance(report, dict):  # pragma: no cover - the checker always answers a dict
        raise InvalidContext("the public context could not be checked")
    scheme, n = report.get("scheme"), report.get("poly_modulus_degree")
    primes = tuple(int(p) for p in report.get("primes", ()))
    if scheme != "CKKS":
        raise WeakParameters(f"the context uses scheme {scheme}; encrypted scoring needs CKKS")
    if not isinstance(n, int) or n < min(ALLOWED_POLY_MODULUS_DEGREES):
        raise WeakParameters(
            f"poly modulus degree {n} is too small; allowed: {list(limits.allowed_poly_modulus_degrees)}"
        )
    if n < max(limits.allowed_poly_modulus_degrees) and n not in limits.allowed_poly_modulus_degrees:
        raise InvalidContext(
            f"poly modulus degree {n} is not accepted here; allowed: {list(limits.allowed_poly_modulus_degrees)}"
        )
    if n not in limits.allowed_poly_modulus_degrees:
        raise ScoringLimitExceeded(
            f"poly modulus degree {n} is not accepted here; allowed: {list(limits.allowed_poly_modulus_degrees)}"
        )
    total_bits, max_bits = sum(p.bit_length() for p in primes), int(report.get("max_bits_tc128", 0))
    if not report.get("secure") or total_bits > max_bits:
        raise WeakParameters(
            f"the parameters (N={n}, coefficient modulus of {total_bits} bits) are below 128-bit security: "
            f"at most {max_bits} bits are allowed at N={n} ({report.get('error', '')})"
        )
    if len(primes) < 3:
        raise InvalidContext("the coefficient modulus needs at least two data primes and the special prime")
    if report.get("tenseal_has_secret_key") or not report.get("tenseal_public"):
        raise ContextHasSecretKey("TenSEAL reads this context as private; send the public context only")
    return PublicScoringContext(
        context_bytes=raw,
        poly_modulus_degree=n,
        primes=primes,
        public_key=parts.public_key,
        global_scale=parts.scale,
    )


# --- the safe-room: model ------------------------------------------------------------------------------------


@dataclass(eq=False)
class LoadedModel:
    """A checked MODEL, ready to evaluate: ciphertexts at the working level, one per design column."""

    message: EncryptedModelMessage
    context_id: str
    scale: float
    """The scale of the model ciphertexts; feature columns are encoded at the same scale."""
    level: _Level
    weights: list[Any | None]
    """One SEAL ciphertext per design column (None: the column contributes nothing)."""
    base: Any
    """The bias (or base points plus every feature's bin-0 points) times 1, at the product scale."""

    @property
    def kind(self) -> ModelKind:
        return self.message.kind

    @property
    def packing(self) -> Packing:
        return self.message.packing

    @property
    def required_features(self) -> tuple[str, ...]:
        """The feature names the model reads, in column order: check them against consent and the schema."""
        return self.message.features

    @property
    def digest(self) -> str:
        return self.message.digest

    @property
    def design(self) -> _Design:
        return self.message.design


def load_model(
    context: PublicScoringContext,
    data: bytes | EncryptedModelMessage,
    limits: ScoringLimits = DEFAULT_LIMITS,
    *,
    worker: IsolatedWorker | None = None,
) -> LoadedModel:
    """MODEL's validation point: framing, header, context binding and every ciphertext, then load.

    Refuses a model made for another context (:class:`ForeignCiphertext`), ciphertexts that SEAL cannot load
    under this context's parameters, that are not fresh 2-component NTT-form CKKS ciphertexts, that do not all
    share one scale, whose scale leaves no room for the product, or that are not replicated over all slots.
    """
    if isinstance(data, EncryptedModelMessage):
        # decoded already (keeps the digest of the bytes as received), or built in memory: check it as bytes
        message = data if data._digest else decode_model(data.to_bytes(), limits)
    else:
        message = decode_model(data, limits)
    if message.context_id != context.context_id:
        raise ForeignCiphertext(
            "the model was encrypted under another context than the one checked for this job "
            f"(model names {message.context_id[:16]}..., context is {context.context_id[:16]}...)"
        )
    if message.design.n_ciphertexts > limits.max_model_ciphertexts:
        raise ScoringLimitExceeded(
            f"the model needs {message.design.n_ciphertexts} ciphertexts; the limit is {limits.max_model_ciphertexts}"
        )
    vectors: list[CKKSVectorBlob] = []
    max_bytes = context.max_ciphertext_bytes()
    for i, blob in enumerate(message.ciphertexts):
        try:
            vector = decode_ckks_vector(blob)
        except _ProtoError as exc:
            raise InvalidCiphertext(f"model ciphertext {i} is not a TenSEAL CKKSVector: {exc}") from None
        if vector.size != context.slots:
            raise InvalidCiphertext(
                f"model ciphertext {i} holds {vector.size} values; encrypt each value replicated across all "
                f"{context.slots} slots (ts.ckks_vector(ctx, [v] * {context.slots}))"
            )
        if len(vector.seal_bytes) > max_bytes:
            raise ScoringLimitExceeded(
                f"model ciphertext {i} has {len(vector.seal_bytes)} bytes; at most {max_bytes}"
            )
        vectors.append(vector)
    reports = run_isolated(
        worker,
        "check_ciphertexts",
        {"poly_modulus_degree": context.poly_modulus_degree, "primes": list(context.primes)},
        [v.seal_bytes for v in vectors],
        timeout_s=limits.check_timeout_s,
        error=InvalidCiphertext,
        what="the model's ciphertexts",
    )
    if not isinstance(reports, list) or len(reports) != len(vectors):  # pragma: no cover
        raise InvalidCiphertext("the model's ciphertexts could not be checked")
    scales = set()
    for i, rep in enumerate(reports):
        if rep.get("size") != 2 or not rep.get("ntt_form") or rep.get("transparent"):
            raise InvalidCiphertext(
                f"model ciphertext {i} must be a fresh CKKS ciphertext (2 components, NTT form, not transparent)"
            )
        scales.add(float(rep["scale"]))
    if len(scales) != 1:
        raise InvalidCiphertext(f"all model ciphertexts must share one scale, got {sorted(scales)}")
    scale = scales.pop()
    scale_bits = math.log2(scale) if scale > 0 else 0.0
    if not MIN_SCALE_BITS <= scale_bits <= MAX_SCALE_BITS:
        raise InvalidCiphertext(
            f"the model's scale 2^{scale_bits:.1f} is outside [2^{MIN_SCALE_BITS}, 2^{MAX_SCALE_BITS}]"
        )
    level = _working_level(context.levels, scale_bits)
    if level is None:
        raise InvalidCiphertext(
            f"at scale 2^{scale_bits:.1f} no level of this context's modulus chain holds the product "
            f"(needs {2 * scale_bits + HEADROOM_BITS:.0f} bits)"
        )
    for i, rep in enumerate(reports):
        if int(rep["chain_index"]) < level.chain_index:
            raise InvalidCiphertext(f"model ciphertext {i} is at a level too low for the product")
    try:
        ciphertexts = []
        for v in vectors:
            ct = _seal_load(seal.Ciphertext(), context.seal_context, v.seal_bytes)
            context.evaluator.mod_switch_to_inplace(ct, list(level.parms_id))
            ciphertexts.append(ct)
        weights, base = _prepare_model(context, message.design, message.packing, ciphertexts, level, scale)
    except (ValueError, RuntimeError, MemoryError, IndexError) as exc:
        raise InvalidCiphertext(f"the model's ciphertexts cannot be used: {exc}") from None
    return LoadedModel(message, context.context_id, scale, level, weights, base)


def _prepare_model(
    context: PublicScoringContext,
    design: _Design,
    packing: Packing,
    ciphertexts: list[Any],
    level: _Level,
    scale: float,
) -> tuple[list[Any | None], Any]:
    """Per model, once: design-column ciphertexts and the base times an encoded 1 (1 + 1i for complex
    packing: the base belongs to both subjects of a slot), at the product scale."""
    ev = context.evaluator
    if design.kind is ModelKind.LOGISTIC:
        weights: list[Any | None] = list(ciphertexts[:-1])
        base_sum = ciphertexts[-1]
    else:
        weights = []
        base_sum = ciphertexts[-1]
        pos = 0
        for edges, missing in design.bins:
            first = ciphertexts[pos]
            others = ciphertexts[pos + 1 : pos + len(edges) + 1 + int(missing)]
            for ct in others:
                delta = seal.Ciphertext()
                ev.sub(ct, first, delta)
                weights.append(None if delta.is_transparent() else delta)
            ev.add_inplace(base_sum, first)
            pos += len(edges) + 1 + int(missing)
    one = seal.Plaintext()
    unit = complex(1.0, 1.0) if packing is Packing.COMPLEX else 1.0
    context.encoder.encode(unit, list(level.parms_id), scale, one)
    base = seal.Ciphertext()
    ev.multiply_plain(base_sum, one, base)
    return weights, base


# --- the safe-room: features -------------------------------------------------------------------------------


def _check_features(features: object, design: _Design, limits: ScoringLimits) -> FloatArray:
    if not isinstance(features, np.ndarray):
        raise InvalidFeatureMatrix(f"features must be a numpy array, got {type(features).__name__}")
    if features.ndim != 2:
        raise InvalidFeatureMatrix(
            f"features must be a 2-D matrix (subjects x features), got {features.ndim}-D"
        )
    n, m = features.shape
    if m != len(design.features):
        raise InvalidFeatureMatrix(
            f"features has {m} columns; the model reads {len(design.features)}: {list(design.features)}"
        )
    if n == 0:
        raise InvalidFeatureMatrix("features has no rows (no subjects to score)")
    if n > limits.max_subjects:
        raise ScoringLimitExceeded(f"{n} subjects exceed the limit of {limits.max_subjects} per call")
    if features.dtype.kind not in "fiub":
        raise InvalidFeatureMatrix(f"features must be numeric, got dtype {features.dtype}")
    x = np.asarray(features, dtype=np.float64)
    if design.kind is ModelKind.LOGISTIC:
        if not np.isfinite(x).all():
            raise InvalidFeatureMatrix("features contain NaN or infinite values; impute them before scoring")
        bad = np.abs(x) > limits.max_abs_feature
    else:
        if np.isinf(x).any():
            raise InvalidFeatureMatrix("features contain infinite values")
        for j, (_, missing) in enumerate(design.bins):
            if not missing and np.isnan(x[:, j]).any():
                raise InvalidFeatureMatrix(
                    f"feature {design.features[j]!r} has missing values and the scorecard has no missing bin"
                )
        bad = np.abs(np.nan_to_num(x)) > limits.max_abs_feature
    if bad.any():
        raise InvalidFeatureMatrix(
            f"features exceed the bound |x| <= {limits.max_abs_feature:g}; standardise them"
        )
    return x


def design_matrix(
    model: LoadedModel | EncryptedModelMessage, features: FloatArray, limits: ScoringLimits = DEFAULT_LIMITS
) -> FloatArray:
    """The plaintext columns the encrypted values multiply: the features themselves (logistic) or, for a
    scorecard, 0/1 indicators of bins 1..k-1 and of a missing value (bin 0 is folded into the base)."""
    design = model.design
    x = _check_features(features, design, limits)
    if design.kind is ModelKind.LOGISTIC:
        return x
    columns: list[FloatArray] = []
    for j, (edges, missing) in enumerate(design.bins):
        column = x[:, j]
        nan = np.isnan(column)
        bins = np.searchsorted(np.asarray(edges), np.where(nan, -np.inf, column), side="right")
        for b in range(1, len(edges) + 1):
            columns.append(((bins == b) & ~nan).astype(np.float64))
        if missing:
            columns.append(nan.astype(np.float64))
    return np.stack(columns, axis=1)


@dataclass(frozen=True, eq=False)
class EncodedColumns:
    """Feature columns encoded as SEAL plaintexts, per block of subjects (see :class:`SlotLayout`): the cache unit.

    Valid for one (dataset version, design, parameters, scale): encode once with :func:`encode_features`, then
    score as many models of the same design (and banks with the same parameters) as needed. ~2 limbs x N x 8 bytes
    per column and block (about 4x the float64 features) at the standard parameters.
    """

    design_id: str
    parms_id: tuple[int, ...]
    scale: float
    slots: int
    packing: Packing
    n_subjects: int
    blocks: tuple[tuple[Any | None, ...], ...]
    """``blocks[b][j]``: column ``j`` of block ``b`` (None where the column is all zero in that block)."""

    @property
    def layout(self) -> SlotLayout:
        return SlotLayout(self.n_subjects, self.slots, self.packing)


def encode_features(
    context: PublicScoringContext,
    model: LoadedModel,
    features: FloatArray,
    limits: ScoringLimits = DEFAULT_LIMITS,
) -> EncodedColumns:
    """Encode the model's design columns of ``features`` (rows: subjects, columns: ``model.required_features``)."""
    design = design_matrix(model, features, limits)
    columns = np.ascontiguousarray(design.T)
    n = design.shape[0]
    layout = SlotLayout(n, context.slots, model.packing)
    slots, per = layout.slots, layout.per_ciphertext
    parms = list(model.level.parms_id)
    blocks: list[tuple[Any | None, ...]] = []
    for start in range(0, n, per):
        chunk = columns[:, start : start + per]
        values: npt.NDArray[Any]
        if model.packing is Packing.COMPLEX:
            values = chunk[:, :slots].astype(np.complex128)
            upper = chunk[:, slots:]
            values[:, : upper.shape[1]] += 1j * upper
        else:
            values = chunk
        row: list[Any | None] = []
        for j in range(values.shape[0]):
            if not values[j].any():
                row.append(None)
                continue
            plain = seal.Plaintext()
            context.encoder.encode(values[j].tolist(), parms, model.scale, plain)
            row.append(plain)
        blocks.append(tuple(row))
    return EncodedColumns(
        design_id=model.design.design_id,
        parms_id=model.level.parms_id,
        scale=model.scale,
        slots=slots,
        packing=model.packing,
        n_subjects=n,
        blocks=tuple(blocks),
    )


# --- the safe-room: scoring --------------------------------------------------------------------------------


def _gaussian(n: int, std: float, packing: Packing) -> list[Any]:
    """``n`` Gaussian samples (complex with independent parts, for complex packing) from the operating
    system's CSPRNG (Box-Muller)."""
    bits = np.frombuffer(os.urandom(16 * n), dtype=np.uint64).reshape(2, n)
    u1 = 1.0 - (bits[0] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    u2 = (bits[1] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    radius = std * np.sqrt(-2.0 * np.log(u1))
    if packing is Packing.COMPLEX:
        samples: list[Any] = (radius * np.exp(2j * np.pi * u2)).tolist()
    else:
        samples = (radius * np.cos(2 * np.pi * u2)).tolist()
    return samples


@contextmanager
def _timed(profile: dict[str, float] | None, key: str) -> Iterator[None]:
    if profile is None:
        yield
        return
    start = time.perf_counter()
    yield
    profile[key] = profile.get(key, 0.0) + time.perf_counter() - start


def score(
    context: PublicScoringContext,
    model: LoadedModel | EncryptedModelMessage | bytes,
    features: FloatArray | EncodedColumns,
    *,
    noise_std: float = DEFAULT_SCORE_NOISE_STD,
    limits: ScoringLimits = DEFAULT_LIMITS,
    worker: IsolatedWorker | None = None,
    profile: dict[str, float] | None = None,
) -> ScoreResultMessage:
    """Evaluate the encrypted model over plaintext features; RESULT holds one ciphertext per block of subjects.

    ``features`` is the float64 matrix of the admitted subjects (rows) in ``model.required_features`` order,
    or the same already encoded with :func:`encode_features` (the cached path). ``noise_std`` is the standard
    deviation of the Gaussian noise added to every score before release. ``profile``, if given, accumulates
    seconds per stage (diagnostics).
    """
    if isinstance(noise_std, bool) or not isinstance(noise_std, int | float):
        raise TypeError(f"noise_std must be a number, got {type(noise_std).__name__}")
    if not (math.isfinite(noise_std) and 0.0 <= noise_std <= MAX_SCORE_NOISE_STD):
        raise ValueError(f"noise_std must be in [0, {MAX_SCORE_NOISE_STD:g}], got {noise_std!r}")
    loaded = model if isinstance(model, LoadedModel) else load_model(context, model, limits, worker=worker)
    if loaded.context_id != context.context_id:
        raise ForeignCiphertext("the model was loaded under another context than the one given")
    if isinstance(features, EncodedColumns):
        encoded = features
        if encoded.design_id != loaded.design.design_id:
            raise InvalidFeatureMatrix("the encoded columns were made for another model design")
        if (
            encoded.parms_id != loaded.level.parms_id
            or encoded.scale != loaded.scale
            or encoded.slots != context.slots
        ):
            raise InvalidFeatureMatrix(
                "the encoded columns were made for other encryption parameters or scale"
            )
        if encoded.packing is not loaded.packing:
            raise InvalidFeatureMatrix(
                f"the encoded columns use {encoded.packing.value} packing; the model asks for {loaded.packing.value}"
            )
    else:
        with _timed(profile, "encode"):
            encoded = encode_features(context, loaded, features, limits)
    ev, encoder, encryptor = context.evaluator, context.encoder, context.encryptor
    final = loaded.level
    rescale = False
    product_bits = 2 * math.log2(loaded.scale)
    if len(final.prime_bits) >= 2:
        after_bits = product_bits - final.prime_bits[-1]
        if (
            after_bits >= MIN_RESULT_SCALE_BITS
            and final.bits - final.prime_bits[-1] >= after_bits + HEADROOM_BITS
        ):
            rescale = True
    layout = encoded.layout
    blobs: list[bytes] = []
    try:
        with context.lock:
            tmp = seal.Ciphertext()
            for b, block in enumerate(encoded.blocks):
                with _timed(profile, "multiply_accumulate"):
                    acc: Any = None
                    for weight, plain in zip(loaded.weights, block, strict=True):
                        if weight is None or plain is None:
                            continue
                        if acc is None:
                            acc = seal.Ciphertext()
                            ev.multiply_plain(weight, plain, acc)
                        else:
                            ev.multiply_plain(weight, plain, tmp)
                            ev.add_inplace(acc, tmp)
                    if acc is None:
                        acc = seal.Ciphertext()
                        ev.add(loaded.base, loaded.base, acc)
                        ev.sub_inplace(acc, loaded.base)
                    else:
                        ev.add_inplace(acc, loaded.base)
                if rescale:
                    with _timed(profile, "rescale"):
                        ev.rescale_to_next_inplace(acc)
                with _timed(profile, "noise_and_rerandomise"):
                    noise = seal.Plaintext()
                    if noise_std > 0:
                        samples = _gaussian(context.slots, noise_std, loaded.packing)
                        encoder.encode(samples, acc.parms_id(), acc.scale, noise)
                    else:
                        encoder.encode(0.0, acc.parms_id(), acc.scale, noise)
                    fresh = seal.Ciphertext()
                    encryptor.encrypt(noise, fresh)
                    ev.add_inplace(acc, fresh)
                with _timed(profile, "serialise"):
                    blobs.append(_encode_ckks_vector(_seal_save(acc), layout.used_slots(b), float(acc.scale)))
    except (ValueError, RuntimeError, MemoryError, IndexError) as exc:
        raise InvalidCiphertext(f"the model's ciphertexts cannot be evaluated: {exc}") from None
    return ScoreResultMessage(
        kind=loaded.kind,
        context_id=context.context_id,
        model_digest=loaded.digest,
        n_subjects=encoded.n_subjects,
        slots=context.slots,
        packing=loaded.packing,
        noise_std=float(noise_std),
        ciphertexts=tuple(blobs),
    )


# --- the safe-room: one job as a stage machine ------------------------------------------------------------------


class ScoringServer:
    """The safe-room's half for one scoring job: CONTEXT, then MODEL, then any number of :meth:`score` calls
    (e.g. one per chunk of subjects), then :meth:`finish`. Steps out of order raise :class:`ScoringStageError`.
    """

    def __init__(
        self, *, limits: ScoringLimits = DEFAULT_LIMITS, worker: IsolatedWorker | None = None
    ) -> None:
        if not isinstance(limits, ScoringLimits):
            raise TypeError(f"limits must be ScoringLimits, got {type(limits).__name__}")
        self.limits = limits
        self._worker = worker
        self.stage = ServerStage.AWAITING_CONTEXT
        self.context: PublicScoringContext | None = None
        self.model: LoadedModel | None = None
        self.subjects_scored = 0

    def _expect(self, stage: ServerStage, step: str) -> None:
        if self.stage is not stage:
            raise ScoringStageError(
                f"{step} is not allowed at stage {self.stage.value} (expected {stage.value})"
            )

    def receive_context(self, data: bytes) -> PublicScoringContext:
        self._expect(ServerStage.AWAITING_CONTEXT, "receive_context")
        self.context = check_public_context(data, self.limits, worker=self._worker)
        self.stage = ServerStage.AWAITING_MODEL
        return self.context

    def receive_model(self, data: bytes | EncryptedModelMessage) -> LoadedModel:
        self._expect(ServerStage.AWAITING_MODEL, "receive_model")
        assert self.context is not None
        self.model = load_model(self.context, data, self.limits, worker=self._worker)
        self.stage = ServerStage.READY
        return self.model

    @property
    def required_features(self) -> tuple[str, ...]:
        self._expect(ServerStage.READY, "required_features")
        assert self.model is not None
        return self.model.required_features

    def score(
        self, features: FloatArray | EncodedColumns, *, noise_std: float = DEFAULT_SCORE_NOISE_STD
    ) -> ScoreResultMessage:
        self._expect(ServerStage.READY, "score")
        assert self.context is not None
        assert self.model is not None
        result = score(self.context, self.model, features, noise_std=noise_std, limits=self.limits)
        self.subjects_scored += result.n_subjects
        return result

    def finish(self) -> None:
        """End the job and drop the model and context (they are not needed again)."""
        self.stage = ServerStage.FINISHED
        self.context = None
        self.model = None


# --- operations run inside the isolated checker -------------------------------------------------------------


def _isolated_check_context(args: dict[str, Any], blobs: list[bytes]) -> dict[str, Any]:
    """Load the parameters, the public key and the whole context with SEAL and TenSEAL, and describe them."""
    parameters, public_key, whole = blobs
    parms = _load_parameters(parameters)
    scheme = str(parms.scheme().name)
    n = int(parms.poly_modulus_degree())
    primes = [int(m.value()) for m in parms.coeff_modulus()]
    report: dict[str, Any] = {"scheme": scheme, "poly_modulus_degree": n, "primes": primes}
    if scheme != "CKKS" or n not in ALLOWED_POLY_MODULUS_DEGREES:
        return report
    report["max_bits_tc128"] = int(seal.CoeffModulus.MaxBitCount(n, seal.SEC_LEVEL_TYPE.TC128))
    context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    report["secure"] = bool(context.parameters_set())
    report["error"] = str(context.parameters_error_message())
    if not report["secure"]:
        return report
    key = _seal_load(seal.PublicKey(), context, public_key)
    if _parms_key(key.parms_id()) != _parms_key(context.key_parms_id()):
        raise ValueError("the public key is not at the key level of these parameters")
    tenseal_context = ts.context_from(whole, n_threads=1)
    report["tenseal_public"] = bool(tenseal_context.is_public())
    report["tenseal_has_secret_key"] = bool(tenseal_context.has_secret_key())
    return report


_worker_contexts: dict[tuple[int, tuple[int, ...]], Any] = {}


def _isolated_check_ciphertexts(args: dict[str, Any], blobs: list[bytes]) -> list[dict[str, Any]]:
    """Load every ciphertext with SEAL under the given parameters and describe it."""
    n = int(args["poly_modulus_degree"])
    primes = tuple(int(p) for p in args["primes"])
    key = (n, primes)
    if key not in _worker_contexts:
        _worker_contexts.clear()
        _worker_contexts[key] = _build_seal_context(n, primes)
    context = _worker_contexts[key]
    reports = []
    for i, blob in enumerate(blobs):
        try:
            ct = _seal_load(seal.Ciphertext(), context, blob)
        except Exception as exc:
            raise ValueError(f"ciphertext {i}: {exc}") from None
        data = context.get_context_data(ct.parms_id())
        reports.append(
            {
                "size": int(ct.size()),
                "ntt_form": bool(ct.is_ntt_form()),
                "transparent": bool(ct.is_transparent()),
                "scale": float(ct.scale),
                "chain_index": int(data.chain_index()) if data is not None else -1,
            }
        )
    return reports


ISOLATED_OPERATIONS: Final[Mapping[str, Any]] = {
    "check_context": _isolated_check_context,
    "check_ciphertexts": _isolated_check_ciphertexts,
}
"""What :class:`protocols.he_isolation.IsolatedWorker` may run in the checker process for this module."""
