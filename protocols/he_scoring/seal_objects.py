"""SEAL objects in and out of bytes, and the modulus chain: the plumbing both halves compute with.

``tenseal.sealapi`` (the SEAL objects TenSEAL ships) can encode plaintexts once, pack complex values and skip
a rescale per product, which TenSEAL's own API cannot; its one awkwardness is that ``save``/``load`` take a file
path, so objects go through a per-thread in-memory file (``memfd``). Only bytes that passed the isolated checker
(:mod:`protocols.he_scoring.checker`) are loaded here.
"""

from __future__ import annotations

import atexit
import os
import tempfile
import threading
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import tenseal.sealapi as seal

from protocols.errors import WeakParameters
from protocols.he_scoring.wire import HEADROOM_BITS


class _Scratch(threading.local):
    """A per-thread in-memory file (memfd on Linux, a private temporary file elsewhere)."""

    fd: int = -1
    path: str = ""
    pid: int = -1

    def get(self) -> tuple[int, str]:
        if self.pid != os.getpid():  # first use in this thread, or inherited across fork(): never share
            if self.fd >= 0:
                with suppress(OSError):
                    os.close(self.fd)
            self.fd, self.pid = -1, os.getpid()
        if self.fd < 0:
            if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
                self.fd = os.memfd_create("pps-he-scratch", getattr(os, "MFD_CLOEXEC", 0))
                self.path = f"/proc/self/fd/{self.fd}"
            else:  # pragma: no cover - not Linux
                self.fd, self.path = tempfile.mkstemp(prefix="pps-he-")
                atexit.register(os.unlink, self.path)
        return self.fd, self.path

    def __del__(self) -> None:
        if self.fd >= 0:
            with suppress(OSError):
                os.close(self.fd)


_scratch = _Scratch()


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    chunks: list[bytes] = []
    offset = 0
    while offset < size:
        chunk = os.pread(fd, size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def seal_save(obj: Any) -> bytes:
    fd, path = _scratch.get()
    os.ftruncate(fd, 0)
    obj.save(path)
    return _read_all(fd)


def _seal_write(data: bytes) -> str:
    fd, path = _scratch.get()
    os.ftruncate(fd, 0)
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)
    return path


def seal_load(obj: Any, context: Any, data: bytes) -> Any:
    obj.load(context, _seal_write(data))
    return obj


def load_parameters(data: bytes) -> Any:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.NONE)
    parms.load(_seal_write(data))
    return parms


def parms_key(parms_id: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in parms_id)


# --- parameters: the modulus chain and the working level ---------------------------------------------------


@dataclass(frozen=True)
class Level:
    parms_id: tuple[int, ...]
    chain_index: int
    prime_bits: tuple[int, ...]

    @property
    def bits(self) -> int:
        return sum(self.prime_bits)


def data_levels(context: Any) -> list[Level]:
    """The data levels of a SEAL context, from the first (most primes) down to the last."""
    levels: list[Level] = []
    data = context.first_context_data()
    while data is not None:
        levels.append(
            Level(
                parms_id=parms_key(data.parms_id()),
                chain_index=int(data.chain_index()),
                prime_bits=tuple(int(m.bit_count()) for m in data.parms().coeff_modulus()),
            )
        )
        data = data.next_context_data()
    return levels


def working_level(levels: Sequence[Level], scale_bits: float) -> Level | None:
    """The lowest level whose modulus holds a product of two values at ``scale`` with headroom."""
    need = 2 * scale_bits + HEADROOM_BITS
    usable = [level for level in levels if level.bits >= need]
    return min(usable, key=lambda level: level.chain_index) if usable else None


def build_seal_context(poly_modulus_degree: int, primes: Sequence[int]) -> Any:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(poly_modulus_degree)
    parms.set_coeff_modulus([seal.Modulus(p) for p in primes])
    context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise WeakParameters(
            f"the encryption parameters are not usable at 128-bit security: {context.parameters_error_message()}"
        )
    return context
