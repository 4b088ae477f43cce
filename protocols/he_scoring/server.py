"""The safe-room's evaluation: the design columns of the admitted subjects' features (encoded once and
reusable), the encrypted model applied to them with noise and re-randomisation (:func:`score`), and one job as
a stage machine (:class:`ScoringServer`: CONTEXT, then MODEL, then any number of :meth:`~ScoringServer.score`)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from protocols.errors import (
    ForeignCiphertext,
    InvalidCiphertext,
    InvalidFeatureMatrix,
    InvalidParameters,
    ScoringLimitExceeded,
    ScoringStageError,
)
from protocols.he_isolation import IsolatedWorker
from protocols.he_scoring.load import LoadedModel, PublicScoringContext, check_public_context, load_model
from protocols.he_scoring.noise import NoisePool, gaussian, noise_key
from protocols.he_scoring.protobuf import encode_ckks_vector
from protocols.he_scoring.seal_objects import seal_save
from protocols.he_scoring.wire import (
    DEFAULT_LIMITS,
    DEFAULT_SCORE_NOISE_STD,
    HEADROOM_BITS,
    MAX_SCORE_NOISE_STD,
    MIN_RESULT_SCALE_BITS,
    Design,
    EncryptedModelMessage,
    FloatArray,
    ModelKind,
    Packing,
    ScoreResultMessage,
    ScoringLimits,
    ServerStage,
    SlotLayout,
)

# --- features ------------------------------------------------------------------------------------------------


def _check_features(features: object, design: Design, limits: ScoringLimits) -> FloatArray:
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


# --- scoring -------------------------------------------------------------------------------------------------


def plan_rescale(model: LoadedModel) -> bool:
    """Whether :func:`score` rescales its products once: only if the scale left is still enough for the
    result's precision and the remaining modulus keeps the headroom."""
    final = model.level
    if len(final.prime_bits) < 2:
        return False
    after_bits = 2 * math.log2(model.scale) - final.prime_bits[-1]
    return (
        after_bits >= MIN_RESULT_SCALE_BITS
        and final.bits - final.prime_bits[-1] >= after_bits + HEADROOM_BITS
    )


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
    noise_pool: NoisePool | None = None,
) -> ScoreResultMessage:
    """Evaluate the encrypted model over plaintext features; RESULT holds one ciphertext per block of subjects.

    ``features`` is the float64 matrix of the admitted subjects (rows) in ``model.required_features`` order,
    or the same already encoded with :func:`encode_features` (the cached path). ``noise_std`` is the standard
    deviation of the Gaussian noise added to every score before release. ``profile``, if given, accumulates
    seconds per stage (diagnostics). ``noise_pool``, if given (for this ``context``), supplies pre-made
    encryptions of the noise (:mod:`protocols.he_scoring.noise`), one per block, each used once; blocks it
    cannot supply are noised inline as without it.
    """
    if isinstance(noise_std, bool) or not isinstance(noise_std, int | float):
        raise TypeError(f"noise_std must be a number, got {type(noise_std).__name__}")
    if not (math.isfinite(noise_std) and 0.0 <= noise_std <= MAX_SCORE_NOISE_STD):
        raise InvalidParameters(f"noise_std must be in [0, {MAX_SCORE_NOISE_STD:g}], got {noise_std!r}")
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
    rescale = plan_rescale(loaded)
    if noise_pool is not None and noise_pool.context is not context:
        raise InvalidParameters("the noise pool belongs to another context than the one given")
    pool_key = noise_key(context, loaded, float(noise_std)) if noise_pool is not None else None
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
                    fresh = noise_pool.take(pool_key) if noise_pool is not None and pool_key else None
                    if fresh is None:
                        noise = seal.Plaintext()
                        if noise_std > 0:
                            samples = gaussian(context.slots, noise_std, loaded.packing)
                            encoder.encode(samples, acc.parms_id(), acc.scale, noise)
                        else:
                            encoder.encode(0.0, acc.parms_id(), acc.scale, noise)
                        fresh = seal.Ciphertext()
                        encryptor.encrypt(noise, fresh)
                    ev.add_inplace(acc, fresh)
                with _timed(profile, "serialise"):
                    blobs.append(encode_ckks_vector(seal_save(acc), layout.used_slots(b), float(acc.scale)))
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


# --- one job as a stage machine ---------------------------------------------------------------------------------


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
