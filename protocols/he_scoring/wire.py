"""The wire format of encrypted scoring: constants, message types, limits, the MODEL and RESULT frames.

:func:`decode_model` and :func:`decode_result` are the one validation point of each frame's framing and plaintext
header (the ciphertexts inside are checked by :func:`protocols.he_scoring.load.load_model`). The format is
stated in ``docs/protocols.md`` ("Encrypted scoring").
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from protocols.errors import (
    InvalidCiphertext,
    InvalidParameters,
    InvalidScoringModel,
    ProtocolError,
    ScoringLimitExceeded,
)

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


# --- limits ------------------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise InvalidParameters(f"{name} must be positive, got {value}")


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
                raise InvalidParameters(f"{name} must be positive and finite, got {value!r}")
        degrees = self.allowed_poly_modulus_degrees
        if not isinstance(degrees, tuple) or not degrees:
            raise TypeError("allowed_poly_modulus_degrees must be a non-empty tuple")
        for n in degrees:
            if n not in ALLOWED_POLY_MODULUS_DEGREES:
                raise InvalidParameters(
                    f"allowed_poly_modulus_degrees may only hold {ALLOWED_POLY_MODULUS_DEGREES}, got {n!r}"
                )


DEFAULT_LIMITS: Final = ScoringLimits()


# --- framing -------------------------------------------------------------------------------------------------


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def frame(kind: MessageType, header: Mapping[str, Any], blobs: Sequence[bytes]) -> bytes:
    head = canonical_json(header)
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
    except (UnicodeDecodeError, ValueError, RecursionError, _NotJSON) as exc:
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


class _NotJSON(ProtocolError):
    """NaN and the infinities are not JSON (Python's reader would accept them)."""


def _no_constant(name: str) -> None:
    raise _NotJSON(f"{name} is not allowed")


def _check_keys(header: Mapping[str, Any], required: set[str], what: str) -> None:
    keys = set(header)
    if keys != required:
        missing, extra = sorted(required - keys), sorted(keys - required)
        raise InvalidScoringModel(
            f"the {what} header fields are wrong (missing {missing}, unexpected {extra})"
        )


def check_feature_names(names: object, max_features: int) -> tuple[str, ...]:
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


def check_edges(edges: list[Any], name: str, error: type[ProtocolError]) -> None:
    for e in edges:
        if isinstance(e, bool) or not isinstance(e, int | float) or not math.isfinite(e):
            raise error(f"feature {name!r}: bin edges must be finite numbers, got {e!r}")
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise error(f"feature {name!r}: bin edges must be strictly increasing")


@dataclass(frozen=True)
class Design:
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
        return hashlib.sha256(b"pps/he-scoring/design/v1\n" + canonical_json(spec)).hexdigest()

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
    def design(self) -> Design:
        return Design(self.kind, self.features, self.bins)

    def to_bytes(self) -> bytes:
        header = self.design.header(self.context_id) | {"packing": self.packing.value}
        return frame(MessageType.MODEL, header, self.ciphertexts)

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
    features = check_feature_names(header["features"], limits.max_features)
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
            check_edges(edges, name, InvalidScoringModel)
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
        return frame(MessageType.RESULT, header, self.ciphertexts)


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
