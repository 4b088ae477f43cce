"""Bounded influence in horizontal training (issue 24 item 5): banks provision their updates to the enclave,
which refuses malformed ones, clips every other one to the round's norm and releases only the sum.

The attack of the issue: under secure aggregation a bank added ``K = n * max_weight * levels / 2`` to one
coordinate of its masked input and moved the published model by +419,430 on it. In the enclave the bank's
update is seen in the clear and clipped, so the same payload moves the mean by at most
``w * clip_norm / sum(w)``, and the round completes."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_sim.errors import EnclaveError
from enclave_sim.host import EnclaveHost
from enclave_sim.platform import expected_measurement
from pps_wire import provision as crypto
from pps_wire.quote import NonceRegistry, Quote, standard_policy
from protocols.secagg import SecAggParams

JOB = "fedavg_aggregate"
DIM = 6
CLIP = 5.0


def terms(round_no: int = 1, **over: Any) -> dict[str, Any]:
    return {
        "federation": "fed_test",
        "round": round_no,
        "dim": DIM,
        "clip_norm": CLIP,
        "max_weight": 10_000,
        "tail": 2,
        "min_banks": 3,
        **over,
    }


def provision(
    enclave: EnclaveHost, vendor: Ed25519PrivateKey, handle: str, slot: str, body: Any, output: Any = None
) -> dict[str, Any]:
    """A bank verifies a fresh quote of the build it trusts and provisions its input to it."""
    nonce = os.urandom(32)
    quote = enclave.quote(nonce)
    policy = standard_policy(measurements=[expected_measurement()], nonce=nonce, registry=NonceRegistry())
    ct = crypto.encrypt_for_enclave(
        quote,
        policy,
        vendor_key=vendor.public_key(),
        job=JOB,
        slot=slot,
        body=json.dumps(body).encode(),
        output=output,
    )
    return enclave.provision(
        handle, job=JOB, slot=slot, quote_hash=Quote.parse(quote).quote_hash, ciphertext=ct
    )


def run_round(
    enclave: EnclaveHost, vendor: Ed25519PrivateKey, handle: str, inputs: dict[int, Any], t: dict[str, Any]
) -> dict[str, Any]:
    out = crypto.OutputPolicy(("aggregate",), os.urandom(32))
    provision(enclave, vendor, handle, "terms", t, output=out)
    for pos, body in inputs.items():
        provision(enclave, vendor, handle, f"bank{pos}", body)
    release, plain = enclave.run(handle, params={}, output=out.public())
    opened = crypto.open_release(release, result_key=out.result_key, recipient=None)
    assert opened["outputs"] == plain  # the bank that owns the round checks the host relayed it unaltered
    aggregate: dict[str, Any] = plain["aggregate"]
    return aggregate


def honest(seed: int, n: int = 4) -> tuple[list[np.ndarray], list[int], list[list[int]]]:
    rng = np.random.default_rng(seed)
    updates = [rng.normal(0, 0.5, DIM) for _ in range(n)]
    weights = [int(w) for w in rng.integers(100, 1000, n)]
    tails = [[int(v) * 2**40 + 7 for v in rng.integers(-(2**40), 2**40, 2)] for _ in range(n)]
    return updates, weights, tails


def body(u: np.ndarray, w: int, tail: list[int], t: dict[str, Any]) -> dict[str, Any]:
    return {"terms": t, "update": [float(v) for v in u], "weight": w, "tail": tail}


def test_an_honest_round_sums_exactly_what_secure_aggregation_would(
    enclave: EnclaveHost, vendor: Ed25519PrivateKey
) -> None:
    t = terms()
    updates, weights, tails = honest(1)
    agg = run_round(
        enclave,
        vendor,
        "fed-honest",
        {i + 1: body(u, w, tl, t) for i, (u, w, tl) in enumerate(zip(updates, weights, tails, strict=True))},
        t,
    )
    assert agg["banks"] == [1, 2, 3, 4] and agg["clipped"] == 0 and agg["refused"] == {}
    assert agg["weight"] == sum(weights)
    assert np.allclose(
        agg["sum"], sum(w * u for w, u in zip(weights, updates, strict=True)), rtol=0, atol=1e-12
    )
    assert agg["tail"] == [sum(tl[j] for tl in tails) for j in range(2)]  # exact, like the secure tail


def test_the_poisoning_update_is_clipped_and_the_round_completes(
    enclave: EnclaveHost, vendor: Ed25519PrivateKey
) -> None:
    """Bank 3 adds the issue's K (n * max_weight * levels / 2 in SecAgg's fixed point, i.e. +419,430 on the
    published model's coordinate) to one coordinate of its update."""
    t = terms()
    updates, weights, tails = honest(2)
    p = SecAggParams(n=4, threshold=3, dim=DIM, clip_norm=CLIP)
    k = p.n * p.max_weight * p.levels // 2 * (CLIP / p.levels) / weights[2]  # the shift K/w in update units
    poisoned = updates[2].copy()
    poisoned[0] += k
    inputs = {
        i + 1: body(u, w, tl, t) for i, (u, w, tl) in enumerate(zip(updates, weights, tails, strict=True))
    }
    inputs[3] = body(poisoned, weights[2], tails[2], t)
    agg = run_round(enclave, vendor, "fed-poison", inputs, t)
    assert agg["banks"] == [1, 2, 3, 4] and agg["clipped"] == 1
    mean = np.array(agg["sum"]) / agg["weight"]
    honest_mean = sum(w * u for w, u in zip(weights, updates, strict=True)) / sum(weights)
    bound = weights[2] * CLIP / sum(weights)  # the most one bank can move the mean
    assert np.linalg.norm(mean - honest_mean) <= bound + np.linalg.norm(weights[2] * updates[2]) / sum(
        weights
    )
    assert abs(mean[0]) <= CLIP  # not +419,430


def test_malformed_and_off_terms_updates_are_refused_by_name_and_the_others_summed(
    enclave: EnclaveHost, vendor: Ed25519PrivateKey
) -> None:
    t = terms()
    updates, weights, tails = honest(3, n=6)
    inputs = {
        i + 1: body(u, w, tl, t) for i, (u, w, tl) in enumerate(zip(updates, weights, tails, strict=True))
    }
    inputs[2] = body(updates[1], weights[1], tails[1], terms(clip_norm=1e6))  # claims a looser clip
    inputs[4] = {**inputs[4], "weight": 10**6}  # over max_weight: would dominate the mean
    inputs[5] = {**inputs[5], "update": ["nan"] * DIM}
    agg = run_round(enclave, vendor, "fed-refuse", inputs, t)
    assert agg["banks"] == [1, 3, 6] and agg["weight"] == weights[0] + weights[2] + weights[5]
    assert set(agg["refused"]) == {"2", "4", "5"}
    assert "other terms" in agg["refused"]["2"] and "weight" in agg["refused"]["4"]


def test_too_few_acceptable_updates_release_nothing(enclave: EnclaveHost, vendor: Ed25519PrivateKey) -> None:
    t = terms()
    updates, weights, tails = honest(4, n=3)
    inputs = {
        i + 1: body(u, w, tl, t) for i, (u, w, tl) in enumerate(zip(updates, weights, tails, strict=True))
    }
    inputs[1] = {**inputs[1], "tail": [2**95, 0]}
    with pytest.raises(EnclaveError, match="only 2 acceptable update"):
        run_round(enclave, vendor, "fed-few", inputs, t)
