"""The executor contract suite runs every test against each backend: in this process, a local process pool,
and a local Ray instance started here (``ray.init(num_cpus=2)``, once for the package)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import ray

from pps.infra.executor import Executor, LocalExecutor, RayExecutor
from tests.pps.services.scoring.conftest import platform, synth_data, world  # noqa: F401 - the scoring fixtures, reused

RAY_OBJECT_STORE_BYTES = 256 << 20


@pytest.fixture(scope="package")
def ray_instance() -> Iterator[Any]:
    """A local Ray instance with two CPUs, started once for this package's tests (on the first Ray test)
    and shut down after them, so the rest of the suite runs without it."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=RAY_OBJECT_STORE_BYTES,
        log_to_driver=False,
        namespace="pps-tests",
    )
    yield ray
    ray.shutdown()


def make_executor(name: str, request: pytest.FixtureRequest, *, max_retries: int = 2) -> Executor:
    if name == "inline":
        return LocalExecutor(1, max_retries=max_retries)
    if name == "pool":
        return LocalExecutor(2, max_retries=max_retries)
    request.getfixturevalue("ray_instance")
    return RayExecutor(workers=2, max_retries=max_retries)


@pytest.fixture(params=["inline", "pool", pytest.param("ray", marks=pytest.mark.e2e)])
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """Every backend."""
    ex = make_executor(request.param, request)
    yield ex
    ex.close()


@pytest.fixture(params=["pool", pytest.param("ray", marks=pytest.mark.e2e)])
def remote_executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """The backends whose workers are other processes (which can die without taking the coordinator)."""
    ex = make_executor(request.param, request, max_retries=1)
    yield ex
    ex.close()
