"""Key management for data at rest: versioned key-encryption keys (KEKs) behind a small interface.

Envelope encryption: every dataset version gets its own random 256-bit data key (DEK); the DEK encrypts the
data with AES-256-GCM and is stored only *wrapped* by a KEK (AES-256-GCM again, with associated data that
names what the DEK is for, so a wrapped key cannot be moved to another dataset). KEKs never leave the KMS.

:class:`LocalFileKMS` keeps KEKs as files under ``<key dir>/kek/`` (``v0001.key``, ...; 32 random bytes, mode
0600) and a ``state.json`` with the minimum version it will still decrypt with. It never creates a key on its
own: :mod:`pps.infra.keyring` decides, against the database, whether a first key may be made and which
version number a new key gets (never one already used), and checks every version the stored data needs
against its canary before the service starts — a deleted, truncated or substituted key file stops the
service instead of being silently replaced. Rotation adds a version;
re-wrapping the data keys under it (``pps keys rotate``) never touches the data itself. Retiring old versions
(raising the minimum) makes data keys still wrapped under them undecryptable, so the service refuses to
retire a version that still wraps a key. A hardware KMS or a cloud KMS can replace this class behind
:class:`KeyEncryptionKeys`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pps.errors import ConfigurationError, KeyUnavailable
from pps.infra.keys import create_exclusive

KEY_BYTES = 32
NONCE_BYTES = 12
_VERSION_FILE = re.compile(r"^v(\d{4,})\.key$")


@dataclass(frozen=True)
class WrappedKey:
    kek_version: int
    blob: bytes
    """nonce (12 bytes) || AES-256-GCM ciphertext of the data key || tag"""


class KeyEncryptionKeys(Protocol):
    @property
    def current_version(self) -> int: ...

    @property
    def min_decrypt_version(self) -> int: ...

    def wrap(self, dek: bytes, aad: bytes) -> WrappedKey: ...

    def unwrap(self, wrapped: WrappedKey, aad: bytes) -> bytes: ...

    def rotate(self, *, after: int = 0) -> int: ...

    def retire_below(self, version: int) -> None: ...

    def canary(self, version: int) -> bytes: ...

    def check_canary(self, version: int, blob: bytes) -> None: ...


def new_data_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


CANARY = b"pps key-encryption key canary"
"""What a canary wraps: a fixed plaintext, bound to its version by the AAD."""


class LocalFileKMS:
    """KEKs in files: the embedded default. :func:`pps.infra.keyring.open_keys` makes version 1 on a new
    deployment (an empty database) and refuses to start when a version the data needs is missing or wrong."""

    def __init__(self, key_dir: Path, *, create: bool = True) -> None:
        """``create=False`` (read-only commands) makes no directory: a missing one holds no key."""
        self.dir = key_dir / "kek"
        if create:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._keys: dict[int, bytes] = {}

    # --- state ---------------------------------------------------------------------------------------

    def versions(self) -> list[int]:
        """The versions whose key file is present, in order."""
        return self._versions()

    def _versions(self) -> list[int]:
        found: list[int] = []
        if not self.dir.is_dir():
            return found
        for p in self.dir.iterdir():
            m = _VERSION_FILE.match(p.name)
            if m:
                found.append(int(m.group(1)))
        return sorted(found)

    def _state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def current_version(self) -> int:
        versions = self._versions()
        if not versions:
            raise KeyUnavailable(f"no key-encryption key in {self.dir}; the service has not opened its keys")
        return versions[-1]

    @property
    def min_decrypt_version(self) -> int:
        path = self._state_path()
        if not path.exists():
            return 1
        try:
            value = json.loads(path.read_text(encoding="utf-8"))["min_decrypt_version"]
        except (ValueError, KeyError) as exc:
            raise ConfigurationError(f"{path} is damaged: {exc}") from exc
        if not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"{path}: min_decrypt_version must be a positive integer")
        return value

    def _key(self, version: int, *, fresh: bool = False) -> bytes:
        if fresh or version not in self._keys:
            path = self.dir / f"v{version:04d}.key"
            if not path.exists():
                self._keys.pop(version, None)
                raise KeyUnavailable(f"key-encryption key version {version} is not in {self.dir}")
            raw = path.read_bytes()
            if len(raw) != KEY_BYTES:
                raise KeyUnavailable(f"{path} holds {len(raw)} bytes, not {KEY_BYTES}: it is damaged")
            self._keys[version] = raw
        return self._keys[version]

    def _create(self, version: int) -> None:
        if not create_exclusive(self.dir / f"v{version:04d}.key", secrets.token_bytes(KEY_BYTES)):
            raise FileExistsError(version)

    def create_first(self) -> int:
        """Make version 1 on a new deployment (callers check that no data needs an older key)."""
        with contextlib.suppress(FileExistsError):  # another process created it first
            self._create(1)
        return 1

    def canary(self, version: int) -> bytes:
        """A wrapped fixed plaintext: stored beside the data, it proves later that a file is still *this* key."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + AESGCM(self._key(version)).encrypt(nonce, CANARY, _canary_aad(version))

    def check_canary(self, version: int, blob: bytes) -> None:
        """Raise :class:`KeyUnavailable` unless the key file of ``version`` (read again from disk) opens its
        canary: a missing, truncated or substituted file is named."""
        key = self._key(version, fresh=True)
        try:
            plain = AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _canary_aad(version))
        except InvalidTag:
            plain = b""
        if plain != CANARY:
            raise KeyUnavailable(
                f"key-encryption key version {version} in {self.dir} is not the key that wrapped the stored "
                "data (replaced or corrupted); restore the original file from the key backup"
            )

    # --- operations ----------------------------------------------------------------------------------

    def wrap(self, dek: bytes, aad: bytes) -> WrappedKey:
        if len(dek) != KEY_BYTES:
            raise ValueError(f"a data key has {KEY_BYTES} bytes, got {len(dek)}")
        version = self.current_version
        nonce = secrets.token_bytes(NONCE_BYTES)
        return WrappedKey(version, nonce + AESGCM(self._key(version)).encrypt(nonce, dek, aad))

    def unwrap(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        if wrapped.kek_version < self.min_decrypt_version:
            raise KeyUnavailable(
                f"key-encryption key version {wrapped.kek_version} is retired "
                f"(minimum is {self.min_decrypt_version}); this data key can no longer be opened"
            )
        key = self._key(wrapped.kek_version)
        try:
            return AESGCM(key).decrypt(wrapped.blob[:NONCE_BYTES], wrapped.blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise KeyUnavailable(
                "a wrapped data key does not open: wrong key, wrong binding or tampering"
            ) from None

    def rotate(self, *, after: int = 0) -> int:
        """Add a new KEK version and make it current. Existing wrapped keys still open until retired.

        The new number is above every present file and above ``after`` (the highest version the database
        has ever seen), so a number is never given to two keys."""
        while True:
            version = max([after, *self._versions()]) + 1
            try:
                self._create(version)
                return version
            except FileExistsError:  # another process rotated at the same moment
                continue

    def retire_below(self, version: int) -> None:
        """Refuse to decrypt with KEK versions below ``version`` (callers re-wrap first)."""
        if not 1 <= version <= self.current_version:
            raise ValueError(f"version must be between 1 and {self.current_version}")
        if version < self.min_decrypt_version:
            raise ValueError(f"versions below {self.min_decrypt_version} are already retired")
        tmp = self._state_path().with_suffix(".tmp")
        tmp.write_text(json.dumps({"min_decrypt_version": version}), encoding="utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self._state_path())


def _canary_aad(version: int) -> bytes:
    return f"pps:kek-canary:v{version}".encode()
