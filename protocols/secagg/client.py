"""A bank's half of a round. Its secrets (two X25519 keys, the self-mask seed ``b_i``, its peers' shares) stay in
the object."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from protocols.errors import InvalidParameters, InvalidSecAggMessage, SecAggAborted, SecAggStageError
from protocols.secagg.masks import agree, commit, hkdf, load_pub, pairwise_mask, priv_bytes, pub, self_mask
from protocols.secagg.messages import Advert, Reader, decode_frame, encode_frame
from protocols.secagg.params import FIELD_MASK, KEY_BYTES, SHARE_BYTES, MsgType, RoundInfo, Stage
from protocols.secagg.quantisation import quantise
from protocols.secagg.shamir import shamir_split


class SecAggClient:
    """A bank's half for one round. Its secrets (two X25519 keys, ``b_i``, its peers' shares) stay here."""

    def __init__(self, info: RoundInfo, index: int) -> None:
        if not 1 <= index <= info.params.n:
            raise InvalidParameters(f"index must be in 1..{info.params.n}")
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
        pk = load_pub(self._keys[peer].c_pk, "c_pk")
        return hkdf(agree(self._c_sk, pk, "share key"), self.info.session, b"share-key")

    def _aad(self, sender: int, recipient: int) -> bytes:
        return self.info.session + struct.pack(">HH", sender, recipient)

    def advertise_keys(self) -> bytes:
        self._advance(Stage.ADVERTISE_KEYS)
        body = pub(self._c_sk) + pub(self._s_sk)
        return encode_frame(self.info, MsgType.ADVERTISE_KEYS, self.index, body)

    def share_keys(self, keys_frame: bytes) -> bytes:
        p = self.info.params
        f = decode_frame(self.info, keys_frame, MsgType.KEYS)
        r = Reader(f.body, "KEYS")
        for _ in range(r.u16()):
            i = r.u16()
            self._keys[i] = Advert(r.take(KEY_BYTES), r.take(KEY_BYTES))
        r.end()
        if self.index not in self._keys or self._keys[self.index].c_pk != pub(self._c_sk):
            raise InvalidSecAggMessage("KEYS does not list this bank's own keys")
        if len(self._keys) < p.min_survivors:
            raise SecAggAborted(
                f"only {len(self._keys)} banks advertised keys; a round needs {p.min_survivors}"
            )
        self._advance(Stage.SHARE_KEYS)
        xs = sorted(self._keys)
        sk_sh = shamir_split(int.from_bytes(priv_bytes(self._s_sk), "big"), p.threshold, xs)
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
        body = commit(self.info.session, self._b) + struct.pack(">H", len(parts)) + b"".join(parts)
        return encode_frame(self.info, MsgType.SHARE_KEYS, self.index, body)

    def masked_input(
        self,
        shares_frame: bytes,
        update: npt.ArrayLike,
        weight: int,
        rng: np.random.Generator | None = None,
        *,
        tail: Sequence[int] = (),
    ) -> bytes:
        """The masked ``(clip(update) * weight, tail, weight)``; ``tail``: the round's exact integers (its
        :attr:`SecAggParams.tail` of them)."""
        p = self.info.params
        if self.stage is not Stage.MASKED_INPUT:
            raise SecAggStageError(f"this client is at stage {self.stage.name}, not MASKED_INPUT")
        q = quantise(update, weight, p, rng, tail=tail)  # bad updates are refused before anything changes
        f = decode_frame(self.info, shares_frame, MsgType.SHARES)
        r = Reader(f.body, "SHARES")
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
        y = q + self_mask(self._b, self.info.session, p.width)
        for j in sorted(u2 - {self.index}):
            m = pairwise_mask(self._s_sk, load_pub(self._keys[j].s_pk, "s_pk"), self.info.session, p.width)
            if self.index < j:
                y += m
            else:
                y -= m
        y &= FIELD_MASK
        body = struct.pack(">I", p.width) + y.astype(">u8").tobytes()
        return encode_frame(self.info, MsgType.MASKED_INPUT, self.index, body)

    def unmask(self, survivors_frame: bytes) -> bytes:
        p = self.info.params
        f = decode_frame(self.info, survivors_frame, MsgType.SURVIVORS)
        r = Reader(f.body, "SURVIVORS")
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
