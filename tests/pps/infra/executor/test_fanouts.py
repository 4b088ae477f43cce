"""The protocol steps that fan out on an executor give the same results as in this process, on every backend:
vertical-LR encrypted gradients over row blocks and obfuscator pools (``protocols.paillier_fast``,
``protocols.vertical_lr``), and secure-aggregation unmasking (``protocols.secagg``)."""

from __future__ import annotations

import numpy as np
import pytest
from gmpy2 import mpz

from pps.infra.executor import Executor
from protocols import paillier_fast as pf
from protocols import vertical_lr as vl
from protocols.secagg import Stage
from tests.protocols.secagg.common import inputs, make_round, run_to

KEY_BITS = 1024  # test-only size


@pytest.fixture(scope="module")
def key() -> pf.PrivateKey:
    return pf.generate_keypair(KEY_BITS)[1]


def _encrypted(key: pf.PrivateKey, values: np.ndarray) -> list[mpz]:
    pk = key.public_key
    return pf.encrypt_raw(pk, pf.encode_ints(pk, values.tolist()), pf.ObfuscatorPool(pk))


def test_encrypted_column_dots_over_row_blocks_are_the_same_ciphertexts(
    executor: Executor, key: pf.PrivateKey
) -> None:
    rng = np.random.default_rng(3)
    rows = 2 * pf.ROWS_PER_BLOCK + 77  # three blocks on two workers
    m = rng.integers(-1000, 1000, size=rows)
    x = rng.integers(-(2**20), 2**20, size=(rows, 4)).astype(np.int64)
    x[:, 2] = np.abs(x[:, 2])  # one column without negatives (no offset)
    cts = _encrypted(key, m)
    inline = pf.encrypted_column_dots(key.public_key, cts, x)
    fanned = pf.encrypted_column_dots(key.public_key, cts, x, executor=executor)
    assert fanned == inline  # bit for bit
    blocks = pf._column_dots_on_executor(
        key.public_key, cts, x, executor
    )  # the row-block path, whatever backend
    assert blocks == inline
    plain = pf.to_signed(key.public_key, key.decrypt_raw(fanned))
    assert plain == [int(v) for v in m.astype(object) @ x.astype(object)]


@pytest.mark.parametrize("kind", ["short_exponent", "full"])
def test_an_obfuscator_pool_filled_on_the_executor_encrypts_correctly(
    executor: Executor, key: pf.PrivateKey, kind: pf.ObfuscatorKind
) -> None:
    pk = key.public_key
    pool = pf.ObfuscatorPool(pk, kind)
    count = pf.OBFUSCATORS_PER_CHUNK + 40  # two chunks
    pool.fill(count, executor=executor)
    assert len(pool) == count and pool.stats.precomputed == count
    assert len({int(r) for r in pool._pool}) == count  # fresh randomness in every chunk and worker
    values = list(range(-5, count - 5))
    cts = pf.encrypt_raw(pk, pf.encode_ints(pk, values), pool)
    assert pool.stats.on_demand == 0  # every encryption used a precomputed obfuscator
    assert pf.to_signed(pk, key.decrypt_raw(cts)) == values


def test_vertical_training_with_gradients_on_the_executor_gives_the_same_model(
    executor: Executor, key: pf.PrivateKey
) -> None:
    rng = np.random.default_rng(11)
    n = 2 * pf.ROWS_PER_BLOCK + 50
    xg, xh = rng.normal(size=(n, 3)), rng.normal(size=(n, 4))
    y = (xg[:, 0] - xh[:, 1] + rng.normal(size=n) > 0).astype(float)
    config = vl.VerticalLRConfig(epochs=2, batch_size=None, learning_rate=0.3)

    def train(ex: Executor | None) -> vl.TrainingReport:
        return vl.train_vertical_lr(
            vl.Guest(xg, y, executor=ex),
            vl.Host(xh, executor=ex),
            vl.Coordinator(key),
            config,
            prefill_workers=1,
        )

    here, there = train(None), train(executor)
    np.testing.assert_array_equal(there.host_model.weights, here.host_model.weights)
    np.testing.assert_array_equal(there.guest_model.weights, here.guest_model.weights)
    assert there.guest_model.intercept == here.guest_model.intercept
    assert there.losses == here.losses


@pytest.mark.parametrize(
    "drop",
    [{}, {Stage.MASKED_INPUT: {2, 4}}, {Stage.SHARE_KEYS: {5}, Stage.MASKED_INPUT: {1}, Stage.UNMASK: {3}}],
    ids=["all-survive", "two-dropped", "drops-at-every-stage"],
)
def test_secure_aggregation_unmasking_on_the_executor_gives_the_same_sum(
    executor: Executor, drop: dict[Stage, set[int]]
) -> None:
    srv, cl = make_round(n=7, t=4, dim=2000)
    xs, ws = inputs(7, seed=5, dim=2000)
    run_to(srv, cl, Stage.DONE, xs, ws, drop)
    total, weight = srv.aggregate()
    fanned, fanned_weight = srv.aggregate(executor=executor)
    np.testing.assert_array_equal(fanned, total)
    assert fanned_weight == weight
