"""Where the protocols fan independent chunks of work out: the little they need of an executor.

A protocol cuts heavy work (the shards of a PSI setup, row blocks of a Paillier gradient, obfuscators, the
masks to remove from a secure-aggregation sum) into *chunks* and calls :meth:`ChunkMapper.map_chunks`, which
runs ``fn(state, chunk)`` for every chunk and yields the results in chunk order. ``state`` is built once per
worker from :class:`Shared` (a PSI server key, a Paillier modulus): shipped once, built once, dropped at the end
of the call.

Two implementations live here: :class:`InProcess` (the default: the calling thread, nothing pickled) and
:class:`SpawnedProcesses` (fresh ``spawn`` processes for one call). ``pps.infra.executor`` implements the same
interface with warm process pools and Ray; a protocol takes any of them. ``fn`` and ``Shared.build`` must be
module-level functions (picklable by reference), chunks and results picklable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from multiprocessing import get_context
from typing import Any, Generic, Protocol, TypeVar

from protocols.errors import InvalidParameters
from protocols.lifetime import die_with_parent

__all__ = ["ChunkMapper", "InProcess", "Shared", "SpawnedProcesses", "default_workers"]

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Shared(Generic[S]):
    """State every chunk of one call needs, shipped once per worker and built there once.

    ``key`` names the state (a digest of the payload, say; an executor adds a part unique to each call, so two
    calls never share a worker's built state). ``payload`` is what travels (picklable); ``build(payload)`` makes
    the worker-side state. ``local``, if given, is that state already built in the calling process: in-process
    implementations use it and never pickle it (it is not part of the pickled form).
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


class ChunkMapper(Protocol):
    """What the protocols call on an executor (``pps.infra.executor.Executor`` is one)."""

    @property
    def workers(self) -> int:
        """How many chunks may run at once (protocols size their chunks by it)."""
        ...

    @property
    def in_process(self) -> bool:
        """True if chunks run in the calling thread: then fanning out gains nothing."""
        ...

    def map_chunks(
        self,
        fn: Callable[[S, T], R],
        chunks: Iterable[T],
        *,
        shared: Shared[S] | None = None,
        total: int | None = None,
    ) -> Iterator[R]:
        """``fn(state, chunk)`` for every chunk, yielded in chunk order, each exactly once; an error raised by
        ``fn`` or ``build`` stops the call and propagates."""
        ...


class InProcess:
    """The default: every chunk in the calling thread, one after the other; ``shared.local`` is used if given,
    else the state is built once."""

    workers = 1
    in_process = True

    def map_chunks(
        self,
        fn: Callable[[S, T], R],
        chunks: Iterable[T],
        *,
        shared: Shared[S] | None = None,
        total: int | None = None,
    ) -> Iterator[R]:
        state_of: Shared[Any] = shared if shared is not None else NO_SHARED
        state: Any = state_of.local
        built = state is not None
        for chunk in chunks:
            if not built:
                state, built = state_of.build(state_of.payload), True
            yield fn(state, chunk)


_STATE: Any = None
"""In a spawned process of :class:`SpawnedProcesses`: the state its call built (the process ends with the call)."""


def _build_in_child(parent_pid: int, shared: Shared[Any]) -> None:
    global _STATE
    die_with_parent(parent_pid)
    _STATE = shared.build(shared.payload)


def _run_in_child(fn: Callable[[Any, Any], Any], chunk: Any) -> Any:
    return fn(_STATE, chunk)


class SpawnedProcesses:
    """``workers`` fresh ``spawn`` processes per :meth:`map_chunks` call (no copy of the caller's memory, keys or
    connections), each building the shared state once at start; they end with the call, and what they held with
    them. Spawned processes import the caller's ``__main__``, which must be import-safe."""

    in_process = False

    def __init__(self, workers: int) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 1024:
            raise InvalidParameters(f"workers must be an int in [1, 1024], got {workers!r}")
        self.workers = workers

    def map_chunks(
        self,
        fn: Callable[[S, T], R],
        chunks: Iterable[T],
        *,
        shared: Shared[S] | None = None,
        total: int | None = None,
    ) -> Iterator[R]:
        with ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=get_context("spawn"),
            initializer=_build_in_child,
            initargs=(os.getpid(), shared if shared is not None else NO_SHARED),
        ) as pool:
            yield from pool.map(_run_in_child, repeat(fn), chunks)


def default_workers() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
