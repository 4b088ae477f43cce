"""Per-enterprise aggregate features computed from the provider datasets of :class:`models.synth.PlatformData`.

Only the provider tables are read (registry, tax, social insurance, utilities, procurement, court), never the
labels. Every group-by is vectorised: each row is mapped once to the index of its enterprise in the registry,
then sums, counts, maxima and last values are taken with ``np.bincount`` / ``np.maximum.at`` / sorting.

The features (all float64, one value per enterprise, in registry order; never NaN) are listed in
:data:`FEATURES`. Amounts are heavy-tailed and enter as ``log1p``; a feature without data (no tax filed in
the last six months, no social insurance) is 0, and an indicator or count tells the model so. "Last six
months" means the last six months of the window, which ends the month before :attr:`PlatformData.as_of`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from models.synth import INDUSTRIES, SIZE_CLASSES, PlatformData

Array = npt.NDArray[Any]

FEATURES: Final[dict[str, str]] = {
    "company_age_years": "years from registration to the end of the window",
    "size_class_ordinal": "size class: 0 micro, 1 small, 2 medium",
    "individual_business": "1 if the USCC's type character is 2 (individual business), else 0",
    "log_registered_capital": "log1p of registered capital (CNY 10k)",
    "tax_months_filed": "number of months with a tax return in the window",
    "tax_filing_ratio": "months filed / months the enterprise existed in the window",
    "tax_months_since_last_filing": "months between the last month filed and the end of the window (0 = filed last month)",
    "log_sales_mean_last6": "log1p of mean monthly taxable sales over the months filed among the last 6",
    "log_tax_mean_last6": "log1p of mean monthly tax paid over the months filed among the last 6",
    "sales_trend": "least-squares slope of log1p(taxable sales) per year over the months filed (0 if fewer than 6)",
    "sales_yoy_change": "log1p(mean sales, last 6 months) - log1p(mean sales, same 6 months a year earlier); 0 if either is missing",
    "si_registered": "1 if the enterprise has any social insurance record, else 0",
    "log_headcount_last": "log1p of the headcount in the latest social insurance month (0 if none)",
    "headcount_change": "log1p(latest headcount) - log1p(earliest headcount in the window)",
    "log_contribution_per_head": "log1p of contributions / headcount over the window (monthly wage base proxy)",
    "log_electricity_mean_last6": "log1p of mean monthly electricity (kWh) over the last 6 months read",
    "electricity_trend": "least-squares slope of log1p(kWh) per year (0 if fewer than 6 readings)",
    "log_max_arrears": "log1p of the largest month-end utility arrears (CNY)",
    "arrears_months": "number of months with utility arrears above 0",
    "log_arrears_last": "log1p of utility arrears at the end of the latest month",
    "procurement_count": "number of procurement awards in the window",
    "log_procurement_total": "log1p of the total amount awarded (CNY)",
    "court_cases_defendant": "cases with the enterprise as defendant",
    "enforcement_cases_defendant": "enforcement cases against the enterprise",
    "open_cases_defendant": "cases as defendant still open at the end of the window",
    "log_court_amount_defendant": "log1p of the total amount in dispute as defendant (CNY)",
    "court_cases_plaintiff": "cases with the enterprise as plaintiff",
    "dishonesty_records": "dishonesty records still in use (not repaired, within publicity and retention)",
    "serious_dishonesty": "1 if a record in use is serious (grade serious or the serious-dishonesty list), else 0",
    **{
        f"industry_{i.letter.lower()}": f"1 if the industry section is {i.letter} ({i.name}), else 0"
        for i in INDUSTRIES
    },
}
"""Feature name -> what it is."""


def enterprise_features(data: PlatformData) -> tuple[Array, dict[str, Array]]:
    """The USCCs in registry order and the features of :data:`FEATURES` for each of them."""
    reg = data.registry.columns
    uscc = np.asarray(reg["uscc"])
    n = len(uscc)
    position = {code: i for i, code in enumerate(uscc.tolist())}
    if len(position) != n:
        raise ValueError("registry USCCs are not unique")
    first_month = _month_number(np.array([data.start], dtype=object))[0]
    months = data.months
    as_of = data.as_of
    f: dict[str, Array] = {}

    # registry
    registered = np.asarray(reg["registered_on"]).astype("datetime64[D]")
    f["company_age_years"] = (as_of - registered).astype(np.int64) / 365.25
    size_index = {name: k for k, name in enumerate(SIZE_CLASSES)}
    f["size_class_ordinal"] = np.array([size_index[s] for s in reg["size_class"].tolist()], dtype=np.float64)
    f["individual_business"] = np.array([code[1] == "2" for code in uscc.tolist()], dtype=np.float64)
    f["log_registered_capital"] = np.log1p(np.asarray(reg["registered_capital"], dtype=np.float64))
    registered_t = (registered.astype("datetime64[M]").astype(np.int64) - first_month).clip(0, months - 1)
    existed = (months - registered_t).astype(np.float64)

    # tax
    tax = data.tax.columns
    i = _index(position, tax["uscc"])
    t = _month_number(tax["month"]) - first_month
    sales = np.asarray(tax["taxable_sales"], dtype=np.float64)
    paid = np.asarray(tax["tax_paid"], dtype=np.float64)
    filed = _count(i, n)
    f["tax_months_filed"] = filed
    f["tax_filing_ratio"] = np.minimum(filed / existed, 1.0)
    last_t = _group_max(i, t.astype(np.float64), n, fill=-1.0)
    f["tax_months_since_last_filing"] = np.where(filed > 0, months - 1 - last_t, months)
    recent = t >= months - 6
    f["log_sales_mean_last6"] = np.log1p(_mean(i[recent], sales[recent], n))
    f["log_tax_mean_last6"] = np.log1p(_mean(i[recent], paid[recent], n))
    f["sales_trend"] = _slope(i, t / 12.0, np.log1p(sales), n)
    year_before = (t >= months - 18) & (t < months - 12)
    before = _count(i[year_before], n)
    change = np.log1p(_mean(i[recent], sales[recent], n)) - np.log1p(
        _mean(i[year_before], sales[year_before], n)
    )
    f["sales_yoy_change"] = np.where((before > 0) & (_count(i[recent], n) > 0), change, 0.0)

    # social insurance
    si = data.social_insurance.columns
    i = _index(position, si["uscc"])
    t = _month_number(si["month"]) - first_month
    heads = np.asarray(si["headcount"], dtype=np.float64)
    f["si_registered"] = (_count(i, n) > 0).astype(np.float64)
    last = _group_last(i, t, heads, n)
    first = _group_last(i, -t, heads, n)
    f["log_headcount_last"] = np.log1p(last)
    f["headcount_change"] = np.log1p(last) - np.log1p(first)
    paid_total = _sum(i, np.asarray(si["contributions"], dtype=np.float64), n)
    f["log_contribution_per_head"] = np.log1p(paid_total / np.maximum(_sum(i, heads, n), 1.0))

    # utilities
    ut = data.utilities.columns
    i = _index(position, ut["uscc"])
    t = _month_number(ut["month"]) - first_month
    kwh = np.asarray(ut["electricity_kwh"], dtype=np.float64)
    read = ~np.isnan(kwh)
    recent = read & (t >= months - 6)
    f["log_electricity_mean_last6"] = np.log1p(_mean(i[recent], kwh[recent], n))
    f["electricity_trend"] = _slope(i[read], t[read] / 12.0, np.log1p(kwh[read]), n)
    arrears = np.nan_to_num(np.asarray(ut["arrears"], dtype=np.float64))
    f["log_max_arrears"] = np.log1p(_group_max(i, arrears, n, fill=0.0))
    f["arrears_months"] = _count(i[arrears > 0], n)
    f["log_arrears_last"] = np.log1p(_group_last(i, t, arrears, n))

    # procurement
    pr = data.procurement.columns
    i = _index(position, pr["uscc"])
    f["procurement_count"] = _count(i, n)
    f["log_procurement_total"] = np.log1p(_sum(i, np.asarray(pr["amount"], dtype=np.float64), n))

    # court
    ct = data.court.columns
    i = _index(position, ct["uscc"])
    defendant = np.asarray(ct["role"]) == "defendant"
    enforcement = np.asarray(ct["case_type"]) == "enforcement"
    still_open = np.asarray(ct["status"]) == "open"
    amount = np.nan_to_num(np.asarray(ct["amount"], dtype=np.float64))
    f["court_cases_defendant"] = _count(i[defendant], n)
    f["enforcement_cases_defendant"] = _count(i[defendant & enforcement], n)
    f["open_cases_defendant"] = _count(i[defendant & still_open], n)
    f["log_court_amount_defendant"] = np.log1p(_sum(i[defendant], amount[defendant], n))
    f["court_cases_plaintiff"] = _count(i[~defendant], n)

    # dishonesty records: those in use at the end of the window (a caller that has already chosen the records
    # in use, like the safe-room's feature store, passes them without their publicity columns)
    pen = data.penalties.columns if data.penalties is not None else {}
    if pen and len(pen.get("uscc", ())):
        keep = np.ones(len(pen["uscc"]), dtype=bool)
        if "decided_on" in pen and "max_publicity_months" in pen:
            decided = np.asarray(pen["decided_on"]).astype("datetime64[D]")
            ends = np.array(
                [
                    _add_months(d, int(m))
                    for d, m in zip(
                        decided.tolist(), np.asarray(pen["max_publicity_months"]).tolist(), strict=True
                    )
                ],
                dtype="datetime64[D]",
            )
            keep = (decided < as_of) & (ends > as_of)
        i = _index(position, np.asarray(pen["uscc"])[keep])
        serious = (np.asarray(pen["grade"])[keep] == "serious") | (
            np.asarray(pen["kind"])[keep] == "serious_dishonesty"
        )
        f["dishonesty_records"] = _count(i, n)
        f["serious_dishonesty"] = (_count(i[serious], n) > 0).astype(np.float64)
    else:
        f["dishonesty_records"] = np.zeros(n)
        f["serious_dishonesty"] = np.zeros(n)

    industry = np.asarray(reg["industry"])
    for ind in INDUSTRIES:
        f[f"industry_{ind.letter.lower()}"] = (industry == ind.letter).astype(np.float64)

    assert list(f) == list(FEATURES)
    return uscc, {name: np.asarray(v, dtype=np.float64) for name, v in f.items()}


def _add_months(day: dt.date, months: int) -> dt.date:
    """Calendar months later (the month's last day where the day does not exist), as the safe-room counts."""
    m = day.month - 1 + months
    year, month = day.year + m // 12, m % 12 + 1
    last = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return dt.date(year, month, min(day.day, last))


def feature_matrix(features: dict[str, Array]) -> Array:
    """The features as an (n, k) float64 matrix, columns in the order of the dict."""
    return np.column_stack([features[name] for name in features])


# --- vectorised group-bys keyed by the enterprise index -------------------------------------------------------


def _index(position: dict[str, int], codes: Array) -> Array:
    """Registry row of every USCC in ``codes``."""
    try:
        return np.fromiter(
            (position[c] for c in np.asarray(codes).tolist()), dtype=np.int64, count=len(codes)
        )
    except KeyError as exc:
        raise ValueError(f"USCC {exc.args[0]} is not in the registry") from None


def _month_number(months: Array) -> Array:
    """``YYYY-MM`` strings -> months since 0000-01 (parsed once per distinct value)."""
    values = np.asarray(months).tolist()
    lookup = {m: int(m[:4]) * 12 + int(m[5:7]) - 1 for m in set(values)}
    return np.fromiter((lookup[m] for m in values), dtype=np.int64, count=len(values))


def _count(i: Array, n: int) -> Array:
    return np.bincount(i, minlength=n).astype(np.float64)


def _sum(i: Array, values: Array, n: int) -> Array:
    return np.bincount(i, weights=values, minlength=n)


def _mean(i: Array, values: Array, n: int) -> Array:
    """Group means; 0 where a group has no rows."""
    count = _count(i, n)
    return np.where(count > 0, _sum(i, values, n) / np.maximum(count, 1.0), 0.0)


def _group_max(i: Array, values: Array, n: int, fill: float) -> Array:
    out = np.full(n, -np.inf)
    np.maximum.at(out, i, values)
    return np.where(np.isneginf(out), fill, out)


def _group_last(i: Array, t: Array, values: Array, n: int) -> Array:
    """The value at the largest ``t`` of each group; 0 where a group has no rows."""
    out = np.zeros(n)
    if len(i) == 0:
        return out
    order = np.lexsort((t, i))
    si = i[order]
    last = np.r_[si[1:] != si[:-1], True]
    out[si[last]] = values[order][last]
    return out


def _slope(i: Array, x: Array, y: Array, n: int, min_points: int = 6) -> Array:
    """Least-squares slope of ``y`` on ``x`` per group; 0 for groups with fewer than ``min_points`` rows."""
    k = _count(i, n)
    sx, sy = _sum(i, x, n), _sum(i, y, n)
    sxx, sxy = _sum(i, x * x, n), _sum(i, x * y, n)
    denominator = k * sxx - sx * sx
    ok = (k >= min_points) & (denominator > 1e-12)
    return np.where(ok, (k * sxy - sx * sy) / np.where(ok, denominator, 1.0), 0.0)


# --- lineage: which source fields each feature reads ------------------------------------------------------------

FEATURE_INPUTS: Final[dict[str, dict[str, tuple[str, ...]]]] = {
    "company_age_years": {"registry": ("registered_on",)},
    "size_class_ordinal": {"registry": ("size_class",)},
    "individual_business": {},
    "log_registered_capital": {"registry": ("registered_capital",)},
    "tax_months_filed": {"tax": ("month",)},
    "tax_filing_ratio": {"tax": ("month",), "registry": ("registered_on",)},
    "tax_months_since_last_filing": {"tax": ("month",)},
    "log_sales_mean_last6": {"tax": ("month", "taxable_sales")},
    "log_tax_mean_last6": {"tax": ("month", "tax_paid")},
    "sales_trend": {"tax": ("month", "taxable_sales")},
    "sales_yoy_change": {"tax": ("month", "taxable_sales")},
    "si_registered": {"social_insurance": ("month",)},
    "log_headcount_last": {"social_insurance": ("month", "headcount")},
    "headcount_change": {"social_insurance": ("month", "headcount")},
    "log_contribution_per_head": {"social_insurance": ("headcount", "contributions")},
    "log_electricity_mean_last6": {"utilities": ("month", "electricity_kwh")},
    "electricity_trend": {"utilities": ("month", "electricity_kwh")},
    "log_max_arrears": {"utilities": ("arrears",)},
    "arrears_months": {"utilities": ("arrears",)},
    "log_arrears_last": {"utilities": ("month", "arrears")},
    "procurement_count": {"procurement": ("award_id",)},
    "log_procurement_total": {"procurement": ("amount",)},
    "court_cases_defendant": {"court": ("role",)},
    "enforcement_cases_defendant": {"court": ("role", "case_type")},
    "open_cases_defendant": {"court": ("role", "status")},
    "log_court_amount_defendant": {"court": ("role", "amount")},
    "court_cases_plaintiff": {"court": ("role",)},
    "dishonesty_records": {"penalties": ("record_id", "grade")},
    "serious_dishonesty": {"penalties": ("kind", "grade")},
    **{f"industry_{i.letter.lower()}": {"registry": ("industry",)} for i in INDUSTRIES},
}
"""Feature name -> {source dataset name: the fields of it the feature reads}. The subject key is read by every
feature and is not listed; a period or record column is listed where the feature reads it (dates, presence)."""

_COUNTS = {
    "size_class_ordinal",
    "tax_months_filed",
    "tax_months_since_last_filing",
    "arrears_months",
    "procurement_count",
    "court_cases_defendant",
    "enforcement_cases_defendant",
    "open_cases_defendant",
    "court_cases_plaintiff",
    "dishonesty_records",
}
FEATURE_KINDS: Final[dict[str, str]] = {
    name: (
        "binary"
        if name.startswith("industry_")
        or name in {"individual_business", "si_registered", "serious_dishonesty"}
        else "count"
        if name in _COUNTS
        else "continuous"
    )
    for name in FEATURES
}
"""Feature name -> ``binary`` (0/1), ``count`` (a non-negative integer) or ``continuous``."""

FEATURE_RESOLUTION: Final[dict[str, float]] = {
    name: (0.0 if FEATURE_KINDS[name] != "continuous" else 0.25 if name == "company_age_years" else 0.05)
    for name in FEATURES
}
"""The grid a released feature is rounded to before it enters any computation a bank can read back (0: exact).

An encrypted model cannot be inspected, so a crafted one can read a feature back through its scores; the
resolution bounds what it reads: ``log1p`` amounts to 0.05 (about 5 %), years to a quarter."""

FEATURE_UNITS: Final[dict[str, str]] = {
    name: (
        "years"
        if name == "company_age_years"
        else "months"
        if name in {"tax_months_filed", "tax_months_since_last_filing", "arrears_months"}
        else "log1p(CNY 10k)"
        if name == "log_registered_capital"
        else "log1p(CNY)"
        if name.startswith("log_") and name not in {"log_headcount_last", "log_electricity_mean_last6"}
        else "log1p(persons)"
        if name == "log_headcount_last"
        else "log1p(kWh)"
        if name == "log_electricity_mean_last6"
        else "per year (log)"
        if name.endswith("_trend")
        else ""
    )
    for name in FEATURES
}

assert set(FEATURE_INPUTS) == set(FEATURES)
