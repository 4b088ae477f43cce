"""Consent signed by the subject: the canonical text of a consent action and the subject's key that signs it.

Consent is the subject's to give. Every grant, approval and revocation is signed by a key the subject
(an enterprise's legal representative, a person) generated and enrolled itself; the platform stores the
signature, puts it in the receipt and the ledger entry, and its policy engine treats a consent without a
valid subject signature as no consent at all. The operator, who runs the database, can write a consent row
but not this signature.

**What is signed.** :func:`action_text` — the RFC 8785 canonical JSON of the action document and a newline::

    {"type": "pps-consent-action/1", "action": "grant" | "approve" | "revoke",
     "consent_id": null (grant) | "cns_...", "subject": USCC, "bank": "org_...", "purpose": ...,
     "scope": [{"dataset_id", "fields": [...sorted]}] (sorted by dataset), "operations": [...sorted],
     "valid_from": RFC 3339 UTC or null, "valid_until": RFC 3339 UTC, "max_uses": int or null,
     "granularity": "decision" | "grade" | "score" | null,
     "nonce": 32 hex characters, "signed_at": RFC 3339 UTC}

``granularity`` is what a score may release about the subject (issue 17): part of the terms, so part of what is
signed. A grant may sign ``null``, meaning the published default of its purpose (the service records that
default and checks the row against it at every decision); an approval or revocation signs the granularity the
consent records.

A person (a household, an individual-business owner) also signs its separate grants (PIPL Art. 23, 29;
征信业管理条例 Art. 14) as one more key, ``"separate"``: ``{"provide_to_bank": true, "sensitive_fields":
{dataset id: [fields, sorted]}, "warning_sha256": the Art. 14 warning's hash or null}`` — so the written consent
the person signed names the provision, each sensitive field and the warning it was shown. An enterprise's
document has no ``"separate"`` key.

A grant signs the terms as the subject wrote them (``"*"`` may stand for every C1 field of a dataset); an
approval signs the terms of the request it approves, by its id; a revocation signs the consent it ends. The
nonce makes every signature usable once (the server refuses a nonce it has seen).

**Keys.** ``ed25519`` (RFC 8032; public key: 32 bytes) and ``sm2`` (GB/T 32918 with SM3 and the default user
id ``1234567812345678``, GM/T 0009; public key: the 64-byte point x‖y; signature r‖s, 64 bytes), the 国密
option, needing the ``gmssl`` package. A passkey (``webauthn``) signs the SHA-256 of the same text as its
challenge (:mod:`pps_wire.passkey`). A key is named by its ``key_id``: ``sk_`` and the first 16 bytes of the
SHA-256 of ``algorithm || ":" || public key``, in hex.

Who learns what: the platform and anyone it shows a signature to learn that the holder of the enrolled key
signed these terms at that time; nothing else. The private key never leaves the subject.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pps_wire.errors import ProofVerificationError

ACTION_TYPE = "pps-consent-action/1"
ENROLMENT_TYPE = "pps-key-enrolment/1"
ACTIONS = ("grant", "approve", "revoke")
ALGORITHMS = ("ed25519", "sm2")
Action = Literal["grant", "approve", "revoke"]
GRANULARITIES = ("decision", "grade", "score")

_SM2_N = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123", 16)


def format_utc(t: datetime) -> str:
    """RFC 3339 in UTC with microseconds, the one spelling both sides sign."""
    if t.tzinfo is None:
        raise ValueError("a signed time needs a timezone")
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_scope(scope: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for item in scope:
        out.append(
            {"dataset_id": str(item["dataset_id"]), "fields": sorted({str(f) for f in item["fields"]})}
        )
    return sorted(out, key=lambda i: i["dataset_id"])


def action_document(
    *,
    action: Action,
    subject: str,
    bank: str,
    purpose: str,
    scope: list[dict[str, Any]],
    operations: list[str],
    valid_until: datetime,
    valid_from: datetime | None = None,
    max_uses: int | None = None,
    granularity: str | None = None,
    separate: Mapping[str, Any] | None = None,
    consent_id: str | None = None,
    nonce: str | None = None,
    signed_at: datetime | None = None,
) -> dict[str, Any]:
    """The document a subject signs for one consent action (see the module's docstring)."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
    if granularity is not None and granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)} or None")
    if (action == "grant") != (consent_id is None):
        raise ValueError(
            "a grant names no consent id; an approval or revocation names the consent it acts on"
        )
    doc: dict[str, Any] = {
        "type": ACTION_TYPE,
        "action": action,
        "consent_id": consent_id,
        "subject": subject,
        "bank": bank,
        "purpose": purpose,
        "scope": canonical_scope(scope),
        "operations": sorted(set(operations)),
        "valid_from": format_utc(valid_from) if valid_from is not None else None,
        "valid_until": format_utc(valid_until),
        "max_uses": max_uses,
        "granularity": granularity,
        "nonce": nonce or secrets.token_hex(16),
        "signed_at": format_utc(signed_at or datetime.now(UTC)),
    }
    if separate is not None:
        doc["separate"] = canonical_separate(separate)
    return doc


