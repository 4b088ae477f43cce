"""The host's side of the enclave: start it in its own process and talk to it through typed operations.

The enclave runs in a separate process started with the ``spawn`` method (a fresh interpreter: nothing of the
host's memory is inherited, as ``fork`` would do). The host holds one end of a pipe and exchanges canonical
JSON frames with :class:`enclave_sim.core.EnclaveCore` — one request, one reply, one at a time. If the process
dies or stops answering, every call raises :class:`~enclave_sim.errors.EnclaveCrashed` and the host starts a
new enclave (new ephemeral key, empty memory) with :meth:`EnclaveHost.start`.

The simulation's limit, stated plainly: the host's operating system can read the enclave process's memory
(``/proc/<pid>/mem``, a debugger, a core dump). Process isolation keeps the host's *code* honest-by-interface;
it does not keep a malicious operator out. Real hardware does.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_sim.errors import BY_CODE, EnclaveCrashed, EnclaveError, EnclaveProtocolError
from enclave_sim.platform import CODE_ROOT, EnclaveConfig, enclave_main
from protocols.lifetime import die_with_parent, start_process

POLL_S = 0.05


def _enclave_process(parent_pid: int, *args: Any) -> None:
    """The enclave process's entry point: killed with the host process (even by SIGKILL), then
    :func:`~enclave_sim.platform.enclave_main`."""
    die_with_parent(parent_pid)
    enclave_main(*args)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class EnclaveHost:
    """One enclave process. Thread-safe: calls are serialised (the enclave answers one request at a time)."""

    def __init__(
        self,
        *,
        vendor_key: Ed25519PrivateKey,
        platform_secret: bytes,
        config: EnclaveConfig | None = None,
        code_root: Path | None = None,
        start_timeout_s: float = 120.0,
        call_timeout_s: float = 3600.0,
    ) -> None:
        if len(platform_secret) < 32:
            raise ValueError("platform_secret must be at least 32 bytes")
        self.config = config or EnclaveConfig()
        self.code_root = code_root or CODE_ROOT
        self.start_timeout_s = start_timeout_s
        self.call_timeout_s = call_timeout_s
        self._vendor = vendor_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        self._secret = bytes(platform_secret)
        self._lock = threading.RLock()
        self._process: Any = None
        self._conn: Any = None
        self.hello: dict[str, Any] = {}
        self.starts = 0

    # --- lifecycle ------------------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def measurement(self) -> bytes:
        return bytes.fromhex(self.hello["measurement"])

    def start(self) -> None:
        """Start the enclave (stopping a previous one) and wait until it has measured and loaded its code."""
        with self._lock:
            self.stop()
            ctx = multiprocessing.get_context("spawn")
            parent, child = ctx.Pipe(duplex=True)
            process = ctx.Process(
                target=_enclave_process,
                args=(
                    os.getpid(),
                    child,
                    str(self.code_root),
                    self.config.canonical(),
                    self._secret,
                    self._vendor,
                ),
                name="pps-enclave",
                daemon=True,
            )
            start_process(process)  # its parent thread lives as long as the host (PR_SET_PDEATHSIG)
            child.close()
            self._process, self._conn = process, parent
            self.starts += 1
            self.hello = self._receive(self.start_timeout_s, "start")

    def ensure_started(self) -> bool:
        """Start the enclave if it is not running; True if it was (re)started."""
        with self._lock:
            if self.alive:
                return False
            self.start()
            return True

    def stop(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            if self._process is not None:
                self._process.join(timeout=2)
                if self._process.is_alive():
                    self._process.kill()
                    self._process.join(timeout=5)
            self._process = self._conn = None

    def kill(self) -> None:
        """Kill the process at once (what a crash looks like). Takes no lock: a call in progress then fails
        with :class:`~enclave_sim.errors.EnclaveCrashed`."""
        process = self._process
        if process is not None and process.is_alive():
            process.kill()

    # --- the message interface -----------------------------------------------------------------------------

    def _receive(self, timeout: float, op: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._conn.poll(POLL_S):
                    frame = self._conn.recv_bytes()
                    break
            except (EOFError, OSError):
                self._dead(f"the enclave process died during {op}")
            if not self._process.is_alive():
                self._dead(f"the enclave process died during {op} (exit code {self._process.exitcode})")
            if time.monotonic() > deadline:
                self._process.kill()
                self._dead(f"the enclave did not answer {op} within {timeout:.0f} s; it was stopped")
        try:
            reply = json.loads(frame)
        except ValueError:
            raise EnclaveProtocolError("the enclave's reply is not JSON") from None
        if not isinstance(reply, dict):
            raise EnclaveProtocolError("the enclave's reply is not an object")
        if not reply.pop("ok", False):
            cls = BY_CODE.get(str(reply.get("code")), EnclaveError)
            raise cls(str(reply.get("message", "the enclave refused the request")))
        return reply

    def _dead(self, message: str) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            self._process.join(timeout=5)
        self._process = self._conn = None
        raise EnclaveCrashed(message)

    def call(self, op: str, *, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """Send one operation and return the enclave's reply, or raise the error it reported."""
        with self._lock:
            if not self.alive:
                if self._process is not None:
                    self._dead("the enclave process is not running")
                raise EnclaveCrashed("the enclave is not running")
            try:
                self._conn.send_bytes(json.dumps({"op": op, **fields}, separators=(",", ":")).encode())
            except (BrokenPipeError, OSError):
                self._dead(f"the enclave process died before {op}")
            return self._receive(timeout or self.call_timeout_s, op)

    # --- typed operations ----------------------------------------------------------------------------------

    def quote(self, nonce: bytes) -> bytes:
        return base64.b64decode(self.call("quote", nonce=_b64(nonce))["quote"])

    def provision(
        self, handle: str, *, job: str, slot: str, quote_hash: bytes, ciphertext: bytes
    ) -> dict[str, Any]:
        return self.call(
            "provision",
            handle=handle,
            job=job,
            slot=slot,
            quote_hash=quote_hash.hex(),
            ciphertext=_b64(ciphertext),
        )

    def supply(self, handle: str, *, job: str, slot: str, data: bytes) -> dict[str, Any]:
        return self.call("supply", handle=handle, job=job, slot=slot, data=_b64(data))

    def run(
        self, handle: str, *, params: dict[str, Any], output: dict[str, Any]
    ) -> tuple[bytes, dict[str, Any]]:
        """Run a job; returns the release (for the owner) and its plain outputs."""
        reply = self.call("run", handle=handle, params=params, output=output)
        return base64.b64decode(reply["release"]), dict(reply["plain"])

    def step(self, handle: str, *, params: dict[str, Any], message: bytes) -> bytes:
        return base64.b64decode(
            self.call("step", handle=handle, params=params, message=_b64(message))["message"]
        )

    def drop(self, handle: str) -> None:
        self.call("drop", handle=handle)

    def seal(self, label: str, data: bytes) -> bytes:
        return base64.b64decode(self.call("seal", label=label, data=_b64(data))["blob"])

    def unseal(self, label: str, blob: bytes) -> bytes:
        return base64.b64decode(self.call("unseal", label=label, blob=_b64(blob))["data"])


class RemoteCoordinator:
    """The vertical-LR coordinator as guest and host see it when it runs in an enclave: the same five calls as
    :class:`protocols.vertical_lr.Coordinator`, each one a ``step`` of the enclave's ``vlr_coordinator`` job
    (provisioned first by the guest under a verified quote)."""

    def __init__(self, enclave: EnclaveHost, handle: str) -> None:
        self.enclave = enclave
        self.handle = handle
        self.decryptions = 0
        """messages sent for decryption (the job's own summary counts the values decrypted)"""

    def _step(self, op: int, body: bytes = b"") -> bytes:
        return self.enclave.step(self.handle, params={}, message=bytes([op]) + body)

    def public_key_message(self) -> bytes:
        return self._step(1)

    def receive_setup(self, data: bytes) -> None:
        self._step(2, data)

    def decrypt(self, data: bytes) -> bytes:
        self.decryptions += 1
        return self._step(3, data)

    def receive_epoch_end(self, data: bytes) -> None:
        self._step(4, data)

    def sigmoid(self, data: bytes) -> bytes:
        return self._step(5, data)
