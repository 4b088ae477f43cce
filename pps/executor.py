"""Execution backends for heavy jobs: one contract, run in this process, in a local process pool, or on Ray.

A heavy job (scoring a portfolio, preparing a PSI setup, a block of gradients) is cut by its coordinator into
*chunks* of independent work. :meth:`Executor.map_chunks` runs ``fn(state, chunk)`` for every chunk on the
backend's workers and yields the results **in chunk order**, each exactly once::

    shared = Shared(key=digest, payload=(context_bytes, model_bytes), build=load_state)
    for result in executor.map_chunks(score_chunk, chunks, shared=shared, on_progress=ctx.progress):
        parts.append(result)

The contract every backend keeps (``tests/executor/`` runs one suite against each):

* **Shared state once per worker.** ``shared.payload`` (the bank's public context and encrypted model, a PSI
  server key) travels to each worker once — a process pool's initializer, one Ray ``put`` read by one actor
  per worker — and ``shared.build(payload)`` runs once per worker, on its first chunk, never per chunk. The
  in-process backend uses ``shared.local`` (already built by the coordinator) when given.
* **Back-pressure.** At most ``max_in_flight`` chunks are taken from ``chunks`` and not yet handed back to
  the caller (running, queued or finished out of order): ``chunks`` may be a lazy generator over 10^6 rows
  and memory stays flat.
* **Progress.** ``on_progress(done, total)`` after every finished chunk (``total`` is ``len(chunks)``, the
  ``total`` argument, or 0 if unknown). If it raises (a job's :meth:`pps.jobs.JobContext.progress` raises
  :class:`~pps.errors.JobCancelled`), the workers are stopped and the exception propagates.
* **Cancellation.** Setting ``cancel_event`` stops the workers (processes terminated, actors killed) and
  raises :class:`~pps.errors.JobCancelled`; closing the iterator early stops them too. The in-process
  backend stops between chunks.
* **Worker death.** A worker that dies (killed, out of memory, a crashed native library) loses its chunk,
  which is run again on a fresh worker, up to ``max_retries`` times; then :class:`WorkerLost`. A chunk's
  result is yielded once, whichever attempt produced it; a late duplicate is dropped.
* **Errors.** An exception raised by ``fn`` or ``build`` is not retried (the same input fails again): a
  :class:`~pps.errors.PPSError` is re-raised as it was raised in the worker; anything else becomes
  :class:`ChunkFailed` naming the chunk and the original type and message.
* **Workers never commit.** ``fn`` computes and returns; results, ledger entries and releases are written by
  the coordinating process (the job's ``finalize``), so a worker that dies loses no data.

``fn`` and ``build`` must be module-level functions (picklable by reference) and chunks and results
picklable; the in-process backend pickles nothing.

Trust: with :class:`RayExecutor` the chunks (plaintext features, PSI items) and the shared state (a PSI server
key) sit in Ray's object store and worker memory on every node: every node of the Ray cluster is inside the
safe-room's trust boundary (``docs/operations.md``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pps.errors import ConfigurationError, JobCancelled, PPSError, ServiceUnavailable

if TYPE_CHECKING:
    from pps.settings import Settings

log = logging.getLogger("pps.executor")

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_RETRIES = 2
"""Times a chunk whose worker died is run again before the job fails with :class:`WorkerLost`."""
POLL_S = 0.1
"""How often the coordinator looks at ``cancel_event`` while it waits for a chunk."""


class ExecutorError(PPSError):
    """A chunk of a job could not be computed."""

    code = "executor_error"


class ChunkFailed(ExecutorError):
    """``fn`` (or ``build``) raised something that is not a :class:`~pps.errors.PPSError` in a worker."""

    code = "chunk_failed"


class WorkerLost(ExecutorError, ServiceUnavailable):
    """A chunk's workers died more than ``max_retries`` times; nothing was released."""

    code = "worker_lost"


