"""Run checks on untrusted bytes in a spawned worker process, so that a library that aborts cannot take the caller down.

TenSEAL and SEAL are C++ libraries. Their loaders check a lot, but deserialising hostile bytes is exactly where a
native library may ``abort()``, dereference garbage or allocate without bound, and none of that can be caught as a
Python exception. :class:`IsolatedWorker` keeps one persistent child process, started with the ``spawn`` method
(a fresh interpreter: no copy of the parent's memory, keys or open connections), that runs named *operations* on
the bytes and answers with a small JSON document. The parent never unpickles anything the child sends.

What the parent is protected from
---------------------------------
* **Crash** (abort, segfault, ``std::terminate``): the child dies, the parent sees the pipe close and raises
  :class:`WorkerCrashed` (with the exit code); a new child is started in the background.
* **Hang** (a decompression bomb, a loop): the parent waits at most ``timeout_s`` for the answer, then kills
  the child and raises :class:`WorkerTimeout`.
* **Memory exhaustion**: the child runs under ``RLIMIT_AS`` (``memory_limit_bytes``); an oversized allocation
  fails inside the child (as ``MemoryError`` or a crash), not in the parent. Core dumps are disabled.
* **Poisoned state**: after any refused input (an operation that raised, a crash or a timeout) the child is
  replaced, so memory a hostile input may have corrupted without crashing is never reused to judge the next
  input. Inputs that pass are well formed and keep the warm child.

What it does not do: it is not a sandbox against code execution (the child runs as the same user, with the same
filesystem). It contains *failures*; a memory-corruption *exploit* in the native loader is out of its reach.

Operations
----------
The child imports ``module`` (a dotted name) and looks up ``module.ISOLATED_OPERATIONS``, a mapping from an
operation name to ``fn(args: dict, blobs: list[bytes]) -> JSON-serialisable``. An operation that raises is
reported as :class:`~protocols.errors.WorkerRefused` with the exception's type and message. This module's own
:data:`ISOLATED_OPERATIONS` holds self-tests (``selftest_echo``, ``selftest_abort``, ``selftest_hang``) with
which any deployment can check that crashes and hangs are contained.

Wire between parent and child (a ``multiprocessing`` pipe): the parent sends one JSON request header
``{"op", "args", "n_blobs"}`` and then ``n_blobs`` raw byte strings; the child answers one JSON document
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. The child says ``{"ready": true}`` once
after start-up, so start-up time (importing the libraries, ~1 s) does not count against a request's timeout.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

from protocols.errors import (
    InvalidMessage,
    InvalidParameters,
    IsolationError,
    WorkerCrashed,
    WorkerRefused,
    WorkerTimeout,
)
from protocols.lifetime import die_with_parent, start_process

__all__ = [
    "DEFAULT_MEMORY_LIMIT_BYTES",
    "DEFAULT_STARTUP_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "ISOLATED_OPERATIONS",
    "IsolatedWorker",
    "IsolationError",
    "WorkerCrashed",
    "WorkerRefused",
    "WorkerTimeout",
]

DEFAULT_TIMEOUT_S: Final = 30.0
DEFAULT_STARTUP_TIMEOUT_S: Final = 120.0
DEFAULT_MEMORY_LIMIT_BYTES: Final = 4 * 1024**3
MAX_REPLY_BYTES: Final = 16 * 1024 * 1024
"""The parent refuses a longer answer (the child's answers are small metadata documents)."""

Operation = Callable[[dict[str, Any], list[bytes]], Any]


# --- the child ---------------------------------------------------------------------------------------------


def _limit_resources(memory_limit_bytes: int) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_limit_bytes > 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))


def _worker_main(conn: Connection, module: str, memory_limit_bytes: int, parent_pid: int) -> None:
    """Entry point of the child: die with the parent, limit resources, import the operations, answer requests
    until EOF."""
    die_with_parent(parent_pid)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    _limit_resources(memory_limit_bytes)
    operations: Mapping[str, Operation] = importlib.import_module(module).ISOLATED_OPERATIONS
    conn.send_bytes(json.dumps({"ready": True}).encode())
    while True:
        try:
            request = json.loads(conn.recv_bytes())
            blobs = [conn.recv_bytes() for _ in range(int(request["n_blobs"]))]
        except (EOFError, OSError):
            return
        try:
            result = operations[request["op"]](request["args"], blobs)
            reply: dict[str, Any] = {"ok": True, "result": result}
        except Exception as exc:
            reply = {"ok": False, "error_type": type(exc).__name__, "error": str(exc)[:2000]}
        del blobs
        conn.send_bytes(json.dumps(reply).encode())


# --- self-test operations ------------------------------------------------------------------------------------


def _selftest_echo(args: dict[str, Any], blobs: list[bytes]) -> Any:
    return {"args": args, "lengths": [len(b) for b in blobs]}


def _selftest_abort(args: dict[str, Any], blobs: list[bytes]) -> Any:
    os.abort()


def _selftest_hang(args: dict[str, Any], blobs: list[bytes]) -> Any:
    time.sleep(float(args.get("seconds", 3600)))
    return None


def _selftest_raise(args: dict[str, Any], blobs: list[bytes]) -> Any:
    raise InvalidMessage(str(args.get("message", "refused")))


def _selftest_allocate(args: dict[str, Any], blobs: list[bytes]) -> Any:
    return len(bytearray(int(args["bytes"])))


ISOLATED_OPERATIONS: Final[Mapping[str, Operation]] = {
    "selftest_echo": _selftest_echo,
    "selftest_abort": _selftest_abort,
    "selftest_hang": _selftest_hang,
    "selftest_raise": _selftest_raise,
    "selftest_allocate": _selftest_allocate,
}


