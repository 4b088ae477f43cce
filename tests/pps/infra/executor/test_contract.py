"""One contract, every backend (``conftest.executor``: in-process, process pool, Ray)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pps.errors import InvalidInput, JobCancelled
from pps.infra.executor import ChunkFailed, Executor, LocalExecutor, Shared, WorkerLost
from tests.pps.infra.executor import tasks


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited: it is only waiting for its parent to read its status
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


def test_results_come_back_in_chunk_order(executor: Executor) -> None:
    out = list(executor.map_chunks(tasks.jittered_square, range(12), max_in_flight=4))
    assert out == [x * x for x in range(12)]


def test_an_empty_job_yields_nothing(executor: Executor) -> None:
    progress: list[tuple[int, int]] = []
    assert list(executor.map_chunks(tasks.square, [], on_progress=lambda d, t: progress.append((d, t)))) == []
    assert progress == []


def test_shared_state_is_built_once_per_worker_not_per_chunk(executor: Executor) -> None:
    shared = Shared("job-1", 100, tasks.build_tagged)
    out = list(executor.map_chunks(tasks.tag, range(10), shared=shared))
    assert [x for x, _, _ in out] == list(range(100, 110))  # the payload arrived
    builds_by_pid: dict[int, set[str]] = {}
    for _, pid, build in out:
        builds_by_pid.setdefault(pid, set()).add(build)
    assert all(len(b) == 1 for b in builds_by_pid.values())  # one build per worker process
    assert len(builds_by_pid) <= executor.workers
    if executor.in_process:
        assert set(builds_by_pid) == {os.getpid()}
    else:
        assert os.getpid() not in builds_by_pid


def test_the_inline_backend_uses_the_coordinators_state_and_never_builds() -> None:
    state = {"pid": os.getpid(), "build": "local", "offset": 1}
    shared = Shared("job-2", None, tasks.build_broken, local=state)
    assert list(LocalExecutor(1).map_chunks(tasks.tag, [1, 2], shared=shared)) == [
        (2, os.getpid(), "local"),
        (3, os.getpid(), "local"),
    ]


def test_the_local_state_is_not_shipped_to_workers() -> None:
    import pickle

    shared = Shared("k", 1, tasks.build_tagged, local={"secret": "stays here"})
    assert b"stays here" not in pickle.dumps(shared)
    assert pickle.loads(pickle.dumps(shared)).local is None


def test_back_pressure_bounds_the_chunks_in_flight(executor: Executor) -> None:
    bound = 3
    taken = [0]
    consumed = [0]
    worst = [0]

    def chunks() -> Iterator[int]:
        for x in range(20):
            worst[0] = max(worst[0], taken[0] - consumed[0])
            taken[0] += 1
            yield x

    for result in executor.map_chunks(tasks.jittered_square, chunks(), max_in_flight=bound, total=20):
        assert result == consumed[0] ** 2
        consumed[0] += 1
        time.sleep(0.01)  # a slow consumer: the producer must wait for it
    assert consumed[0] == 20
    # taken - consumed is counted before the next chunk is taken: it never reached the bound
    assert worst[0] <= bound - 1 if not executor.in_process else worst[0] == 0
    assert taken[0] == 20


def test_progress_reports_chunks_done_of_total(executor: Executor) -> None:
    progress: list[tuple[int, int]] = []
    out = list(executor.map_chunks(tasks.square, range(7), on_progress=lambda d, t: progress.append((d, t))))
    assert len(out) == 7
    assert [d for d, _ in progress] == list(range(1, 8))
    assert {t for _, t in progress} == {7}


def test_progress_of_a_generator_uses_the_total_given(executor: Executor) -> None:
    progress: list[tuple[int, int]] = []
    gen = (x for x in range(5))
    list(executor.map_chunks(tasks.square, gen, total=5, on_progress=lambda d, t: progress.append((d, t))))
    assert progress[-1] == (5, 5)


def test_an_exception_in_a_chunk_surfaces_as_a_clear_error(executor: Executor) -> None:
    with pytest.raises(
        ChunkFailed, match=r"chunk 3 failed in a worker: ValueError: chunk three is malformed"
    ):
        list(executor.map_chunks(tasks.fail_on_three, range(6), max_in_flight=2))


def test_a_pps_error_in_a_chunk_keeps_its_type_and_message(executor: Executor) -> None:
    with pytest.raises(InvalidInput, match="chunk two names an unknown feature"):
        list(executor.map_chunks(tasks.refuse_on_two, range(5)))


def test_a_failing_build_surfaces_as_a_clear_error(executor: Executor) -> None:
    with pytest.raises(ChunkFailed, match="KeyError: 'the shared state cannot be built'"):
        list(executor.map_chunks(tasks.square, range(3), shared=Shared("b", None, tasks.build_broken)))


def test_bad_arguments_are_refused(executor: Executor) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        executor.map_chunks(tasks.square, range(3), max_in_flight=0)
    with pytest.raises(TypeError, match="fn"):
        executor.map_chunks(42, range(3))  # type: ignore[arg-type]


def test_cancellation_from_progress_stops_the_job(executor: Executor) -> None:
    seen: list[int] = []

    def progress(done: int, _total: int) -> None:
        seen.append(done)
        if done == 2:
            raise JobCancelled("job j was cancelled")

    with pytest.raises(JobCancelled):
        list(executor.map_chunks(tasks.square, range(50), on_progress=progress, max_in_flight=2))
    assert seen[-1] == 2


def test_cancellation_stops_the_workers(remote_executor: Executor, tmp_path: Path) -> None:
    cancel = threading.Event()
    results: list[int] = []

    def consume() -> None:
        results.extend(
            remote_executor.map_chunks(
                tasks.hold, range(4), shared=Shared("h", str(tmp_path), tasks.identity), cancel_event=cancel
            )
        )

    errors: list[BaseException] = []

    def run() -> None:
        try:
            consume()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("pid-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(p.name.split("-")[1]) for p in tmp_path.glob("pid-*")]
    assert len(pids) == 2  # both workers hold a chunk
    started = time.monotonic()
    cancel.set()
    thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - started < 15  # not the 60 s the chunks would hold
    assert len(errors) == 1 and isinstance(errors[0], JobCancelled)
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)  # the workers were stopped, not left running


def test_cancellation_inline_stops_between_chunks() -> None:
    cancel = threading.Event()
    out = []

    def consume() -> None:
        for r in LocalExecutor(1).map_chunks(tasks.square, range(10), cancel_event=cancel):
            out.append(r)
            if len(out) == 3:
                cancel.set()

    with pytest.raises(JobCancelled):
        consume()
    assert out == [0, 1, 4]


def test_a_worker_killed_mid_chunk_is_replaced_and_its_chunk_retried(
    remote_executor: Executor, tmp_path: Path
) -> None:
    out = list(
        remote_executor.map_chunks(
            tasks.kill_once, range(6), shared=Shared("k", str(tmp_path), tasks.identity)
        )
    )
    assert out == [x * 10 for x in range(6)]  # every chunk once, in order, the killed one included
    assert (tmp_path / "killed").exists()
    assert len(list(tmp_path.glob("attempt-2-*"))) == 2  # chunk 2 ran twice: killed, then retried


def test_a_chunk_that_keeps_killing_its_workers_fails_the_job_cleanly(
    remote_executor: Executor, tmp_path: Path
) -> None:
    with pytest.raises(WorkerLost, match="chunk 1 was lost 2 times") as info:
        list(
            remote_executor.map_chunks(
                tasks.kill_always, range(4), shared=Shared("a", str(tmp_path), tasks.identity)
            )
        )
    assert info.value.code == "worker_lost"
    assert len(list(tmp_path.glob("attempt-*"))) == 2  # max_retries=1: the first attempt and one retry


def test_executors_refuse_bad_settings() -> None:
    from pps.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="workers"):
        LocalExecutor(0)
    with pytest.raises(ConfigurationError, match="max_retries"):
        LocalExecutor(2, max_retries=-1)
