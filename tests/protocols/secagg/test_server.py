"""The server's half (``protocols.secagg.server``): the sum is right, drop-outs are survived, a round of fewer than
three aborts, what the server sees does not reveal a single update, and bad or replayed messages change nothing."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from protocols.secagg import (
    MODULUS,
    InvalidSecAggMessage,
    SecAggAborted,
    SecAggClient,
    SecAggStageError,
    Stage,
    dequantise,
    shamir_combine,
)
from tests.protocols.secagg.common import DIM, _masked_frame, advertised, expected, inputs, make_round, run_to


@pytest.mark.parametrize(
    "drop",
    [
        {},
        {
            Stage.MASKED_INPUT: {2}
        },  # shared keys, then left: its pairwise masks are removed via its key shares
        {Stage.SHARE_KEYS: {5}, Stage.MASKED_INPUT: {1}},
        {Stage.UNMASK: {3, 4}},  # sent its input, then left: still counted, 3 unmaskers suffice
    ],
)
def test_the_sum_is_the_weighted_sum_of_the_banks_that_sent_inputs(drop: dict[Stage, set[int]]) -> None:
    srv, cl = make_round()
    xs, ws = inputs(5)
    run_to(srv, cl, Stage.DONE, xs, ws, drop)
    total, weight = srv.aggregate()
    senders = set(cl) - drop.get(Stage.SHARE_KEYS, set()) - drop.get(Stage.MASKED_INPUT, set())
    assert srv.u3 == senders
    assert weight == sum(ws[i] for i in senders)
    # stochastic rounding: each coordinate is off by less than one quantum per bank
    quantum = 10.0 / srv.params.levels
    assert np.max(np.abs(total - expected(xs, ws, senders))) <= quantum * sum(ws[i] for i in senders)


def test_below_threshold_the_round_aborts_at_any_stage() -> None:
    srv, cl = make_round()
    xs, ws = inputs(5)
    with pytest.raises(SecAggAborted, match="threshold is 3"):
        run_to(srv, cl, Stage.DONE, xs, ws, {Stage.MASKED_INPUT: {1, 2, 3}})
    srv, cl = make_round()
    with pytest.raises(SecAggAborted, match="UNMASK"):
        run_to(srv, cl, Stage.DONE, xs, ws, {Stage.UNMASK: {1, 2, 3}})
    assert srv.stage is Stage.UNMASK  # not done: no aggregate can be asked for
    with pytest.raises(SecAggStageError, match="not done"):
        srv.aggregate()


@pytest.mark.parametrize("stage", [Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS, Stage.MASKED_INPUT])
def test_no_aggregate_over_two_banks_even_when_the_threshold_allows_it(stage: Stage) -> None:
    """n=3, t=2: a round left with two banks aborts. Otherwise either survivor, knowing its own weighted update,
    would subtract it from the published sum and get the other's exactly."""
    srv, cl = make_round(n=3, t=2)
    xs, ws = inputs(3)
    with pytest.raises(SecAggAborted, match="at least 3 banks") as err:
        run_to(srv, cl, Stage.DONE, xs, ws, {stage: {3}})
    assert err.value.details["min_survivors"] == 3 and err.value.details["remaining"] == 2
    assert srv.stage is stage  # the stage was not closed: no survivor set, no aggregate
    with pytest.raises(SecAggStageError, match="not done"):
        srv.aggregate()


def test_three_survivors_finish_even_if_one_leaves_before_unmasking() -> None:
    """Unmasking needs only ``threshold`` responses; the sum is over the three survivors."""
    srv, cl = make_round(n=3, t=2)
    xs, ws = inputs(3)
    run_to(srv, cl, Stage.DONE, xs, ws, {Stage.UNMASK: {3}})
    total, weight = srv.aggregate()
    assert srv.u3 == {1, 2, 3} and weight == sum(ws.values())
    quantum = 10.0 / srv.params.levels
    assert np.max(np.abs(total - expected(xs, ws, {1, 2, 3}))) <= quantum * weight


def test_a_masked_input_looks_uniform_to_the_server() -> None:
    """A chi-square test on the top bits of one bank's masked vector, whose input is all zeros."""
    dim = 20_000
    srv, cl = make_round(n=3, t=2, dim=dim)
    xs = {i: np.zeros(dim) for i in cl}
    run_to(srv, cl, Stage.UNMASK, xs, dict.fromkeys(cl, 1))
    y = srv.masked[1][:-1]
    buckets = np.bincount((y >> np.uint64(56)).astype(np.int64), minlength=64)  # 6 top bits of 62
    chi2 = float(np.sum((buckets - dim / 64) ** 2 / (dim / 64)))
    assert chi2 < 120  # 63 degrees of freedom: p < 1e-5 above ~120
    # ... and it is not the input: the quantised zero vector is all zeros but for the weight
    assert np.count_nonzero(y) > dim - 5


