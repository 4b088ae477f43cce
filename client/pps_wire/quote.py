"""Attestation quotes: the exact format, and their verification under composable policies.

A quote says: *the platform vouches that an enclave with this measurement, security version and debug flag
holds the X25519 private key for this public key, and answered this verifier's nonce at this time.* The
simulated vendor attestation key (Ed25519) signs it; verifiers pin that key's public half.

Format (``docs/protocols.md``, "Simulated enclave"), 184 bytes, integers big-endian::

    offset size  field
         0    4  magic "PEQT"
         4    1  version = 1
         5    1  flags: bit 0 = debug enclave; other bits must be 0
         6    2  isv_svn (security version of the enclave build)
         8    8  issued_at, Unix time in milliseconds
        16   32  measurement: SHA-256 over the enclave's code and configuration
        48   32  enclave_key: the enclave's ephemeral X25519 public key (raw)
        80   32  nonce: chosen by the verifier
       112    8  signer: the first 8 bytes of SHA-256(vendor Ed25519 public key, raw)
       120   64  signature: Ed25519 over ("PPS-ENCLAVE-QUOTE-v1" || 0x00 || bytes 0..119)

The quote hash, ``SHA-256(all 184 bytes)``, is what provisioning binds to (:mod:`pps_wire.provision`).

:func:`verify_quote` returns nothing or raises :class:`~pps_wire.enclave_errors.AttestationError` (with a
``reason``). The signature is always checked against the pinned vendor key; the ``policy`` decides the rest.
Policies compose (:class:`AllOf`); :func:`standard_policy` is the one a party should use.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pps_wire.enclave_errors import AttestationError

MAGIC = b"PEQT"
VERSION = 1
FLAG_DEBUG = 0x01
SIGNATURE_CONTEXT = b"PPS-ENCLAVE-QUOTE-v1\x00"
NONCE_BYTES = 32
_BODY = struct.Struct("!4sBBHQ32s32s32s8s")
BODY_BYTES = _BODY.size  # 120
SIGNATURE_BYTES = 64
QUOTE_BYTES = BODY_BYTES + SIGNATURE_BYTES  # 184


def signer_id(vendor_key: Ed25519PublicKey) -> bytes:
    """The 8-byte id of a vendor key, as it appears in quotes."""
    raw = vendor_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:8]


@dataclass(frozen=True)
class Quote:
    """A parsed quote. Parsing checks only the structure; :func:`verify_quote` checks what it claims."""

    version: int
    debug: bool
    isv_svn: int
    issued_at_ms: int
    measurement: bytes
    enclave_key: bytes
    nonce: bytes
    signer: bytes
    signature: bytes
    raw: bytes

    @property
    def body(self) -> bytes:
        return self.raw[:BODY_BYTES]

    @property
    def quote_hash(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    @classmethod
    def parse(cls, data: bytes) -> Quote:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise AttestationError("a quote is bytes", reason="malformed")
        data = bytes(data)
        if len(data) != QUOTE_BYTES:
            raise AttestationError(
                f"a quote is {QUOTE_BYTES} bytes, this one is {len(data)}", reason="malformed"
            )
        magic, version, flags, svn, issued, measurement, key, nonce, signer = _BODY.unpack_from(data)
        if magic != MAGIC:
            raise AttestationError("not a quote: wrong magic", reason="malformed")
        if version != VERSION:
            raise AttestationError(f"unsupported quote version {version}", reason="malformed")
        if flags & ~FLAG_DEBUG:
            raise AttestationError(f"unknown quote flags {flags:#04x}", reason="malformed")
        return cls(
            version=version,
            debug=bool(flags & FLAG_DEBUG),
            isv_svn=svn,
            issued_at_ms=issued,
            measurement=measurement,
            enclave_key=key,
            nonce=nonce,
            signer=signer,
            signature=data[BODY_BYTES:],
            raw=data,
        )


def encode_body(
    *,
    debug: bool,
    isv_svn: int,
    issued_at_ms: int,
    measurement: bytes,
    enclave_key: bytes,
    nonce: bytes,
    signer: bytes,
) -> bytes:
    """The 120 signed bytes of a quote (the platform fills measurement, svn and debug, never the enclave)."""
    if len(measurement) != 32 or len(enclave_key) != 32 or len(signer) != 8:
        raise ValueError("measurement and enclave_key are 32 bytes, signer 8")
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    if not 0 <= isv_svn < 1 << 16:
        raise ValueError("isv_svn must fit in 16 bits")
    flags = FLAG_DEBUG if debug else 0
    return _BODY.pack(MAGIC, VERSION, flags, isv_svn, issued_at_ms, measurement, enclave_key, nonce, signer)


def sign_quote(body: bytes, vendor_key: Ed25519PrivateKey) -> bytes:
    if len(body) != BODY_BYTES:
        raise ValueError(f"a quote body is {BODY_BYTES} bytes")
    return body + vendor_key.sign(SIGNATURE_CONTEXT + body)


# --- policies -------------------------------------------------------------------------------------------------


class QuotePolicy(Protocol):
    """One check of a verified quote; raises :class:`AttestationError` or returns nothing."""

    def check(self, quote: Quote, now_ms: int) -> None: ...


@dataclass(frozen=True)
class MeasurementIs:
    """The enclave's code and configuration are one of the builds the verifier trusts."""

    measurements: frozenset[bytes]

    def __init__(self, *measurements: bytes) -> None:
        if not measurements or any(len(m) != 32 for m in measurements):
            raise ValueError("name at least one 32-byte measurement")
        object.__setattr__(self, "measurements", frozenset(bytes(m) for m in measurements))

    def check(self, quote: Quote, now_ms: int) -> None:
        if quote.measurement not in self.measurements:
            raise AttestationError(
                f"measurement {quote.measurement.hex()} is not one this verifier trusts", reason="measurement"
            )


