"""A passkey's signature over a consent action: a WebAuthn assertion whose challenge is the text's hash.

The portal has a subject sign a consent action with a passkey (WebAuthn, ES256 on P-256). The browser asks
the authenticator for an assertion with ``challenge = SHA-256(text)`` (:func:`challenge_for`); the
authenticator signs ``authenticatorData || SHA-256(clientDataJSON)``, where ``clientDataJSON`` holds that
challenge. The stored signature is the base64 of the JSON ``{"authenticatorData", "clientDataJSON",
"signature"}`` (each base64url), and :func:`verify_assertion` checks, with the enrolled public key (the
65-byte uncompressed P-256 point): the type ``webauthn.get``, the challenge, the user-presence flag, the
relying party (when given) and the ECDSA signature. Who learns what: the same as any subject signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pps_wire.errors import ProofVerificationError

ALGORITHM = "webauthn-es256"
_UP = 0x01


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ProofVerificationError(f"{what} is not base64url") from None


def challenge_for(text: str) -> bytes:
    """The WebAuthn challenge that binds an assertion to a consent action's text."""
    return hashlib.sha256(text.encode()).digest()


def check_public_key(public_key: bytes) -> ec.EllipticCurvePublicKey:
    if len(public_key) != 65 or public_key[0] != 4:
        raise ProofVerificationError("a passkey's public key is the 65-byte uncompressed P-256 point")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public_key)
    except ValueError:
        raise ProofVerificationError("the passkey's public key is not a point on P-256") from None


def encode_assertion(authenticator_data: bytes, client_data_json: bytes, signature: bytes) -> bytes:
    return json.dumps(
        {
            "authenticatorData": b64url(authenticator_data),
            "clientDataJSON": b64url(client_data_json),
            "signature": b64url(signature),
        },
        sort_keys=True,
    ).encode()


def verify_assertion(
    public_key: bytes, text: str, assertion: bytes, *, rp_id: str | None = None, origin: str | None = None
) -> dict[str, Any]:
    """Check a passkey assertion over ``text``; returns the client data. Raises :class:`ProofVerificationError`."""
    key = check_public_key(public_key)
    try:
        parts = json.loads(assertion)
        auth = unb64url(parts["authenticatorData"], "authenticatorData")
        client_json = unb64url(parts["clientDataJSON"], "clientDataJSON")
        signature = unb64url(parts["signature"], "signature")
        client = json.loads(client_json)
    except (ValueError, KeyError, TypeError):
        raise ProofVerificationError(
            "not a passkey assertion (authenticatorData, clientDataJSON, signature)"
        ) from None
    if not isinstance(client, dict) or client.get("type") != "webauthn.get":
        raise ProofVerificationError("the passkey's client data is not an assertion (webauthn.get)")
    if client.get("challenge") != b64url(challenge_for(text)):
        raise ProofVerificationError("the passkey signed another challenge than this consent's text")
    if origin is not None and client.get("origin") != origin:
        raise ProofVerificationError(f"the passkey was used on {client.get('origin')!r}, not {origin!r}")
    if len(auth) < 37 or not auth[32] & _UP:
        raise ProofVerificationError("the authenticator did not confirm the user's presence")
    if rp_id is not None and auth[:32] != hashlib.sha256(rp_id.encode()).digest():
        raise ProofVerificationError(f"the passkey is not for relying party {rp_id!r}")
    try:
        key.verify(signature, auth + hashlib.sha256(client_json).digest(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ProofVerificationError("the passkey's signature does not verify") from None
    return client


class SoftwarePasskey:
    """An authenticator in software, for tests and scripted walks: a P-256 key that answers assertions the
    way a passkey does (user present and verified)."""

    def __init__(self, rp_id: str, origin: str) -> None:
        self.rp_id = rp_id
        self.origin = origin
        self._key = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_key(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def assert_text(self, text: str) -> bytes:
        auth = hashlib.sha256(self.rp_id.encode()).digest() + bytes([0x05]) + (1).to_bytes(4, "big")
        client = json.dumps(
            {"type": "webauthn.get", "challenge": b64url(challenge_for(text)), "origin": self.origin}
        ).encode()
        sig = self._key.sign(auth + hashlib.sha256(client).digest(), ec.ECDSA(hashes.SHA256()))
        return encode_assertion(auth, client, sig)
