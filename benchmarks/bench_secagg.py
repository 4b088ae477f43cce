"""Secure aggregation vs plaintext averaging: 10 banks x 10^4 parameters per round, with and without drop-outs.

A whole secure round (every bank's key generation, Shamir sharing and share encryption, masking, and the
server's unmasking) against a plaintext FedAvg of the same updates, in the same run; median of several runs.

    .venv/bin/python benchmarks/bench_secagg.py
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from pps_wire.federated import fedavg
from protocols.secagg import RoundInfo, SecAggClient, SecAggParams, SecAggServer

BANKS, DIM, RUNS = 10, 10_000, 7


def secure_round(
    updates: list[np.ndarray], counts: list[int], dropped: set[int], round_no: int
) -> np.ndarray:
    n = len(updates)
    info = RoundInfo("fed_bench", round_no, SecAggParams(n=n, threshold=6, dim=DIM, clip_norm=10.0))
    srv = SecAggServer(info)
    cl = {i: SecAggClient(info, i) for i in range(1, n + 1)}
    for c in cl.values():
        srv.receive(c.advertise_keys())
    srv.close_stage()
    for i, c in cl.items():
        srv.receive(c.share_keys(srv.outbox(i)))
    srv.close_stage()
    for i, c in cl.items():
        if i not in dropped:  # these banks go away after sharing their keys
            srv.receive(c.masked_input(srv.outbox(i), updates[i - 1], counts[i - 1]))
    srv.close_stage()
    for i, c in cl.items():
        if i not in dropped:
            srv.receive(c.unmask(srv.outbox(i)))
    srv.close_stage()
    total, weight = srv.aggregate()
    return total / weight


def main() -> None:
    rng = np.random.default_rng(0)
    updates = [rng.normal(0, 0.01, DIM) for _ in range(BANKS)]
    counts = [int(c) for c in rng.integers(1000, 20000, BANKS)]
    rows = []
    for label, dropped in (("no drop-outs", set()), ("3 of 10 drop out", {2, 5, 9})):
        keep = [i for i in range(BANKS) if i + 1 not in dropped]
        plain, secure = [], []
        for r in range(RUNS):
            t = time.perf_counter()
            want = fedavg([updates[i] for i in keep], [counts[i] for i in keep])
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            got = secure_round(updates, counts, dropped, r + 1)
            secure.append(time.perf_counter() - t)
            assert np.max(np.abs(got - want)) < 1e-4
        p, s = statistics.median(plain), statistics.median(secure)
        rows.append((label, p, s))
    print(
        f"secure aggregation, {BANKS} banks x {DIM} parameters, median of {RUNS} runs (whole round, one process)"
    )
    print(f"{'case':<18} {'plaintext FedAvg':>17} {'secure round':>13} {'ratio':>8}")
    for label, p, s in rows:
        print(f"{label:<18} {p * 1e3:>14.2f} ms {s * 1e3:>10.1f} ms {s / p:>7.0f}x")


if __name__ == "__main__":
    main()
