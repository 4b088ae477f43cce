"""The server's half of a round: collects the messages stage by stage (the one validation point), closes stages
(aborting below the threshold) and unmasks the sum. It holds no secrets until it rebuilds the masks to remove."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from protocols.errors import InvalidSecAggMessage, SecAggAborted, SecAggStageError
from protocols.parallel import ChunkMapper, Shared
from protocols.secagg.masks import commit, load_pub, pairwise_mask, priv_bytes, pub, self_mask
from protocols.secagg.messages import (
    SERVER,
    Advert,
    ShareKeysMsg,
    UnmaskMsg,
    _parse_advert,
    _parse_masked,
    _parse_share_keys,
    _parse_unmask,
    decode_frame,
    encode_frame,
    peek_type,
    survivors_frame,
)
from protocols.secagg.params import (
    F64,
    FIELD_MASK,
    KEY_BYTES,
    MIN_SURVIVORS,
    STAGE_OF,
    U64,
    MsgType,
    RoundInfo,
    SecAggParams,
    Stage,
)
from protocols.secagg.quantisation import dequantise, dequantise_tail
from protocols.secagg.shamir import shamir_combine


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
    tail_total: list[int] | None = None
    """the exact sums of the survivors' tail integers, once :meth:`aggregate` has run"""

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

    def aggregate(self, *, executor: ChunkMapper | None = None) -> tuple[F64, int]:
        """Unmask and decode: ``(sum w_i x_i, sum w_i)`` over U3. Call after the UNMASK stage is closed.

        The seeds are rebuilt and checked here; expanding them (one PRG stream per surviving bank's self-mask,
        one per dropped bank and survivor) may run on ``executor``'s workers (a :class:`~protocols.parallel.ChunkMapper`), one chunk
        per bank. The seeds are secrets: those workers are inside the server's trust boundary. The sum is the
        same either way (addition mod 2^64)."""
        if self.stage is not Stage.DONE:
            raise SecAggStageError(f"the round is at stage {self.stage.name}, not done")
        p, session = self.params, self.info.session
        if len(self.u3) < p.min_survivors:  # close_stage aborts first; never release a sum of fewer
            raise SecAggAborted(f"only {len(self.u3)} survivors; an aggregate needs {p.min_survivors}")
        total = np.zeros(p.width, dtype=np.uint64)
        for y in self.masked.values():
            total += y
        t = p.threshold
        masks: list[_MaskJob] = []
        for j in sorted(self.u3):
            b = shamir_combine({i: m.b_shares[j] for i, m in self.unmasks.items()}, t)
            b_bytes = b.to_bytes(KEY_BYTES, "big") if b < 1 << 256 else b""
            if commit(session, b_bytes) != self.shares[j].commitment:
                raise InvalidSecAggMessage(f"the self-mask seed of bank {j} does not match its commitment")
            masks.append(("self", b_bytes, ()))
        for j in sorted(self.u2 - self.u3):
            s = shamir_combine({i: m.sk_shares[j] for i, m in self.unmasks.items()}, t)
            if s >= 1 << 256:
                raise InvalidSecAggMessage(f"the mask key of bank {j} does not rebuild")
            sk = X25519PrivateKey.from_private_bytes(s.to_bytes(KEY_BYTES, "big"))
            if pub(sk) != self.adverts[j].s_pk:
                raise InvalidSecAggMessage(f"the mask key of bank {j} does not match its public key")
            # bank k added +m if k < j and -m if k > j; undo it
            peers = tuple((self.adverts[k].s_pk, k < j) for k in sorted(self.u3))
            masks.append(("pairwise", priv_bytes(sk), peers))
        if executor is None or executor.in_process:
            deltas: Iterable[U64] = (_unmask_delta((session, p.width), job) for job in masks)
        else:
            shared = Shared("secagg-unmask", (session, p.width), _round_state)
            deltas = executor.map_chunks(_unmask_delta, masks, shared=shared)
        for delta in deltas:
            total += delta
        total &= FIELD_MASK
        out = dequantise(total, p)
        self.tail_total = dequantise_tail(total, p)
        return out


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
        m = pairwise_mask(sk, load_pub(s_pk, "s_pk"), session, dim)
        if subtract:
            delta -= m
        else:
            delta += m
    return delta
