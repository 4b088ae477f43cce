"""A bank's half (``protocols.secagg.client``): bad updates are refused before anything is sent, tampered shares
do not authenticate, and a bank does not help unmask a sum of two."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.secagg import (
    InvalidSecAggMessage,
    SecAggAborted,
    Stage,
)
from tests.protocols.secagg.common import DIM, advertised, inputs, make_round, run_to


def test_wrong_shape_nan_and_inf_are_refused_before_anything_is_sent() -> None:
    srv, cl, xs, ws = advertised()
    c = cl[1]
    for bad in (
        np.zeros(DIM + 1),
        np.zeros((DIM, 1)),
        np.r_[np.zeros(DIM - 1), np.nan],
        np.r_[np.zeros(DIM - 1), np.inf],
    ):
        with pytest.raises(InvalidSecAggMessage):
            c.masked_input(srv.outbox(1), bad, 1)
    with pytest.raises(InvalidSecAggMessage, match="weight"):
        c.masked_input(srv.outbox(1), xs[1], 0)
    assert c.stage is Stage.MASKED_INPUT  # nothing changed: it can still send a good one
    srv.receive(c.masked_input(srv.outbox(1), xs[1], ws[1]))


def test_a_tampered_share_ciphertext_does_not_authenticate() -> None:
    srv, cl, xs, ws = advertised()
    inbox = bytearray(srv.outbox(2))
    inbox[-1] ^= 1
    with pytest.raises(InvalidSecAggMessage, match="does not authenticate"):
        cl[2].masked_input(bytes(inbox), xs[2], ws[2])


def test_a_bank_refuses_to_help_unmask_a_sum_of_two() -> None:
    """A server that announces two survivors gets no unmasking shares from them (defence in depth)."""
    from protocols.secagg import survivors_frame

    srv, cl = make_round(n=3, t=2)
    xs, ws = inputs(3)
    run_to(srv, cl, Stage.UNMASK, xs, ws)
    forged = survivors_frame(srv.info, {1, 2, 3}, {1, 2})
    with pytest.raises(SecAggAborted, match="a round needs 3"):
        cl[1].unmask(forged)
    assert cl[1].stage is Stage.UNMASK  # nothing was sent; the genuine frame still works
    srv.receive(cl[1].unmask(srv.outbox(1)))
