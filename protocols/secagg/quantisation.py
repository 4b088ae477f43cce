"""Updates to field elements and back: clip to an L2 norm, scale with unbiased stochastic rounding, weight, and
append the round's exact integers (the *tail*) and the weight; all modulo ``2^62``, with parameters that keep
the sum of ``n`` inputs from wrapping.

Layout of one bank's input (``SecAggParams.width`` elements)::

    q_1 * w .. q_dim * w | lo_1 .. lo_t | hi_1 .. hi_t | w

where ``q`` is the clipped update in ``[-levels, levels]`` per unit of ``clip_norm`` and each tail integer
``v`` is split into ``lo = v mod 2^40`` and ``hi = v >> 40`` (signed), so that ``t`` integers up to ``2^90`` in
magnitude sum exactly over up to 1000 banks (the sum of the ``lo`` limbs stays below ``2^50``, that of the
``hi`` limbs below ``2^60``). The tail is neither clipped nor weighted: it carries statistics (feature sums,
validation-loss sums) that the server may learn only summed, like the update.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from protocols.errors import InvalidSecAggMessage
from protocols.secagg.params import F64, FIELD_MASK, HALF, LIMB_BITS, MODULUS, TAIL_BITS, U64, SecAggParams

_LIMB = 1 << LIMB_BITS


def clip_l2(update: F64, clip_norm: float) -> F64:
    norm = float(np.linalg.norm(update))
    return update * (clip_norm / norm) if norm > clip_norm else update


def _tail_limbs(tail: Sequence[int], params: SecAggParams) -> list[int]:
    values = list(tail)
    if len(values) != params.tail:
        raise InvalidSecAggMessage(f"this round carries {params.tail} exact value(s), got {len(values)}")
    bound = 1 << TAIL_BITS
    for v in values:
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or not -bound < int(v) < bound:
            raise InvalidSecAggMessage(f"tail values must be integers of magnitude below 2^{TAIL_BITS}")
    ints = [int(v) for v in values]
    return [v % _LIMB for v in ints] + [v >> LIMB_BITS for v in ints]


def quantise(
    update: npt.ArrayLike,
    weight: int,
    params: SecAggParams,
    rng: np.random.Generator | None = None,
    *,
    tail: Sequence[int] = (),
) -> U64:
    """Clip, scale to ``[-levels, levels]`` with stochastic rounding, weight, append the tail's limbs and the
    weight; as Z_{2^62}."""
    x = np.asarray(update, dtype=np.float64)
    if x.shape != (params.dim,):
        raise InvalidSecAggMessage(f"update has shape {x.shape}, expected ({params.dim},)")
    if not np.all(np.isfinite(x)):
        raise InvalidSecAggMessage("update contains NaN or inf; nothing was sent")
    if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= params.max_weight:
        raise InvalidSecAggMessage(f"weight must be an integer in [1, {params.max_weight}], got {weight!r}")
    limbs = _tail_limbs(tail, params)
    rng = rng or np.random.default_rng(secrets.randbits(128))
    y = clip_l2(x, params.clip_norm) / params.clip_norm * params.levels
    q = np.clip(np.floor(y + rng.random(params.dim)), -params.levels, params.levels).astype(np.int64)
    signed = np.concatenate([q * weight, np.array(limbs, dtype=np.int64), [weight]]).astype(np.int64)
    return signed.astype(np.uint64) & FIELD_MASK  # two's complement, reduced mod 2^62


def _signed(total: U64) -> npt.NDArray[np.int64]:
    signed = total.astype(np.int64)
    out: npt.NDArray[np.int64] = np.where(signed >= HALF, signed - MODULUS, signed)
    return out


def dequantise(total: U64, params: SecAggParams) -> tuple[F64, int]:
    """``(sum w_i x_i, sum w_i)`` from the unmasked sum in Z_{2^62}."""
    signed = _signed(total)
    weight = int(signed[-1])
    bound = params.n * params.max_weight * params.levels
    update = signed[: params.dim]
    if weight < 1 or np.any(np.abs(update) > bound):
        raise InvalidSecAggMessage("the unmasked sum is out of range: an input or a share was corrupted")
    out: F64 = update.astype(np.float64) * (params.clip_norm / params.levels)
    # each honest input is clipped to clip_norm and weighted, so the sum's norm is at most weight * clip_norm
    # (plus one quantisation step per coordinate): a larger sum proves an out-of-range input
    slack = weight * params.clip_norm * (1e-9 + np.sqrt(params.dim) / params.levels)
    if float(np.linalg.norm(out)) > weight * params.clip_norm + slack:
        raise InvalidSecAggMessage(
            "the unmasked sum is longer than clipped updates can make: a bank sent an out-of-range input "
            "(nothing was averaged; in secure-aggregation mode the culprit cannot be named)"
        )
    return out, weight


def dequantise_tail(total: U64, params: SecAggParams) -> list[int]:
    """The exact sums of the banks' tail integers, from the unmasked sum in Z_{2^62}."""
    t, d = params.tail, params.dim
    lo = [int(v) for v in total[d : d + t]]  # each below n * 2^40 < 2^50: never wraps, never negative
    hi = [int(v) for v in _signed(total[d + t : d + 2 * t])]
    return [h * _LIMB + low for low, h in zip(lo, hi, strict=True)]
