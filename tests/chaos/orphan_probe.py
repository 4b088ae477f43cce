"""A process that starts every kind of child the service starts, each from a thread that then ends, prints their
process ids as one JSON line and waits to be killed. ``test_process_lifetime`` kills it with SIGKILL."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_sim.host import EnclaveHost
from pps.infra.executor import LocalExecutor, Shared
from protocols.he_isolation import IsolatedWorker
from protocols.parallel import SpawnedProcesses
from tests.chaos.tasks import echo, sleep_forever


def in_a_thread(fn: object) -> None:
    """Run ``fn`` in a thread and wait for it to end: a child it starts must outlive the thread."""
    t = threading.Thread(target=fn)  # type: ignore[arg-type]
    t.start()
    t.join()


def main() -> None:
    out = Path(sys.argv[1])
    executor = LocalExecutor(2, processes=True)
    in_a_thread(
        lambda: list(executor.map_chunks(echo, [1, 2, 3, 4], shared=Shared("k", None, build=echo_build)))
    )
    isolated = IsolatedWorker("protocols.he_isolation")
    in_a_thread(lambda: isolated.call("selftest_echo", {"x": 1}))
    enclave = EnclaveHost(vendor_key=Ed25519PrivateKey.generate(), platform_secret=os.urandom(32))
    in_a_thread(enclave.start)
    # a PSI-setup style pool, busy: its call never returns
    threading.Thread(
        target=lambda: list(SpawnedProcesses(2).map_chunks(sleep_forever, [1, 2])), daemon=True
    ).start()
    time.sleep(3)  # the spawned pool processes start
    out.write_text(
        json.dumps(
            {
                "executor": executor.worker_pids(),
                "isolated": isolated.pid,
                "enclave": enclave.pid,
            }
        )
    )
    while True:
        time.sleep(1)


def echo_build(payload: object) -> object:
    return payload


if __name__ == "__main__":
    main()
