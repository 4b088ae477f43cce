"""Key material on disk: the ledger's checkpoint signing key (Ed25519).

Keys live under ``PPS_KEY_DIR`` (default ``<data_dir>/keys``), one PEM file per key, created on first use with
mode 0600. Losing the signing key does not lose the ledger (entries and nodes are in the database), but
checkpoints signed afterwards carry a new key id: auditors must be told the new verifier key, and
``pps audit verify`` must be told the old one (``--verifier-key``) to keep accepting the checkpoints signed
before the change.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pps.errors import ConfigurationError

LEDGER_SIGNING_KEY_FILE = "ledger-signing-ed25519.pem"
RECEIPT_SIGNING_KEY_FILE = "consent-receipt-ed25519.pem"


def load_or_create_ed25519(path: Path) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from a PEM file, creating the file (mode 0600) if it does not exist."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise ConfigurationError(f"{path} is not a PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"{path} holds a {type(key).__name__}, expected an Ed25519 key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # O_EXCL: two processes starting at once must not overwrite each other's fresh key
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_ed25519(path)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key
