"""What secure aggregation can and cannot check about a malicious bank's input, and the exact tail.

The attack of issue 24: a bank adds ``K = n * max_weight * levels / 2`` to one coordinate of its masked input.
The unmasked sum still decodes (it is within the range check), but no honest, clipped inputs can make a sum that
long: the round is refused instead of publishing a model moved by +419,430 on that coordinate. (What secure
aggregation cannot check — a bank that stays inside the clip ball or overstates its weight — is why the
enclave mode exists: ``tests/enclave_sim/test_fedavg_aggregate.py``.)"""

from __future__ import annotations

import numpy as np
import pytest

from protocols.secagg import (
    InvalidSecAggMessage,
    RoundInfo,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    Stage,
    dequantise_tail,
    quantise,
)
from protocols.secagg.messages import _parse_masked
from protocols.secagg.params import FIELD_MASK
from tests.protocols.secagg.common import _masked_frame, run_to


def _round(n: int = 4, tail: int = 0) -> tuple[SecAggServer, dict[int, SecAggClient]]:
    info = RoundInfo("fed_poison", 1, SecAggParams(n=n, threshold=3, dim=5, clip_norm=5.0, tail=tail))
    return SecAggServer(info), {i: SecAggClient(info, i) for i in range(1, n + 1)}


def test_the_issue_poisoning_payload_is_refused_not_published() -> None:
    srv, cl = _round()
    rng = np.random.default_rng(0)
    xs = {i: rng.normal(0, 0.2, 5) for i in cl}
    ws = dict.fromkeys(cl, 100)
    run_to(srv, cl, Stage.MASKED_INPUT, xs, ws)
    p = srv.params
    for i, c in cl.items():
        frame = c.masked_input(srv.outbox(i), xs[i], ws[i])
        if i == 3:  # the malicious bank adds K to coordinate 0 of its masked input
            _, y = _parse_masked(srv.info, frame)
            y = y.copy()
            y[0] = (y[0] + np.uint64(p.n * p.max_weight * p.levels // 2)) & FIELD_MASK
            frame = _masked_frame(srv, 3, y)
        srv.receive(frame)
    srv.close_stage()
    for i, c in cl.items():
        srv.receive(c.unmask(srv.outbox(i)))
    srv.close_stage()
    with pytest.raises(InvalidSecAggMessage, match="longer than clipped updates can make"):
        srv.aggregate()


def test_honest_rounds_pass_the_norm_check_even_when_every_update_is_clipped() -> None:
    srv, cl = _round()
    xs = {
        i: np.full(5, 100.0) for i in cl
    }  # all clipped to 5, all the same direction: the longest honest sum
    ws = dict.fromkeys(cl, 1 << 24)
    run_to(srv, cl, Stage.DONE, xs, ws)
    total, weight = srv.aggregate()
    assert weight == 4 << 24
    assert np.linalg.norm(total / weight) == pytest.approx(5.0, rel=1e-6)


def test_the_tail_sums_exactly_over_survivors_with_a_dropout() -> None:
    srv, cl = _round(n=5, tail=3)
    rng = np.random.default_rng(1)
    xs = {i: rng.normal(size=5) for i in cl}
    ws = dict.fromkeys(cl, 7)
    tails = {i: [int(v) for v in rng.integers(-(2**62), 2**62, 3)] for i in cl}
    tails[2] = [2**89 - 1, -(2**89) + 1, 0]  # the largest magnitudes a bank may send
    for s in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.UNMASK):
        for i, c in cl.items():
            if i == 5 and s >= Stage.MASKED_INPUT:
                continue  # bank 5 drops out after sharing its keys
            if s is Stage.ADVERTISE_KEYS:
                srv.receive(c.advertise_keys())
            elif s is Stage.SHARE_KEYS:
                srv.receive(c.share_keys(srv.outbox(i)))
            elif s is Stage.MASKED_INPUT:
                srv.receive(c.masked_input(srv.outbox(i), xs[i], ws[i], tail=tails[i]))
            else:
                srv.receive(c.unmask(srv.outbox(i)))
        srv.close_stage()
    srv.aggregate()
    assert srv.tail_total == [sum(tails[i][j] for i in (1, 2, 3, 4)) for j in range(3)]


def test_tail_values_out_of_range_or_miscounted_are_refused_before_sending() -> None:
    p = SecAggParams(n=3, threshold=2, dim=2, clip_norm=1.0, tail=2)
    with pytest.raises(InvalidSecAggMessage, match="below 2"):
        quantise([0.0, 0.0], 1, p, tail=[2**90, 0])
    with pytest.raises(InvalidSecAggMessage, match="carries 2 exact"):
        quantise([0.0, 0.0], 1, p, tail=[1])
    q = quantise([0.0, 0.0], 1, p, tail=[-5, 2**70 + 3])
    assert dequantise_tail(q, p) == [-5, 2**70 + 3]
