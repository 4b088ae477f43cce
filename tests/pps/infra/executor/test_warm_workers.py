"""Warm workers (pool processes, Ray actors) serve many jobs; each job's shared state lives only as long as the
job: built once per worker and job, and dropped from every worker when the job ends, however it ends."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pps.errors import JobCancelled
from pps.infra.executor import ChunkFailed, Executor, LocalExecutor, RayExecutor, Shared
from tests.pps.infra.executor import tasks


def _pids(executor: Executor) -> set[int]:
    assert isinstance(executor, LocalExecutor | RayExecutor)
    return set(executor.worker_pids())


def test_the_same_workers_serve_the_next_job_and_build_its_state_afresh(remote_executor: Executor) -> None:
    first = list(
        remote_executor.map_chunks(tasks.tag, range(8), shared=Shared("job-a", 0, tasks.build_tagged))
    )
    warm = _pids(remote_executor)
    assert len(warm) == remote_executor.workers  # still running after the job
    second = list(
        remote_executor.map_chunks(tasks.tag, range(8), shared=Shared("job-a", 100, tasks.build_tagged))
    )
    assert [x for x, _, _ in second] == list(range(100, 108))  # the second job's payload, not the first's
    assert {pid for _, pid, _ in second} <= warm  # no new process: the warm ones did the work
    assert _pids(remote_executor) == warm
    builds_first = {(pid, build) for _, pid, build in first}
    builds_second = {(pid, build) for _, pid, build in second}
    assert not {b for _, b in builds_first} & {
        b for _, b in builds_second
    }  # rebuilt per job, same key or not
    per_pid: dict[int, set[str]] = {}
    for pid, build in builds_second:
        per_pid.setdefault(pid, set()).add(build)
    assert all(len(b) == 1 for b in per_pid.values())  # once per worker and job


def test_a_worker_holds_only_its_current_jobs_state(remote_executor: Executor) -> None:
    list(remote_executor.map_chunks(tasks.square, range(4), shared=Shared("bank-a-model", 1, tasks.identity)))
    out = list(
        remote_executor.map_chunks(
            tasks.held_keys, range(6), shared=Shared("bank-b-model", 2, tasks.identity)
        )
    )
    for _, keys in out:
        assert len(keys) == 1 and keys[0].startswith("bank-b-model/")  # bank A's model is gone
    assert len({keys[0] for _, keys in out}) == 1  # one key for the whole job
    assert remote_executor.worker_state_keys() == [[]] * remote_executor.workers


def _end_by_cancel(executor: Executor, tmp_path: Path) -> None:
    cancel = threading.Event()

    def progress(done: int, _total: int) -> None:
        cancel.set()

    shared = Shared("psi-server-key", str(tmp_path), tasks.identity)
    list(executor.map_chunks(tasks.hold, range(4), shared=shared, cancel_event=cancel, on_progress=progress))


@pytest.mark.parametrize("ending", ["normal", "error", "cancel", "abandoned"])
def test_a_jobs_state_is_dropped_from_every_worker_however_the_job_ends(
    remote_executor: Executor, tmp_path: Path, ending: str
) -> None:
    shared = Shared("psi-server-key", 7, tasks.identity)
    if ending == "normal":
        assert list(remote_executor.map_chunks(tasks.square, range(5), shared=shared)) == [0, 1, 4, 9, 16]
    elif ending == "error":
        with pytest.raises(ChunkFailed, match="chunk 3"):
            list(remote_executor.map_chunks(tasks.fail_on_three_slowly, range(8), shared=shared))
    elif ending == "cancel":
        with pytest.raises(JobCancelled):
            _end_by_cancel(remote_executor, tmp_path)
    else:  # the caller stops iterating after one result
        it = remote_executor.map_chunks(tasks.jittered_square, range(10), shared=shared)
        assert next(it) == 0
        it.close()  # type: ignore[attr-defined]
    held = remote_executor.worker_state_keys()
    assert all(
        keys == [] for keys in held
    )  # every worker still running holds nothing (busy ones were stopped)
    if ending == "normal":
        assert len(held) == remote_executor.workers
    # the next job (on the surviving workers and any replacements) sees only its own state
    out = list(
        remote_executor.map_chunks(tasks.held_keys, range(4), shared=Shared("next", 0, tasks.identity))
    )
    assert all(len(keys) == 1 and keys[0].startswith("next/") for _, keys in out)


def test_a_closed_executor_stops_its_warm_workers(remote_executor: Executor) -> None:
    from tests.pps.infra.executor.test_contract import _alive

    list(remote_executor.map_chunks(tasks.square, range(4)))
    pids = _pids(remote_executor)
    assert pids
    remote_executor.close()
    import time

    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def test_two_jobs_at_once_share_the_warm_workers_one_at_a_time(remote_executor: Executor) -> None:
    results: dict[str, list[int]] = {}

    def job(name: str, offset: int) -> None:
        shared = Shared(name, offset, tasks.build_tagged)
        results[name] = [x for x, _, _ in remote_executor.map_chunks(tasks.tag, range(6), shared=shared)]

    threads = [threading.Thread(target=job, args=(f"job-{k}", 10 * k)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {f"job-{k}": [10 * k + x for x in range(6)] for k in range(3)}
    assert remote_executor.worker_state_keys() == [[]] * remote_executor.workers


def test_the_in_process_backend_has_no_workers_to_hold_state() -> None:
    ex = LocalExecutor(1)
    assert list(ex.map_chunks(tasks.square, range(3))) == [0, 1, 4]
    assert ex.worker_state_keys() == []
