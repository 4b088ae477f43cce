"""What every party of a round agrees on: constants, stages, message types, the parameters (checked once) and
the round's session tag."""

from __future__ import annotations

import enum
import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from protocols.errors import InvalidParameters

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

MODULUS_BITS: Final = 62
MODULUS: Final = 1 << MODULUS_BITS
FIELD_MASK: Final = np.uint64(MODULUS - 1)
HALF: Final = MODULUS // 2
SHAMIR_PRIME: Final = (1 << 521) - 1
SHARE_BYTES: Final = 66
"""a Shamir share's y value, big-endian (521 bits)"""
KEY_BYTES: Final = 32
MAGIC: Final = b"PSAG"
VERSION: Final = 1
MAX_CLIENTS: Final = 1000
MIN_SURVIVORS: Final = 3
"""fewest banks whose updates an aggregate may sum: with two, each could solve for the other's update"""
MAX_DIM: Final = 1 << 22
MAX_TAIL: Final = 4096
"""most exact-integer values (statistics, validation-loss sums) a round may carry beside the update"""
LIMB_BITS: Final = 40
"""an exact tail value travels as two field elements, ``lo = v mod 2^40`` and ``hi = v >> 40`` (signed)"""
TAIL_BITS: Final = 90
"""tail values are integers in ``(-2^90, 2^90)``: ``|hi| < 2^50``, so 1000 banks' sum cannot wrap"""
DOMAIN = b"pps-secagg/v1"


class Stage(enum.IntEnum):
    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    UNMASK = 3
    DONE = 4


class MsgType(enum.IntEnum):
    ADVERTISE_KEYS = 1
    SHARE_KEYS = 2
    MASKED_INPUT = 3
    UNMASK = 4
    KEYS = 11
    SHARES = 12
    SURVIVORS = 13


STAGE_OF: Final = {
    MsgType.ADVERTISE_KEYS: Stage.ADVERTISE_KEYS,
    MsgType.SHARE_KEYS: Stage.SHARE_KEYS,
    MsgType.MASKED_INPUT: Stage.MASKED_INPUT,
    MsgType.UNMASK: Stage.UNMASK,
}


@dataclass(frozen=True)
class SecAggParams:
    """What every party of a round agrees on; checked once, here."""

    n: int
    """number of banks in the round (indices 1..n)"""
    threshold: int
    dim: int
    """length of an update vector (the model's parameter count)"""
    clip_norm: float
    levels: int = 1 << 20
    """quantisation levels per unit of clip_norm on each side of zero"""
    max_weight: int = 1 << 24
    tail: int = 0
    """exact integers each bank appends (unclipped, unweighted, summed exactly; :func:`quantise`): a round's
    statistics (feature sums, validation-loss sums). 0 for a plain FedAvg round"""

    def __post_init__(self) -> None:
        for name in ("n", "threshold", "dim", "levels", "max_weight"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidParameters(f"{name} must be a positive integer, got {v!r}")
        if not MIN_SURVIVORS <= self.n <= MAX_CLIENTS:
            raise InvalidParameters(
                f"a round needs {MIN_SURVIVORS} to {MAX_CLIENTS} banks, got {self.n}: with two, each bank could "
                "solve the aggregate for the other's update"
            )
        if not self.n // 2 + 1 <= self.threshold <= self.n:
            raise InvalidParameters(
                f"threshold must be a majority of the {self.n} banks ({self.n // 2 + 1}..{self.n}), got "
                f"{self.threshold}: a smaller one would let a server that claims drop-outs unmask a bank"
            )
        if not isinstance(self.tail, int) or isinstance(self.tail, bool) or not 0 <= self.tail <= MAX_TAIL:
            raise InvalidParameters(f"tail must be an integer in [0, {MAX_TAIL}], got {self.tail!r}")
        if self.dim > MAX_DIM:
            raise InvalidParameters(f"dim may be at most {MAX_DIM}, got {self.dim}")
        if (
            not isinstance(self.clip_norm, int | float)
            or not math.isfinite(self.clip_norm)
            or self.clip_norm <= 0
        ):
            raise InvalidParameters(f"clip_norm must be a positive finite number, got {self.clip_norm!r}")
        if self.n * self.max_weight * self.levels >= HALF:
            raise InvalidParameters(
                "n * max_weight * levels must stay below 2^61 so that the sum cannot wrap"
            )

    @property
    def width(self) -> int:
        """Field elements in a masked input: the weighted update, the tail's two limbs per value, the weight."""
        return self.dim + 2 * self.tail + 1

    @property
    def min_survivors(self) -> int:
        """Fewest banks a round may keep at each stage up to the masked inputs (and so sum over)."""
        return max(self.threshold, MIN_SURVIVORS)


def session_id(federation_id: str, round_no: int) -> bytes:
    """The 32-byte tag binding every message, share and mask of one round of one federation."""
    return hashlib.sha256(
        DOMAIN + b"/session/" + federation_id.encode() + struct.pack(">I", round_no)
    ).digest()


@dataclass(frozen=True)
class RoundInfo:
    federation_id: str
    round_no: int
    params: SecAggParams

    @property
    def session(self) -> bytes:
        return session_id(self.federation_id, self.round_no)
