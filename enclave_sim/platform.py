"""The simulated hardware: load the enclave's code, measure exactly what is loaded, seal keys, sign quotes.

On real hardware (SGX, TDX, SEV-SNP) the CPU measures the enclave's pages as they are loaded, derives
sealing keys from a fused secret and the measurement, and a vendor-certified key signs quotes. Here the
same roles are played by this module, run at the start of the enclave process (:func:`enclave_main`):

1. it reads the source bytes of the enclave's modules (:data:`pps_wire.measurement.MODULES`, in that order:
   the wire formats it shares with parties, its own modules, the coordinator's protocol code) and the enclave
   configuration, and computes the **measurement** (the recipe of :mod:`pps_wire.measurement`)::

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

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pps_wire.measurement import MODULES, EnclaveConfig, measure, read_sources

__all__ = ["CODE_ROOT", "MODULES", "EnclaveConfig", "derive_seal_key", "enclave_main", "expected_measurement"]

SEAL_INFO = b"PPS-ENCLAVE-SEAL-v1"
CODE_ROOT = Path(__file__).resolve().parent
"""The directory holding this build's enclave modules."""


def expected_measurement(config: EnclaveConfig | None = None, code_root: Path | None = None) -> bytes:
    """The measurement of the enclave built from ``code_root`` (default: this build) and ``config``."""
    return measure(read_sources(code_root or CODE_ROOT), config or EnclaveConfig())


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
        sys.modules["pps_wire.quote"],
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
