"""Secure aggregation of model updates across banks, after Bonawitz et al. 2017 and Flower's SecAgg+.

``n`` banks (clients, numbered ``1..n`` by the order of their organisation ids) each hold a float update
vector ``x_i`` (the change of the global model after local training) and a weight ``w_i`` (its sample count).
The safe-room (server) learns ``sum_i w_i * clip(x_i)`` and ``sum_i w_i`` over the banks that finish the round
(the survivors ``U3``), and nothing else about any ``x_i``. A round never finishes with fewer than
``max(threshold, 3)`` survivors (:attr:`SecAggParams.min_survivors`): with two, either survivor could subtract its
own weighted update from the published aggregate and obtain the other's exactly.

Stages and messages (each a bytes frame, see :func:`encode_frame`)
------------------------------------------------------------------
0. ``ADVERTISE_KEYS`` (client → server): two fresh X25519 public keys per round, ``c_pk`` (to encrypt shares
   to peers) and ``s_pk`` (to agree pairwise masks). The server closes the stage with the set ``U1`` of banks
   that sent one and broadcasts ``KEYS`` (everyone's public keys).
1. ``SHARE_KEYS`` (client → server): bank ``i`` draws a self-mask seed ``b_i`` (32 random bytes), splits ``b_i``
   and its mask secret key ``s_sk_i`` into Shamir ``t``-of-``|U1|`` shares, and sends to each peer ``j`` its two
   shares encrypted with ChaCha20-Poly1305 under ``HKDF-SHA256(X25519(c_sk_i, c_pk_j))`` (associated data:
   session, sender, recipient), plus ``SHA-256(session || b_i)`` as a commitment. The server cannot read the
   shares; it forwards to each bank the ciphertexts addressed to it (``SHARES``) once ``U2`` is closed.
2. ``MASKED_INPUT`` (client → server): ``y_i = q_i + PRG(b_i) + sum_{j in U2, j > i} PRG(s_ij)
   - sum_{j in U2, j < i} PRG(s_ij)  (mod 2^62)`` with ``s_ij = HKDF(X25519(s_sk_i, s_pk_j))`` and ``q_i`` the
   quantised weighted update (below). The pairwise masks cancel in the sum. The server closes ``U3``, broadcasts
   it (``SURVIVORS``).
3. ``UNMASK`` (client → server): each bank in ``U3`` sends, for every ``j in U3``, its share of ``b_j``, and for
   every ``j in U2 \\ U3`` (dropped after sharing), its share of ``s_sk_j`` — never both for one ``j``. With
   ``t`` responses the server rebuilds the self masks of the survivors and the mask keys of the dropped (checked
   against their advertised ``s_pk``), removes them and decodes the sum.

At every stage, if fewer than ``min_survivors = max(threshold, 3)`` banks remain (at the unmask stage: fewer than
``threshold`` unmask responses, which is all that Shamir needs), the round aborts with :class:`SecAggAborted` and
nothing is aggregated. A round therefore needs at least 3 banks.

Quantisation: the client clips ``x_i`` to L2 norm ``clip_norm`` (so each coordinate lies in
``[-clip_norm, clip_norm]``), scales to ``[-levels, levels]`` with unbiased stochastic rounding, multiplies by its
integer weight ``w_i <= max_weight`` and appends ``w_i`` as a last coordinate. All arithmetic is modulo
``MODULUS = 2^62``; the parameters are checked so that ``n * max_weight * levels < 2^61``: the sum of ``n``
clipped updates cannot wrap, and it decodes as a signed integer. NaN or inf in an update is refused before
quantisation.

PRG: ChaCha20 keystream (pyca/cryptography) keyed by an HKDF-SHA256 output, each 64-bit word masked to 62 bits
(the modulus is a power of two, so the masked words are uniform). ChaCha20 is a stream cipher and therefore a
cryptographic PRG; numpy's Philox is a fast counter-based generator, not designed or analysed as a
cryptographic PRG (its key is 128 bits and its outputs are not meant to resist prediction), so it is not used for
masks. Shamir sharing is over the prime field ``GF(2^521 - 1)`` (secrets are 256-bit integers): small enough to
write and test here; the maintained packages on PyPI either work over ``GF(2^128)`` in 16-byte blocks
(pycryptodome) or over ``GF(256)`` byte-wise, and neither is a dependency of PPS yet.

Who learns what (semi-honest model: everyone follows the protocol but tries to learn more from what it sees)
---------------------------------------------------------------------------------------------------------
* The **server** sees public keys, encrypted shares (opaque to it), masked inputs (each uniformly distributed
  on its own), the sets ``U1..U4`` and the unmasking shares; it learns ``sum w_i q_i`` and ``sum w_i`` over ``U3``
  (hence the total sample count and the weighted mean update) — not any single update: ``U3`` has at least
  ``min_survivors >= 3`` banks. Dropped banks' (``U2 \\ U3``) inputs are never revealed: only their mask keys are.
* A **bank** learns the public keys and the survivor set (its size is published), and the final aggregate if the
  service gives it the new global model and total weight (it does). Subtracting its own contribution leaves the
  weighted sum of the *other* survivors, at least two banks: nothing about any single other bank — unless it
  colludes with all survivors but one (see below). Whoever decides when a stage closes chooses the survivors; the
  service (:mod:`pps.services.federated`) lets no bank close a stage before its deadline while a bank still in it has not
  posted.
* **Collusion**: the server together with up to ``threshold - 1`` banks learns nothing beyond the sum of the
  other survivors' inputs (and what the colluding banks know): if the colluders are all survivors but one, that
  is the one's update, the inherent limit of any exact aggregate; ``threshold`` colluding shares rebuild secrets, so
  ``threshold > n / 2`` is required, which also keeps a semi-honest server from obtaining both shares of one bank.
* Not covered: a *malicious* server that tells different banks different survivor sets (Bonawitz's
  consistency-check round with signatures), malicious banks that send out-of-range inputs (the sum is then
  wrong, though nobody's privacy suffers), and leakage from the aggregate itself (no differential privacy here).
  Every bank talks to every other (a complete graph; SecAgg+'s k-regular graph would scale past ~50 banks).
"""

