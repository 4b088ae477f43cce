"""Sealing: data only this enclave build on this platform can open again (keys bound to the measurement).

``seal_key = HKDF-SHA256(ikm=platform secret, salt=measurement, info="PPS-ENCLAVE-SEAL-v1")``
(derived by :mod:`enclave_sim.platform`; the enclave's code never sees the platform secret). A sealed blob::

    "PESL" | version 1 (u8) | measurement (32) | label_len u16 | label | nonce (12) | AES-256-GCM(ct || tag)

with AAD = every byte before the nonce. Another build (another measurement) derives another key, so its
``unseal`` fails, as does the same build on a platform with another secret.

Provisioning (HPKE to the enclave's key) and the release format are shared with the parties that talk to the
enclave: they are defined in :mod:`pps_wire.provision`.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave_sim.errors import SealingError

SEAL_MAGIC = b"PESL"
SEAL_VERSION = 1
_U16 = struct.Struct("!H")


# --- sealing --------------------------------------------------------------------------------------------------


def seal(key: bytes, measurement: bytes, label: str, data: bytes) -> bytes:
    """Seal ``data`` under this build's seal key (see the module docstring for the format)."""
    lab = label.encode()
    if len(lab) > 255:
        raise ValueError("a seal label is at most 255 bytes")
    head = SEAL_MAGIC + bytes([SEAL_VERSION]) + measurement + _U16.pack(len(lab)) + lab
    nonce = os.urandom(12)
    return head + nonce + AESGCM(key).encrypt(nonce, data, head)


def unseal(key: bytes, measurement: bytes, label: str, blob: bytes) -> bytes:
    lab = label.encode()
    n_head = 4 + 1 + 32 + 2 + len(lab)
    if len(blob) < n_head + 12 + 16 or blob[:4] != SEAL_MAGIC or blob[4] != SEAL_VERSION:
        raise SealingError("not a sealed blob (wrong magic, version or length)")
    if blob[5:37] != measurement:
        raise SealingError("the blob was sealed by another enclave build (measurement differs)")
    head = blob[:n_head]
    if head[37:] != _U16.pack(len(lab)) + lab:
        raise SealingError(f"the blob was not sealed under the label {label!r}")
    try:
        return AESGCM(key).decrypt(blob[n_head : n_head + 12], blob[n_head + 12 :], head)
    except InvalidTag:
        raise SealingError(
            "the sealed blob does not open: another platform, another build, or tampering"
        ) from None
