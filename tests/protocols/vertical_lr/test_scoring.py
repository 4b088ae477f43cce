"""Scoring with both halves (``protocols.vertical_lr.scoring``): the host's part only under the bank's key."""

from __future__ import annotations

import numpy as np
import pytest

from protocols import paillier_fast as pf
from protocols import vertical_lr as vl
from tests.protocols.vertical_lr.common import KEY_BITS, run, small_data


def test_scoring_needs_both_halves_and_the_banks_key(coordinator_key: pf.PrivateKey) -> None:
    xg, xh, y = small_data()
    report = run(xg, xh, y, coordinator_key, vl.VerticalLRConfig(epochs=2, batch_size=40))
    bank_pk, bank_sk = pf.generate_keypair(KEY_BITS)
    contribution = vl.host_score_contribution(report.host_model, xh[:5], bank_pk)
    msg = vl.decode_message(contribution, bank_pk)
    assert msg.type is vl.MessageType.SCORE_CONTRIBUTION and len(msg.values) == 5
    # no plaintext partial score in the bytes: decrypting needs the bank's key
    partial = report.host_model.partial_logit(xh[:5])
    assert (
        pf.encode_fixed(bank_pk, partial[:1], vl.SCORE_FRAC_BITS)[0].to_bytes(128, "big") not in contribution
    )
    p = vl.guest_score(report.guest_model, xg[:5], contribution, bank_sk)
    z = report.guest_model.partial_logit(xg[:5]) + partial
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z)), atol=1e-9)
    with pytest.raises(vl.InvalidMessage, match="another Paillier key"):
        vl.guest_score(report.guest_model, xg[:5], contribution, coordinator_key)
    with pytest.raises(vl.InvalidTrainingData, match="scored 5 applicants"):
        vl.guest_score(report.guest_model, xg[:4], contribution, bank_sk)