def canonical_separate(separate: Mapping[str, Any]) -> dict[str, Any]:
    """A person's separate grants as signed (see the module's docstring)."""
    fields = separate.get("sensitive_fields") or {}
    return {
        "provide_to_bank": bool(separate.get("provide_to_bank")),
        "sensitive_fields": {str(d): sorted({str(f) for f in names}) for d, names in fields.items() if names},
        "warning_sha256": separate.get("warning_sha256"),
    }


def action_text(document: dict[str, Any]) -> str:
    """The exact text a subject's key signs: canonical JSON and a newline."""
    return rfc8785.dumps(document).decode() + "\n"


def parse_action_text(text: str) -> dict[str, Any]:
    """The document behind a signed text; raises :class:`ProofVerificationError` if it is not one."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise ProofVerificationError("the signed consent text is not JSON") from None
    if not isinstance(doc, dict) or doc.get("type") != ACTION_TYPE or doc.get("action") not in ACTIONS:
        raise ProofVerificationError("the signed text is not a PPS consent action")
    if action_text(doc) != text:
        raise ProofVerificationError("the signed consent text is not canonical JSON")
    return doc


def key_id(algorithm: str, public_key: bytes) -> str:
    return "sk_" + hashlib.sha256(algorithm.encode() + b":" + public_key).hexdigest()[:32]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ProofVerificationError(f"{what} is not base64") from None


# --- keys ---------------------------------------------------------------------------------------------


def _sm2(public_hex: str, private_hex: str | None = None) -> Any:
    try:
        from gmssl import sm2
    except ImportError:  # pragma: no cover - depends on the installation
        raise ProofVerificationError(
            "SM2 needs the gmssl package: pip install gmssl (or pps-client[sm2])"
        ) from None
    crypt = sm2.CryptSM2(private_key=private_hex, public_key="00")
    crypt.public_key = public_hex  # set directly: the constructor's lstrip("04") mangles some keys
    return crypt


def check_public_key(algorithm: str, public_key: bytes) -> None:
    """Refuse a public key of the wrong size or not on its curve, naming what is wrong."""
    if algorithm == "ed25519":
        if len(public_key) != 32:
            raise ProofVerificationError("an Ed25519 public key is 32 bytes")
        try:
            Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError:
            raise ProofVerificationError("not an Ed25519 public key") from None
    elif algorithm == "webauthn-es256":
        from pps_wire.passkey import check_public_key as check_passkey

        check_passkey(public_key)
    elif algorithm == "sm2":
        if len(public_key) != 64:
            raise ProofVerificationError("an SM2 public key is the 64-byte point x||y (no 04 prefix)")
        p = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF", 16)
        a = p - 3
        b = int("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93", 16)
        x, y = int.from_bytes(public_key[:32]), int.from_bytes(public_key[32:])
        if not (x < p and y < p and (y * y - (x * x * x + a * x + b)) % p == 0):
            raise ProofVerificationError("the SM2 public key is not a point on the curve")
    else:
        raise ProofVerificationError(
            f"unknown key algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}"
        )


def verify_signature(algorithm: str, public_key: bytes, text: str, signature: bytes) -> None:
    """Check ``signature`` over ``text`` (UTF-8) by ``public_key``; raise :class:`ProofVerificationError`."""
    check_public_key(algorithm, public_key)
    data = text.encode()
    if algorithm == "webauthn-es256":
        from pps_wire.passkey import verify_assertion

        verify_assertion(public_key, text, signature)
        return
    if algorithm == "ed25519":
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
        except InvalidSignature:
            raise ProofVerificationError("the subject's Ed25519 signature does not verify") from None
        return
    if len(signature) != 64:
        raise ProofVerificationError("an SM2 signature is r||s, 64 bytes")
    r, s = int.from_bytes(signature[:32]), int.from_bytes(signature[32:])
    if not (0 < r < _SM2_N and 0 < s < _SM2_N):
        raise ProofVerificationError("the SM2 signature is out of range")
    if not _sm2(public_key.hex()).verify_with_sm3(signature.hex(), data):
        raise ProofVerificationError("the subject's SM2 signature does not verify")


@dataclass(frozen=True)
class SubjectKey:
    """A subject's own signing key, generated and kept by the subject (never sent to the platform)."""

    algorithm: str
    private_key: bytes
    """Ed25519: the 32-byte seed; SM2: the 32-byte scalar d"""

    @classmethod
    def generate(cls, algorithm: str = "ed25519") -> SubjectKey:
        if algorithm == "ed25519":
            raw = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            return cls("ed25519", raw)
        if algorithm == "sm2":
            return cls("sm2", (secrets.randbelow(_SM2_N - 2) + 1).to_bytes(32))
        raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")

    @property
    def public_key(self) -> bytes:
        if self.algorithm == "ed25519":
            return (
                Ed25519PrivateKey.from_private_bytes(self.private_key)
                .public_key()
                .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            )
        crypt = _sm2("00", self.private_key.hex())
        point = crypt._kg(int.from_bytes(self.private_key), crypt.ecc_table["g"])
        return bytes.fromhex(point)

    @property
    def key_id(self) -> str:
        return key_id(self.algorithm, self.public_key)

    def sign(self, text: str) -> bytes:
        data = text.encode()
        if self.algorithm == "ed25519":
            return Ed25519PrivateKey.from_private_bytes(self.private_key).sign(data)
        crypt = _sm2(self.public_key.hex(), self.private_key.hex())
        while True:
            sig = crypt.sign_with_sm3(data, format(secrets.randbelow(_SM2_N - 1) + 1, "064x"))
            if sig is not None:
                return bytes.fromhex(sig)

    def to_json(self) -> str:
        """The key as the subject stores it (keep the file private: it is what signs your consent)."""
        return json.dumps(
            {"algorithm": self.algorithm, "private_key": b64(self.private_key), "key_id": self.key_id}
        )

    @classmethod
    def from_json(cls, text: str) -> SubjectKey:
        try:
            doc = json.loads(text)
            key = cls(doc["algorithm"], base64.b64decode(doc["private_key"], validate=True))
        except (ValueError, KeyError, TypeError):
            raise ValueError("not a PPS subject key file (JSON with algorithm and private_key)") from None
        if key.algorithm not in ALGORITHMS or len(key.private_key) != 32:
            raise ValueError("not a PPS subject key file: unknown algorithm or wrong key size")
        return key


def enrolment_document(*, org_id: str, subject: str, algorithm: str, public_key: bytes) -> dict[str, Any]:
    """What a new key signs at enrolment, proving the enrolling party holds it."""
    return {
        "type": ENROLMENT_TYPE,
        "org_id": org_id,
        "subject": subject,
        "algorithm": algorithm,
        "public_key": b64(public_key),
    }


def signed_action(key: SubjectKey, document: dict[str, Any]) -> dict[str, str]:
    """The ``signature`` object an API call carries: the text, the key that signed it and the signature."""
    text = action_text(document)
    return {"text": text, "key_id": key.key_id, "signature": b64(key.sign(text))}