from __future__ import annotations

import enum
import hashlib
import math
import os
import secrets
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pps_wire.errors import Conflict, InvalidInput

if TYPE_CHECKING:
    from pps.infra.executor import Executor

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]

MODULUS_BITS: Final = 62
MODULUS: Final = 1 << MODULUS_BITS
_MASK: Final = np.uint64(MODULUS - 1)
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
_HEADER = struct.Struct(">4sBBI32sH")  # magic, version, type, round, session, sender
_DOMAIN = b"pps-secagg/v1"


# --- errors ------------------------------------------------------------------------------------------------


class InvalidSecAggMessage(InvalidInput):
    """Bytes that are not a well-formed secure-aggregation message of the expected type, shape and range, or
    an update that cannot be aggregated (NaN/inf, wrong length); nothing was recorded."""

    code = "invalid_secagg_message"


class SecAggStageError(Conflict):
    """A message for another round (replayed or late), another stage, or from a bank not in the round."""

    code = "secagg_wrong_stage"


class SecAggAborted(Conflict):
    """Fewer banks than the threshold (or than :data:`MIN_SURVIVORS`) remain: the round cannot complete and is
    aborted (nothing is averaged)."""

    code = "secagg_aborted"


# --- parameters ----------------------------------------------------------------------------------------------


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

    def __post_init__(self) -> None:
        for name in ("n", "threshold", "dim", "levels", "max_weight"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidInput(f"{name} must be a positive integer, got {v!r}")
        if not MIN_SURVIVORS <= self.n <= MAX_CLIENTS:
            raise InvalidInput(
                f"a round needs {MIN_SURVIVORS} to {MAX_CLIENTS} banks, got {self.n}: with two, each bank could "
                "solve the aggregate for the other's update"
            )
        if not self.n // 2 + 1 <= self.threshold <= self.n:
            raise InvalidInput(
                f"threshold must be a majority of the {self.n} banks ({self.n // 2 + 1}..{self.n}), got "
                f"{self.threshold}: a smaller one would let a server that claims drop-outs unmask a bank"
            )
        if self.dim > MAX_DIM:
            raise InvalidInput(f"dim may be at most {MAX_DIM}, got {self.dim}")
        if (
            not isinstance(self.clip_norm, int | float)
            or not math.isfinite(self.clip_norm)
            or self.clip_norm <= 0
        ):
            raise InvalidInput(f"clip_norm must be a positive finite number, got {self.clip_norm!r}")
        if self.n * self.max_weight * self.levels >= HALF:
            raise InvalidInput("n * max_weight * levels must stay below 2^61 so that the sum cannot wrap")

    @property
    def min_survivors(self) -> int:
        """Fewest banks a round may keep at each stage up to the masked inputs (and so sum over)."""
        return max(self.threshold, MIN_SURVIVORS)


def session_id(federation_id: str, round_no: int) -> bytes:
    """The 32-byte tag binding every message, share and mask of one round of one federation."""
    return hashlib.sha256(
        _DOMAIN + b"/session/" + federation_id.encode() + struct.pack(">I", round_no)
    ).digest()


@dataclass(frozen=True)
class RoundInfo:
    federation_id: str
    round_no: int
    params: SecAggParams

    @property
    def session(self) -> bytes:
        return session_id(self.federation_id, self.round_no)


# --- framing -------------------------------------------------------------------------------------------------


def encode_frame(info: RoundInfo, mtype: MsgType, sender: int, body: bytes) -> bytes:
    """``PSAG | version u8 | type u8 | round u32 | session[32] | sender u16 | body`` (big-endian)."""
    return _HEADER.pack(MAGIC, VERSION, int(mtype), info.round_no, info.session, sender) + body


@dataclass(frozen=True)
class Frame:
    mtype: MsgType
    round_no: int
    sender: int
    body: bytes


def decode_frame(info: RoundInfo, data: bytes, expected: MsgType) -> Frame:
    """Parse and check a frame's header against this round; the body is parsed by the caller."""
    if not isinstance(data, bytes | bytearray):
        raise InvalidSecAggMessage("a secure-aggregation message must be bytes")
    if len(data) < _HEADER.size:
        raise InvalidSecAggMessage(f"message too short ({len(data)} bytes) for a secure-aggregation frame")
    magic, version, mtype, round_no, session, sender = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InvalidSecAggMessage("not a secure-aggregation message (bad magic)")
    if version != VERSION:
        raise InvalidSecAggMessage(f"unsupported message version {version}; this server speaks {VERSION}")
    try:
        kind = MsgType(mtype)
    except ValueError:
        raise InvalidSecAggMessage(f"unknown message type {mtype}") from None
    if round_no != info.round_no:
        raise SecAggStageError(
            f"message is for round {round_no}, the current round is {info.round_no} (replayed or late)",
            details={"message_round": round_no, "current_round": info.round_no},
        )
    if session != info.session:
        raise SecAggStageError("message is for another federation or round session (replayed or misdirected)")
    if kind != expected:
        raise SecAggStageError(f"expected a {expected.name} message, got {kind.name}")
    if not 1 <= sender <= info.params.n:
        raise SecAggStageError(f"sender {sender} is not a bank of this round (1..{info.params.n})")
    return Frame(kind, round_no, sender, bytes(data[_HEADER.size :]))


def peek_type(data: bytes) -> MsgType:
    """The message type of a frame (header checked for magic and version only)."""
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise InvalidSecAggMessage("not a secure-aggregation message (bad magic or too short)")
    if data[4] != VERSION:
        raise InvalidSecAggMessage(f"unsupported message version {data[4]}; this server speaks {VERSION}")
    try:
        return MsgType(data[5])
    except ValueError:
        raise InvalidSecAggMessage(f"unknown message type {data[5]}") from None


class _Reader:
    def __init__(self, body: bytes, what: str) -> None:
        self.body, self.pos, self.what = body, 0, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.body):
            raise InvalidSecAggMessage(f"{self.what}: truncated message")
        out = self.body[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        v: int = struct.unpack(">H", self.take(2))[0]
        return v

    def u32(self) -> int:
        v: int = struct.unpack(">I", self.take(4))[0]
        return v

    def end(self) -> None:
        if self.pos != len(self.body):
            raise InvalidSecAggMessage(f"{self.what}: {len(self.body) - self.pos} trailing bytes")


# --- primitives ----------------------------------------------------------------------------------------------


def _hkdf(secret: bytes, salt: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_DOMAIN + b"/" + label).derive(secret)


def prg(seed: bytes, dim: int) -> U64:
    """``dim`` uniform elements of Z_{2^62}: the ChaCha20 keystream under ``seed`` (32 bytes), 8 bytes each."""
    if len(seed) != 32:
        raise ValueError("a PRG seed is 32 bytes")
    enc = Cipher(algorithms.ChaCha20(seed, b"\x00" * 16), mode=None).encryptor()
    words = np.frombuffer(enc.update(bytes(8 * dim)), dtype="<u8").astype(np.uint64)
    return words & _MASK


def _pub(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _priv_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _load_pub(raw: bytes, what: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise InvalidSecAggMessage(f"{what}: not an X25519 public key") from None


def _agree(sk: X25519PrivateKey, pk: X25519PublicKey, what: str) -> bytes:
    try:
        return sk.exchange(pk)
    except ValueError:  # an all-zero shared secret: a low-order public key
        raise InvalidSecAggMessage(f"{what}: key agreement failed (low-order public key)") from None


def pairwise_mask(sk: X25519PrivateKey, pk: X25519PublicKey, session: bytes, dim: int) -> U64:
    return prg(_hkdf(_agree(sk, pk, "pairwise mask"), session, b"pairwise-mask"), dim)


def self_mask(b: bytes, session: bytes, dim: int) -> U64:
    return prg(_hkdf(b, session, b"self-mask"), dim)


def _commit(session: bytes, b: bytes) -> bytes:
    return hashlib.sha256(_DOMAIN + b"/commit/" + session + b).digest()


# --- Shamir over GF(2^521 - 1) -------------------------------------------------------------------------------


def shamir_split(secret: int, threshold: int, xs: Sequence[int]) -> dict[int, int]:
    """Shares ``{x: f(x)}`` of a random polynomial of degree ``threshold - 1`` with ``f(0) = secret``."""
    if not 0 <= secret < SHAMIR_PRIME:
        raise ValueError("secret out of the field")
    if not 1 <= threshold <= len(xs) or len(set(xs)) != len(xs) or any(not 0 < x < SHAMIR_PRIME for x in xs):
        raise ValueError("need distinct non-zero x values and 1 <= threshold <= their number")
    coeffs = [secret] + [secrets.randbelow(SHAMIR_PRIME) for _ in range(threshold - 1)]
    out = {}
    for x in xs:
        y = 0
        for c in reversed(coeffs):
            y = (y * x + c) % SHAMIR_PRIME
        out[x] = y
    return out


def shamir_combine(shares: Mapping[int, int], threshold: int) -> int:
    """``f(0)`` from ``threshold`` shares (Lagrange); fewer than ``threshold`` is refused."""
    if len(shares) < threshold:
        raise SecAggAborted(f"{len(shares)} shares cannot rebuild a secret shared {threshold}-of-n")
    pts = sorted(shares.items())[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(pts):
        num, den = 1, 1
        for j, (xj, _) in enumerate(pts):
            if i != j:
                num = num * xj % SHAMIR_PRIME
                den = den * (xj - xi) % SHAMIR_PRIME
        secret = (secret + yi * num * pow(den, -1, SHAMIR_PRIME)) % SHAMIR_PRIME
    return secret


# --- quantisation --------------------------------------------------------------------------------------------


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
    return signed.astype(np.uint64) & _MASK  # two's complement, reduced mod 2^62


def dequantise(total: U64, params: SecAggParams) -> tuple[F64, int]:
    """``(sum w_i x_i, sum w_i)`` from the unmasked sum in Z_{2^62}."""
    signed = total.astype(np.int64)
    signed = np.where(signed >= HALF, signed - MODULUS, signed)
    weight = int(signed[-1])
    bound = params.n * params.max_weight * params.levels
    if weight < 1 or np.any(np.abs(signed[:-1]) > bound):
        raise InvalidSecAggMessage("the unmasked sum is out of range: an input or a share was corrupted")
    return signed[:-1].astype(np.float64) * (params.clip_norm / params.levels), weight


# --- messages ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Advert:
    c_pk: bytes
    s_pk: bytes


@dataclass(frozen=True)
class ShareKeysMsg:
    commitment: bytes
    ciphertexts: dict[int, bytes]


@dataclass(frozen=True)
class UnmaskMsg:
    b_shares: dict[int, int]
    sk_shares: dict[int, int]


def _parse_advert(info: RoundInfo, data: bytes) -> tuple[int, Advert]:
    f = decode_frame(info, data, MsgType.ADVERTISE_KEYS)
    r = _Reader(f.body, "ADVERTISE_KEYS")
    c_pk, s_pk = r.take(KEY_BYTES), r.take(KEY_BYTES)
    r.end()
    _load_pub(c_pk, "c_pk")
    _load_pub(s_pk, "s_pk")
    if c_pk == s_pk:
        raise InvalidSecAggMessage("ADVERTISE_KEYS: the two public keys must differ")
    return f.sender, Advert(c_pk, s_pk)


def _parse_share_keys(info: RoundInfo, data: bytes, u1: set[int]) -> tuple[int, ShareKeysMsg]:
    f = decode_frame(info, data, MsgType.SHARE_KEYS)
    r = _Reader(f.body, "SHARE_KEYS")
    commitment = r.take(32)
    count = r.u16()
    cts: dict[int, bytes] = {}
    for _ in range(count):
        to, length = r.u16(), r.u32()
        if length > 1024:
            raise InvalidSecAggMessage("SHARE_KEYS: share ciphertext too long")
        if to in cts:
            raise InvalidSecAggMessage(f"SHARE_KEYS: two ciphertexts for bank {to}")
        cts[to] = r.take(length)
    r.end()
    if set(cts) != u1 - {f.sender}:
        raise InvalidSecAggMessage(
            "SHARE_KEYS: needs exactly one ciphertext for every other bank that advertised keys"
        )
    return f.sender, ShareKeysMsg(commitment, cts)


def _parse_masked(info: RoundInfo, data: bytes) -> tuple[int, U64]:
    f = decode_frame(info, data, MsgType.MASKED_INPUT)
    r = _Reader(f.body, "MASKED_INPUT")
    length = r.u32()
    if length != info.params.dim + 1:
        raise InvalidSecAggMessage(
            f"MASKED_INPUT has {length} elements, expected {info.params.dim + 1} (the model's parameters + weight)"
        )
    y = np.frombuffer(r.take(8 * length), dtype=">u8").astype(np.uint64)
    r.end()
    if np.any(y >= np.uint64(MODULUS)):
        raise InvalidSecAggMessage(f"MASKED_INPUT has elements outside the field Z_2^{MODULUS_BITS}")
    return f.sender, y


def _parse_unmask(info: RoundInfo, data: bytes, u2: set[int], u3: set[int]) -> tuple[int, UnmaskMsg]:
    f = decode_frame(info, data, MsgType.UNMASK)
    r = _Reader(f.body, "UNMASK")
    b_shares: dict[int, int] = {}
    sk_shares: dict[int, int] = {}
    for _ in range(r.u16()):
        owner, kind = r.u16(), r.u8()
        y = int.from_bytes(r.take(SHARE_BYTES), "big")
        if y >= SHAMIR_PRIME:
            raise InvalidSecAggMessage("UNMASK: share outside the field")
        if kind not in (0, 1) or owner in b_shares or owner in sk_shares:
            raise InvalidSecAggMessage("UNMASK: bad share kind or two shares for one bank")
        (b_shares if kind == 0 else sk_shares)[owner] = y
    r.end()
    if set(b_shares) != u3 or set(sk_shares) != u2 - u3:
        raise InvalidSecAggMessage(
            "UNMASK: needs a self-mask share for every survivor and a key share for every dropped bank, no more"
        )
    return f.sender, UnmaskMsg(b_shares, sk_shares)


def _ids_body(ids: Iterable[int]) -> bytes:
    ids = sorted(ids)
    return struct.pack(">H", len(ids)) + b"".join(struct.pack(">H", i) for i in ids)


def _parse_ids(info: RoundInfo, data: bytes, mtype: MsgType) -> set[int]:
    f = decode_frame(info, data, mtype)
    r = _Reader(f.body, mtype.name)
    ids = {r.u16() for _ in range(r.u16())}
    r.end()
    return ids


# --- server --------------------------------------------------------------------------------------------------

SERVER: Final = 0


@dataclass
class SecAggServer:
    """The server's half: collects messages stage by stage and computes the sum. Holds no secrets.

    Every message goes through :meth:`receive` (the one validation point); :meth:`close_stage` fixes the set of
    banks of the stage (aborting below the threshold). State is the messages received, so a service can persist
    them and rebuild the server after a restart by replaying them.
    """

    info: RoundInfo
    stage: Stage = Stage.ADVERTISE_KEYS
    adverts: dict[int, Advert] = field(default_factory=dict)
    shares: dict[int, ShareKeysMsg] = field(default_factory=dict)
    masked: dict[int, U64] = field(default_factory=dict)
    unmasks: dict[int, UnmaskMsg] = field(default_factory=dict)
    u1: set[int] = field(default_factory=set)
    u2: set[int] = field(default_factory=set)
    u3: set[int] = field(default_factory=set)

    @property
    def params(self) -> SecAggParams:
        return self.info.params

    def receive(self, data: bytes) -> tuple[MsgType, int]:
        """Validate and record one client message; returns its type and sender. Bad input changes nothing."""
        mtype = peek_type(data)
        if mtype not in STAGE_OF:
            raise InvalidSecAggMessage(f"{mtype.name} is a server message")
        if STAGE_OF[mtype] != self.stage:
            stage = self.stage.name
            decode_frame(self.info, data, mtype)  # a replay of another round says so first
            raise SecAggStageError(
                f"the round is at stage {stage}; a {mtype.name} message is not accepted now"
            )
        if mtype is MsgType.ADVERTISE_KEYS:
            sender, advert = _parse_advert(self.info, data)
            self._fresh(sender, self.adverts, set(range(1, self.params.n + 1)))
            if any(
                advert.c_pk in (a.c_pk, a.s_pk) or advert.s_pk in (a.c_pk, a.s_pk)
                for a in self.adverts.values()
            ):
                raise InvalidSecAggMessage("ADVERTISE_KEYS: public keys already used by another bank")
            self.adverts[sender] = advert
        elif mtype is MsgType.SHARE_KEYS:
            sender, sk = _parse_share_keys(self.info, data, self.u1)
            self._fresh(sender, self.shares, self.u1)
            self.shares[sender] = sk
        elif mtype is MsgType.MASKED_INPUT:
            sender, y = _parse_masked(self.info, data)
            self._fresh(sender, self.masked, self.u2)
            self.masked[sender] = y
        else:
            sender, um = _parse_unmask(self.info, data, self.u2, self.u3)
            self._fresh(sender, self.unmasks, self.u3)
            self.unmasks[sender] = um
        return mtype, sender

    @staticmethod
    def _fresh(sender: int, got: Mapping[int, object], allowed: set[int]) -> None:
        if sender not in allowed:
            raise SecAggStageError(f"bank {sender} is not among the banks still in this stage")
        if sender in got:
            raise SecAggStageError(f"bank {sender} already sent this stage's message (replay)")

    def received(self) -> set[int]:
        """The banks heard from in the current stage."""
        by_stage: dict[Stage, Mapping[int, object]] = {
            Stage.ADVERTISE_KEYS: self.adverts,
            Stage.SHARE_KEYS: self.shares,
            Stage.MASKED_INPUT: self.masked,
            Stage.UNMASK: self.unmasks,
        }
        return set(by_stage.get(self.stage, {}))

    def close_stage(self) -> Stage:
        """End the current stage with the banks heard from; raises :class:`SecAggAborted` below
        :attr:`SecAggParams.min_survivors` (at the unmask stage: below the threshold, all Shamir needs)."""
        if self.stage is Stage.DONE:
            raise SecAggStageError("the round is already done")
        got = self.received()
        p = self.params
        if self.stage is Stage.UNMASK and len(got) < p.threshold:
            raise SecAggAborted(
                f"only {len(got)} of {p.n} banks completed stage {self.stage.name}; the threshold is "
                f"{p.threshold}: the round is aborted and nothing is aggregated",
                details={"stage": self.stage.name, "remaining": len(got), "threshold": p.threshold},
            )
        if self.stage is not Stage.UNMASK and len(got) < p.min_survivors:
            why = (
                f"the threshold is {p.threshold}"
                if p.min_survivors == p.threshold
                else f"an aggregate needs at least {MIN_SURVIVORS} banks, so that no bank can solve it for "
                "another's update"
            )
            raise SecAggAborted(
                f"only {len(got)} of {p.n} banks completed stage {self.stage.name}; {why}: the round is "
                "aborted and nothing is aggregated",
                details={
                    "stage": self.stage.name,
                    "remaining": len(got),
                    "threshold": p.threshold,
                    "min_survivors": p.min_survivors,
                },
            )
        if self.stage is Stage.ADVERTISE_KEYS:
            self.u1 = got
        elif self.stage is Stage.SHARE_KEYS:
            self.u2 = got
        elif self.stage is Stage.MASKED_INPUT:
            self.u3 = got
        self.stage = Stage(self.stage + 1)
        return self.stage

    def outbox(self, recipient: int) -> bytes:
        """What bank ``recipient`` needs for the current stage (keys, its shares, the survivors)."""
        if self.stage is Stage.SHARE_KEYS:
            body = struct.pack(">H", len(self.adverts)) + b"".join(
                struct.pack(">H", i) + self.adverts[i].c_pk + self.adverts[i].s_pk for i in sorted(self.u1)
            )
            return encode_frame(self.info, MsgType.KEYS, SERVER + 1, body)
        if self.stage is Stage.MASKED_INPUT:
            if recipient not in self.u2:
                raise SecAggStageError(f"bank {recipient} did not share its keys in this round")
            parts = [
                struct.pack(">HI", i, len(msg.ciphertexts[recipient])) + msg.ciphertexts[recipient]
                for i, msg in sorted(self.shares.items())
                if i != recipient
            ]
            body = struct.pack(">H", len(parts)) + b"".join(parts)
            return encode_frame(self.info, MsgType.SHARES, SERVER + 1, body)
        if self.stage is Stage.UNMASK:
            return survivors_frame(self.info, self.u2, self.u3)
        raise SecAggStageError(f"nothing to fetch at stage {self.stage.name}")

    def aggregate(self, *, executor: Executor | None = None) -> tuple[F64, int]:
        """Unmask and decode: ``(sum w_i x_i, sum w_i)`` over U3. Call after the UNMASK stage is closed.

        The seeds are rebuilt and checked here; expanding them (one PRG stream per surviving bank's self-mask,
        one per dropped bank and survivor) may run on ``executor``'s workers (:mod:`pps.infra.executor`), one chunk
        per bank. The seeds are secrets: those workers are inside the server's trust boundary. The sum is the
        same either way (addition mod 2^64)."""
        if self.stage is not Stage.DONE:
            raise SecAggStageError(f"the round is at stage {self.stage.name}, not done")
        p, session = self.params, self.info.session
        if len(self.u3) < p.min_survivors:  # close_stage aborts first; never release a sum of fewer
            raise SecAggAborted(f"only {len(self.u3)} survivors; an aggregate needs {p.min_survivors}")
        total = np.zeros(p.dim + 1, dtype=np.uint64)
        for y in self.masked.values():
            total += y
        t = p.threshold
        masks: list[_MaskJob] = []
        for j in sorted(self.u3):
            b = shamir_combine({i: m.b_shares[j] for i, m in self.unmasks.items()}, t)
            b_bytes = b.to_bytes(KEY_BYTES, "big") if b < 1 << 256 else b""
            if _commit(session, b_bytes) != self.shares[j].commitment:
                raise InvalidSecAggMessage(f"the self-mask seed of bank {j} does not match its commitment")
            masks.append(("self", b_bytes, ()))
        for j in sorted(self.u2 - self.u3):
            s = shamir_combine({i: m.sk_shares[j] for i, m in self.unmasks.items()}, t)
            if s >= 1 << 256:
                raise InvalidSecAggMessage(f"the mask key of bank {j} does not rebuild")
            sk = X25519PrivateKey.from_private_bytes(s.to_bytes(KEY_BYTES, "big"))
            if _pub(sk) != self.adverts[j].s_pk:
                raise InvalidSecAggMessage(f"the mask key of bank {j} does not match its public key")
            # bank k added +m if k < j and -m if k > j; undo it
            peers = tuple((self.adverts[k].s_pk, k < j) for k in sorted(self.u3))
            masks.append(("pairwise", _priv_bytes(sk), peers))
        if executor is None or executor.in_process:
            deltas: Iterable[U64] = (_unmask_delta((session, p.dim + 1), job) for job in masks)
        else:
            from pps.infra.executor import Shared

            shared = Shared("secagg-unmask", (session, p.dim + 1), _round_state)
            deltas = executor.map_chunks(_unmask_delta, masks, shared=shared)
        for delta in deltas:
            total += delta
        return dequantise(total & _MASK, p)


def survivors_frame(info: RoundInfo, u2: Iterable[int], u3: Iterable[int]) -> bytes:
    """The ``SURVIVORS`` frame of the unmask stage: the banks that shared keys (U2) and sent inputs (U3).

    It depends on those sets only, so a service can build it without holding the masked inputs."""
    return encode_frame(info, MsgType.SURVIVORS, SERVER + 1, _ids_body(u2) + _ids_body(u3))


_MaskJob = tuple[str, bytes, tuple[tuple[bytes, bool], ...]]
"""``("self", seed, ())``, or ``("pairwise", mask key of a dropped bank, ((s_pk, survivor < dropped), ...))``."""


def _round_state(payload: tuple[bytes, int]) -> tuple[bytes, int]:
    return payload


def _unmask_delta(round_: tuple[bytes, int], job: _MaskJob) -> U64:
    """What to add to the masked sum to remove one bank's masks (one executor chunk)."""
    session, dim = round_
    kind, seed, peers = job
    if kind == "self":
        return np.zeros(dim, dtype=np.uint64) - self_mask(seed, session, dim)
    sk = X25519PrivateKey.from_private_bytes(seed)
    delta = np.zeros(dim, dtype=np.uint64)
    for s_pk, subtract in peers:
        m = pairwise_mask(sk, _load_pub(s_pk, "s_pk"), session, dim)
        if subtract:
            delta -= m
        else:
            delta += m
    return delta


# --- client --------------------------------------------------------------------------------------------------


class SecAggClient:
    """A bank's half for one round. Its secrets (two X25519 keys, ``b_i``, its peers' shares) stay here."""

    def __init__(self, info: RoundInfo, index: int) -> None:
        if not 1 <= index <= info.params.n:
            raise InvalidInput(f"index must be in 1..{info.params.n}")
        self.info, self.index = info, index
        self.stage = Stage.ADVERTISE_KEYS
        self._c_sk = X25519PrivateKey.generate()
        self._s_sk = X25519PrivateKey.generate()
        self._b = os.urandom(KEY_BYTES)
        self._keys: dict[int, Advert] = {}
        self._peer_shares: dict[int, tuple[int, int]] = {}  # owner -> (sk share, b share)
        self._u2: set[int] = set()

    def _advance(self, expected: Stage) -> None:
        if self.stage is not expected:
            raise SecAggStageError(f"this client is at stage {self.stage.name}, not {expected.name}")
        self.stage = Stage(self.stage + 1)

    def _share_key(self, peer: int) -> bytes:
        pk = _load_pub(self._keys[peer].c_pk, "c_pk")
        return _hkdf(_agree(self._c_sk, pk, "share key"), self.info.session, b"share-key")

    def _aad(self, sender: int, recipient: int) -> bytes:
        return self.info.session + struct.pack(">HH", sender, recipient)

    def advertise_keys(self) -> bytes:
        self._advance(Stage.ADVERTISE_KEYS)
        body = _pub(self._c_sk) + _pub(self._s_sk)
        return encode_frame(self.info, MsgType.ADVERTISE_KEYS, self.index, body)

    def share_keys(self, keys_frame: bytes) -> bytes:
        p = self.info.params
        f = decode_frame(self.info, keys_frame, MsgType.KEYS)
        r = _Reader(f.body, "KEYS")
        for _ in range(r.u16()):
            i = r.u16()
            self._keys[i] = Advert(r.take(KEY_BYTES), r.take(KEY_BYTES))
        r.end()
        if self.index not in self._keys or self._keys[self.index].c_pk != _pub(self._c_sk):
            raise InvalidSecAggMessage("KEYS does not list this bank's own keys")
        if len(self._keys) < p.min_survivors:
            raise SecAggAborted(
                f"only {len(self._keys)} banks advertised keys; a round needs {p.min_survivors}"
            )
        self._advance(Stage.SHARE_KEYS)
        xs = sorted(self._keys)
        sk_sh = shamir_split(int.from_bytes(_priv_bytes(self._s_sk), "big"), p.threshold, xs)
        b_sh = shamir_split(int.from_bytes(self._b, "big"), p.threshold, xs)
        self._peer_shares[self.index] = (sk_sh[self.index], b_sh[self.index])
        parts = []
        for j in xs:
            if j == self.index:
                continue
            plain = sk_sh[j].to_bytes(SHARE_BYTES, "big") + b_sh[j].to_bytes(SHARE_BYTES, "big")
            nonce = os.urandom(12)
            ct = nonce + ChaCha20Poly1305(self._share_key(j)).encrypt(nonce, plain, self._aad(self.index, j))
            parts.append(struct.pack(">HI", j, len(ct)) + ct)
        body = _commit(self.info.session, self._b) + struct.pack(">H", len(parts)) + b"".join(parts)
        return encode_frame(self.info, MsgType.SHARE_KEYS, self.index, body)

    def masked_input(
        self, shares_frame: bytes, update: npt.ArrayLike, weight: int, rng: np.random.Generator | None = None
    ) -> bytes:
        p = self.info.params
        if self.stage is not Stage.MASKED_INPUT:
            raise SecAggStageError(f"this client is at stage {self.stage.name}, not MASKED_INPUT")
        q = quantise(update, weight, p, rng)  # bad updates are refused before anything changes
        f = decode_frame(self.info, shares_frame, MsgType.SHARES)
        r = _Reader(f.body, "SHARES")
        got: dict[int, tuple[int, int]] = {}
        for _ in range(r.u16()):
            owner, length = r.u16(), r.u32()
            ct = r.take(length)
            if owner not in self._keys or owner == self.index or len(ct) < 12:
                raise InvalidSecAggMessage(f"SHARES: unexpected share from bank {owner}")
            try:
                plain = ChaCha20Poly1305(self._share_key(owner)).decrypt(
                    ct[:12], ct[12:], self._aad(owner, self.index)
                )
            except InvalidTag:
                raise InvalidSecAggMessage(
                    f"SHARES: the share from bank {owner} does not authenticate"
                ) from None
            got[owner] = (
                int.from_bytes(plain[:SHARE_BYTES], "big"),
                int.from_bytes(plain[SHARE_BYTES:], "big"),
            )
        r.end()
        u2 = set(got) | {self.index}
        if len(u2) < p.min_survivors:
            raise SecAggAborted(f"only {len(u2)} banks shared keys; a round needs {p.min_survivors}")
        self._advance(Stage.MASKED_INPUT)
        self._peer_shares.update(got)
        self._u2 = u2
        y = q + self_mask(self._b, self.info.session, p.dim + 1)
        for j in sorted(u2 - {self.index}):
            m = pairwise_mask(self._s_sk, _load_pub(self._keys[j].s_pk, "s_pk"), self.info.session, p.dim + 1)
            if self.index < j:
                y += m
            else:
                y -= m
        y &= _MASK
        body = struct.pack(">I", p.dim + 1) + y.astype(">u8").tobytes()
        return encode_frame(self.info, MsgType.MASKED_INPUT, self.index, body)

    def unmask(self, survivors_frame: bytes) -> bytes:
        p = self.info.params
        f = decode_frame(self.info, survivors_frame, MsgType.SURVIVORS)
        r = _Reader(f.body, "SURVIVORS")
        u2 = {r.u16() for _ in range(r.u16())}
        u3 = {r.u16() for _ in range(r.u16())}
        r.end()
        if u2 != self._u2 or not u3 <= u2 or self.index not in u3:
            raise InvalidSecAggMessage("SURVIVORS does not fit the banks that shared keys with this bank")
        if len(u3) < p.min_survivors:  # a bank does not help unmask a sum that would reveal another's update
            raise SecAggAborted(f"only {len(u3)} banks sent masked inputs; a round needs {p.min_survivors}")
        self._advance(Stage.UNMASK)
        parts = []
        for j in sorted(u2):
            sk_share, b_share = self._peer_shares[j]
            kind, y = (0, b_share) if j in u3 else (1, sk_share)
            parts.append(struct.pack(">HB", j, kind) + y.to_bytes(SHARE_BYTES, "big"))
        body = struct.pack(">H", len(parts)) + b"".join(parts)
        return encode_frame(self.info, MsgType.UNMASK, self.index, body)
