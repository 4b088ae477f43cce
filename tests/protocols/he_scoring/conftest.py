"""Fixtures of the encrypted-scoring tests: two banks, a checked context, data and a logistic model."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from protocols.he_scoring import (
    BankScoringKey,
    EncryptedModelMessage,
    LoadedModel,
    PublicScoringContext,
    check_public_context,
    load_model,
    shutdown_checker,
)
from tests.protocols.he_scoring.common import N_FEATURES, SLOTS


@pytest.fixture(scope="module", autouse=True)
def _stop_checker() -> Iterator[None]:
    yield
    shutdown_checker()


@pytest.fixture(scope="module")
def bank() -> BankScoringKey:
    return BankScoringKey.create()


@pytest.fixture(scope="module")
def other_bank() -> BankScoringKey:
    return BankScoringKey.create()


@pytest.fixture(scope="module")
def context(bank: BankScoringKey) -> PublicScoringContext:
    return check_public_context(bank.public_context_bytes())


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray, float, np.ndarray]:
    rng = np.random.default_rng(20240601)
    names = [f"feature_{i:02d}" for i in range(N_FEATURES)]
    weights = rng.normal(0.0, 0.4, N_FEATURES)
    x = rng.normal(0.0, 1.0, (9000, N_FEATURES))
    x[:, 5] = rng.integers(0, 2, 9000)  # a binary column
    x[2 * SLOTS :, 7] = 0.0  # all zero in the second block: its plaintext is skipped
    return names, weights, -0.8, x


@pytest.fixture(scope="module")
def model_message(bank: BankScoringKey, data) -> EncryptedModelMessage:
    names, weights, bias, _ = data
    return bank.encrypt_model(dict(zip(names, weights, strict=True)), bias)


@pytest.fixture(scope="module")
def model_bytes(model_message: EncryptedModelMessage) -> bytes:
    return model_message.to_bytes()


@pytest.fixture(scope="module")
def loaded(context, model_bytes) -> LoadedModel:
    return load_model(context, model_bytes)
