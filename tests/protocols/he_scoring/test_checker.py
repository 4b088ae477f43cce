"""The isolated checker (``protocols.he_scoring.checker`` on ``protocols.he_isolation``): a crashing or hanging
checker is contained and its failures become clear errors."""

from __future__ import annotations

import pytest

from protocols.errors import InvalidParameters, ProtocolError
from protocols.he_isolation import IsolatedWorker, WorkerCrashed, WorkerRefused, WorkerTimeout
from protocols.he_scoring import (
    InvalidCiphertext,
    InvalidContext,
    check_public_context,
    load_model,
)


@pytest.mark.slow
def test_a_crashing_or_hanging_checker_is_contained() -> None:
    with IsolatedWorker("protocols.he_isolation", timeout_s=5, memory_limit_bytes=1024**3) as worker:
        assert worker.call("selftest_echo", {"a": 1}, [b"xy", b""]) == {"args": {"a": 1}, "lengths": [2, 0]}
        first = worker.pid
        with pytest.raises(WorkerCrashed) as crashed:
            worker.call("selftest_abort")
        assert crashed.value.exitcode == -6  # SIGABRT, in the child only
        assert worker.call("selftest_echo") == {"args": {}, "lengths": []}
        assert worker.pid != first
        with pytest.raises(WorkerTimeout):
            worker.call("selftest_hang", {"seconds": 60}, timeout_s=0.5)
        with pytest.raises(WorkerRefused) as refused:
            worker.call("selftest_allocate", {"bytes": 4 * 1024**3})
        assert refused.value.error_type == "MemoryError"
        with pytest.raises(WorkerRefused, match="no"):
            worker.call("selftest_raise", {"message": "no"})
        assert worker.call("selftest_echo", {"b": 2}) == {"args": {"b": 2}, "lengths": []}
        assert worker.restarts == 4


class CrashingChecker(IsolatedWorker):
    def __init__(self, error: Exception) -> None:
        super().__init__("protocols.he_isolation")
        self.error = error

    def call(self, *args, **kwargs):  # type: ignore[override]
        raise self.error


@pytest.mark.parametrize(
    ("error", "match"),
    [
        (WorkerCrashed("died", exitcode=-11), "crashed the isolated checker"),
        (WorkerTimeout("slow"), "took more than"),
        (WorkerRefused("bad bytes", error_type="ValueError"), "cannot be read"),
    ],
)
def test_checker_failures_become_clear_errors(bank, context, model_bytes, error, match) -> None:
    checker = CrashingChecker(error)
    with pytest.raises(InvalidContext, match=match):
        check_public_context(bank.public_context_bytes(), worker=checker)
    with pytest.raises(InvalidCiphertext, match=match):
        load_model(context, model_bytes, worker=checker)


def test_the_isolation_errors_are_protocol_errors_with_codes() -> None:
    assert isinstance(WorkerCrashed("x", exitcode=1), ProtocolError)
    assert WorkerTimeout("x").code == "isolated_worker_timeout"
    with pytest.raises(InvalidParameters) as raised:
        IsolatedWorker("protocols.he_isolation", timeout_s=0)
    assert raised.value.code == "invalid_parameters"