# --- the parent ----------------------------------------------------------------------------------------------


class IsolatedWorker:
    """One persistent spawned child that runs ``module.ISOLATED_OPERATIONS`` on untrusted bytes.

    Thread-safe: calls are serialised by a lock (one child, one request at a time). For more throughput, keep
    several instances. The child is started lazily (or by :meth:`start`) and restarted after every failure.
    """

    def __init__(
        self,
        module: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES,
    ) -> None:
        if not isinstance(module, str) or not module:
            raise TypeError("module must be a non-empty dotted module name")
        for name, value in (("timeout_s", timeout_s), ("startup_timeout_s", startup_timeout_s)):
            if not isinstance(value, int | float) or not value > 0:
                raise InvalidParameters(f"{name} must be a positive number of seconds, got {value!r}")
        if isinstance(memory_limit_bytes, bool) or not isinstance(memory_limit_bytes, int):
            raise TypeError("memory_limit_bytes must be an int (0 for no limit)")
        self.module = module
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.memory_limit_bytes = memory_limit_bytes
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._ready = False
        self._closed = False
        self._owner_pid = os.getpid()
        self.restarts = 0
        """How many times a child was replaced after a failure (for monitoring)."""

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the child now (it imports its libraries in the background); a no-op if one is running."""
        with self._lock:
            self._ensure_started()

    def close(self) -> None:
        """Stop the child. Further calls raise ``RuntimeError``."""
        with self._lock:
            self._closed = True
            self._stop()

    def __enter__(self) -> IsolatedWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The child's process id, if one is running."""
        return self._process.pid if self._process is not None else None

    def _ensure_started(self) -> None:
        if self._closed:
            raise RuntimeError("this IsolatedWorker is closed")
        if self._owner_pid != os.getpid():  # inherited across fork(): the child belongs to the parent
            self._process, self._conn, self._ready, self._owner_pid = None, None, False, os.getpid()
        if self._process is not None and self._process.is_alive():
            return
        self._stop()
        ctx = get_context("spawn")
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        process = ctx.Process(
            target=_worker_main,
            args=(child_conn, self.module, self.memory_limit_bytes, os.getpid()),
            name=f"pps-isolated-{self.module}",
            daemon=True,
        )
        start_process(process)  # its parent thread must live as long as this process (PR_SET_PDEATHSIG)
        child_conn.close()
        self._process, self._conn, self._ready = process, parent_conn, False

    def _stop(self) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn, self._ready = None, None, False
        if self._owner_pid != os.getpid():  # not ours to stop (inherited across fork())
            return
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(timeout=10)
            with contextlib.suppress(ValueError):
                process.close()

    def _restart(self) -> None:
        self.restarts += 1
        self._stop()
        if not self._closed:
            self._ensure_started()

    def _exitcode(self) -> int | None:
        process = self._process
        if process is None:
            return None
        process.join(timeout=5)
        return process.exitcode

    # -- calls ----------------------------------------------------------------------------------------------

    def call(
        self,
        op: str,
        args: Mapping[str, Any] | None = None,
        blobs: Sequence[bytes] = (),
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """Run operation ``op`` in the child and return its JSON result.

        Raises :class:`WorkerRefused` if the operation raised, :class:`WorkerCrashed` if the child died and
        :class:`WorkerTimeout` if it did not answer within ``timeout_s`` (default: the instance's). After any
        of these the child is replaced.
        """
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        header = json.dumps({"op": op, "args": dict(args or {}), "n_blobs": len(blobs)}).encode()
        with self._lock:
            self._ensure_started()
            try:
                self._await_ready()
                conn = self._conn
                assert conn is not None
                conn.send_bytes(header)
                for blob in blobs:
                    conn.send_bytes(blob)
                reply = self._receive(conn, limit, what=f"operation {op!r}")
            except IsolationError:
                self._restart()
                raise
            except (BrokenPipeError, ConnectionResetError, EOFError, OSError) as exc:
                exitcode = self._exitcode()
                self._restart()
                raise WorkerCrashed(
                    f"the isolated worker died while handling {op!r} (exit code {exitcode})",
                    exitcode=exitcode,
                ) from exc
            if not reply.get("ok"):
                self._restart()
                raise WorkerRefused(str(reply.get("error", "")), error_type=str(reply.get("error_type", "")))
            return reply.get("result")

    def _await_ready(self) -> None:
        if self._ready:
            return
        conn = self._conn
        assert conn is not None
        reply = self._receive(conn, self.startup_timeout_s, what="start-up")
        if not reply.get("ready"):
            raise WorkerCrashed("the isolated worker did not start properly", exitcode=self._exitcode())
        self._ready = True

    def _receive(self, conn: Connection, timeout_s: float, *, what: str) -> dict[str, Any]:
        try:
            if not conn.poll(timeout_s):
                raise WorkerTimeout(f"the isolated worker gave no answer to {what} within {timeout_s:g} s")
            raw = conn.recv_bytes(MAX_REPLY_BYTES)
        except (EOFError, OSError) as exc:
            exitcode = self._exitcode()
            raise WorkerCrashed(
                f"the isolated worker died during {what} (exit code {exitcode})", exitcode=exitcode
            ) from exc
        try:
            reply = json.loads(raw)
        except ValueError as exc:
            raise WorkerCrashed("the isolated worker sent an unreadable answer", exitcode=None) from exc
        if not isinstance(reply, dict):
            raise WorkerCrashed("the isolated worker sent an unreadable answer", exitcode=None)
        return reply
