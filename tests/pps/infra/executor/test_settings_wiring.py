"""``PPS_EXECUTOR`` and friends choose the backend the runtime hands to the services."""

from __future__ import annotations

import pydantic
import pytest

from pps.errors import ConfigurationError
from pps.infra.executor import LocalExecutor, RayExecutor, executor_from_settings
from pps.infra.settings import Settings


def test_the_default_runs_in_this_process() -> None:
    ex = executor_from_settings(Settings())
    assert isinstance(ex, LocalExecutor) and ex.in_process and ex.workers == 1


def test_local_workers_make_a_process_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPS_EXECUTOR_WORKERS", "3")
    monkeypatch.setenv("PPS_EXECUTOR_MAX_RETRIES", "4")
    ex = executor_from_settings(Settings())
    assert isinstance(ex, LocalExecutor) and not ex.in_process
    assert (ex.workers, ex.max_retries) == (3, 4)


@pytest.mark.parametrize("address", ["auto", "ray://ray-head.saferoom.internal:10001", "10.0.0.5:6379"])
def test_ray_is_chosen_with_its_address(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setenv("PPS_EXECUTOR", "ray")
    monkeypatch.setenv("PPS_RAY_ADDRESS", address)
    monkeypatch.setenv("PPS_EXECUTOR_WORKERS", "8")
    ex = executor_from_settings(Settings())
    assert isinstance(ex, RayExecutor) and not ex.in_process
    assert ex.address == address and ex.workers == 8  # not connected yet: the first job connects


@pytest.mark.parametrize("address", ["http://head:8265", "ray://", "head", "ray://head:10001/path", ""])
def test_a_malformed_ray_address_is_refused(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    monkeypatch.setenv("PPS_RAY_ADDRESS", address)
    with pytest.raises(pydantic.ValidationError, match="ray_address"):
        Settings()


@pytest.mark.parametrize("workers", ["0", "-1", "100000"])
def test_a_bad_worker_count_is_refused(monkeypatch: pytest.MonkeyPatch, workers: str) -> None:
    monkeypatch.setenv("PPS_EXECUTOR_WORKERS", workers)
    with pytest.raises(pydantic.ValidationError, match="executor_workers"):
        Settings()


def test_an_in_process_executor_has_one_worker() -> None:
    with pytest.raises(ConfigurationError, match="exactly one worker"):
        LocalExecutor(2, processes=False)
    assert not LocalExecutor(1, processes=True).in_process