@dataclass(frozen=True)
class Shared(Generic[S]):
    """State every chunk of one job needs, shipped once per worker and built there once.

    ``key`` names the state (a digest of the payload): workers keep what they built under it. ``payload`` is
    what travels (picklable); ``build(payload)`` makes the worker-side state (runs once per worker, on its
    first chunk). ``local``, if given, is that state already built in the coordinating process: the
    in-process backend uses it and never pickles it (it is not part of the pickled form).
    """

    key: str
    payload: Any
    build: Callable[[Any], S]
    local: S | None = field(default=None, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"key": self.key, "payload": self.payload, "build": self.build, "local": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)


def _no_state(_payload: Any) -> None:
    return None


NO_SHARED: Shared[None] = Shared("none", None, _no_state)


def _check_args(workers: object, max_retries: object) -> None:
    for name, value, low in (("workers", workers, 1), ("max_retries", max_retries, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 1024:
            raise ConfigurationError(f"{name} must be an int in [{low}, 1024], got {value!r}")


def _raise_from_worker(index: int, exc: BaseException) -> None:
    if isinstance(exc, PPSError):
        raise exc
    raise ChunkFailed(
        f"chunk {index} failed in a worker: {type(exc).__name__}: {exc}",
        details={"chunk": index, "error_type": type(exc).__name__},
    ) from exc


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

    def close(self) -> None:  # noqa: B027 - most backends hold nothing between calls
        """Release what the backend holds (idempotent)."""

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


# --- in this process, or a local process pool --------------------------------------------------------------

_WORKER_SHARED: Shared[Any] | None = None
_WORKER_STATE: dict[str, Any] = {}


def _pool_init(shared: Shared[Any]) -> None:
    """Process-pool initializer: the shared payload arrives once per worker process (built lazily)."""
    global _WORKER_SHARED
    _WORKER_SHARED = shared


def _pool_call(fn: Callable[[Any, T], R], index: int, item: T) -> tuple[int, R]:
    shared = _WORKER_SHARED
    if shared is None:  # pragma: no cover - the initializer always ran
        raise RuntimeError("the worker was started without its shared state")
    if shared.key not in _WORKER_STATE:
        _WORKER_STATE.clear()  # one job's state per worker process
        _WORKER_STATE[shared.key] = shared.build(shared.payload)
    return index, fn(_WORKER_STATE[shared.key], item)


def _terminate_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: queued chunks are dropped and running workers terminated (not waited for)."""
    table = getattr(pool, "_processes", None)  # no public way to stop running workers before Python 3.14
    processes = list(table.values()) if isinstance(table, dict) else []
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        with contextlib.suppress(Exception):
            p.terminate()
    for p in processes:
        with contextlib.suppress(Exception):
            p.join(timeout=5)


class LocalExecutor(Executor):
    """The embedded default. ``workers == 1``: chunks run in the calling thread, one at a time (nothing is
    pickled; ``shared.local`` is used if given). ``workers > 1`` (or ``processes=True``): a pool of that many
    spawned processes per :meth:`map_chunks` call (a fresh interpreter each: no copy of the coordinator's
    keys or connections), the shared payload passed once per process by the pool's initializer."""

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
        return self._pool(fn, chunks, shared, total, max_in_flight, on_progress, cancel_event)

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
            except PPSError:
                raise
            except Exception as exc:
                _raise_from_worker(done - 1, exc)
            on_progress(done, max(total, done))
            yield result
        if cancel_event.is_set():
            raise JobCancelled("the job was cancelled")

    def _pool(
        self,
        fn: Callable[[S, T], R],
        chunks: Iterator[T],
        shared: Shared[S],
        total: int,
        max_in_flight: int,
        on_progress: Callable[[int, int], None],
        cancel_event: threading.Event,
    ) -> Iterator[R]:
        window: _Window[T, R] = _Window(chunks, max_in_flight, self.max_retries, total)

        def new_pool() -> ProcessPoolExecutor:
            return ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=get_context("spawn"),
                initializer=_pool_init,
                initargs=(shared,),
            )

        pool = new_pool()
        running: dict[Future[tuple[int, R]], int] = {}
        try:
            while not window.finished:
                if cancel_event.is_set():
                    raise JobCancelled("the job was cancelled; its workers were stopped")
                broken = False
                lost: list[int] = []
                while not broken and (taken := window.take()) is not None:
                    try:
                        running[pool.submit(_pool_call, fn, taken[0], taken[1])] = taken[0]
                    except BrokenProcessPool:  # a worker died since the last wait
                        broken = True
                        lost.append(taken[0])
                if not running and not broken:
                    continue
                finished, _ = wait(running, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = running.pop(future)
                    exc = future.exception()
                    if isinstance(exc, BrokenProcessPool):
                        broken = True
                        running[future] = index  # handled with the rest below
                        continue
                    if exc is not None:
                        _raise_from_worker(index, exc)
                    _, result = future.result()
                    if window.finish(index, result):
                        on_progress(window.done, max(window.total, window.taken))
                if broken:
                    # The pool is unusable and we cannot tell which worker died: every chunk in flight is lost.
                    lost = sorted({*lost, *running.values()})
                    running.clear()
                    _terminate_pool(pool)
                    items = [(i, window.retry(i, "a worker process died")) for i in lost]
                    pool = new_pool()
                    for i, item in items:
                        running[pool.submit(_pool_call, fn, i, item)] = i
                yield from window.ready()
        finally:
            _terminate_pool(pool)


# --- Ray ------------------------------------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigurationError("PPS_EXECUTOR=ray needs the ray extra: pip install 'pps[ray]'") from None
    return ray


class _ChunkWorker:
    """One Ray actor per worker and job: holds the job's shared state (received once, built once)."""

    def __init__(self, fn: Callable[[Any, Any], Any], shared: Shared[Any]) -> None:
        self._fn = fn
        self._shared = shared
        self._state: Any = None
        self._built = False

    def run(self, index: int, item: Any) -> tuple[int, Any]:
        if not self._built:
            self._state, self._built = self._shared.build(self._shared.payload), True
        return index, self._fn(self._state, item)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor(Executor):
    """Chunks on a Ray cluster: per :meth:`map_chunks` call, ``workers`` actors (one CPU each) receive the
    shared state once (one ``ray.put``), take chunks round the least loaded, and are killed at the end — so
    one job's state (a bank's model, a PSI key) never outlives it on the cluster.

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

    @property
    def workers(self) -> int:  # type: ignore[override]
        if self._workers is None:
            ray = self._ensure()
            self._workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        return self._workers

    def close(self) -> None:
        with self._lock:
            if self._ray is not None and self._started_here:
                self._ray.shutdown()
            self._ray, self._started_here = None, False

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
        ray = self._ensure()
        from ray.exceptions import (
            ActorDiedError,
            ActorUnavailableError,
            ObjectLostError,
            RayActorError,
            RayTaskError,
        )

        # the worker (or the node holding its result) is gone: the chunk is run again on a fresh actor
        lost_errors = (ActorDiedError, ActorUnavailableError, RayActorError, ObjectLostError)
        window: _Window[T, R] = _Window(chunks, max_in_flight, self.max_retries, total)
        shared_ref = ray.put(shared)  # once per job; each actor reads it once
        actors: list[Any] = [self._actor_cls.remote(fn, shared_ref) for _ in range(self.workers)]
        load: dict[int, set[Any]] = {i: set() for i in range(len(actors))}
        running: dict[Any, tuple[int, int]] = {}  # ref -> (chunk, actor slot)

        def submit(index: int, item: T) -> None:
            slot = min(load, key=lambda s: len(load[s]))
            ref = actors[slot].run.remote(index, item)
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
                        with contextlib.suppress(Exception):
                            ray.kill(actors[slot], no_restart=True)
                        orphans = [index] + [running.pop(r)[0] for r in list(load[slot])]
                        load[slot].clear()
                        items = [(i, window.retry(i, "a Ray worker died")) for i in sorted(orphans)]
                        actors[slot] = self._actor_cls.remote(fn, shared_ref)
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
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
            del shared_ref


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
