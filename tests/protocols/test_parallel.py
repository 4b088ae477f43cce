"""The chunk-mapping interface (``protocols.parallel``): its two implementations keep the contract the protocols
rely on (results in chunk order, state built once per worker, errors as raised), and the executors of
``pps.infra.executor`` are ``ChunkMapper``s."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from protocols.errors import InvalidParameters
from protocols.parallel import ChunkMapper, InProcess, Shared, SpawnedProcesses, default_workers

BUILDS: list[int] = []


def _build(payload: int) -> dict[str, Any]:
    BUILDS.append(payload)
    return {"offset": payload, "pid": os.getpid()}


def _add(state: dict[str, Any], chunk: int) -> tuple[int, int]:
    return chunk + state["offset"], state["pid"]


def _refuse(state: dict[str, Any], chunk: int) -> int:
    if chunk == 2:
        raise InvalidParameters(f"chunk {chunk} is refused", details={"chunk": chunk})
    return chunk


def mappers() -> Iterator[ChunkMapper]:
    yield InProcess()
    yield SpawnedProcesses(2)


@pytest.mark.parametrize("mapper", list(mappers()), ids=["in-process", "spawned"])
def test_results_come_in_chunk_order_with_the_state_built_per_worker(mapper: ChunkMapper) -> None:
    BUILDS.clear()
    out = list(mapper.map_chunks(_add, range(20), shared=Shared("k", 100, _build)))
    assert [r for r, _ in out] == list(range(100, 120))
    pids = {pid for _, pid in out}
    if mapper.in_process:
        assert BUILDS == [100] and pids == {os.getpid()}  # built once, here
    else:
        assert os.getpid() not in pids and len(pids) <= mapper.workers


@pytest.mark.parametrize("mapper", list(mappers()), ids=["in-process", "spawned"])
def test_an_error_in_a_chunk_comes_back_as_raised(mapper: ChunkMapper) -> None:
    with pytest.raises(InvalidParameters, match="chunk 2 is refused") as raised:
        list(mapper.map_chunks(_refuse, range(5), shared=Shared("k", 0, _build)))
    assert raised.value.details == {"chunk": 2}


def test_in_process_uses_the_state_already_built() -> None:
    BUILDS.clear()
    local = {"offset": 7, "pid": 0}
    out = list(InProcess().map_chunks(_add, [1, 2], shared=Shared("k", 100, _build, local=local)))
    assert out == [(8, 0), (9, 0)] and BUILDS == []


def test_the_shared_state_travels_without_its_local_copy() -> None:
    import pickle

    shared = Shared("k", 1, _build, local={"big": "state"})
    assert pickle.loads(pickle.dumps(shared)).local is None


def test_worker_counts_are_checked() -> None:
    with pytest.raises(InvalidParameters):
        SpawnedProcesses(0)
    assert default_workers() >= 1


def test_the_pps_executors_are_chunk_mappers() -> None:
    from pps.infra.executor import LocalExecutor
    from pps.infra.executor import Shared as ExecutorShared

    assert ExecutorShared is Shared  # one class: a protocol's Shared goes to any executor
    executor: ChunkMapper = LocalExecutor(1)
    BUILDS.clear()
    assert [r for r, _ in executor.map_chunks(_add, [1, 2], shared=Shared("k", 10, _build))] == [11, 12]
