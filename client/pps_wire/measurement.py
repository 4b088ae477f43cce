"""The simulated enclave's reproducible build: which modules are its code, and how they are measured.

The platform (``enclave_sim.platform``) measures the enclave with this recipe when it loads it; a party that
verifies a quote recomputes the measurement of the build it trusts with the same recipe, from that build's
published source (:func:`expected_measurement`). One definition, so the two cannot drift apart::

    SHA-256( "PPS-ENCLAVE-MEASUREMENT-v1" || 0x00
             || for each module of MODULES: u16 len(name) || name || u32 len(source) || source
             || u32 len(config) || config (canonical JSON: {"debug", "isv_svn", "name"}) )

Standard library only: this module reads files, it imports none of the modules it measures.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
from dataclasses import dataclass
from pathlib import Path

ENCLAVE_PACKAGE = "enclave_sim"
MODULES: tuple[str, ...] = (
    "pps_wire.enclave_errors",
    "pps_wire.quote",
    "pps_wire.provision",
    "pps_wire.sealed",
    "enclave_sim.errors",
    "enclave_sim.crypto",
    "protocols.errors",
    "protocols.lifetime",
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
    "protocols.he_isolation",
    "protocols.he_scoring.wire",
    "protocols.he_scoring.protobuf",
    "protocols.he_scoring.seal_objects",
    "protocols.he_scoring.checker",
    "protocols.he_scoring.load",
    "protocols.he_scoring.noise",
    "protocols.he_scoring.server",
    "protocols.he_scoring.bank",
    "protocols.he_scoring",
    "enclave_sim.model_check",
    "enclave_sim.jobs",
    "enclave_sim.sealed",
    "enclave_sim.core",
)
"""The enclave's code, in load (and measurement) order — every module before the modules that import it, a
package's modules before the package itself (its ``__init__``): the wire formats it shares with the parties
(``pps_wire``), its own modules, and the vertical-LR coordinator's protocol code (every module of its packages). ``enclave_sim.*`` modules are
read from the code root; the others from their package's directory beside the code root if there is one
(``<code root>/../protocols``), else from where that package is installed."""
MEASUREMENT_CONTEXT = b"PPS-ENCLAVE-MEASUREMENT-v1\x00"


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


def installed_package_dir(package: str) -> Path | None:
    """The directory a top-level package would be imported from here, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def default_code_root() -> Path:
    """The enclave code installed here (``enclave_sim``'s directory); raises if there is none."""
    found = installed_package_dir(ENCLAVE_PACKAGE)
    if found is None:
        raise LookupError(
            "the enclave's source (enclave_sim) is not installed here, so the trusted measurement cannot be "
            "computed from it: pass the measurement of the build you trust (published with its source; compute "
            "it with pps_wire.measurement.expected_measurement(code_root=<its enclave_sim directory>))"
        )
    return found


def package_dir(package: str, root: Path) -> Path:
    """Where ``package``'s measured modules are read for the enclave code at ``root``."""
    if package == ENCLAVE_PACKAGE:
        return root
    beside = root.parent / package
    if beside.is_dir():
        return beside
    found = installed_package_dir(package)
    if found is None:
        raise LookupError(
            f"the enclave's code needs the package {package!r}, found neither beside {root} nor here"
        )
    return found


def module_path(name: str, root: Path | None = None) -> Path:
    """The source file of a measured module: ``<package dir>/a/b.py``, or ``.../a/b/__init__.py`` for a package
    (for the enclave code at ``root``, default: the one installed here)."""
    package, *rest = name.split(".")
    base = package_dir(package, root or default_code_root()).joinpath(*rest)
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def read_sources(code_root: Path | None = None) -> list[tuple[str, Path, bytes]]:
    """``(module name, file, source bytes)`` of :data:`MODULES` for the enclave code at ``code_root``
    (default: the one installed here)."""
    root = code_root or default_code_root()
    out = []
    for name in MODULES:
        out.append((name, (path := module_path(name, root)), path.read_bytes()))
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
