"""The bank's half of encrypted scoring: its CKKS key pair, its model (weights or a scorecard) encrypted under
it, and the decryption of the safe-room's RESULT. The secret key never leaves :class:`BankScoringKey` except
by :meth:`BankScoringKey.secret_context_bytes`, for the bank's own storage."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import tenseal as ts
import tenseal.sealapi as seal

from protocols.errors import ForeignCiphertext, InvalidCiphertext, InvalidContext, InvalidParameters
from protocols.he_scoring.protobuf import (
    _ProtoError,
    context_id_of,
    decode_ckks_vector,
    encode_ckks_vector,
    parse_context,
)
from protocols.he_scoring.seal_objects import (
    build_seal_context,
    data_levels,
    load_parameters,
    seal_load,
    seal_save,
    working_level,
)
from protocols.he_scoring.wire import (
    ALLOWED_POLY_MODULUS_DEGREES,
    DEFAULT_COEFF_MOD_BIT_SIZES,
    DEFAULT_LIMITS,
    DEFAULT_PACKING,
    DEFAULT_POLY_MODULUS_DEGREE,
    DEFAULT_SCALE_BITS,
    MAX_SCALE_BITS,
    MIN_SCALE_BITS,
    EncryptedModelMessage,
    FloatArray,
    ModelKind,
    Packing,
    ScoreResultMessage,
    check_edges,
    check_feature_names,
    decode_result,
)

# --- the model in plaintext -----------------------------------------------------------------------------


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
            raise InvalidParameters("name must be a non-empty string")
        check_edges(list(self.edges), self.name, InvalidParameters)
        if len(self.points) != len(self.edges) + 1:
            raise InvalidParameters(
                f"feature {self.name!r}: points must have len(edges) + 1 = {len(self.edges) + 1} entries, "
                f"got {len(self.points)}"
            )
        values = [*self.points, *([] if self.missing_points is None else [float(self.missing_points)])]
        if not all(math.isfinite(v) for v in values):
            raise InvalidParameters(f"feature {self.name!r}: points must be finite")

    @property
    def bins(self) -> int:
        return len(self.edges) + 1


@dataclass(frozen=True)
class Scorecard:
    """A scorecard: base points plus, per characteristic, the points of the bin the value falls in."""

    features: tuple[ScorecardFeature, ...]
    base_points: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        if not self.features:
            raise InvalidParameters("a scorecard needs at least one feature")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise InvalidParameters("scorecard feature names must be unique")
        if not math.isfinite(float(self.base_points)):
            raise InvalidParameters("base_points must be finite")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def points(self, features: npt.ArrayLike) -> FloatArray:
        """The plaintext score of every row of ``features`` (columns in :attr:`feature_names` order)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise InvalidParameters(f"features must have shape (n, {len(self.features)})")
        total = np.full(x.shape[0], float(self.base_points))
        for j, f in enumerate(self.features):
            column = x[:, j]
            missing = np.isnan(column)
            if missing.any() and f.missing_points is None:
                raise InvalidParameters(f"feature {f.name!r} has missing values and no missing bin")
            bins = np.searchsorted(np.asarray(f.edges), np.where(missing, 0.0, column), side="right")
            points = np.asarray(f.points)[bins]
            total += np.where(missing, 0.0 if f.missing_points is None else f.missing_points, points)
        return total


# --- the key ------------------------------------------------------------------------------------------------


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
        raise InvalidParameters(
            f"poly_modulus_degree must be one of {ALLOWED_POLY_MODULUS_DEGREES}, got {poly_modulus_degree!r}"
        )
    if not isinstance(coeff_mod_bit_sizes, Sequence) or len(coeff_mod_bit_sizes) < 3:
        raise InvalidParameters(
            "coeff_mod_bit_sizes must list at least 3 prime sizes (data primes and the special prime)"
        )
    for bits in coeff_mod_bit_sizes:
        if isinstance(bits, bool) or not isinstance(bits, int) or not 20 <= bits <= 60:
            raise InvalidParameters(
                f"every coefficient modulus size must be an int in [20, 60], got {bits!r}"
            )
    assert isinstance(poly_modulus_degree, int)
    limit = int(seal.CoeffModulus.MaxBitCount(poly_modulus_degree, seal.SEC_LEVEL_TYPE.TC128))
    if sum(coeff_mod_bit_sizes) > limit:
        raise InvalidParameters(
            f"coeff_mod_bit_sizes total {sum(coeff_mod_bit_sizes)} bits; 128-bit security at N={poly_modulus_degree} "
            f"allows at most {limit}"
        )
    if (
        isinstance(scale_bits, bool)
        or not isinstance(scale_bits, int)
        or not MIN_SCALE_BITS <= scale_bits <= MAX_SCALE_BITS
    ):
        raise InvalidParameters(
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
        parts = parse_context(self._public)
        parms = load_parameters(parts.parameters)
        self._seal = build_seal_context(
            int(parms.poly_modulus_degree()), [int(m.value()) for m in parms.coeff_modulus()]
        )
        self._secret_key = seal_load(
            seal.SecretKey(), self._seal, seal_save(tenseal_context.secret_key().data)
        )
        self._encryptor = seal.Encryptor(self._seal, self._secret_key)
        self._decryptor = seal.Decryptor(self._seal, self._secret_key)
        self._encoder = seal.CKKSEncoder(self._seal)
        self.scale = float(tenseal_context.global_scale)
        self.slots = int(self._encoder.slot_count())
        level = working_level(data_levels(self._seal), math.log2(self.scale))
        if level is None:
            raise InvalidParameters("the coefficient modulus chain is too short for a product at this scale")
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
            raise InvalidContext("these bytes hold no secret key")
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
        ciphertext = seal_save(self._encryptor.encrypt_symmetric(plain))
        return encode_ckks_vector(ciphertext, self.slots, self.scale)

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
            raise InvalidParameters("weights must be a non-empty mapping of feature name to weight")
        names = check_feature_names(list(weights), DEFAULT_LIMITS.max_features)
        values = [*(weights[n] for n in names), bias]
        for name, value in zip([*names, "bias"], values, strict=True):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float | np.floating)
                or not math.isfinite(value)
            ):
                raise InvalidParameters(f"{name} must be a finite number, got {value!r}")
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
                ciphertext = seal_load(seal.Ciphertext(), self._seal, vector.seal_bytes)
                self._decryptor.decrypt(ciphertext, plain)
                if complex_packing:
                    z = np.asarray(self._encoder.decode_complex(plain), dtype=np.complex128)
                    values = np.concatenate([z.real, z.imag])
                else:
                    values = np.asarray(self._encoder.decode_double(plain), dtype=np.float64)
            except (
                _ProtoError,
                ValueError,
                RuntimeError,
                MemoryError,
                IndexError,
            ) as exc:  # SEAL raises these
                raise InvalidCiphertext(
                    f"result ciphertext {i} cannot be decrypted with this key: {exc}"
                ) from None
            start = i * layout.per_ciphertext
            raw[start : start + used] = values[:used]
        probabilities = _sigmoid(raw) if message.kind is ModelKind.LOGISTIC else None
        return DecryptedScores(message.kind, raw, probabilities)


