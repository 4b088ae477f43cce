"""Synthetic farm and herding households (农牧户) of Qinghai, as the agriculture bureau and insurers see them.

What is modelled
----------------
Every household head gets a valid GB 11643-1999 resident ID number (a county of Qinghai, a birth date, a
sequence code and the check character) — the identifier the providers hold and upload, and which the safe-room
replaces by a keyed pseudonym at once (``resident_id`` columns). Households are herding (the pastoral
prefectures Haibei, Huangnan, Hainan, Guoluo, Yushu and the uplands of Haixi), farming (the Huangshui valley:
Xining, Haidong) or mixed. Tables, one per provider:

``household_ratings``     (agriculture and rural affairs bureau, with the village committee's 信用户 rating)
                          one row per household: county, type, 信用户 grade (AAA, AA, A, B, unrated), rating
                          date, livestock in sheep units, contracted land (mu), policy livestock/crop
                          insurance and its sum insured, subsidies received last year (grassland ecological
                          protection, farmland fertility), cooperative membership, family farm.
``household_production``  (the same bureau's production survey) monthly livestock sold and sales income: herders
                          sell in autumn (September to November) before winter, farmers after harvest; a bad
                          winter (雪灾) lowers the yield index of some pastoral counties in one year.
``household_labels``      (what a bank knows) a latent default probability and the 0/1 outcome.

A hidden distress factor drives a lower grade, fewer livestock, lower insurance and sales; the default
probability is a logistic function of those and of noise no provider sees. Synthetic: plausible, not
calibrated; not statistics about Qinghai.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from models.synth import Array, Table, _choice, _sigmoid, _str_objects, column

COUNTIES: Final[tuple[tuple[str, str, str, float], ...]] = (
    # county code, name, type of economy (herding, farming, mixed), share of households
    ("630121", "Datong", "farming", 6.0),
    ("630123", "Huangyuan", "mixed", 3.0),
    ("630202", "Ledu", "farming", 6.0),
    ("630222", "Minhe", "farming", 5.0),
    ("630223", "Huzhu", "farming", 6.0),
    ("630224", "Hualong", "mixed", 4.0),
    ("632221", "Menyuan", "mixed", 3.0),
    ("632222", "Qilian", "herding", 2.0),
    ("632224", "Gangcha", "herding", 2.0),
    ("632322", "Jianzha", "mixed", 2.0),
    ("632323", "Zeku", "herding", 3.0),
    ("632324", "Henan", "herding", 2.0),
    ("632521", "Gonghe", "mixed", 5.0),
    ("632524", "Xinghai", "herding", 3.0),
    ("632621", "Maqen", "herding", 2.0),
    ("632626", "Madoi", "herding", 1.0),
    ("632701", "Yushu", "herding", 4.0),
    ("632722", "Zadoi", "herding", 2.0),
    ("632801", "Golmud", "mixed", 4.0),
    ("632802", "Delingha", "mixed", 3.0),
    ("632821", "Ulan", "herding", 2.0),
    ("632822", "Dulan", "herding", 3.0),
    ("632823", "Tianjun", "herding", 2.0),
)
"""County-level divisions of Qinghai (GB/T 2260) where the generator places households."""

GRADES: Final = ("AAA", "AA", "A", "B", "unrated")
PROVIDER: Final = "Agriculture and rural affairs bureau"
_WEIGHTS: Final = np.array([7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_CHECK: Final = np.array(list("10X98765432"), dtype=object)
_HERD_SEASON: Final = np.array([0.2, 0.1, 0.1, 0.2, 0.3, 0.4, 0.6, 0.9, 2.2, 3.0, 2.4, 0.6])
_FARM_SEASON: Final = np.array([0.3, 0.6, 0.3, 0.2, 0.2, 0.3, 0.5, 1.5, 2.6, 2.2, 1.1, 0.6])


@dataclass(frozen=True)
class Households:
    ratings: Table
    production: Table
    labels: Table
    seed: int
    start: str
    months: int

    def provider_tables(self) -> tuple[Table, ...]:
        return (self.ratings, self.production)


def resident_ids(rng: np.random.Generator, county: Array, born: Array) -> Array:
    """Distinct valid GB 11643 numbers for heads of household born on ``born`` in ``county``."""
    n = len(county)
    seq = rng.integers(0, 1000, size=n)
    while True:
        keys = np.char.add(np.char.add(county.astype(str), born.astype(str)), seq.astype(str))
        _, first = np.unique(keys, return_index=True)
        if len(first) == n:
            break
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        seq[dup] = rng.integers(0, 1000, size=int(dup.sum()))
    digits = np.zeros((n, 17), dtype=np.int64)
    ymd = np.array([d.replace("-", "") for d in born.astype(str).tolist()])
    for k in range(6):
        digits[:, k] = np.array([int(c[k]) for c in county.tolist()])
    for k in range(8):
        digits[:, 6 + k] = np.array([int(s[k]) for s in ymd.tolist()])
    for k in range(3):
        digits[:, 14 + k] = seq // 10 ** (2 - k) % 10
    check = _CHECK[(digits @ _WEIGHTS) % 11]
    body = ["".join(map(str, row)) for row in digits.tolist()]
    return _str_objects(np.array([b + c for b, c in zip(body, check.tolist(), strict=True)]))


_ID_COLUMN: Final = {
    **column(
        "resident_id",
        "resident_id",
        "head of household's resident ID number (GB 11643); pseudonymised on upload, never stored",
        "C2",
    ),
    "level": 3,
}


def _graded(
    name: str,
    type_: str,
    description: str,
    sensitivity: str,
    level: int,
    unit: str | None = None,
    *,
    income_or_assets: bool = False,
) -> dict[str, Any]:
    return {
        **column(name, type_, description, sensitivity, unit),
        "level": level,
        "income_or_assets": income_or_assets,
    }


def generate_households(n: int, seed: int, *, months: int = 24, start: str = "2024-01") -> Households:
    """``n`` households over ``months`` months from ``start``; deterministic for given arguments."""
    if n < 1 or months < 1:
        raise ValueError("n and months must be at least 1")
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, 19]).spawn(4)]
    rng = rngs[0]
    c = _choice(rng, np.array([x[3] for x in COUNTIES]), n)
    county = np.array([x[0] for x in COUNTIES], dtype=object)[c]
    economy = np.array([x[2] for x in COUNTIES], dtype=object)[c]
    herding = (economy == "herding") | ((economy == "mixed") & (rng.random(n) < 0.5))
    kind = np.where(herding, "herding", np.where(economy == "mixed", "mixed", "farming"))
    start_m = np.datetime64(start, "M")
    as_of = (start_m + months).astype("datetime64[D]")
    age_days = (rng.uniform(24, 68, size=n) * 365.25).astype(np.int64)
    born = as_of - age_days
    ids = resident_ids(rng, county, born)
    distress = rng.standard_normal(n)
    scale = rng.standard_normal(n)

    livestock = np.where(herding, np.exp(5.3 + 0.6 * scale - 0.25 * distress), np.exp(2.0 + 0.8 * scale))
    livestock = np.round(livestock)
    land = np.where(herding, np.exp(1.5 + 0.6 * rng.standard_normal(n)), np.exp(2.6 + 0.5 * scale))
    land = np.round(land, 1)
    score = 1.2 - 0.9 * distress + 0.3 * scale + 0.5 * rng.standard_normal(n)
    grade_idx = np.digitize(-score, [-2.0, -1.0, 0.0, 1.2])  # 0 AAA .. 4 unrated
    unrated = rng.random(n) < 0.08
    grade_idx = np.where(unrated, 4, grade_idx)
    grades = np.array(GRADES, dtype=object)[grade_idx]
    rated_on = as_of - rng.integers(30, 700, size=n)
    insured = rng.random(n) < _sigmoid(1.0 - 0.5 * distress)
    insured_amount = np.where(insured, np.round(np.where(herding, 600.0 * livestock, 450.0 * land), -2), 0.0)
    subsidies = np.round(
        np.where(herding, 8_000 + 12.0 * livestock, 2_000 + 90.0 * land)
        * np.exp(0.2 * rng.standard_normal(n)),
        0,
    )
    coop = rng.random(n) < np.where(herding, 0.45, 0.3)
    family_farm = rng.random(n) < 0.06
    ratings = Table(
        "household_ratings",
        PROVIDER,
        {
            "dataset": "household_ratings",
            "subject_key": "resident_id",
            "period_key": None,
            "record_key": None,
            "columns": [
                _ID_COLUMN,
                _graded("county", "string", "GB/T 2260 county of household registration (Qinghai)", "C1", 2),
                _graded("household_type", "string", "herding, farming or mixed", "C1", 2),
                _graded(
                    "grade",
                    "string",
                    "信用户 rating of the village committee: AAA, AA, A, B or unrated",
                    "C2",
                    3,
                ),
                _graded("rated_on", "date", "date of the latest rating", "C1", 2),
                _graded(
                    "livestock_units",
                    "float",
                    "livestock held, in sheep units",
                    "C2",
                    3,
                    "sheep units",
                    income_or_assets=True,
                ),
                _graded(
                    "land_mu",
                    "float",
                    "contracted land and grassland in use",
                    "C2",
                    3,
                    "mu",
                    income_or_assets=True,
                ),
                _graded("insured", "bool", "policy livestock or crop insurance in force", "C2", 3),
                _graded("insured_amount", "float", "sum insured", "C2", 3, "CNY", income_or_assets=True),
                _graded(
                    "subsidies_last_year",
                    "float",
                    "government subsidies received last year",
                    "C2",
                    3,
                    "CNY",
                    income_or_assets=True,
                ),
                _graded(
                    "cooperative_member", "bool", "member of a farmers' professional cooperative", "C1", 2
                ),
                _graded("family_farm", "bool", "registered family farm", "C1", 2),
            ],
        },
        {
            "resident_id": ids,
            "county": county,
            "household_type": _str_objects(kind),
            "grade": grades,
            "rated_on": rated_on,
            "livestock_units": livestock,
            "land_mu": land,
            "insured": insured,
            "insured_amount": insured_amount,
            "subsidies_last_year": subsidies,
            "cooperative_member": coop,
            "family_farm": family_farm,
        },
    )

    rng = rngs[1]
    cal = (start_m + np.arange(months)).astype(np.int64) % 12
    years = (start_m + np.arange(months)).astype("datetime64[Y]").astype(np.int64) + 1970
    season = np.where(herding[:, None], _HERD_SEASON[cal][None, :], _FARM_SEASON[cal][None, :])
    # a snow disaster (雪灾) hits some pastoral counties in the winter of the first year
    snow = np.isin(county, ["632323", "632324", "632621", "632626", "632722"]) & (rng.random(n) < 0.7)
    yield_index = np.ones((n, months)) * np.exp(0.05 * rng.standard_normal((n, months)))
    after_snow = (years == years[0] + 1)[None, :] & snow[:, None]
    yield_index = np.where(after_snow, yield_index * 0.7, yield_index)
    heads = np.where(herding, 0.25 * livestock, 0.0)[:, None] * season / 12.0 * yield_index
    heads *= np.exp(-0.15 * distress)[:, None]
    sold = np.round(np.maximum(heads + 0.3 * rng.standard_normal((n, months)), 0.0))
    price = np.where(herding, 900.0, 0.0)
    crop = np.where(herding, 0.0, 1200.0 * land)[:, None] * season / 12.0 * yield_index
    income = np.round(sold * price[:, None] + crop, 0)
    i, j = np.nonzero(np.ones((n, months), dtype=bool))
    month_labels = _str_objects((start_m + np.arange(months)).astype(str))
    production = Table(
        "household_production",
        PROVIDER,
        {
            "dataset": "household_production",
            "subject_key": "resident_id",
            "period_key": "month",
            "record_key": None,
            "columns": [
                _ID_COLUMN,
                _graded("month", "month", "survey month", "C1", 2),
                _graded("livestock_sold", "int", "livestock sold in the month", "C2", 3, "head"),
                _graded(
                    "sales_income",
                    "float",
                    "income from livestock and crop sales",
                    "C2",
                    3,
                    "CNY",
                    income_or_assets=True,
                ),
                _graded("yield_index", "float", "pasture or crop condition, 1 = normal", "C1", 2),
            ],
        },
        {
            "resident_id": ids[i],
            "month": month_labels[j],
            "livestock_sold": sold[i, j].astype(np.int64),
            "sales_income": income[i, j],
            "yield_index": np.round(yield_index[i, j], 3),
        },
    )

    rng = rngs[2]
    logit = (
        -3.3
        + 0.9 * distress
        + 0.5 * grade_idx
        - 0.4 * insured
        - 0.3 * coop
        + 0.6 * snow
        + 0.8 * rng.standard_normal(n)
    )
    p = np.round(_sigmoid(logit), 6)
    labels = Table(
        "household_labels",
        "Bank (labels; not a provider dataset)",
        {
            "dataset": "household_labels",
            "subject_key": "resident_id",
            "period_key": None,
            "record_key": None,
            "columns": [
                _ID_COLUMN,
                _graded(
                    "default_probability", "float", "latent default probability (synthetic truth)", "C3", 4
                ),
                _graded("defaulted", "int", "1 if the household defaulted within 12 months", "C3", 4),
            ],
        },
        {"resident_id": ids, "default_probability": p, "defaulted": (rng.random(n) < p).astype(np.int64)},
    )
    return Households(ratings, production, labels, seed, start, months)


# --- household features (what a bank's 农牧贷 model reads, computed inside the safe-room) --------------------

GRADE_SCORE: Final = {"AAA": 4.0, "AA": 3.0, "A": 2.0, "B": 1.0, "unrated": 0.0}

HOUSEHOLD_FEATURES: Final[dict[str, str]] = {
    "hh_grade_score": "信用户 grade as a number: AAA 4, AA 3, A 2, B 1, unrated 0",
    "hh_log_livestock": "log1p of livestock held, in sheep units",
    "hh_log_land": "log1p of contracted land and grassland, in mu",
    "hh_insured": "1 if policy livestock or crop insurance is in force",
    "hh_log_subsidies": "log1p of government subsidies received last year (CNY)",
    "hh_cooperative_member": "1 if a member of a farmers' professional cooperative",
    "hh_family_farm": "1 if a registered family farm",
    "hh_log_sales_income": "log1p of the mean monthly sales income over the survey months (CNY)",
    "hh_min_yield_index": "the worst month's pasture or crop condition (1 = normal): a snow disaster shows",
}
HOUSEHOLD_FEATURE_INPUTS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "hh_grade_score": {"household_ratings": ("grade",)},
    "hh_log_livestock": {"household_ratings": ("livestock_units",)},
    "hh_log_land": {"household_ratings": ("land_mu",)},
    "hh_insured": {"household_ratings": ("insured",)},
    "hh_log_subsidies": {"household_ratings": ("subsidies_last_year",)},
    "hh_cooperative_member": {"household_ratings": ("cooperative_member",)},
    "hh_family_farm": {"household_ratings": ("family_farm",)},
    "hh_log_sales_income": {"household_production": ("sales_income",)},
    "hh_min_yield_index": {"household_production": ("yield_index",)},
}
HOUSEHOLD_FEATURE_KINDS: Final[dict[str, str]] = {
    n: "binary"
    if n in {"hh_insured", "hh_cooperative_member", "hh_family_farm"}
    else "count"
    if n == "hh_grade_score"
    else "continuous"
    for n in HOUSEHOLD_FEATURES
}
HOUSEHOLD_FEATURE_RESOLUTION: Final[dict[str, float]] = {
    n: 0.05 if HOUSEHOLD_FEATURE_KINDS[n] == "continuous" else 0.0 for n in HOUSEHOLD_FEATURES
}
HOUSEHOLD_FEATURE_UNITS: Final[dict[str, str]] = {
    "hh_log_livestock": "log1p(sheep units)",
    "hh_log_land": "log1p(mu)",
    "hh_log_subsidies": "log1p(CNY)",
    "hh_log_sales_income": "log1p(CNY)",
    **dict.fromkeys(("hh_grade_score", "hh_insured", "hh_cooperative_member", "hh_family_farm"), ""),
    "hh_min_yield_index": "index",
}


def household_features(
    ratings: dict[str, Array], production: dict[str, Array]
) -> tuple[Array, dict[str, Array]]:
    """Per household of ``ratings`` (its key column ``resident_id``, holding person codes once uploaded): the
    features of :data:`HOUSEHOLD_FEATURES`, NaN-free (missing -> 0, a missing yield index -> 1)."""
    codes = np.asarray(ratings["resident_id"], dtype=object)
    n = len(codes)
    position = {c: i for i, c in enumerate(codes.tolist())}

    def num(values: Array) -> Array:
        return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)

    grade = np.array([GRADE_SCORE.get(str(g), 0.0) for g in np.asarray(ratings["grade"]).tolist()])
    out: dict[str, Array] = {
        "hh_grade_score": grade,
        "hh_log_livestock": np.log1p(np.maximum(num(ratings["livestock_units"]), 0.0)),
        "hh_log_land": np.log1p(np.maximum(num(ratings["land_mu"]), 0.0)),
        "hh_insured": num(ratings["insured"]),
        "hh_log_subsidies": np.log1p(np.maximum(num(ratings["subsidies_last_year"]), 0.0)),
        "hh_cooperative_member": num(ratings["cooperative_member"]),
        "hh_family_farm": num(ratings["family_farm"]),
    }
    keys = np.asarray(production["resident_id"], dtype=object)
    idx = np.array([position.get(k, -1) for k in keys.tolist()], dtype=np.int64)
    ok = idx >= 0
    income = num(production["sales_income"])[ok]
    yld = np.asarray(production["yield_index"], dtype=np.float64)[ok]
    counts = np.bincount(idx[ok], minlength=n)
    mean_income = np.bincount(idx[ok], weights=income, minlength=n) / np.maximum(counts, 1)
    worst = np.ones(n)
    np.minimum.at(worst, idx[ok], np.nan_to_num(yld, nan=1.0))
    out["hh_log_sales_income"] = np.log1p(np.maximum(mean_income, 0.0))
    out["hh_min_yield_index"] = worst
    return codes, out


# --- a bank's 农牧贷 model (what the demo and the tests have approved) ------------------------------------------

HOUSEHOLD_MODEL_FEATURES: Final = (
    "hh_grade_score",
    "hh_log_livestock",
    "hh_log_land",
    "hh_insured",
    "hh_cooperative_member",
    "hh_log_sales_income",
    "hh_min_yield_index",
)


def household_model(
    data: Households,
    features: tuple[str, ...] = HOUSEHOLD_MODEL_FEATURES,
    *,
    max_share: float = 0.35,
    threshold: float = 0.2,
) -> dict[str, Any]:
    """A bank's 农牧贷 logistic model, fitted on its own labels (``household_labels``) over the household features
    at their published resolution, as a model spec for the enclave's check (``enclave_sim.model_check``).

    The 信用户 grade alone predicts most of the default risk, so a plain fit puts 70-85 % of the score's variance
    on it, and the model policy refuses a model that concentrated (it would read the grade back). A scorecard
    that *scores* spreads its weight: every feature's weight is shrunk until none carries more than
    ``max_share`` of the variance (features standardised, taken as independent, as the policy takes them),
    and the grade's weight until one grade step moves the score by less than the spread of the rest of it.
    """
    from sklearn.linear_model import LogisticRegression

    raw, out = household_features(data.ratings.columns, data.production.columns)
    label_of = dict(
        zip(
            data.labels.columns["resident_id"].tolist(),
            data.labels.columns["defaulted"].tolist(),
            strict=True,
        )
    )
    y = np.array([label_of[c] for c in raw.tolist()], dtype=np.float64)
    cols = []
    for n in features:
        step = HOUSEHOLD_FEATURE_RESOLUTION[n]
        cols.append(np.round(out[n] / step) * step if step > 0 else out[n])
    x = np.column_stack(cols)
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    lr = LogisticRegression(C=1.0, max_iter=3000).fit((x - mu) / sd, y)
    w = lr.coef_[0].copy()
    for _ in range(len(w)):  # shrinking the largest can make another the largest: repeat
        top = int(np.argmax(w**2))
        rest = float((w**2).sum() - w[top] ** 2)
        if w[top] ** 2 <= max_share * (rest + w[top] ** 2):
            break
        w[top] = np.sign(w[top]) * np.sqrt(max_share / (1 - max_share) * rest) * 0.999
    for j, n in enumerate(features):  # a count (the grade): one step of it stays inside the rest's spread
        if HOUSEHOLD_FEATURE_KINDS[n] == "count":
            z = (x - mu) / sd
            rest = float((z @ w - z[:, j] * w[j]).std())  # measured: the features are correlated
            w[j] = np.sign(w[j]) * min(abs(w[j]), 0.8 * rest * sd[j])
    return {
        "kind": "logistic",
        "weights": {n: round(float(v), 4) for n, v in zip(features, w, strict=True)},
        "bias": round(float(lr.intercept_[0]), 4),
        "preprocess": {
            n: {"center": round(float(mu[j]), 4), "scale": round(float(sd[j]), 4)}
            for j, n in enumerate(features)
        },
        "release": {"threshold": threshold},
    }
