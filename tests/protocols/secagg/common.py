"""Helpers of the secure-aggregation tests: a round of ``n`` banks driven to a stage, their inputs."""

from __future__ import annotations

import struct

import numpy as np

from protocols.secagg import (
    MsgType,
    RoundInfo,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    Stage,
    clip_l2,
    encode_frame,
)

DIM = 50


def make_round(
    n: int = 5, t: int = 3, dim: int = DIM, round_no: int = 1, clip: float = 10.0
) -> tuple[SecAggServer, dict[int, SecAggClient]]:
    info = RoundInfo("fed_test", round_no, SecAggParams(n=n, threshold=t, dim=dim, clip_norm=clip))
    return SecAggServer(info), {i: SecAggClient(info, i) for i in range(1, n + 1)}


def run_to(
    srv: SecAggServer,
    cl: dict[int, SecAggClient],
    stage: Stage,
    xs: dict[int, np.ndarray],
    ws: dict[int, int],
    drop: dict[Stage, set[int]] | None = None,
) -> None:
    """Drive the round up to (not into) ``stage``; ``drop[s]``: banks that do not send at stage s or later."""
    drop = drop or {}
    out: set[int] = set()
    for s in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK):
        if s == stage:
            return
        out |= drop.get(s, set())
        for i, c in cl.items():
            if i in out:
                continue
            if s is Stage.ADVERTISE_KEYS:
                srv.receive(c.advertise_keys())
            elif s is Stage.SHARE_KEYS:
                srv.receive(c.share_keys(srv.outbox(i)))
            elif s is Stage.MASKED_INPUT:
                srv.receive(c.masked_input(srv.outbox(i), xs[i], ws[i]))
            else:
                srv.receive(c.unmask(srv.outbox(i)))
        srv.close_stage()


def inputs(n: int, seed: int = 0, dim: int = DIM) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    rng = np.random.default_rng(seed)
    return {i: rng.normal(size=dim) for i in range(1, n + 1)}, {
        i: int(rng.integers(1, 5000)) for i in range(1, n + 1)
    }


def expected(xs: dict[int, np.ndarray], ws: dict[int, int], who: set[int], clip: float = 10.0) -> np.ndarray:
    return sum((ws[i] * clip_l2(xs[i], clip) for i in who), np.zeros(DIM))


def advertised() -> tuple[SecAggServer, dict[int, SecAggClient], dict[int, np.ndarray], dict[int, int]]:
    srv, cl = make_round()
    xs, ws = inputs(5)
    run_to(srv, cl, Stage.MASKED_INPUT, xs, ws)
    return srv, cl, xs, ws


def _masked_frame(srv: SecAggServer, sender: int, values: np.ndarray) -> bytes:
    body = struct.pack(">I", len(values)) + values.astype(">u8").tobytes()
    return encode_frame(srv.info, MsgType.MASKED_INPUT, sender, body)