_CREATE_TOKEN: Final = object()


def encrypt_model_public(
    public_context: bytes,
    weights: Mapping[str, float],
    bias: float,
    *,
    packing: Packing = DEFAULT_PACKING,
) -> EncryptedModelMessage:
    """MODEL for ``sigmoid(bias + sum w_j x_j)`` encrypted under the *public* key of ``public_context``.

    For a party that holds the plaintext model but not the bank's secret key: the enclave, which encrypts a
    model it has approved (:mod:`enclave_sim.model_check`) so that what the safe-room evaluates is exactly
    what was checked. Each value is encrypted in its own ciphertext (fresh public-key randomness), replicated
    across all slots, at the level the safe-room computes at. Only the bank's secret key opens it.
    """
    packing = Packing(packing)
    if not isinstance(weights, Mapping) or not weights:
        raise InvalidParameters("weights must be a non-empty mapping of feature name to weight")
    names = check_feature_names(list(weights), DEFAULT_LIMITS.max_features)
    values = [*(float(weights[n]) for n in names), float(bias)]
    if not all(math.isfinite(v) for v in values):
        raise InvalidParameters("weights and bias must be finite")
    blobs = _encrypt_public(public_context, values)
    return EncryptedModelMessage(
        ModelKind.LOGISTIC, context_id_of(bytes(public_context)), names, blobs, packing=packing
    )


def encrypt_scorecard_public(
    public_context: bytes, scorecard: Scorecard, *, packing: Packing = DEFAULT_PACKING
) -> EncryptedModelMessage:
    """MODEL for a scorecard encrypted under the *public* key of ``public_context`` (the enclave's half of an
    approved scorecard, as :func:`encrypt_model_public` for a logistic model): bin edges in plaintext, the
    points of every bin encrypted, in the order of :meth:`BankScoringKey.encrypt_scorecard`."""
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
    blobs = _encrypt_public(public_context, values)
    return EncryptedModelMessage(
        ModelKind.SCORECARD,
        context_id_of(bytes(public_context)),
        scorecard.feature_names,
        blobs,
        tuple(bins),
        packing,
    )


def _encrypt_public(public_context: bytes, values: list[float]) -> tuple[bytes, ...]:
    """Each value in its own public-key ciphertext, replicated across all slots, at the working level."""
    parts = parse_context(bytes(public_context))
    parms = load_parameters(parts.parameters)
    degree = int(parms.poly_modulus_degree())
    if degree not in ALLOWED_POLY_MODULUS_DEGREES:
        raise InvalidContext(f"poly_modulus_degree {degree} is not one scoring allows")
    ctx = build_seal_context(degree, [int(m.value()) for m in parms.coeff_modulus()])
    if parts.scale is None or not math.isfinite(parts.scale) or parts.scale <= 1:
        raise InvalidContext("the context carries no usable global scale")
    public_key = seal_load(seal.PublicKey(), ctx, parts.public_key)
    encryptor = seal.Encryptor(ctx, public_key)
    encoder = seal.CKKSEncoder(ctx)
    slots = int(encoder.slot_count())
    level = working_level(data_levels(ctx), math.log2(parts.scale))
    if level is None:
        raise InvalidContext("the coefficient modulus chain is too short for a product at this scale")
    blobs = []
    for v in values:
        plain = seal.Plaintext()
        encoder.encode(v, list(level.parms_id), parts.scale, plain)
        ciphertext = seal.Ciphertext()
        encryptor.encrypt(plain, ciphertext)
        blobs.append(encode_ckks_vector(seal_save(ciphertext), slots, parts.scale))
    return tuple(blobs)
