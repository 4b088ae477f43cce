"""Pre-made noise encryptions (``protocols.he_scoring.noise``): a pooled result decrypts to the same scores with
the same noise as one noised inline, each pooled ciphertext is used once, a pool of another context or key is
never used, and workers in other processes make them as well as the calling thread."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.errors import InvalidParameters
from protocols.he_scoring import Packing, check_public_context, load_model, score
from protocols.he_scoring.noise import NoisePool, noise_key
from protocols.parallel import SpawnedProcesses
from tests.protocols.he_scoring.common import SLOTS, TOLERANCE


def test_pooled_noise_gives_the_same_scores_and_noise_as_inline(bank, context, loaded, data) -> None:
    _names, weights, bias, x = data
    pool = NoisePool(context)
    key = noise_key(context, loaded, 0.01)
    assert pool.fill(key, 1) == 1 and pool.available(key) == 1
    result = score(context, loaded, x, noise_std=0.01, noise_pool=pool)
    assert len(result.ciphertexts) == 2
    # the first block took the pooled ciphertext, the second (pool empty) was noised inline
    assert (pool.stats.taken, pool.stats.missed, pool.available(key)) == (1, 1, 0)
    error = bank.decrypt_scores(result).raw - (x @ weights + bias)
    per_block = 2 * SLOTS  # complex packing: two subjects per slot
    for block in (error[:per_block], error[per_block:]):
        assert 0.008 < float(np.std(block)) < 0.012  # N(0, 0.01^2) in both, pooled or not


def test_zero_noise_from_the_pool_is_exact_and_rerandomised(bank, context, loaded, data) -> None:
    _names, weights, bias, x = data
    x = x[:100]
    pool = NoisePool(context)
    key = noise_key(context, loaded, 0.0)
    pool.fill(key, 2)
    first = score(context, loaded, x, noise_std=0.0, noise_pool=pool)
    second = score(context, loaded, x, noise_std=0.0, noise_pool=pool)
    assert pool.stats.taken == 2 and pool.stats.missed == 0
    assert first.ciphertexts[0] != second.ciphertexts[0]  # each pooled encryption used once
    a = bank.decrypt_scores(first).raw
    assert np.max(np.abs(a - (x @ weights + bias))) < TOLERANCE


def test_keys_separate_noise_levels_and_packings(bank, context, loaded) -> None:
    pool = NoisePool(context)
    pool.fill(noise_key(context, loaded, 0.01), 1)
    # the same model with another noise level never takes the 0.01 encryption
    assert pool.take(noise_key(context, loaded, 0.02)) is None
    real = load_model(context, bank.encrypt_model({"a": 1.0}, 0.0, packing=Packing.REAL).to_bytes())
    assert noise_key(context, real, 0.01) != noise_key(context, loaded, 0.01)
    with pytest.raises(InvalidParameters, match="noise_std"):
        noise_key(context, loaded, -1.0)


def test_a_pool_of_another_context_is_refused(other_bank, context, loaded, data) -> None:
    other = NoisePool(check_public_context(other_bank.public_context_bytes()))
    with pytest.raises(InvalidParameters, match="another context"):
        score(context, loaded, data[3][:10], noise_pool=other)


def test_capacity_bounds_the_pool(context, loaded) -> None:
    pool = NoisePool(context, capacity=3)
    key = noise_key(context, loaded, 0.01)
    assert pool.fill(key, 10) == 3
    assert pool.fill(key, 1) == 0 and len(pool) == 3


@pytest.mark.e2e
def test_workers_in_other_processes_make_them(bank, context, loaded, data) -> None:
    _names, weights, bias, x = data
    pool = NoisePool(context)
    key = noise_key(context, loaded, 0.01)
    assert pool.fill(key, 3, executor=SpawnedProcesses(2)) == 3
    result = score(context, loaded, x, noise_std=0.01, noise_pool=pool)  # two blocks
    assert (pool.stats.taken, pool.stats.missed, pool.available(key)) == (2, 0, 1)
    error = bank.decrypt_scores(result).raw - (x @ weights + bias)
    assert 0.008 < float(np.std(error)) < 0.012