def test_the_server_cannot_unmask_a_survivor_with_only_its_self_mask_shares() -> None:
    """The server gets b-shares for survivors and key-shares for the dropped only: removing the self mask of
    one survivor leaves its pairwise masks in place, so its input stays hidden."""
    srv, cl = make_round(n=3, t=2)
    xs, ws = inputs(3)
    run_to(srv, cl, Stage.DONE, xs, ws)
    um = srv.unmasks[1]
    assert set(um.sk_shares) == set()  # nobody dropped: no mask key was revealed
    from protocols.secagg.masks import commit, self_mask  # the server's own knowledge

    b = shamir_combine({i: m.b_shares[1] for i, m in srv.unmasks.items()}, 2).to_bytes(32, "big")
    assert commit(srv.info.session, b) == srv.shares[1].commitment
    partial = (srv.masked[1] - self_mask(b, srv.info.session, DIM + 1)) & np.uint64(MODULUS - 1)
    with pytest.raises(InvalidSecAggMessage):
        dequantise(partial, srv.params)  # still masked: far out of the range of any real update


def test_out_of_range_field_elements_and_wrong_lengths_are_refused() -> None:
    srv, _, _, _ = advertised()
    bad = np.zeros(DIM + 1, dtype=np.uint64)
    bad[3] = np.uint64(MODULUS)
    with pytest.raises(InvalidSecAggMessage, match="outside the field"):
        srv.receive(_masked_frame(srv, 1, bad))
    with pytest.raises(InvalidSecAggMessage, match="expected"):
        srv.receive(_masked_frame(srv, 1, np.zeros(DIM, dtype=np.uint64)))
    with pytest.raises(InvalidSecAggMessage, match="truncated"):
        srv.receive(_masked_frame(srv, 1, np.zeros(DIM + 1, dtype=np.uint64))[:-3])
    assert srv.masked == {}


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda f: b"XXXX" + f[4:], InvalidSecAggMessage),
        (lambda f: f[:4] + b"\x09" + f[5:], InvalidSecAggMessage),
        (lambda f: f[:5] + b"\x63" + f[6:], InvalidSecAggMessage),
        (lambda f: f[:10], InvalidSecAggMessage),
        (lambda f: f + b"\x00", InvalidSecAggMessage),
        (lambda f: f[:6] + struct.pack(">I", 2) + f[10:], SecAggStageError),  # claims another round
        (lambda f: f[:10] + bytes(32) + f[42:], SecAggStageError),  # another federation's session
        (lambda f: f[:42] + struct.pack(">H", 9) + f[44:], SecAggStageError),  # a bank not in the round
    ],
)
def test_malformed_frames_get_clear_errors(mutate: object, error: type[Exception]) -> None:
    srv, cl = make_round()
    frame = cl[1].advertise_keys()
    with pytest.raises(error):
        srv.receive(mutate(frame))  # type: ignore[operator]
    assert srv.adverts == {}
    srv.receive(frame)


def test_replays_of_an_earlier_round_or_stage_are_refused() -> None:
    _srv1, cl1 = make_round(round_no=1)
    old = cl1[1].advertise_keys()
    srv2, cl2 = make_round(round_no=2)
    with pytest.raises(SecAggStageError, match="round 1, the current round is 2"):
        srv2.receive(old)
    frame = cl2[1].advertise_keys()
    srv2.receive(frame)
    with pytest.raises(SecAggStageError, match="already sent"):
        srv2.receive(frame)
    for i in range(2, 6):
        srv2.receive(cl2[i].advertise_keys())
    srv2.close_stage()
    with pytest.raises(SecAggStageError, match="not accepted now"):
        srv2.receive(frame)


def test_a_bank_that_dropped_cannot_come_back_later_in_the_round() -> None:
    srv, cl = make_round()
    xs, ws = inputs(5)
    run_to(srv, cl, Stage.MASKED_INPUT, xs, ws, {Stage.SHARE_KEYS: {4}})
    with pytest.raises(SecAggStageError):
        srv.outbox(4)
    other = SecAggClient(srv.info, 4)
    fake = _masked_frame(srv, 4, np.zeros(DIM + 1, dtype=np.uint64))
    with pytest.raises(SecAggStageError, match="not among the banks"):
        srv.receive(fake)
    assert other.stage is Stage.ADVERTISE_KEYS
