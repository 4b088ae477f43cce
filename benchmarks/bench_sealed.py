#!/usr/bin/env python
"""Benchmark of sealed datasets (``pps.services.sealed``) against the ordinary path, same data, same run.

Run from the repository root::

    .venv/bin/python benchmarks/bench_sealed.py             # 2 x 10^4 enterprises x 10 features
    .venv/bin/python benchmarks/bench_sealed.py --quick     # smoke run

Both paths on the same synthetic matrix, each timing repeated ``--repeats`` times, medians reported:

* **scoring, ordinary**: the bank's weights encrypted under *its* CKKS key, multiplied by the platform's
  *plaintext* feature columns (:func:`protocols.he_scoring.score`, features encoded per query), then the bank
  decrypts;
* **scoring, sealed**: the bank's weights encrypted under the *enclave's* public context, multiplied by the
  provider's *encrypted* columns (ciphertext x ciphertext, relinearised, rescaled, one ciphertext per block),
  then the real enclave process decrypts every score, adds noise, HPKE-encrypts them to the bank, which opens
  them;
* **aggregate, ordinary**: a cohort sum over plaintext values with OpenDP's Laplace (:func:`pps.data.dp.total`);
* **aggregate, sealed**: the cohort mask multiplied into each encrypted block, blocks added, rotate-and-sum,
  then the enclave decrypts the one result, checks its shape and adds OpenDP noise;
* **exact integer aggregate** (an integer column, 0..1000): ordinary as above; sealed under the enclave's BFV
  pair (the same steps, BFV vectors, an exact sum before the enclave's integer noise).

The database, consent checks and ledger entries are the same on both paths and are left out. The one-off
costs of the sealed path (key generation in the enclave, the provider's encryption) are printed apart.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import base64  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import tenseal as ts  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402

from enclave_sim.host import EnclaveHost  # noqa: E402
from enclave_sim.model_check import ModelPolicy  # noqa: E402
from enclave_sim.sealed import MIN_SCORE_NOISE_STD  # noqa: E402
from pps.data import dp  # noqa: E402
from pps.services.sealed import DEFAULT_PARAMS, GRID_LEVELS  # noqa: E402
from pps_client import (  # noqa: E402
    encrypt_sealed_columns,
    encrypt_sealed_integer_columns,
    encrypt_sealed_weights,
)
from pps_wire.provision import OutputPolicy  # noqa: E402
from pps_wire.quote import Quote, standard_policy  # noqa: E402
from pps_wire.sealed import encrypt_score_request, open_scores, report_nonce  # noqa: E402
from protocols import he_scoring as he  # noqa: E402


def _median(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, f, repeats = (5_000, 4, 1) if args.quick else (args.n, args.features, args.repeats)
    rng = np.random.default_rng(2026)
    x = rng.normal(0, 1, (n, f))
    names = [f"f{j}" for j in range(f)]
    weights = {k: float(w) for k, w in zip(names, rng.normal(0, 0.5, f), strict=True)}
    mask = rng.uniform(0, 1, n) < 0.6

    vendor = Ed25519PrivateKey.generate()
    host = EnclaveHost(vendor_key=vendor, platform_secret=os.urandom(32))
    host.start()
    try:
        t = time.perf_counter()
        keys = host.call("he_keygen", params=DEFAULT_PARAMS)
        keygen = time.perf_counter() - t
        public = base64.b64decode(keys["public_context"])
        cid, bid = str(keys["context_id"]), str(keys["bfv_context_id"])
        evaluation = ts.context_from(base64.b64decode(keys["eval_context"]))
        bfv_evaluation = ts.context_from(base64.b64decode(keys["bfv_eval_context"]))
        counts = rng.integers(0, 1001, n)
        t = time.perf_counter()
        integers = encrypt_sealed_integer_columns(
            base64.b64decode(keys["bfv_public_context"]), {"c": counts.tolist()}, {"c": (0, 1000)}
        )["c"]
        encrypt_int = time.perf_counter() - t
        t = time.perf_counter()
        columns = encrypt_sealed_columns(
            public, {k: x[:, j] for j, k in enumerate(names)}, dict.fromkeys(names, (-8.0, 8.0))
        )
        encrypt = time.perf_counter() - t
        slots = DEFAULT_PARAMS["poly_modulus_degree"] // 2
        n_blocks = -(-n // slots)
        bank = X25519PrivateKey.generate()
        recipient = bank.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        subjects = [f"s{i}" for i in range(n)]  # the enclave binds the list; USCCs are checked by the service

        def sealed_score(checked: bool = False) -> None:
            enc = encrypt_sealed_weights(public, weights)
            w = [ts.ckks_vector_from(evaluation, enc[k]) for k in names]
            blocks = []
            for b in range(n_blocks):
                acc = None
                for j, k in enumerate(names):
                    term = w[j] * ts.ckks_vector_from(evaluation, columns[k][b])
                    acc = term if acc is None else acc + term
                assert acc is not None
                used = min(slots, n - b * slots)
                blocks.append(
                    {
                        "ciphertext": _b64(acc.serialize()),
                        "slots": list(range(used)),
                        "subjects": subjects[b * slots : b * slots + used],
                        **({"block": b} if checked else {}),
                    }
                )
            nonce = os.urandom(32)
            quote = base64.b64decode(host.call("he_quote", context_id=cid, nonce=_b64(nonce))["quote"])
            output = OutputPolicy(("scores",), os.urandom(32), recipient)
            provision = encrypt_score_request(
                quote,
                standard_policy(measurements=[host.measurement], nonce=report_nonce(cid, nonce, bid)),
                vendor_key=vendor.public_key(),
                output=output,
                context_id=cid,
                dataset_id="bench",
                subjects=subjects,
            )
            quote_hash = Quote.parse(quote).quote_hash
            got = host.call(
                "he_scores",
                context_id=cid,
                query_id="bench",
                dataset_id="bench",
                subjects=subjects,
                noise_std=MIN_SCORE_NOISE_STD,
                quote_hash=quote_hash.hex(),
                provision=_b64(provision),
                blocks=blocks,
                **(
                    {
                        "model": {
                            "weights": {k: _b64(enc[k]) for k in names},
                            "columns": {
                                k: {
                                    "blocks": [_b64(c) for c in columns[k]],
                                    "resolution": 16.0 / GRID_LEVELS,
                                    "lower": -8.0,
                                    "upper": 8.0,
                                }
                                for k in names
                            },
                            "n": n,
                            "policy": ModelPolicy().as_dict(),
                        }
                    }
                    if checked
                    else {}
                ),
            )
            scores = open_scores(
                base64.b64decode(got["release"]),
                bank,
                result_key=output.result_key,
                quote_hash=quote_hash,
                query_id="bench",
                dataset_id="bench",
                subjects=subjects,
            )
            assert len(scores) == n

        key = he.BankScoringKey.create()
        ctx = he.check_public_context(key.public_context_bytes())

        def ordinary_score() -> None:
            model = key.encrypt_model(weights, 0.0)
            result = he.score(ctx, model.to_bytes(), x)
            assert len(key.decrypt_scores(result.to_bytes()).raw) == n

        def sealed_aggregate() -> None:
            total = None
            col = columns[names[0]]
            for b in range(n_blocks):
                m = np.zeros(slots)
                part = mask[b * slots : (b + 1) * slots]
                m[: len(part)] = part
                term = ts.ckks_vector_from(evaluation, col[b]) * m.tolist()
                total = term if total is None else total + term
            assert total is not None
            host.call(
                "he_aggregate",
                context_id=keys["context_id"],
                epsilon=1.0,
                min_cohort=10,
                items=[
                    {
                        "name": "sum",
                        "ciphertext": _b64(total.sum().serialize()),
                        "count": int(mask.sum()),
                        "lower": -8.0,
                        "upper": 8.0,
                    }
                ],
            )

        def ordinary_aggregate() -> None:
            dp.total(np.clip(x[mask, 0], -8.0, 8.0), -8.0, 8.0, 1.0)
            dp.count(x[mask, 0], 1.0)

        def exact_aggregate() -> None:
            total = None
            for b in range(n_blocks):
                m = np.zeros(slots, dtype=np.int64)
                part = mask[b * slots : (b + 1) * slots]
                m[: len(part)] = part
                term = ts.bfv_vector_from(bfv_evaluation, integers[b]) * m.tolist()
                total = term if total is None else total + term
            assert total is not None
            host.call(
                "he_aggregate",
                context_id=cid,
                epsilon=1.0,
                min_cohort=10,
                items=[
                    {
                        "name": "sum",
                        "ciphertext": _b64(total.sum().serialize()),
                        "count": int(mask.sum()),
                        "lower": 0,
                        "upper": 1000,
                        "scheme": "bfv",
                    }
                ],
            )

        def ordinary_int_aggregate() -> None:
            dp.total(counts[mask].astype(float), 0.0, 1000.0, 1.0)
            dp.count(counts[mask], 1.0)

        rows = []
        for what, ordinary, sealed in (
            ("scoring", ordinary_score, sealed_score),
            # the baseline here is sealed scoring as it was (no check): the ratio is the grid and check's cost
            (
                "sealed scoring at the grid, model checked (vs sealed unchecked)",
                sealed_score,
                lambda: sealed_score(True),
            ),
            ("aggregate (sum + count)", ordinary_aggregate, sealed_aggregate),
            ("exact integer aggregate (BFV)", ordinary_int_aggregate, exact_aggregate),
        ):
            ordinary()
            sealed()  # warm-up
            t_o, t_s = _median(ordinary, repeats), _median(sealed, repeats)
            rows.append((what, n / t_o, n / t_s, t_s / t_o))
    finally:
        host.stop()
    print(
        f"sealed vs ordinary, {n:,} enterprises x {f} features, {n_blocks} blocks of {slots}, median of {repeats}"
    )
    print(
        f"one-off: enclave key generation (CKKS + BFV) {keygen:.2f} s; provider encryption {encrypt:.2f} s "
        f"({n * f / encrypt:,.0f} values/s); one integer column under BFV {encrypt_int:.2f} s"
    )
    print("| operation | ordinary (enterprises/s) | sealed (enterprises/s) | sealed / ordinary time |")
    print("|---|---:|---:|---:|")
    for what, o, s, ratio in rows:
        print(f"| {what} | {o:,.0f} | {s:,.0f} | {ratio:.1f}× |")
    print(f"(load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
