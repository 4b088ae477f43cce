"""The simulated hardware: load the enclave's code, measure exactly what is loaded, seal keys, sign quotes.

On real hardware (SGX, TDX, SEV-SNP) the CPU measures the enclave's pages as they are loaded, derives
sealing keys from a fused secret and the measurement, and a vendor-certified key signs quotes. Here the
same roles are played by this module, run at the start of the enclave process (:func:`enclave_main`):

1. it reads the source bytes of :data:`MODULES` (in that order) from the code directory and the enclave
   configuration, and computes the **measurement**::

       SHA-256( "PPS-ENCLAVE-MEASUREMENT-v1" || 0x00
                || for each module: u16 len(name) || name || u32 len(source) || source
                || u32 len(config) || config (canonical JSON: {"debug", "isv_svn", "name"}) )

2. it executes *those same bytes* as the modules (not whatever ``import`` would find), so the code that
   runs is the code that was measured (a copy the spawn start-up may have imported is replaced);
3. it derives the seal key ``HKDF-SHA256(ikm=platform secret, salt=measurement, info="PPS-ENCLAVE-SEAL-v1")``
   and hands the enclave's code only that key, never the platform secret;
4. it signs quotes with the vendor attestation key, writing the measurement, security version and debug
   flag itself: the enclave's code supplies only its public key and the verifier's nonce.

Anyone can compute the expected measurement of a build from its published source with
:func:`expected_measurement` — the simulation's reproducible build.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MODULES: tuple[str, ...] = (
    "enclave_sim.errors",
    "enclave_sim.quote",
    "enclave_sim.crypto",
    "protocols.errors",
    "protocols.parallel",
    "protocols.paillier_fast.keys",
    "protocols.paillier_fast.encoding",
    "protocols.paillier_fast.obfuscators",
    "protocols.paillier_fast.ciphertexts",
    "protocols.paillier_fast",
    "protocols.vertical_lr.messages",
    "protocols.vertical_lr.inputs",
    "protocols.vertical_lr.scoring",
    "protocols.vertical_lr.trainer",
    "protocols.vertical_lr.host",
    "protocols.vertical_lr.guest",
    "protocols.vertical_lr.coordinator",
    "protocols.vertical_lr.driver",
    "protocols.vertical_lr.reference",
    "protocols.vertical_lr",
    "enclave_sim.jobs",
    "enclave_sim.sealed",
    "enclave_sim.core",
)
"""The enclave's code, in load (and measurement) order: every module before the modules that import it, a
package's modules before the package itself (its ``__init__``). ``enclave_sim.*`` modules are read from the code
directory, the others (the vertical-LR coordinator's protocol code, every module of its packages) from the
sibling package directory beside it (``<code root>/../protocols``)."""
MEASUREMENT_CONTEXT = b"PPS-ENCLAVE-MEASUREMENT-v1\x00"
SEAL_INFO = b"PPS-ENCLAVE-SEAL-v1"
CODE_ROOT = Path(__file__).resolve().parent
"""The directory holding this build's enclave modules."""


@dataclass(frozen=True)
class EnclaveConfig:
    """The enclave's configuration, measured with its code. ``debug`` enclaves are refused by verifiers."""

    name: str = "pps-enclave"
    isv_svn: int = 1
    debug: bool = False

    def canonical(self) -> bytes:
        return json.dumps(
            {"debug": self.debug, "isv_svn": self.isv_svn, "name": self.name},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_canonical(cls, data: bytes) -> EnclaveConfig:
        doc = json.loads(data)
        return cls(name=str(doc["name"]), isv_svn=int(doc["isv_svn"]), debug=bool(doc["debug"]))


def module_path(name: str, code_root: Path | None = None) -> Path:
    """The source file of an enclave module: ``<base>/a/b.py``, or ``<base>/a/b/__init__.py`` for a package."""
    root = code_root or CODE_ROOT
    package, *rest = name.split(".")
    base = (root if package == "enclave_sim" else root.parent / package).joinpath(*rest)
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def read_sources(code_root: Path | None = None) -> list[tuple[str, Path, bytes]]:
    """``(module name, file, source bytes)`` of :data:`MODULES` under ``code_root`` (default: this build)."""
    out = []
    for name in MODULES:
        path = module_path(name, code_root)
        out.append((name, path, path.read_bytes()))
    return out


def measure(sources: list[tuple[str, Path, bytes]], config: EnclaveConfig) -> bytes:
    h = hashlib.sha256(MEASUREMENT_CONTEXT)
    for name, _path, src in sources:
        h.update(struct.pack("!H", len(name)) + name.encode())
        h.update(struct.pack("!I", len(src)) + src)
    cfg = config.canonical()
    h.update(struct.pack("!I", len(cfg)) + cfg)
    return h.digest()


def expected_measurement(config: EnclaveConfig | None = None, code_root: Path | None = None) -> bytes:
    """The measurement of the enclave built from ``code_root`` (default: the installed source) and ``config``."""
    return measure(read_sources(code_root), config or EnclaveConfig())


def derive_seal_key(platform_secret: bytes, measurement: bytes) -> bytes:
    if len(platform_secret) < 32:
        raise ValueError("the platform secret must be at least 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=measurement, info=SEAL_INFO).derive(
        platform_secret
    )


class _Platform:
    """What the loaded enclave code sees of the hardware (the ``Platform`` protocol of ``enclave_sim.core``)."""

    def __init__(
        self,
        config: EnclaveConfig,
        measurement: bytes,
        seal_key: bytes,
        vendor: Ed25519PrivateKey,
        quote_mod: Any,
    ) -> None:
        self.measurement = measurement
        self.isv_svn = config.isv_svn
        self.debug = config.debug
        self.seal_key = seal_key
        self._vendor = vendor
        self._quote_mod = quote_mod
        self._signer = quote_mod.signer_id(vendor.public_key())

    def quote(self, enclave_key: bytes, nonce: bytes) -> bytes:
        body = self._quote_mod.encode_body(
            debug=self.debug,
            isv_svn=self.isv_svn,
            issued_at_ms=int(time.time() * 1000),
            measurement=self.measurement,
            enclave_key=enclave_key,
            nonce=nonce,
            signer=self._signer,
        )
        signed: bytes = self._quote_mod.sign_quote(body, self._vendor)
        return signed


def _load(sources: list[tuple[str, Path, bytes]]) -> None:
    """Execute the measured bytes as the enclave's modules.

    A measured package (``__init__.py``) is loaded after its modules and is given no search path: nothing
    unmeasured can be imported from it. Loading never imports an unmeasured ``__init__`` (only ``enclave_sim``
    and ``protocols``, which hold no code, come from disk): each module is bound to its parent as soon as the
    parent is loaded, and again once all are (a package loaded after its modules)."""

    def bind(name: str) -> None:
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, sys.modules[name])

    for name, path, src in sources:
        if name.count(".") == 1:
            importlib.import_module(name.split(".")[0])
        # the parent's main module may have imported a copy while spawn prepared this process: the measured
        # copy replaces it, and every later import (the enclave's own) resolves to the measured one
        sys.modules.pop(name, None)
        is_package = path.name == "__init__.py"
        spec = importlib.util.spec_from_loader(name, loader=None, origin=str(path), is_package=is_package)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        module.__file__ = str(path)
        sys.modules[name] = module
        bind(name)
        exec(compile(src, str(path), "exec"), module.__dict__)  # noqa: S102 - the measured code, by design
    for name, _path, _src in sources:
        bind(name)


def enclave_main(conn: Any, code_root: str, config: bytes, platform_secret: bytes, vendor_key: bytes) -> None:
    """The enclave process: measure and load the code, then answer the host's frames until the pipe closes.

    Arguments are plain bytes and strings (the spawn start method pickles them; nothing of the enclave's own
    classes may be unpickled before its code is measured).
    """
    cfg = EnclaveConfig.from_canonical(config)
    sources = read_sources(Path(code_root))
    measurement = measure(sources, cfg)
    _load(sources)
    platform = _Platform(
        cfg,
        measurement,
        derive_seal_key(platform_secret, measurement),
        Ed25519PrivateKey.from_private_bytes(vendor_key),
        sys.modules["enclave_sim.quote"],
    )
    del platform_secret, vendor_key
    core = sys.modules["enclave_sim.core"].EnclaveCore(platform)
    conn.send_bytes(core.handle(b'{"op":"hello"}'))
    while True:
        try:
            frame = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send_bytes(core.handle(frame))
