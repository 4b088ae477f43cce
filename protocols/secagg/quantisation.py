"""Updates to field elements and back: clip to an L2 norm, scale with unbiased stochastic rounding, weight, and
append the weight; all modulo ``2^62``, with parameters that keep the sum of ``n`` updates from wrapping."""

from __future__ import annotations

import secrets

import numpy as np
import numpy.typing as npt

from protocols.errors import InvalidSecAggMessage
from protocols.secagg.params import F64, FIELD_MASK, HALF, MODULUS, U64, SecAggParams


def clip_l2(update: F64, clip_norm: float) -> F64:
    norm = float(np.linalg.norm(update))
    return update * (clip_norm / norm) if norm > clip_norm else update


def quantise(
    update: npt.ArrayLike, weight: int, params: SecAggParams, rng: np.random.Generator | None = None
) -> U64:
    """Clip, scale to ``[-levels, levels]`` with stochastic rounding, weight, append the weight; as Z_{2^62}."""
    x = np.asarray(update, dtype=np.float64)
    if x.shape != (params.dim,):
        raise InvalidSecAggMessage(f"update has shape {x.shape}, expected ({params.dim},)")
    if not np.all(np.isfinite(x)):
        raise InvalidSecAggMessage("update contains NaN or inf; nothing was sent")
    if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= params.max_weight:
        raise InvalidSecAggMessage(f"weight must be an integer in [1, {params.max_weight}], got {weight!r}")
    rng = rng or np.random.default_rng(secrets.randbits(128))
    y = clip_l2(x, params.clip_norm) / params.clip_norm * params.levels
    q = np.clip(np.floor(y + rng.random(params.dim)), -params.levels, params.levels).astype(np.int64)
    signed = np.append(q * weight, weight).astype(np.int64)
    return signed.astype(np.uint64) & FIELD_MASK  # two's complement, reduced mod 2^62


def dequantise(total: U64, params: SecAggParams) -> tuple[F64, int]:
    """``(sum w_i x_i, sum w_i)`` from the unmasked sum in Z_{2^62}."""
    signed = total.astype(np.int64)
    signed = np.where(signed >= HALF, signed - MODULUS, signed)
    weight = int(signed[-1])
    bound = params.n * params.max_weight * params.levels
    if weight < 1 or np.any(np.abs(signed[:-1]) > bound):
        raise InvalidSecAggMessage("the unmasked sum is out of range: an input or a share was corrupted")
    return signed[:-1].astype(np.float64) * (params.clip_norm / params.levels), weight
