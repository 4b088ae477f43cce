"""The bank's half (``protocols.he_scoring.bank``): its plaintext scorecard, its key and what it refuses."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from protocols.errors import InvalidParameters
from protocols.he_scoring import (
    BankScoringKey,
    ForeignCiphertext,
    InvalidCiphertext,
    InvalidContext,
    Scorecard,
    ScorecardFeature,
    score,
)
from tests.protocols.he_scoring.common import (
    make_scorecard,
    truncations,
)


def test_scorecard_bins_in_plaintext() -> None:
    card = make_scorecard()
    row = np.array([[3.0, np.nan, 1.0, 1.0]])
    assert card.points(row)[0] == 600 + 10 - 15 + 7.5 - 35
    with pytest.raises(InvalidParameters, match="missing"):
        card.points(np.array([[np.nan, 0.0, 0.0, 0.0]]))


def test_weak_parameters_cannot_be_created_by_the_sdk() -> None:
    with pytest.raises(InvalidParameters, match="128-bit"):
        BankScoringKey.create(coeff_mod_bit_sizes=(60, 60, 60, 60))
    with pytest.raises(InvalidParameters, match="poly_modulus_degree"):
        BankScoringKey.create(poly_modulus_degree=4096)
    with pytest.raises(TypeError):
        BankScoringKey(None)


def test_a_result_of_another_context_or_model_is_refused_by_the_bank(
    bank, other_bank, context, loaded, model_message, data
) -> None:
    result = score(context, loaded, data[3][:10])
    with pytest.raises(ForeignCiphertext):
        other_bank.decrypt_scores(result)
    other_model = bank.encrypt_model({"a": 1.0}, 0.0)
    with pytest.raises(InvalidCiphertext, match="another model"):
        bank.decrypt_scores(result, model=other_model)
    assert bank.decrypt_scores(result, model=model_message).raw.shape == (10,)


def test_bad_bank_inputs_raise_protocol_errors_with_codes(bank: BankScoringKey) -> None:
    cases = [
        (lambda: bank.encrypt_model({}, 0.0), InvalidParameters),
        (lambda: bank.encrypt_model({"a": math.nan}, 0.0), InvalidParameters),
        (lambda: ScorecardFeature("", edges=(), points=(1.0,)), InvalidParameters),
        (lambda: ScorecardFeature("x", edges=(1.0,), points=(1.0,)), InvalidParameters),
        (lambda: Scorecard(()), InvalidParameters),
        (lambda: BankScoringKey.create(scale_bits=10), InvalidParameters),
        (lambda: BankScoringKey.from_secret_context_bytes(bank.public_context_bytes()), InvalidContext),
        (lambda: bank.decrypt_scores(b"PPHE"), InvalidCiphertext),
    ]
    for call, error in cases:
        with pytest.raises(error) as raised:
            call()
        assert raised.value.code == error.code


def test_random_bytes_and_truncations_of_a_result_are_refused_by_the_bank(
    bank, context, loaded, data
) -> None:
    result = score(context, loaded, data[3][:10]).to_bytes()
    for cut in [b"", os.urandom(64), *truncations(result)]:
        with pytest.raises(InvalidCiphertext):
            bank.decrypt_scores(cut)
