"""Every process the service starts dies with it, even when the service is killed with SIGKILL.

The probe (``orphan_probe.py``) starts a warm executor pool, the HE isolation worker, the enclave and a busy
PSI-setup pool, each from a thread that ends before the kill (the kernel's parent-death signal is tied to the
starting *thread*: a worker must outlive a short-lived job thread, and still die with the process).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _survivors(pids: set[int], deadline_s: float) -> set[int]:
    end = time.monotonic() + deadline_s
    alive = set(pids)
    while alive and time.monotonic() < end:
        alive = {
            p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        }
        time.sleep(0.1)
    return alive


def test_no_child_survives_a_kill_9_of_its_parent(tmp_path: Path) -> None:
    out = tmp_path / "pids.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'client'}"}
    probe = subprocess.Popen(
        [sys.executable, "-m", "tests.chaos.orphan_probe", str(out)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 120
        while not out.exists() and time.monotonic() < end:
            assert probe.poll() is None, "the probe died before it started its children"
            time.sleep(0.2)
        named = json.loads(out.read_text())
        children = {c.pid for c in psutil.Process(probe.pid).children(recursive=True)}
        # every kind of child runs although the thread that started it has ended
        assert len(named["executor"]) == 2 and set(named["executor"]) <= children
        assert named["isolated"] in children and named["enclave"] in children
        assert any("resource_tracker" in " ".join(psutil.Process(p).cmdline()) for p in children)
        assert len(children) >= 2 + 1 + 1 + 2 + 1  # pool, isolation, enclave, PSI pool, resource tracker
        os.kill(probe.pid, signal.SIGKILL)
        probe.wait(10)
        survivors = _survivors(children, 15)
        for pid in survivors:  # leave nothing behind when the claim fails
            os.kill(pid, signal.SIGKILL)
        assert survivors == set()
    finally:
        if probe.poll() is None:
            os.killpg(probe.pid, signal.SIGKILL)


@pytest.mark.e2e
def test_no_uvicorn_worker_survives_a_kill_9_of_pps_serve(tmp_path: Path) -> None:
    """`pps serve --workers 2`: the supervisor is killed with SIGKILL; its workers must not go on serving."""
    from tests.chaos.test_chaos import free_port

    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'client'}",
        "PPS_DATA_DIR": str(tmp_path / "served"),
        "PPS_CHECKPOINT_INTERVAL_SECONDS": "0",
        "PPS_EXECUTOR_WORKERS": "2",
    }
    env.pop("PPS_DATABASE_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "pps.cli", "serve", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        end = time.monotonic() + 120
        workers: list[psutil.Process] = []
        while time.monotonic() < end:
            assert server.poll() is None
            workers = [
                c
                for c in psutil.Process(server.pid).children()
                if "resource_tracker" not in " ".join(c.cmdline())
            ]
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()["status"] == "ready"
            except (httpx.TransportError, ValueError):
                ready = False
            if ready and len(workers) == 2:
                break
            time.sleep(0.3)
        assert len(workers) == 2
        children = {c.pid for c in psutil.Process(server.pid).children(recursive=True)}
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        survivors = _survivors(children, 15)
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        assert survivors == set()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
