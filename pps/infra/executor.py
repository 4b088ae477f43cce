"""Execution backends for heavy jobs: one contract, run in this process, in a local process pool, or on Ray.

A heavy job (scoring a portfolio, preparing a PSI setup, a block of gradients) is cut by its coordinator into
*chunks* of independent work. :meth:`Executor.map_chunks` runs ``fn(state, chunk)`` for every chunk on the
backend's workers and yields the results **in chunk order**, each exactly once::

    shared = Shared(key=digest, payload=(context_bytes, model_bytes), build=load_state)
    for result in executor.map_chunks(score_chunk, chunks, shared=shared, on_progress=ctx.progress):
        parts.append(result)

**Warm workers, per-job state.** The pool backends keep their workers (processes, Ray actors) alive between
jobs: they are started on the first job and stopped by :meth:`Executor.close` (the runtime's close). What a
job ships to them is not kept: each :meth:`~Executor.map_chunks` call names its shared state with a key unique
to that call, a worker builds it once (on its first chunk of the call) and every worker that built it drops it
when the call ends — normally, by an error, by cancellation or because the caller stopped iterating — and
acknowledges the drop before the workers serve another job. A bank's model or a PSI server key therefore
never outlives its job in a worker (:meth:`Executor.worker_state_keys` shows what the workers hold). A worker
serves one job at a time: a job takes every idle worker of the executor (starting any that are missing) and
hands them back at its end; a job that finds none idle waits for one (and can be cancelled meanwhile).

The contract every backend keeps (``tests/pps/infra/executor/`` runs one suite against each):

* **Shared state once per worker and job.** ``shared.payload`` (the bank's public context and encrypted model,
  a PSI server key) travels to each worker once per job — with its first chunk over the worker's pipe, or as
  one Ray object read once by each actor — and ``shared.build(payload)`` runs once per worker and job, never
  per chunk. The in-process backend uses ``shared.local`` (already built by the coordinator) when given.
* **Back-pressure.** At most ``max_in_flight`` chunks are taken from ``chunks`` and not yet handed back to
  the caller (running, queued or finished out of order): ``chunks`` may be a lazy generator over 10^6 rows
  and memory stays flat.
* **Progress.** ``on_progress(done, total)`` after every finished chunk (``total`` is ``len(chunks)``, the
  ``total`` argument, or 0 if unknown). If it raises (a job's :meth:`pps.infra.jobs.JobContext.progress` raises
  :class:`~pps.errors.JobCancelled`), the job's busy workers are stopped and the exception propagates.
* **Cancellation.** Setting ``cancel_event`` stops the job's busy workers (processes terminated, actors
  killed; replacements start on the next job) and raises :class:`~pps.errors.JobCancelled`; closing the
  iterator early does the same. The in-process backend stops between chunks.
* **Worker death.** A worker that dies (killed, out of memory, a crashed native library) loses its chunk,
  which is run again on a fresh worker, up to ``max_retries`` times; then :class:`WorkerLost`. A chunk's
  result is yielded once, whichever attempt produced it; a late duplicate is dropped.
* **Errors.** An exception raised by ``fn`` or ``build`` is not retried (the same input fails again): an error
  raised on purpose (a :class:`~pps.errors.PPSError`, or a protocol or enclave library error: whatever
  :func:`pps.errors.translate` maps) is re-raised as it was raised in the worker; anything else becomes
  :class:`ChunkFailed` naming the chunk and the original type and message.
* **Workers never commit.** ``fn`` computes and returns; results, ledger entries and releases are written by
  the coordinating process (the job's ``finalize``), so a worker that dies loses no data.

``fn`` and ``build`` must be module-level functions (picklable by reference) and chunks and results
picklable; the in-process backend pickles nothing.

Trust: with :class:`RayExecutor` the chunks (plaintext features, PSI items) and the shared state (a PSI server
key) sit in Ray's object store and worker memory on every node: every node of the Ray cluster is inside the
safe-room's trust boundary (``docs/operations.md``). Warm workers do not widen that: the same processes ran
every job before too, and per-job state is dropped at the job's end as it was when actors were killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import threading
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing import util as mp_util
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_ready
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pps.errors import ConfigurationError, JobCancelled, PPSError, ServiceUnavailable, translate
from protocols.lifetime import die_with_parent, start_process
from protocols.parallel import NO_SHARED, ChunkMapper
from protocols.parallel import Shared as Shared  # where the protocols define it; re-exported

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from pps.infra.settings import Settings

log = logging.getLogger("pps.infra.executor")

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")
W = TypeVar("W")

DEFAULT_MAX_RETRIES = 2
"""Times a chunk whose worker died is run again before the job fails with :class:`WorkerLost`."""
POLL_S = 0.1
"""How often the coordinator looks at ``cancel_event`` while it waits for a chunk."""
DROP_TIMEOUT_S = 30.0
"""How long a worker may take to acknowledge that it dropped a job's state before it is stopped instead."""


