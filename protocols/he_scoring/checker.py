"""The isolated checker: CONTEXT and MODEL bytes are loaded by SEAL and TenSEAL first in a spawned worker
(:mod:`protocols.he_isolation`: a crash, a hang or a memory blow-up is contained there, timeout
``check_timeout_s``); only what passed is loaded in the caller's process. The worker imports this module and
runs its :data:`ISOLATED_OPERATIONS`."""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import tenseal as ts
import tenseal.sealapi as seal

from protocols.errors import (
    InvalidCiphertext,
    InvalidContext,
    IsolationError,
    WorkerCrashed,
    WorkerRefused,
    WorkerTimeout,
)
from protocols.he_isolation import IsolatedWorker
from protocols.he_scoring.seal_objects import build_seal_context, load_parameters, parms_key, seal_load
from protocols.he_scoring.wire import ALLOWED_POLY_MODULUS_DEGREES

_checker_lock = threading.Lock()
_checker: IsolatedWorker | None = None
_checker_pid = -1


def _default_checker() -> IsolatedWorker:
    """The module's isolated checker, one per process (a forked process starts its own)."""
    global _checker, _checker_pid
    with _checker_lock:
        if _checker is None or _checker_pid != os.getpid():
            _checker, _checker_pid = IsolatedWorker(__name__), os.getpid()
            atexit.register(_checker.close)
        return _checker


def shutdown_checker() -> None:
    """Stop the module's default isolated checker (a new one starts on the next check)."""
    global _checker
    with _checker_lock:
        if _checker is not None:
            _checker.close()
            _checker = None


def run_isolated(
    worker: IsolatedWorker | None,
    op: str,
    args: Mapping[str, Any],
    blobs: Sequence[bytes],
    *,
    timeout_s: float,
    error: Callable[[str], Exception],
    what: str,
) -> Any:
    """Run ``op`` of the isolated SEAL checker (``worker``, or this module's default one) over untrusted
    ``blobs``; a refusal, a time-out or a crash of the checker becomes ``error`` naming ``what``."""
    checker = worker or _default_checker()
    try:
        return checker.call(op, args, blobs, timeout_s=timeout_s)
    except WorkerRefused as exc:
        raise error(f"{what} cannot be read: {exc}") from None
    except WorkerTimeout:
        raise error(f"{what} took more than {timeout_s:g} s to check and was refused") from None
    except WorkerCrashed as exc:
        raise error(
            f"{what} crashed the isolated checker (exit code {exc.exitcode}) and was refused"
        ) from None
    except IsolationError as exc:  # pragma: no cover - every subclass is handled above
        raise error(f"{what} could not be checked: {exc}") from None


# --- operations run inside the checker ---------------------------------------------------------------------


def _isolated_check_context(args: dict[str, Any], blobs: list[bytes]) -> dict[str, Any]:
    """Load the parameters, the public key and the whole context with SEAL and TenSEAL, and describe them."""
    parameters, public_key, whole = blobs
    parms = load_parameters(parameters)
    scheme = str(parms.scheme().name)
    n = int(parms.poly_modulus_degree())
    primes = [int(m.value()) for m in parms.coeff_modulus()]
    report: dict[str, Any] = {"scheme": scheme, "poly_modulus_degree": n, "primes": primes}
    if scheme != "CKKS" or n not in ALLOWED_POLY_MODULUS_DEGREES:
        return report
    report["max_bits_tc128"] = int(seal.CoeffModulus.MaxBitCount(n, seal.SEC_LEVEL_TYPE.TC128))
    context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    report["secure"] = bool(context.parameters_set())
    report["error"] = str(context.parameters_error_message())
    if not report["secure"]:
        return report
    key = seal_load(seal.PublicKey(), context, public_key)
    if parms_key(key.parms_id()) != parms_key(context.key_parms_id()):
        raise InvalidContext("the public key is not at the key level of these parameters")
    tenseal_context = ts.context_from(whole, n_threads=1)
    report["tenseal_public"] = bool(tenseal_context.is_public())
    report["tenseal_has_secret_key"] = bool(tenseal_context.has_secret_key())
    return report


_worker_contexts: dict[tuple[int, tuple[int, ...]], Any] = {}


def _isolated_check_ciphertexts(args: dict[str, Any], blobs: list[bytes]) -> list[dict[str, Any]]:
    """Load every ciphertext with SEAL under the given parameters and describe it."""
    n = int(args["poly_modulus_degree"])
    primes = tuple(int(p) for p in args["primes"])
    key = (n, primes)
    if key not in _worker_contexts:
        _worker_contexts.clear()
        _worker_contexts[key] = build_seal_context(n, primes)
    context = _worker_contexts[key]
    reports = []
    for i, blob in enumerate(blobs):
        try:
            ct = seal_load(seal.Ciphertext(), context, blob)
        except Exception as exc:
            raise InvalidCiphertext(f"ciphertext {i}: {exc}") from None
        data = context.get_context_data(ct.parms_id())
        reports.append(
            {
                "size": int(ct.size()),
                "ntt_form": bool(ct.is_ntt_form()),
                "transparent": bool(ct.is_transparent()),
                "scale": float(ct.scale),
                "chain_index": int(data.chain_index()) if data is not None else -1,
            }
        )
    return reports


ISOLATED_OPERATIONS: Final[Mapping[str, Any]] = {
    "check_context": _isolated_check_context,
    "check_ciphertexts": _isolated_check_ciphertexts,
}
"""What :class:`protocols.he_isolation.IsolatedWorker` may run in the checker process for this module."""