@dataclass(frozen=True)
class MinimumSVN:
    """The enclave build's security version is at least ``svn`` (older builds have known flaws)."""

    svn: int

    def check(self, quote: Quote, now_ms: int) -> None:
        if quote.isv_svn < self.svn:
            raise AttestationError(f"security version {quote.isv_svn} is below {self.svn}", reason="svn")


@dataclass(frozen=True)
class NotDebug:
    """A debug enclave's memory is open to the host by design: never provision one."""

    def check(self, quote: Quote, now_ms: int) -> None:
        if quote.debug:
            raise AttestationError("the quote is from a debug enclave", reason="debug")


@dataclass(frozen=True)
class NonceIs:
    """The quote answers this verifier's challenge (not someone else's, not an old one)."""

    nonce: bytes

    def check(self, quote: Quote, now_ms: int) -> None:
        if quote.nonce != self.nonce:
            raise AttestationError("the quote does not carry the nonce this verifier sent", reason="nonce")


@dataclass(frozen=True)
class IssuedWithin:
    """The quote was issued at most ``seconds`` ago (and not more than a little in the future)."""

    seconds: float
    skew_seconds: float = 60.0

    def check(self, quote: Quote, now_ms: int) -> None:
        age = (now_ms - quote.issued_at_ms) / 1000
        if age > self.seconds or age < -self.skew_seconds:
            raise AttestationError(
                f"the quote was issued {age:.0f} s ago; too old or in the future", reason="stale"
            )


class NonceRegistry:
    """Nonces this verifier has accepted: a quote carrying one again is a replay. Bounded (oldest forgotten)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, nonce: bytes) -> None:
        with self._lock:
            if nonce in self._seen:
                raise AttestationError("this nonce was already used: the quote is replayed", reason="replay")
            self._seen[nonce] = None
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)


@dataclass(frozen=True)
class FreshNonce:
    """Each nonce is accepted once (checked last, so a quote refused for another reason does not spend it)."""

    registry: NonceRegistry

    def check(self, quote: Quote, now_ms: int) -> None:
        self.registry.claim(quote.nonce)


@dataclass(frozen=True)
class AllOf:
    """Every policy must pass, in order."""

    policies: tuple[QuotePolicy, ...]

    def __init__(self, *policies: QuotePolicy) -> None:
        if not policies:
            raise ValueError("AllOf needs at least one policy")
        object.__setattr__(self, "policies", tuple(policies))

    def check(self, quote: Quote, now_ms: int) -> None:
        for p in self.policies:
            p.check(quote, now_ms)


def standard_policy(
    *,
    measurements: Iterable[bytes],
    nonce: bytes,
    min_svn: int = 1,
    registry: NonceRegistry | None = None,
    max_age_s: float = 300.0,
) -> AllOf:
    """What a party should require before provisioning: a trusted build at or above ``min_svn``, not a
    debug enclave, answering *this* nonce, recently, and (with a ``registry``) never a nonce seen before."""
    checks: list[QuotePolicy] = [
        MeasurementIs(*measurements),
        MinimumSVN(min_svn),
        NotDebug(),
        NonceIs(nonce),
        IssuedWithin(max_age_s),
    ]
    if registry is not None:
        checks.append(FreshNonce(registry))
    return AllOf(*checks)


def verify_quote(quote: bytes, policy: QuotePolicy, *, vendor_key: Ed25519PublicKey) -> None:
    """Verify a quote's signature under the pinned ``vendor_key``, then ``policy``; returns nothing or raises."""
    verify_quote_at_time(quote, policy, vendor_key=vendor_key, now_ms=int(time.time() * 1000))


def verify_quote_at_time(
    quote: bytes, policy: QuotePolicy, *, vendor_key: Ed25519PublicKey, now_ms: int
) -> None:
    """:func:`verify_quote` at a given time (for tests and for checking an old quote)."""
    q = Quote.parse(quote)
    if q.signer != signer_id(vendor_key):
        raise AttestationError(
            "the quote is signed by a key this verifier does not pin", reason="unknown_signer"
        )
    try:
        vendor_key.verify(q.signature, SIGNATURE_CONTEXT + q.body)
    except InvalidSignature:
        raise AttestationError("the quote's signature does not verify", reason="bad_signature") from None
    policy.check(q, now_ms)