class ExecutorError(PPSError):
    """A chunk of a job could not be computed."""

    code = "executor_error"


class ChunkFailed(ExecutorError):
    """``fn`` (or ``build``) raised something in a worker that is not an error raised on purpose."""

    code = "chunk_failed"


class WorkerLost(ExecutorError, ServiceUnavailable):
    """A chunk's workers died more than ``max_retries`` times; nothing was released."""

    code = "worker_lost"


def _check_args(workers: object, max_retries: object) -> None:
    for name, value, low in (("workers", workers, 1), ("max_retries", max_retries, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 1024:
            raise ConfigurationError(f"{name} must be an int in [{low}, 1024], got {value!r}")


@dataclass(frozen=True)
class _RemoteError:
    """An exception from a worker that could not be pickled back: its type name and message."""

    type_name: str
    message: str


def _portable(exc: BaseException) -> BaseException | _RemoteError:
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own exception, round-tripped
    except Exception:
        return _RemoteError(type(exc).__name__, str(exc))
    return exc


def _raise_from_worker(index: int, exc: BaseException | _RemoteError) -> None:
    if isinstance(exc, BaseException) and translate(exc) is not None:  # raised on purpose: as it was
        raise exc
    type_name, message = (
        (exc.type_name, exc.message) if isinstance(exc, _RemoteError) else (type(exc).__name__, str(exc))
    )
    raise ChunkFailed(
        f"chunk {index} failed in a worker: {type_name}: {message}",
        details={"chunk": index, "error_type": type_name},
    ) from (exc if isinstance(exc, BaseException) else None)


def _job_key(shared: Shared[Any]) -> str:
    """The key of one call's state in the workers: the caller's key plus a part unique to this call."""
    return f"{shared.key}/{uuid.uuid4().hex}"


class Executor(ABC):
    """Where the chunks of heavy jobs run (see the module docstring for the contract)."""

    name: str
    workers: int
    in_process: bool
    """True if chunks run in the calling thread (nothing is pickled: coordinator-side caches may be used)."""
    max_retries: int

    def map_chunks(
        self,
        fn: Callable[[S, T], R],
        chunks: Iterable[T],
        *,
        shared: Shared[S] | None = None,
        total: int | None = None,
        max_in_flight: int | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        cancel_event: threading.Event | None = None,
    ) -> Iterator[R]:
        """``fn(state, chunk)`` for every chunk, yielded in chunk order; see the module docstring."""
        if not callable(fn):
            raise TypeError(f"fn must be a module-level function, got {type(fn).__name__}")
        bound = 2 * self.workers if max_in_flight is None else max_in_flight
        if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
            raise ValueError(f"max_in_flight must be a positive int, got {max_in_flight!r}")
        if total is None:
            total = len(chunks) if isinstance(chunks, Sized) else 0
        state: Shared[S] = shared if shared is not None else NO_SHARED  # type: ignore[assignment]
        return self._run(
            fn,
            iter(chunks),
            state,
            total,
            bound,
            on_progress or (lambda _d, _t: None),
            cancel_event or threading.Event(),
        )

    @abstractmethod
    def _run(
        self,
        fn: Callable[[S, T], R],
        chunks: Iterator[T],
        shared: Shared[S],
        total: int,
        max_in_flight: int,
        on_progress: Callable[[int, int], None],
        cancel_event: threading.Event,
    ) -> Iterator[R]: ...

    def close(self) -> None:  # noqa: B027 - the in-process backend holds nothing
        """Stop the backend's warm workers and release what it holds (idempotent)."""

    def worker_state_keys(self) -> list[list[str]]:
        """The keys of the job state each idle warm worker holds (``[]`` per worker between jobs; no list
        for the in-process backend). Asks the workers themselves: an operator's and the tests' check that
        no job's state outlived its job."""
        return []

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers}


class _Window(Generic[T, R]):
    """The coordinator's book-keeping, common to the pool backends: which chunks are taken, finished,
    yielded; how often each was attempted. In-flight = taken and not yet yielded (the back-pressure bound)."""

    def __init__(self, chunks: Iterator[T], max_in_flight: int, max_retries: int, total: int) -> None:
        self.chunks = chunks
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.total = total
        self.taken = 0
        self.next_out = 0
        self.exhausted = False
        self.inputs: dict[int, T] = {}
        self.results: dict[int, R] = {}
        self.attempts: dict[int, int] = {}
        self.done = 0

    def take(self) -> tuple[int, T] | None:
        if self.exhausted or self.taken - self.next_out >= self.max_in_flight:
            return None
        try:
            item = next(self.chunks)
        except StopIteration:
            self.exhausted = True
            return None
        index = self.taken
        self.taken += 1
        self.inputs[index] = item
        self.attempts[index] = 1
        return index, item

    def finish(self, index: int, result: R) -> bool:
        """Record a result; False for a duplicate (a chunk already finished: dropped, never used twice)."""
        if index in self.results or index < self.next_out or index not in self.inputs:
            return False
        self.results[index] = result
        self.done += 1
        return True

    def retry(self, index: int, why: str) -> T:
        self.attempts[index] += 1
        if self.attempts[index] > self.max_retries + 1:
            raise WorkerLost(
                f"chunk {index} was lost {self.attempts[index] - 1} times ({why}); the job stops and "
                "nothing is released",
                details={"chunk": index, "attempts": self.attempts[index] - 1},
            )
        log.warning("chunk %d lost (%s): attempt %d", index, why, self.attempts[index])
        return self.inputs[index]

    def ready(self) -> Iterator[R]:
        while self.next_out in self.results:
            result = self.results.pop(self.next_out)
            del self.inputs[self.next_out]
            self.next_out += 1
            yield result

    @property
    def finished(self) -> bool:
        return self.exhausted and self.next_out == self.taken


class _WarmPool(Generic[W]):
    """Warm workers of one executor, lent to one job at a time: :meth:`checkout` takes every idle worker
    (starting missing ones, up to ``size``), :meth:`checkin` gives them back, :meth:`discard` forgets one that
    died or was stopped (a new one starts on a later checkout)."""

    def __init__(self, size: int, start: Callable[[], W], stop: Callable[[W], None]) -> None:
        self.size = size
        self._start = start
        self._stop = stop
        self._cond = threading.Condition()
        self._idle: list[W] = []
        self._live = 0
        self._closed = False

    def checkout(self, cancel_event: threading.Event) -> list[W]:
        with self._cond:
            while not self._idle and self._live >= self.size:
                if self._closed:
                    break
                if cancel_event.is_set():
                    raise JobCancelled("the job was cancelled while it waited for a worker")
                self._cond.wait(POLL_S)
            if self._closed:
                raise ServiceUnavailable("the executor was closed")
            got, self._idle = self._idle, []
            missing = self.size - self._live
            self._live += missing
        started: list[W] = []
        try:
            for _ in range(missing):
                started.append(self._start())
        except BaseException:
            with self._cond:
                self._live -= missing - len(started)
            self.checkin(got + started)
            raise
        return got + started

    def checkin(self, workers: Iterable[W]) -> None:
        back = list(workers)
        with self._cond:
            if not self._closed:
                self._idle.extend(back)
                self._cond.notify_all()
                return
            self._live -= len(back)
        for w in back:  # the executor was closed while the job ran
            with contextlib.suppress(Exception):
                self._stop(w)

    def discard(self, worker: W) -> None:
        with contextlib.suppress(Exception):
            self._stop(worker)
        with self._cond:
            self._live -= 1
            self._cond.notify_all()

    def replace(self, worker: W) -> W:
        """A fresh worker in place of ``worker`` (stopped), for the job that holds it. If none can be started,
        the job still holds ``worker`` and discards it when it ends."""
        with contextlib.suppress(Exception):
            self._stop(worker)
        return self._start()

    def ask_idle(self, question: Callable[[W], R]) -> list[R]:
        """``question(worker)`` for every idle worker, none of them lent to a job meanwhile."""
        with self._cond:
            return [question(w) for w in self._idle]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._cond.notify_all()
        for w in idle:
            with contextlib.suppress(Exception):
                self._stop(w)


# --- in this process, or a local process pool --------------------------------------------------------------

_WORKER_STATES: dict[str, Any] = {}
"""In a worker process (pool process or Ray actor): the state each running job built there, by job key."""


def _state_for(key: str, shared: Shared[Any] | None) -> Any:
    if key not in _WORKER_STATES:
        if shared is None:
            raise RuntimeError("the worker received a chunk without its job's shared state")
        _WORKER_STATES[key] = shared.build(shared.payload)
    return _WORKER_STATES[key]


def _pool_worker_main(conn: Connection, parent_pid: int) -> None:
    """A warm pool process: runs chunks, builds and drops per-job state, until told to stop or orphaned
    (killed by the kernel the moment the coordinator dies, even by SIGKILL: :mod:`protocols.lifetime`)."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the terminal is the coordinator's to handle
    while True:
        try:
            if not conn.poll(1.0):
                if os.getppid() != parent_pid:  # the coordinator died: nobody will ever ask again
                    return
                continue
            msg = conn.recv()
        except (EOFError, OSError):
            return
        op = msg[0]
        if op == "run":
            _, key, shared, fn, index, item = msg
            try:
                reply: tuple[Any, ...] = ("ok", index, fn(_state_for(key, shared), item))
            except Exception as exc:
                reply = ("err", index, _portable(exc))
            try:
                conn.send(reply)
            except (EOFError, OSError):
                return
            except Exception as exc:  # the result could not be pickled
                conn.send(("err", index, _portable(exc)))
        elif op == "drop":
            _WORKER_STATES.pop(msg[1], None)
            conn.send(("dropped", sorted(_WORKER_STATES)))
        elif op == "keys":
            conn.send(("keys", sorted(_WORKER_STATES)))
        else:  # "stop"
            return


class _Proc:
    """The coordinator's handle on one warm pool process."""

    def __init__(self) -> None:
        ctx = get_context("spawn")  # a fresh interpreter: no copy of the coordinator's keys or connections
        parent, child = ctx.Pipe(duplex=True)
        self.process: BaseProcess = ctx.Process(
            target=_pool_worker_main, args=(child, os.getpid()), name="pps-executor-worker"
        )
        start_process(self.process)  # from a thread that lives as long as the coordinator (not the job's)
        child.close()
        self.conn = parent
        self.keys: set[str] = set()
        self.task: int | None = None

    @property
    def sentinel(self) -> int:
        return self.process.sentinel

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.terminate()
        with contextlib.suppress(Exception):
            self.process.join(5)
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                self.process.kill()
                self.process.join(5)
        with contextlib.suppress(Exception):
            self.conn.close()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(("stop",))
        self.process.join(2)
        self.kill()

    def ask(self, msg: tuple[Any, ...], timeout: float = DROP_TIMEOUT_S) -> Any:
        """Send a control message to an idle worker and wait for its answer."""
        self.conn.send(msg)
        if not self.conn.poll(timeout):
            raise TimeoutError(f"worker {self.process.pid} did not answer {msg[0]!r}")
        return self.conn.recv()[1]


def _stop_proc(p: _Proc) -> None:
    p.stop()


class LocalExecutor(Executor):
    """The embedded default. ``workers == 1``: chunks run in the calling thread, one at a time (nothing is
    pickled; ``shared.local`` is used if given). ``workers > 1`` (or ``processes=True``): a warm pool of that
    many spawned processes (fresh interpreters: no copy of the coordinator's keys or connections), started on
    the first job and stopped by :meth:`close`; each job's shared payload goes to each process once, with its
    first chunk, and is dropped there when the job ends."""

    name = "local"

    def __init__(
        self, workers: int = 1, *, max_retries: int = DEFAULT_MAX_RETRIES, processes: bool | None = None
    ) -> None:
        _check_args(workers, max_retries)
        self.workers = workers
        self.max_retries = max_retries
        self.in_process = not processes if processes is not None else workers == 1
        if self.in_process and workers != 1:
            raise ConfigurationError("an in-process executor has exactly one worker")
        self._pool: _WarmPool[_Proc] | None = None
        self._pool_lock = threading.Lock()

    def _warm(self) -> _WarmPool[_Proc]:
        with self._pool_lock:
            if self._pool is None:
                self._pool = _WarmPool(self.workers, _Proc, _stop_proc)
                # stop the processes when this executor is collected or the interpreter exits (before
                # multiprocessing joins its children), if close() was not called
                mp_util.Finalize(self, _WarmPool.close, args=(self._pool,), exitpriority=10)
            return self._pool

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def worker_state_keys(self) -> list[list[str]]:
        with self._pool_lock:
            pool = self._pool
        if pool is None:
            return []
        return pool.ask_idle(lambda p: list(p.ask(("keys",))))

    def worker_pids(self) -> list[int]:
        """Process ids of the idle warm workers (for tests and monitoring)."""
        with self._pool_lock:
            pool = self._pool
        return pool.ask_idle(lambda p: int(p.process.pid or 0)) if pool else []

    def _run(
        self,
        fn: Callable[[S, T], R],
        chunks: Iterator[T],
        shared: Shared[S],
        total: int,
        max_in_flight: int,
        on_progress: Callable[[int, int], None],
        cancel_event: threading.Event,
    ) -> Iterator[R]:
        if self.in_process:
            return self._inline(fn, chunks, shared, total, on_progress, cancel_event)
        return self._pooled(fn, chunks, shared, total, max_in_flight, on_progress, cancel_event)

    @staticmethod
    def _inline(
        fn: Callable[[S, T], R],
        chunks: Iterator[T],
        shared: Shared[S],
        total: int,
        on_progress: Callable[[int, int], None],
        cancel_event: threading.Event,
    ) -> Iterator[R]:
        state: S | None = shared.local
        built = state is not None
        for done, item in enumerate(chunks, start=1):
            if cancel_event.is_set():
                raise JobCancelled("the job was cancelled")
            try:
                if not built:
                    state, built = shared.build(shared.payload), True
                result = fn(state, item)  # type: ignore[arg-type]
            except Exception as exc:
                _raise_from_worker(done - 1, exc)
            on_progress(done, max(total, done))
            yield result
        if cancel_event.is_set():
            raise JobCancelled("the job was cancelled")

    def _pooled(
        self,
        fn: Callable[[S, T], R],
        chunks: Iterator[T],
        shared: Shared[S],
        total: int,
        max_in_flight: int,
        on_progress: Callable[[int, int], None],
        cancel_event: threading.Event,
    ) -> Iterator[R]:
        pool = self._warm()
        window: _Window[T, R] = _Window(chunks, max_in_flight, self.max_retries, total)
        key = _job_key(shared)
        procs = pool.checkout(cancel_event)
        pending: deque[int] = deque()  # taken (or lost) chunks waiting for an idle worker
        clean = False

        def lost(p: _Proc) -> None:
            """``p`` died: replace it in this job's set, its chunk goes first in the queue."""
            index = p.task
            procs[procs.index(p)] = pool.replace(p)
            if index is not None:
                window.retry(index, "a worker process died")
                pending.appendleft(index)

        try:
            while not window.finished:
                if cancel_event.is_set():
                    raise JobCancelled("the job was cancelled; its workers were stopped")
                while (taken := window.take()) is not None:
                    pending.append(taken[0])
                for p in procs:
                    if p.task is None and pending:
                        index = pending.popleft()
                        first = key not in p.keys
                        try:
                            p.conn.send(
                                ("run", key, shared if first else None, fn, index, window.inputs[index])
                            )
                        except (OSError, EOFError):  # it died while idle: found by its sentinel below
                            pending.appendleft(index)
                            continue
                        p.keys.add(key)
                        p.task = index
                busy = [p for p in procs if p.task is not None]
                ready: list[Any]
                if not busy:  # nothing running: only a worker that died while idle can need attention
                    ready = [p.sentinel for p in procs if not p.process.is_alive()]
                else:
                    ready = wait_ready([o for p in busy for o in (p.conn, p.sentinel)], timeout=POLL_S)
                for p in list(procs):
                    if p.conn not in ready and p.sentinel not in ready:
                        continue
                    try:
                        msg = p.conn.recv() if p.conn.poll() else None
                    except (EOFError, OSError):
                        msg = None
                    if msg is None:
                        if not p.process.is_alive() or p.sentinel in ready:
                            lost(p)
                        continue
                    status, index, value = msg
                    p.task = None
                    if status == "err":
                        _raise_from_worker(index, value)
                    if window.finish(index, value):
                        on_progress(window.done, max(window.total, window.taken))
                yield from window.ready()
            clean = True
        finally:
            keep: list[_Proc] = []
            for p in procs:
                if p.task is not None or not p.process.is_alive():
                    pool.discard(p)  # busy with this job's chunk (cancelled, failed) or dead: stop it
                    continue
                if key in p.keys:
                    try:
                        p.ask(("drop", key))
                    except Exception:
                        pool.discard(p)
                        continue
                    p.keys.discard(key)
                keep.append(p)
            pool.checkin(keep)
            if not clean:
                log.info("job state %s dropped; %d busy workers stopped", key, len(procs) - len(keep))


# --- Ray ------------------------------------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigurationError("PPS_EXECUTOR=ray needs the ray extra: pip install 'pps[ray]'") from None
    return ray


class _ChunkWorker:
    """One warm Ray actor: runs chunks of one job at a time; builds each job's state once and drops it."""

    def run(
        self, key: str, shared_box: list[Any], fn: Callable[[Any, Any], Any], index: int, item: Any
    ) -> Any:
        if key not in _WORKER_STATES:
            import ray

            shared: Shared[Any] = ray.get(shared_box[0])  # the job's payload, fetched once per actor
            _WORKER_STATES[key] = shared.build(shared.payload)
        return index, fn(_WORKER_STATES[key], item)

    def drop(self, key: str) -> list[str]:
        _WORKER_STATES.pop(key, None)
        return sorted(_WORKER_STATES)

    def keys(self) -> list[str]:
        return sorted(_WORKER_STATES)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor(Executor):
    """Chunks on a Ray cluster: ``workers`` warm actors (one CPU each), created on the first job and killed
    by :meth:`close`. A job ships its shared state once (one ``ray.put``, read once by each actor), takes
    chunks round the least loaded actor, and has every actor drop the state at its end — so one job's state
    (a bank's model, a PSI key) never outlives it on the cluster.

    ``address``: ``None`` starts a local Ray instance in this process if none is running (a single machine,
    tests); ``"auto"`` joins the cluster this node belongs to; ``"ray://head:10001"`` connects as a Ray
    client. A process has one Ray connection: if Ray is already initialised here, that connection is used.
    ``workers``: ``None`` = the cluster's CPUs at the first call.
    """

    name = "ray"
    in_process = False

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        namespace: str = "pps",
    ) -> None:
        _check_args(workers if workers is not None else 1, max_retries)
        self.address = address
        self.max_retries = max_retries
        self.namespace = namespace
        self._workers = workers
        self._lock = threading.Lock()
        self._ray: Any = None
        self._actor_cls: Any = None
        self._started_here = False
        self._pool: _WarmPool[Any] | None = None

    def _ensure(self) -> Any:
        with self._lock:
            if self._ray is None:
                ray = _import_ray()
                if not ray.is_initialized():
                    try:
                        ray.init(
                            address=self.address,
                            namespace=self.namespace,
                            include_dashboard=False,
                            logging_level=logging.WARNING,
                            log_to_driver=False,
                        )
                    except (ConnectionError, RuntimeError, ValueError) as exc:
                        raise ServiceUnavailable(
                            f"cannot reach the Ray cluster at PPS_RAY_ADDRESS={self.address!r}: {exc}"
                        ) from None
                    self._started_here = True
                self._actor_cls = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_ChunkWorker)
                self._ray = ray
            return self._ray

    def _warm(self) -> _WarmPool[Any]:
        ray = self._ensure()
        size = self.workers
        with self._lock:
            if self._pool is None:

                def kill(actor: Any) -> None:
                    with contextlib.suppress(Exception):
                        ray.kill(actor, no_restart=True)

                self._pool = _WarmPool(size, self._actor_cls.remote, kill)
            return self._pool

    @property
    def workers(self) -> int:  # type: ignore[override]
        if self._workers is None:
            ray = self._ensure()
            self._workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return self._workers

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        with self._lock:
            if self._ray is not None and self._started_here:
                self._ray.shutdown()
            self._ray, self._started_here = None, False

    def worker_state_keys(self) -> list[list[str]]:
        with self._lock:
            pool, ray = self._pool, self._ray
        if pool is None or ray is None:
            return []
        refs = pool.ask_idle(lambda a: a.keys.remote())
        return [list(k) for k in ray.get(refs, timeout=DROP_TIMEOUT_S)]

    def worker_pids(self) -> list[int]:
        """Process ids of the idle warm actors (for tests and monitoring)."""
        with self._lock:
            pool, ray = self._pool, self._ray
        if pool is None or ray is None:
            return []
        refs = pool.ask_idle(lambda a: a.pid.remote())
        return [int(p) for p in ray.get(refs, timeout=DROP_TIMEOUT_S)]

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "workers": self.workers, "address": self.address or "local"}

    def _run(
        self,
        fn: Callable[[S, T], R],
        chunks: Iterator[T],
        shared: Shared[S],
        total: int,
        max_in_flight: int,
        on_progress: Callable[[int, int], None],
        cancel_event: threading.Event,
    ) -> Iterator[R]:
        pool = self._warm()
        return self._job(pool, fn, chunks, shared, total, max_in_flight, on_progress, cancel_event)

    def _job(
        self,
        pool: _WarmPool[Any],
        fn: Callable[[S, T], R],
        chunks: Iterator[T],
        shared: Shared[S],
        total: int,
        max_in_flight: int,
        on_progress: Callable[[int, int], None],
        cancel_event: threading.Event,
    ) -> Iterator[R]:
        ray = self._ensure()
        from ray.exceptions import (
            ActorDiedError,
            ActorUnavailableError,
            GetTimeoutError,
            ObjectLostError,
            RayActorError,
            RayTaskError,
        )

        # the worker (or the node holding its result) is gone: the chunk is run again on a fresh actor
        lost_errors = (ActorDiedError, ActorUnavailableError, RayActorError, ObjectLostError)
        window: _Window[T, R] = _Window(chunks, max_in_flight, self.max_retries, total)
        key = _job_key(shared)
        shared_box = [ray.put(shared)]  # once per job; each actor reads it once (a nested ref: not resolved)
        actors = pool.checkout(cancel_event)
        load: dict[int, set[Any]] = {i: set() for i in range(len(actors))}
        running: dict[Any, tuple[int, int]] = {}  # ref -> (chunk, actor slot)

        def submit(index: int, item: T) -> None:
            slot = min(load, key=lambda s: len(load[s]))
            ref = actors[slot].run.remote(key, shared_box, fn, index, item)
            running[ref] = (index, slot)
            load[slot].add(ref)

        try:
            while not window.finished:
                if cancel_event.is_set():
                    raise JobCancelled("the job was cancelled; its workers were stopped")
                while (taken := window.take()) is not None:
                    submit(*taken)
                if not running:
                    continue
                ready, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    if ref not in running:
                        continue  # its actor was replaced meanwhile: the chunk was resubmitted
                    index, slot = running.pop(ref)
                    load[slot].discard(ref)
                    try:
                        _, result = ray.get(ref)
                    except lost_errors:
                        # The actor died: every chunk queued on it is lost with it. Replace it, run them again.
                        orphans = [index] + [running.pop(r)[0] for r in list(load[slot])]
                        load[slot].clear()
                        items = [(i, window.retry(i, "a Ray worker died")) for i in sorted(orphans)]
                        actors[slot] = pool.replace(actors[slot])
                        for i, item in items:
                            submit(i, item)
                        continue
                    except RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        _raise_from_worker(index, cause if isinstance(cause, BaseException) else exc)
                    if window.finish(index, result):
                        on_progress(window.done, max(window.total, window.taken))
                yield from window.ready()
        finally:
            idle = [slot for slot in load if not load[slot]]
            for slot in load:
                if load[slot]:
                    pool.discard(actors[slot])  # busy with this job's chunks (cancelled, failed): kill it
            drops = {slot: actors[slot].drop.remote(key) for slot in idle}
            keep = []
            for slot, ref in drops.items():
                try:
                    ray.get(ref, timeout=DROP_TIMEOUT_S)
                except (GetTimeoutError, *lost_errors, RayTaskError):
                    pool.discard(actors[slot])
                    continue
                keep.append(actors[slot])
            pool.checkin(keep)
            shared_box.clear()  # the job's reference to its state in the object store


# --- from settings --------------------------------------------------------------------------------------------


def executor_from_settings(settings: Settings) -> Executor:
    """The backend named by ``PPS_EXECUTOR`` (``local`` or ``ray``), with ``PPS_EXECUTOR_WORKERS``,
    ``PPS_EXECUTOR_MAX_RETRIES`` and, for Ray, ``PPS_RAY_ADDRESS``. Ray is connected on first use."""
    if settings.executor == "ray":
        _import_ray()  # fail at start-up, not on the first job, if the extra is missing
        return RayExecutor(
            settings.ray_address, settings.executor_workers, max_retries=settings.executor_max_retries
        )
    return LocalExecutor(settings.executor_workers or 1, max_retries=settings.executor_max_retries)


def _a_chunk_mapper(executor: Executor) -> ChunkMapper:
    """Every backend is what the protocols call (:class:`protocols.parallel.ChunkMapper`): checked by mypy."""
    return executor
