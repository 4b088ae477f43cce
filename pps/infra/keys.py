"""Key material on disk: the ledger's checkpoint signing key (Ed25519), the consent receipt key and the
simulated enclave's vendor attestation key and platform secret.

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
ENCLAVE_VENDOR_KEY_FILE = "enclave-vendor-attestation-ed25519.pem"
"""The simulated enclave vendor's attestation key (on real hardware it is the vendor's, not on this host)."""
ENCLAVE_PLATFORM_SECRET_FILE = "enclave-platform-secret.bin"  # noqa: S105 - a file name
"""The simulated platform's fused secret, from which sealing keys are derived (32 random bytes)."""


def load_ed25519(path: Path) -> Ed25519PrivateKey | None:
    """Load an Ed25519 private key from a PEM file; None if there is no such file. Never writes anything: what
    read-only commands use (``pps audit verify`` on a restored copy must not make keys beside it)."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"{path} holds a {type(key).__name__}, expected an Ed25519 key")
    return key


def load_or_create_ed25519(path: Path) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from a PEM file, creating the file (mode 0600) if it does not exist."""
    existing = load_ed25519(path)
    if existing is not None:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    if not create_exclusive(path, pem):  # another process made one first: use that
        return load_or_create_ed25519(path)
    return key


def create_exclusive(path: Path, content: bytes) -> bool:
    """Write ``content`` to ``path`` (mode 0600) only if it does not exist; readers never see it half-written.

    The bytes go to a private temporary file first, which is then hard-linked into place: ``link`` fails if
    ``path`` exists, so of two processes racing, exactly one wins and the other reads a complete file.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_secret(path: Path, size: int = 32) -> bytes:
    """Load a random secret from a file, creating it (mode 0600) with ``size`` random bytes if missing."""
    if path.exists():
        data = path.read_bytes()
        if len(data) != size:
            raise ConfigurationError(f"{path} must hold exactly {size} bytes, it holds {len(data)}")
        return data
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not create_exclusive(path, os.urandom(size)):
        return load_or_create_secret(path, size)
    return path.read_bytes()
