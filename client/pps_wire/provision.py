"""Provisioning (HPKE to the enclave's key) and the release format: what a party and the enclave exchange.

Both halves of each exchange are here, once: the party's (:func:`encrypt_for_enclave`, :func:`open_release`)
and the enclave's (:func:`decrypt_provisioned`, :func:`pack_release`). The enclave (``enclave_sim``) loads this
module as part of its measured code; sealing, which only the enclave does, stays in ``enclave_sim.crypto``.

No primitive here is hand-rolled: HPKE is RFC 9180 from ``cryptography`` (DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, AES-256-GCM, base mode, single shot), and a release is authenticated with HMAC-SHA256.

**Provisioning.** A party that verified a quote (:func:`encrypt_for_enclave` verifies it first — there is no
way to encrypt to an enclave without a policy) encrypts::

    plaintext  = "PEPV" | header_len u32 | header (canonical JSON) | body
    info       = "PPS-ENCLAVE-PROVISION-v1" || 0x00 || quote_hash (32) || slot (UTF-8)
    ciphertext = enc (32) || AES-256-GCM ciphertext and tag      (the output of HPKE's single-shot seal)

The header names the job kind and slot and, for the slot that owns the job, the output policy: which outputs
may be released, the party's X25519 key that non-plain outputs are encrypted to, and a 32-byte result key
only the party and the enclave know, which authenticates the release. Binding the quote hash means the
ciphertext opens only in the enclave instance that produced that quote (its ephemeral key) and the party
can tell which quote it relied on; binding the slot means bytes meant for one input cannot be used as another.

**Release.** What leaves a job is canonical JSON (:func:`pack_release`)::

    {"v": 1, "job": kind, "measurement": hex, "quote_hash": hex, "release": [...],
     "plain": {<outputs that may leave in the clear>},
     "encrypted": base64(HPKE to recipient_key, info "PPS-ENCLAVE-RELEASE-v1" || 0x00 || quote_hash) | null,
     "tag": hex(HMAC-SHA256(result_key, canonical JSON of all the fields above))}

The host carries it but cannot open ``encrypted`` nor alter anything unnoticed: only the enclave and the
party know ``result_key``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from pps_wire.enclave_errors import EnclaveProtocolError, ProvisioningError
from pps_wire.quote import Quote, QuotePolicy, verify_quote

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
ENC_BYTES = 32
PROVISION_INFO = b"PPS-ENCLAVE-PROVISION-v1\x00"
RELEASE_INFO = b"PPS-ENCLAVE-RELEASE-v1\x00"
PROVISION_MAGIC = b"PEPV"
_U32 = struct.Struct("!I")
MAX_SLOT = 64


def canonical(value: Any) -> bytes:
    """Sorted, compact JSON (RFC 8785 for the values used here: strings, integers, lists, objects)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise EnclaveProtocolError(f"{what} must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise EnclaveProtocolError(f"{what} must be base64") from None


def provision_info(quote_hash: bytes, slot: str) -> bytes:
    if len(quote_hash) != 32:
        raise ValueError("quote_hash is 32 bytes")
    if not 0 < len(slot) <= MAX_SLOT:
        raise ValueError(f"slot must be 1-{MAX_SLOT} characters")
    return PROVISION_INFO + quote_hash + slot.encode()


# --- output policy --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputPolicy:
    """What a job may release, stated by the party that owns the job inside its encrypted provisioning.

    ``release`` names outputs of the job; outputs the job declares plain (aggregate figures) leave in the
    clear, all others only encrypted to ``recipient_key``. ``result_key`` authenticates the release.
    """

    release: tuple[str, ...]
    result_key: bytes
    recipient_key: bytes | None = None

    def __post_init__(self) -> None:
        if not self.release or len(set(self.release)) != len(self.release):
            raise ValueError("release names at least one output, each once")
        if len(self.result_key) != 32:
            raise ValueError("result_key is 32 bytes")
        if self.recipient_key is not None and len(self.recipient_key) != 32:
            raise ValueError("recipient_key is a raw X25519 public key (32 bytes)")

    def as_json(self) -> dict[str, Any]:
        return {
            "release": sorted(self.release),
            "result_key": self.result_key.hex(),
            "recipient_key": self.recipient_key.hex() if self.recipient_key is not None else None,
        }

    def public(self) -> dict[str, Any]:
        """What the host may know and log: the outputs and the recipient, never the result key."""
        return {
            "release": sorted(self.release),
            "recipient_key": self.recipient_key.hex() if self.recipient_key is not None else None,
        }

    @classmethod
    def from_json(cls, doc: object) -> OutputPolicy:
        if not isinstance(doc, dict) or set(doc) != {"release", "result_key", "recipient_key"}:
            raise ProvisioningError("the output policy must hold release, result_key and recipient_key")
        release, result_key, recipient = doc["release"], doc["result_key"], doc["recipient_key"]
        if not isinstance(release, list) or not all(isinstance(r, str) for r in release):
            raise ProvisioningError("output policy: release must be a list of output names")
        try:
            return cls(
                tuple(release),
                bytes.fromhex(result_key) if isinstance(result_key, str) else b"",
                bytes.fromhex(recipient) if isinstance(recipient, str) else None,
            )
        except ValueError as exc:
            raise ProvisioningError(f"output policy: {exc}") from None


# --- provisioning ---------------------------------------------------------------------------------------------


def pack_provision(*, job: str, slot: str, body: bytes, output: OutputPolicy | None) -> bytes:
    header = canonical(
        {"v": 1, "job": job, "slot": slot, "output": output.as_json() if output is not None else None}
    )
    return PROVISION_MAGIC + _U32.pack(len(header)) + header + body


@dataclass(frozen=True)
class Provisioned:
    job: str
    slot: str
    output: OutputPolicy | None
    body: bytes


def unpack_provision(data: bytes) -> Provisioned:
    if len(data) < 8 or data[:4] != PROVISION_MAGIC:
        raise ProvisioningError("the provisioned plaintext is not a PEPV envelope")
    (n,) = _U32.unpack_from(data, 4)
    if 8 + n > len(data):
        raise ProvisioningError("the provisioned plaintext is truncated")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError:
        raise ProvisioningError("the provisioning header is not JSON") from None
    if not isinstance(header, dict) or header.get("v") != 1 or set(header) != {"v", "job", "slot", "output"}:
        raise ProvisioningError("the provisioning header must be {v: 1, job, slot, output}")
    if not isinstance(header["job"], str) or not isinstance(header["slot"], str):
        raise ProvisioningError("the provisioning header's job and slot must be strings")
    output = OutputPolicy.from_json(header["output"]) if header["output"] is not None else None
    return Provisioned(header["job"], header["slot"], output, data[8 + n :])


def encrypt_for_enclave(
    quote: bytes,
    policy: QuotePolicy,
    *,
    vendor_key: Ed25519PublicKey,
    job: str,
    slot: str,
    body: bytes,
    output: OutputPolicy | None = None,
) -> bytes:
    """Verify ``quote`` (signature and ``policy``), then encrypt ``body`` for that enclave, that quote and slot.

    Returns HPKE's ``enc || ciphertext``. Raises :class:`~pps_wire.enclave_errors.AttestationError` before anything
    is encrypted if the quote does not pass.
    """
    verify_quote(quote, policy, vendor_key=vendor_key)
    q = Quote.parse(quote)
    public = X25519PublicKey.from_public_bytes(q.enclave_key)
    plaintext = pack_provision(job=job, slot=slot, body=body, output=output)
    return SUITE.encrypt(plaintext, public, info=provision_info(q.quote_hash, slot))


def decrypt_provisioned(
    ciphertext: bytes, key: X25519PrivateKey, *, quote_hash: bytes, slot: str
) -> Provisioned:
    """Inside the enclave: open a party's ciphertext for ``slot`` under the quote it names."""
    if len(ciphertext) < ENC_BYTES + 16:
        raise ProvisioningError("the provisioned ciphertext is too short")
    try:
        plaintext = SUITE.decrypt(ciphertext, key, info=provision_info(quote_hash, slot))
    except (InvalidTag, ValueError):
        raise ProvisioningError(
            "the provisioned data does not decrypt for this enclave, quote and slot "
            "(another enclave instance, another quote, another slot, or tampering)"
        ) from None
    got = unpack_provision(plaintext)
    if got.slot != slot:
        raise ProvisioningError(f"the data was provisioned for slot {got.slot!r}, not {slot!r}")
    return got


# --- release --------------------------------------------------------------------------------------------------


def _release_doc_bytes(doc: dict[str, Any]) -> bytes:
    return canonical({k: v for k, v in doc.items() if k != "tag"})


def pack_release(
    *,
    job: str,
    measurement: bytes,
    quote_hash: bytes,
    policy: OutputPolicy,
    plain: dict[str, Any],
    secret: dict[str, Any] | None,
) -> bytes:
    """Inside the enclave: the release document, ``secret`` outputs encrypted to the party's key, tagged."""
    encrypted = None
    if secret:
        if policy.recipient_key is None:
            raise ValueError("non-plain outputs need a recipient key")
        public = X25519PublicKey.from_public_bytes(policy.recipient_key)
        encrypted = _b64(SUITE.encrypt(canonical(secret), public, info=RELEASE_INFO + quote_hash))
    doc: dict[str, Any] = {
        "v": 1,
        "job": job,
        "measurement": measurement.hex(),
        "quote_hash": quote_hash.hex(),
        "release": sorted(policy.release),
        "plain": plain,
        "encrypted": encrypted,
    }
    doc["tag"] = hmac.new(policy.result_key, _release_doc_bytes(doc), hashlib.sha256).hexdigest()
    return canonical(doc)


def open_release(data: bytes, *, result_key: bytes, recipient: X25519PrivateKey | None) -> dict[str, Any]:
    """The party's side: check the tag (the release came from the enclave, unaltered) and decrypt.

    Returns ``{"job", "measurement", "quote_hash", "release", "outputs"}`` with plain and decrypted outputs
    merged. Raises :class:`~pps_wire.enclave_errors.ProvisioningError` if the tag or decryption fails.
    """
    try:
        doc = json.loads(data)
    except ValueError:
        raise ProvisioningError("the release is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tag"), str):
        raise ProvisioningError("the release has no tag")
    expected = hmac.new(result_key, _release_doc_bytes(doc), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, doc["tag"]):
        raise ProvisioningError(
            "the release's tag does not verify: it did not come from the enclave unaltered"
        )
    outputs: dict[str, Any] = dict(doc.get("plain") or {})
    if doc.get("encrypted") is not None:
        if recipient is None:
            raise ProvisioningError("the release holds encrypted outputs; pass the recipient key")
        try:
            secret = json.loads(
                SUITE.decrypt(
                    _unb64(doc["encrypted"], "encrypted"),
                    recipient,
                    info=RELEASE_INFO + bytes.fromhex(str(doc["quote_hash"])),
                )
            )
        except (InvalidTag, ValueError):
            raise ProvisioningError("the release's encrypted outputs do not decrypt under this key") from None
        outputs.update(secret)
    return {
        "job": doc.get("job"),
        "measurement": doc.get("measurement"),
        "quote_hash": doc.get("quote_hash"),
        "release": doc.get("release"),
        "outputs": outputs,
    }


# --- tables ---------------------------------------------------------------------------------------------------


def table_bytes(
    keys: Sequence[str], features: Mapping[str, Sequence[float | None]], labels: Sequence[int] | None = None
) -> bytes:
    """``{"keys": [...], "features": {name: [number | null, ...]}, "labels": [0|1, ...]}``: the JSON a party or the
    host provisions (the enclave reads it with ``enclave_sim.jobs.parse_table``)."""
    doc: dict[str, Any] = {
        "keys": list(keys),
        "features": {
            k: [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in vs]
            for k, vs in features.items()
        },
    }
    if labels is not None:
        doc["labels"] = [int(v) for v in labels]
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
