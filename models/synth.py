"""Synthetic platform data: N small enterprises in Qinghai as the 青信融 platform's data providers would see them.

What is modelled
----------------
Every enterprise gets a GB 32100-2015 unified social credit code (registration authority ``9``, type ``1``
for enterprises, ``2`` for individual businesses or ``3`` for farmers' cooperatives, a prefecture-level
division code of Qinghai (63xxxx), a random organisation code valid under GB 11714 and the check character),
an industry section of GB/T 4754-2017 drawn with regional affinities (herding and farming in the pastoral
prefectures Haibei, Huangnan, Hainan, Guoluo and Yushu; salt-lake chemicals, mining and clean energy in Haixi;
tourism around Qinghai Lake), a size class and an age. Sales follow the industry's season (livestock sold in
autumn, tourism in July and August, solar output in spring and summer) and electricity peaks in winter
(heating), not summer. Over a window of ``months`` calendar months it then gets, one table per provider:

``registry``          (market regulator) one row per enterprise: industry, region, size, registration date,
                      registered capital (snapped to round figures, as people register them).
``tax``               (tax bureau) one row per enterprise and month filed: taxable sales and tax paid. Sales
                      are lognormal by size class (heavy-tailed), with an enterprise trend, a ramp-up after
                      registration, a Spring Festival dip placed by the lunar calendar, quarter-end bumps and
                      a year-end peak. Tax paid is VAT (1 % for small-scale taxpayers, exempt at monthly sales
                      up to CNY 100,000; an effective rate for general taxpayers), surcharges, and quarterly
                      corporate income tax prepayments in January, April, July and October. Some enterprises
                      skip months, and some distressed ones stop filing before the window ends.
``social_insurance``  (human resources and social security bureau) headcount and contributions by month for
                      enterprises registered for social insurance; the headcount follows an enterprise trend.
``utilities``         (power and water company) electricity (summer and winter peaks), water (missing, NaN,
                      where the landlord is billed) and arrears at month end (mostly zero, heavy-tailed,
                      persistent once they start).
``procurement``       (public resources trading centre) government procurement awards; most enterprises
                      have none.
``court``             (court) cases with the enterprise as defendant or plaintiff: contract, labour and loan
                      disputes and enforcement; most enterprises have none.
``penalties``         (public credit centre) dishonesty records (失信信息): administrative penalties (market
                      regulation, tax, environment, work safety), listings in the abnormal-operation list and in
                      the serious-dishonesty list, each with its issuing authority, decision date, grade (minor,
                      general, serious), minimum and maximum publicity periods (NDRC 信用修复管理办法 2025) and
                      obligations (a fine, tax arrears); about 6 % of enterprises, more of the distressed. Some
                      obligations are fulfilled and it shows in other sources: the fine's payment date, and
                      tax arrears in the ``tax`` table's ``arrears`` column falling to zero.
``labels``            (what a bank would know, kept apart from the provider data) a latent probability of
                      default in the 12 months after the window and the realised 0/1 outcome.

A hidden distress factor per enterprise drives the observable signs (falling sales and headcount, arrears,
missed filings, enforcement cases as defendant, fewer procurement awards). The default probability is a
logistic function of those realised signs, young age, small size and industry risk, plus idiosyncratic
noise that no provider observes, so a model on the provider data can learn something but not everything
(about 7 % defaults; logistic regression on :func:`models.features.enterprise_features` reaches a test AUC
of about 0.75-0.8).

What is not modelled
--------------------
This is synthetic data. The distributions are plausible, not calibrated to any real region, period or
population, and must not be read as statistics about Qinghai or anywhere else. Not modelled: relations
between enterprises (supply chains, guarantees, common owners, the counterparty of a court case),
macroeconomic shocks and correlation of defaults across enterprises, tax rules beyond the simple rates
above (refunds, quarterly filing by small-scale taxpayers, individual income tax of individual
businesses), the housing fund, gas, and the real formats of provider identifiers (award and case numbers
only imitate their shape). Everything is deterministic for a given seed.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from models.uscc import ALPHABET, ORG_WEIGHTS, WEIGHTS

Array = npt.NDArray[Any]
"""A column or intermediate array (float64, int64, bool, datetime64[D] or object holding ``str``)."""

COLUMN_TYPES: Final = ("uscc", "string", "int", "float", "bool", "date", "month")
SENSITIVITY_CLASSES: Final = ("C1", "C2", "C3")

# --- reference data ---------------------------------------------------------------------------------------

REGIONS: Final[tuple[tuple[int, str, float, float], ...]] = (
    # GB/T 2260 code, prefecture-level division of Qinghai, share of enterprises, sales multiplier
    (630100, "Xining", 44.0, 1.15),
    (630200, "Haidong", 15.0, 0.9),
    (632200, "Haibei", 5.0, 0.85),
    (632300, "Huangnan", 4.0, 0.8),
    (632500, "Hainan", 8.0, 0.85),
    (632600, "Guoluo", 3.0, 0.7),
    (632700, "Yushu", 4.0, 0.7),
    (632800, "Haixi", 17.0, 1.2),
)
"""Prefecture-level administrative divisions of Qinghai; shares and multipliers are invented but plausible."""

PASTORAL: Final = frozenset({632200, 632300, 632500, 632600, 632700})
"""The pastoral prefectures (Haibei, Huangnan, Hainan, Guoluo, Yushu): herding dominates."""

REGION_AFFINITY: Final[dict[str, dict[int, float]]] = {
    "A": {632200: 4.0, 632300: 4.0, 632500: 4.0, 632600: 6.0, 632700: 6.0, 630200: 1.5},
    "B": {632800: 6.0, 632600: 1.5, 632700: 1.5},  # salt-lake potash and lithium, mining
    "C": {632800: 1.8},  # salt-lake chemicals
    "D": {632800: 5.0, 632500: 3.0},  # photovoltaic and wind parks of Qaidam and Gonghe
    "H": {632200: 1.6, 632500: 1.6, 632800: 1.3},  # Qinghai Lake and Chaka tourism
    "R": {632200: 1.6, 632500: 1.6},
}
"""Industry letter -> division -> multiplier of the industry's share there (1 where not named)."""


@dataclass(frozen=True)
class Industry:
    """A GB/T 4754-2017 section with the made-up parameters the generator uses for it."""

    letter: str
    name: str
    share_enterprise: float  # relative frequency among enterprises (type 1)
    share_individual: float  # relative frequency among individual businesses (type 2)
    risk: float  # additive default log-odds
    kwh_per_cny: float  # electricity per CNY of sales
    water_per_10k_cny: float  # m3 of water per CNY 10,000 of sales
    procurement: float  # multiplier of the rate of procurement awards
    litigation: float  # multiplier of the rate of court cases
    sales: float  # multiplier of sales


# fmt: off
INDUSTRIES: Final[tuple[Industry, ...]] = (
    # letter, name, share (enterprises), share (individual businesses), risk, kWh/CNY, m3/CNY 10k,
    # procurement, litigation, sales
    Industry("A", "Agriculture, forestry, animal husbandry and fishery", 6.0, 10.0, 0.15, 0.03, 2.0, 0.5, 0.8, 0.8),
    Industry("B", "Mining", 1.5, 0.0, 0.2, 0.10, 1.0, 0.5, 1.2, 1.2),
    Industry("C", "Manufacturing", 14.0, 3.0, 0.0, 0.06, 0.6, 1.2, 1.0, 1.0),
    Industry("D", "Electricity, heat, gas and water supply", 2.5, 0.0, -0.5, 0.05, 1.0, 1.0, 0.7, 1.5),
    Industry("E", "Construction", 10.0, 1.0, 0.35, 0.008, 0.3, 3.0, 1.8, 1.3),
    Industry("F", "Wholesale and retail trade", 27.0, 48.0, 0.15, 0.006, 0.1, 0.8, 1.2, 1.6),
    Industry("G", "Transport, storage and postal services", 4.5, 5.0, 0.1, 0.02, 0.2, 0.8, 1.1, 1.0),
    Industry("H", "Accommodation and catering", 5.0, 22.0, 0.35, 0.04, 1.5, 0.2, 0.9, 0.7),
    Industry("I", "Information transmission, software and IT services", 7.0, 1.0, -0.1, 0.01, 0.1, 2.5, 0.8, 0.9),
    Industry("J", "Finance", 0.6, 0.0, 0.2, 0.005, 0.05, 0.3, 1.5, 1.0),
    Industry("K", "Real estate", 2.0, 0.0, 0.45, 0.01, 0.1, 0.3, 1.6, 1.2),
    Industry("L", "Leasing and business services", 9.0, 2.0, 0.1, 0.008, 0.1, 1.5, 1.1, 0.9),
    Industry("M", "Scientific research and technical services", 5.0, 0.5, -0.15, 0.012, 0.2, 2.0, 0.8, 0.9),
    Industry("N", "Water conservancy, environment and public facilities", 0.7, 0.0, -0.1, 0.02, 0.5, 3.0, 0.9, 1.0),
    Industry("O", "Resident services, repair and other services", 2.0, 13.0, 0.2, 0.02, 0.8, 0.3, 0.8, 0.6),
    Industry("P", "Education", 0.6, 0.5, 0.1, 0.01, 0.5, 0.8, 0.8, 0.6),
    Industry("Q", "Health and social work", 0.5, 1.0, -0.2, 0.015, 0.6, 1.5, 0.8, 0.9),
    Industry("R", "Culture, sports and entertainment", 2.5, 3.0, 0.25, 0.015, 0.3, 0.8, 0.9, 0.7),
    # S (public administration, social organisations) and T (international organisations) are not
    # registered by the market regulator under authority code 9, so the generator never draws them.
    Industry("S", "Public administration, social security and social organisations", 0.0, 0.0, 0.0, 0.01, 0.3, 1.0, 1.0, 1.0),
    Industry("T", "International organisations", 0.0, 0.0, 0.0, 0.01, 0.3, 1.0, 1.0, 1.0),
)
# fmt: on
"""GB/T 4754-2017 sections A..T. Note: C is manufacturing, E construction, F wholesale and retail."""

SIZE_CLASSES: Final = ("micro", "small", "medium")
"""Size classes (after the 2011 SME classification); the ordinal is the index."""

SPRING_FESTIVAL: Final[dict[int, tuple[int, int]]] = {
    2010: (2, 14), 2011: (2, 3), 2012: (1, 23), 2013: (2, 10), 2014: (1, 31), 2015: (2, 19), 2016: (2, 8),
    2017: (1, 28), 2018: (2, 16), 2019: (2, 5), 2020: (1, 25), 2021: (2, 12), 2022: (2, 1), 2023: (1, 22),
    2024: (2, 10), 2025: (1, 29), 2026: (2, 17), 2027: (2, 6), 2028: (1, 26), 2029: (2, 13), 2030: (2, 3),
    2031: (1, 23), 2032: (2, 11), 2033: (1, 31), 2034: (2, 19), 2035: (2, 8),
}  # fmt: skip
"""Date of the Spring Festival (lunar new year) by year; other years assume 5 February."""

CASE_TYPES: Final = ("contract dispute", "labour dispute", "loan dispute", "enforcement")
PROVIDERS: Final = {
    "registry": "Market regulation administration",
    "tax": "Tax bureau",
    "social_insurance": "Human resources and social security bureau",
    "utilities": "Power and water company",
    "procurement": "Public resources trading centre",
    "court": "Court",
    "penalties": "Public credit centre",
    "labels": "Bank (labels; not a provider dataset)",
}

_SALES_SEASON: Final = np.array([1.0, 1.0, 1.03, 0.98, 1.0, 1.05, 0.97, 0.97, 1.04, 0.96, 1.02, 1.2])
INDUSTRY_SEASON: Final[dict[str, tuple[float, ...]]] = {
    # herding: lambing and calving in spring, livestock sold off before winter (September to November)
    "A": (0.75, 0.7, 0.75, 0.8, 0.85, 0.9, 1.0, 1.1, 1.35, 1.5, 1.35, 0.95),
    # tourism: Qinghai Lake and Chaka from June to September, little from December to March
    "H": (0.55, 0.6, 0.65, 0.8, 1.0, 1.3, 1.7, 1.75, 1.3, 0.95, 0.7, 0.6),
    "R": (0.6, 0.65, 0.7, 0.85, 1.0, 1.25, 1.6, 1.6, 1.25, 0.95, 0.75, 0.6),
    # photovoltaic and wind generation: long clear days in spring and summer
    "D": (0.8, 0.85, 1.0, 1.1, 1.15, 1.15, 1.1, 1.1, 1.05, 0.95, 0.85, 0.8),
}
"""Sales season (by calendar month) of industries that do not follow the general one (``_SALES_SEASON``)."""
_POWER_SEASON: Final = np.array([1.22, 1.15, 1.02, 0.93, 0.9, 0.9, 0.92, 0.92, 0.9, 0.97, 1.1, 1.2])
"""Electricity by calendar month on the plateau: heating and lighting make winter the peak."""
_WATER_SEASON: Final = np.array([0.92, 0.9, 0.95, 0.98, 1.03, 1.08, 1.15, 1.15, 1.05, 1.0, 0.95, 0.93])
_ELECTRICITY_PRICE: Final = 0.68  # CNY per kWh
_WATER_PRICE: Final = 4.6  # CNY per m3
_SI_RATE: Final = 0.355  # employer + employee shares of the contribution base
_SI_BASE_MIN, _SI_BASE_MAX = 4494.0, 24042.0  # CNY per month
_LABEL_INTERCEPT: Final = -4.0
_LABEL_NOISE: Final = 1.0
_PRE: Final = 3  # months simulated before the window (for quarterly tax on the previous quarter)
_START = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


# --- containers -------------------------------------------------------------------------------------------


def column(
    name: str, type_: str, description: str, sensitivity: str, unit: str | None = None
) -> dict[str, Any]:
    """One column entry of a schema."""
    return {"name": name, "type": type_, "unit": unit, "description": description, "sensitivity": sensitivity}


GSXT: Final = "国家企业信用信息公示系统 (National Enterprise Credit Information Publicity System)"
CREDIT_CHINA: Final = "信用中国 (Credit China) and the issuing authority's publication"
COURT_PUBLIC: Final = (
    "中国裁判文书网 and 中国执行信息公开网 (judgements and enforcement published by the courts)"
)


def disclose(columns: Any, modes: dict[str, str], published_in: str | None = None) -> None:
    """Declare the disclosure mode (issue 23) of the named columns; ``public`` ones name where they are published."""
    for col in columns:
        mode = modes.get(col["name"])
        if mode is None:
            continue
        col["disclosure"] = mode
        if mode == "public":
            col["published_in"] = published_in


@dataclass(frozen=True)
class Table:
    """One dataset as its provider would upload it: column-major arrays plus the declared schema.

    ``schema`` has the shape the upload API consumes: ``dataset``, ``subject_key``, ``period_key``,
    ``record_key`` and ``columns`` (each with ``name``, ``type``, ``unit``, ``description``, ``sensitivity``).
    Strings are numpy object arrays of ``str``, dates ``datetime64[D]``, missing floats NaN.
    """

    name: str
    provider: str
    schema: dict[str, Any]
    columns: dict[str, Array]

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.columns.values())))

    @property
    def key_columns(self) -> list[str]:
        """The columns that together identify a row."""
        extra = self.schema["period_key"] or self.schema["record_key"]
        return [self.schema["subject_key"], extra] if extra else [self.schema["subject_key"]]

    def __len__(self) -> int:
        return self.n_rows

    def write_csv(self, directory: str | Path) -> list[Path]:
        """Write ``<name>.csv`` (UTF-8, header row, ISO dates, empty cell for missing) and ``<name>.schema.json``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        csv_path = out / f"{self.name}.csv"
        names = [c["name"] for c in self.schema["columns"]]
        with csv_path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(names)
            for batch in _row_batches([self.columns[c] for c in names], 250_000):
                writer.writerows(batch)
        schema_path = out / f"{self.name}.schema.json"
        schema_path.write_text(json.dumps(self.schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return [csv_path, schema_path]


def _cells(values: Array) -> list[Any]:
    """Python values the csv module writes as wanted: ISO dates, ``true``/``false``, None (empty) for NaN."""
    kind = values.dtype.kind
    if kind == "M":
        dates: list[Any] = values.astype("datetime64[D]").astype(str).tolist()
        for i in np.flatnonzero(np.isnat(values)).tolist():
            dates[i] = None
        return dates
    if kind == "b":
        return np.where(values, "true", "false").tolist()  # type: ignore[no-any-return]
    cells: list[Any] = values.tolist()
    if kind == "f":
        for i in np.flatnonzero(np.isnan(values)).tolist():
            cells[i] = None
    return cells


def _row_batches(columns: list[Array], size: int) -> Iterator[Iterator[tuple[Any, ...]]]:
    n = len(columns[0]) if columns else 0
    for lo in range(0, n, size):
        yield zip(*(_cells(c[lo : lo + size]) for c in columns), strict=True)


@dataclass(frozen=True)
class PlatformData:
    """The six provider datasets plus the bank-side labels, for ``months`` months from ``start``."""

    registry: Table
    tax: Table
    social_insurance: Table
    utilities: Table
    procurement: Table
    court: Table
    labels: Table
    seed: int
    start: str
    months: int
    penalties: Table | None = None
    """dishonesty records (None where a caller builds platform data without them)"""

    @property
    def as_of(self) -> np.datetime64:
        """The first day after the window (reference date for ages; labels look 12 months ahead of it)."""
        year, month = int(self.start[:4]), int(self.start[5:7]) - 1 + self.months
        return np.datetime64(dt.date(year + month // 12, month % 12 + 1, 1), "D")

    def provider_tables(self) -> tuple[Table, ...]:
        """The datasets providers would upload (everything but the labels)."""
        tables = (
            self.registry,
            self.tax,
            self.social_insurance,
            self.utilities,
            self.procurement,
            self.court,
        )
        return (*tables, self.penalties) if self.penalties is not None else tables

    def tables(self) -> tuple[Table, ...]:
        """All tables, the labels last."""
        return (*self.provider_tables(), self.labels)

    def write_csv(self, directory: str | Path, *, include_labels: bool = True) -> list[Path]:
        """Write ``<name>.csv`` and ``<name>.schema.json`` for every table; returns the paths written."""
        tables = self.tables() if include_labels else self.provider_tables()
        paths: list[Path] = []
        for table in tables:
            paths.extend(table.write_csv(directory))
        return paths


# --- helpers ----------------------------------------------------------------------------------------------


def _sigmoid(x: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-x))


def _choice(rng: np.random.Generator, weights: Array, size: int) -> Array:
    """Category indices drawn with the given relative weights (zero weight: never drawn)."""
    cumulative = np.cumsum(np.asarray(weights, dtype=np.float64))
    cumulative /= cumulative[-1]  # the last entries are exactly 1.0, and draws are below 1
    return np.searchsorted(cumulative, rng.random(size), side="right")


def _snap_round(x: Array) -> Array:
    """Snap positive amounts to the nearest 1, 2, 3 or 5 times a power of ten (registered capital)."""
    exponent = np.floor(np.log10(x))
    mantissa = x / 10.0**exponent
    steps = np.array([1.0, 2.0, 3.0, 5.0, 10.0])
    nearest = steps[np.abs(np.log(mantissa)[:, None] - np.log(steps)[None, :]).argmin(axis=1)]
    return np.asarray(nearest * 10.0**exponent)


def _str_objects(values: Array) -> Array:
    """A numpy object array of Python ``str``."""
    out = np.empty(len(values), dtype=object)
    out[:] = np.asarray(values).astype(str).tolist()
    return out


def _usccs(rng: np.random.Generator, kind: Array, region_code: Array) -> Array:
    """Unique valid USCCs: ``9`` + ``kind`` (1, 2, 3) + division + organisation code + check character.

    The organisation code is eight random body characters and their GB 11714 check character; the final check
    character ``31 - sum(v_i * 3**i mod 31) mod 31`` is computed for all codes at once. Bodies are drawn as
    integers below 31**8 and redrawn until they are all different (as real ones are).
    """
    n = len(kind)
    space = 31**8
    org = rng.integers(0, space, size=n, dtype=np.int64)
    while True:
        _, first = np.unique(org, return_index=True)
        if len(first) == n:
            break
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        org[dup] = rng.integers(0, space, size=int(dup.sum()), dtype=np.int64)
    values = np.empty((n, 18), dtype=np.int64)
    values[:, 0] = 9
    values[:, 1] = kind
    for k in range(6):
        values[:, 2 + k] = region_code // 10 ** (5 - k) % 10
    for k in range(8):
        values[:, 15 - k] = org // 31**k % 31
    gb11714 = np.array([int(c) if c.isdigit() else ord(c) - 55 for c in ALPHABET], dtype=np.int64)
    org_check = 11 - (gb11714[values[:, 8:16]] @ np.array(ORG_WEIGHTS, dtype=np.int64)) % 11
    digit_index = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ALPHABET.index("X"), 0], dtype=np.int64)
    values[:, 16] = digit_index[org_check]
    total = values[:, :17] @ np.array(WEIGHTS, dtype=np.int64)
    values[:, 17] = (31 - total % 31) % 31
    chars = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)[values]
    return _str_objects(np.ascontiguousarray(chars).view("S18").ravel().astype("U18"))


def _spring_festival_share(months_m: Array) -> Array:
    """Per month, the share of its days inside the holiday slowdown (5 days before to 15 after the festival)."""
    share = np.zeros(len(months_m))
    for j, m in enumerate(months_m.tolist()):
        first = dt.date(m.year, m.month, 1)
        nxt = dt.date(m.year + m.month // 12, m.month % 12 + 1, 1)
        month, day = SPRING_FESTIVAL.get(m.year, (2, 5))
        festival = dt.date(m.year, month, day)
        lo, hi = festival - dt.timedelta(days=5), festival + dt.timedelta(days=15)
        overlap = (min(hi, nxt) - max(lo, first)).days
        share[j] = max(overlap, 0) / (nxt - first).days
    return share


def _random_dates(rng: np.random.Generator, low: Array, high: Array) -> Array:
    """Uniform dates in ``[low, high)`` (datetime64[D] arrays)."""
    span = (high - low).astype(np.int64)
    return low + (rng.random(len(span)) * span).astype(np.int64)


def _grouped_sequence(rng: np.random.Generator, group: Array, start: int, step: int) -> Array:
    """Increasing numbers within each group (rows already ordered): ``start`` + cumulated random gaps."""
    gaps = rng.integers(1, step + 1, size=len(group))
    total = np.cumsum(gaps)
    new = np.r_[True, group[1:] != group[:-1]] if len(group) else np.zeros(0, dtype=bool)
    first = np.flatnonzero(new)
    base = np.repeat(total[first] - gaps[first], np.diff(np.r_[first, len(group)]))
    return np.asarray(start + total - base)


# --- the generator ----------------------------------------------------------------------------------------


def generate(n: int, seed: int, *, months: int = 24, start: str = "2024-01") -> PlatformData:
    """Generate platform data for ``n`` enterprises over ``months`` months from ``start`` (``YYYY-MM``).

    Deterministic for a given ``(n, seed, months, start)``. Vectorised: 100,000 enterprises take a few seconds.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    if months < 1:
        raise ValueError("months must be at least 1")
    if not _START.match(start):
        raise ValueError(f"start must be a month YYYY-MM, got {start!r}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(9)]
    e = _Enterprises.draw(streams[0], n, months, start)
    registry = _registry(streams[7], e)
    tax, sales = _tax(streams[1], e)
    social = _social_insurance(streams[2], e)
    utilities, arrears_months = _utilities(streams[3], e, sales)
    procurement, awards = _procurement(streams[4], e)
    court, enforcement, other_defendant = _court(streams[5], e)
    labels = _labels(streams[6], e, arrears_months, enforcement, other_defendant, awards)
    penalties, tax = _penalties(streams[8], e, tax)  # its own stream: the other tables do not change
    return PlatformData(
        registry, tax, social, utilities, procurement, court, labels, seed, start, months, penalties
    )


@dataclass
class _Enterprises:
    """Per-enterprise draws shared by the tables (index ``i`` is the row of the registry)."""

    n: int
    months: int
    start: np.datetime64  # first month of the window, datetime64[M]
    as_of: np.datetime64  # first day after the window
    uscc: Array
    individual: Array
    cooperative: Array  # farmers' professional cooperatives (USCC type 3)
    size: Array  # 0 micro, 1 small, 2 medium
    industry: Array  # index into INDUSTRIES
    region: Array  # index into REGIONS
    registered_on: Array  # datetime64[D]
    reg_t: Array  # month index of registration relative to the window start (may be negative)
    distress: Array  # hidden N(0, 1)
    scale: Array  # hidden N(0, 1), size within the size class
    sales_trend: Array  # log growth per year
    staff_trend: Array  # log growth per year of headcount
    stop_t: Array  # month index from which the enterprise no longer files (``months`` if never)
    gap_rate: Array  # probability of not filing a given month
    month_labels: Array  # "YYYY-MM" of the window, object array
    calendar: Array  # calendar month 1..12 for t = -_PRE .. months-1
    festival: Array  # Spring Festival share for t = -_PRE .. months-1

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, months: int, start: str) -> _Enterprises:
        start_m = np.datetime64(start, "M")
        as_of = (start_m + months).astype("datetime64[D]")
        months_m = start_m + np.arange(-_PRE, months)
        draw = rng.random(n)
        individual = draw < 0.2
        cooperative = (draw >= 0.2) & (draw < 0.26)
        size = np.where(individual, 0, _choice(rng, np.array([0.66, 0.27, 0.07]), n))
        size = np.where(cooperative, np.minimum(size, 1), size)
        region = _choice(rng, np.array([r[2] for r in REGIONS]), n)
        region_code = np.array([r[0] for r in REGIONS], dtype=np.int64)[region]
        industry = np.empty(n, dtype=np.int64)
        for r, (code, *_rest) in enumerate(REGIONS):
            here = region == r
            affinity = np.array([REGION_AFFINITY.get(i.letter, {}).get(code, 1.0) for i in INDUSTRIES])
            for mask, shares in (
                (here & individual, [i.share_individual for i in INDUSTRIES]),
                (here & ~individual & ~cooperative, [i.share_enterprise for i in INDUSTRIES]),
                (here & cooperative, [12.0 if i.letter == "A" else 0.0 for i in INDUSTRIES]),
            ):
                industry[mask] = _choice(rng, np.array(shares) * affinity, int(mask.sum()))
        # cooperatives: mostly herding and farming, some run guesthouses or sell local produce
        coop_other = cooperative & (rng.random(n) < 0.2)
        letters = [i.letter for i in INDUSTRIES]
        industry[coop_other] = np.array([letters.index("H"), letters.index("F")])[
            rng.integers(0, 2, size=int(coop_other.sum()))
        ]
        kind = np.where(individual, 2, np.where(cooperative, 3, 1))
        uscc = _usccs(rng, kind, region_code)
        age_scale = np.where(individual, 3.5, np.array([4.0, 5.0, 6.5])[size])
        age_days = np.minimum(rng.gamma(2.0, age_scale) * 365.25, 30 * 365.25).astype(np.int64) + 60
        registered_on = as_of - age_days
        reg_t = (registered_on.astype("datetime64[M]") - start_m).astype(np.int64)
        distress = rng.standard_normal(n)
        scale = rng.standard_normal(n)
        age_years = age_days / 365.25
        sales_trend = 0.04 - 0.12 * distress + 0.10 * rng.standard_normal(n) + 0.10 * np.exp(-age_years / 2)
        staff_trend = 0.01 + 0.45 * (sales_trend - 0.04) - 0.04 * distress + 0.05 * rng.standard_normal(n)
        stops = rng.random(n) < _sigmoid(-4.3 + 1.2 * distress)
        stop_t = np.where(stops, months - rng.integers(1, min(9, months) + 1, size=n), months)
        stop_t = np.maximum(stop_t, reg_t + 2)
        punctual = rng.random(n) < 0.7
        gap_rate = np.where(punctual, 0.0, _sigmoid(-3.0 + 0.8 * distress + 0.6 * individual))
        return cls(
            n=n,
            months=months,
            start=start_m,
            as_of=as_of,
            uscc=uscc,
            individual=individual,
            cooperative=cooperative,
            size=size,
            industry=industry,
            region=region,
            registered_on=registered_on,
            reg_t=reg_t,
            distress=distress,
            scale=scale,
            sales_trend=sales_trend,
            staff_trend=staff_trend,
            stop_t=stop_t,
            gap_rate=gap_rate,
            month_labels=_str_objects(months_m[_PRE:].astype(str)),
            calendar=months_m.astype(np.int64) % 12 + 1,
            festival=_spring_festival_share(months_m),
        )

    def industry_param(self, attr: str) -> Array:
        return np.array([getattr(i, attr) for i in INDUSTRIES], dtype=np.float64)[self.industry]

    def t(self) -> Array:
        """Month indices -_PRE .. months-1."""
        return np.arange(-_PRE, self.months)

    def monthly_rows(self, present: Array) -> tuple[Array, Array]:
        """Enterprise and window-month indices of the cells of an (n, months) mask, enterprise-major."""
        i, t = np.nonzero(present)
        return i, t


_USCC_COLUMN: Final = column(
    "uscc", "uscc", "unified social credit code (GB 32100-2015), public registration identifier", "C1"
)


def _registry(rng: np.random.Generator, e: _Enterprises) -> Table:
    region_code = np.array([str(r[0]) for r in REGIONS], dtype=object)[e.region]
    letters = np.array([i.letter for i in INDUSTRIES], dtype=object)[e.industry]
    sizes = np.array(SIZE_CLASSES, dtype=object)[e.size]
    median = np.where(e.individual, 5.0, np.array([50.0, 300.0, 1500.0])[e.size])
    capital = _snap_round(median * np.exp(0.6 * e.scale + 0.8 * rng.standard_normal(e.n)))
    schema = {
        "dataset": "registry",
        "subject_key": "uscc",
        "period_key": None,
        "record_key": None,
        "columns": [
            _USCC_COLUMN,
            column("industry", "string", "GB/T 4754-2017 industry section letter (A..T)", "C1"),
            column("region", "string", "GB/T 2260 administrative division of registration (Qinghai)", "C1"),
            column("size_class", "string", "enterprise size class: micro, small or medium", "C1"),
            column(
                "entity_type",
                "string",
                "enterprise, individual_business or cooperative (USCC type 1, 2 or 3)",
                "C1",
            ),
            column("registered_on", "date", "date of establishment", "C1"),
            column("registered_capital", "float", "registered (subscribed) capital", "C1", "CNY 10k"),
        ],
    }
    columns = {
        "uscc": e.uscc,
        "industry": letters,
        "region": region_code,
        "size_class": sizes,
        "entity_type": np.array(["enterprise", "individual_business", "cooperative"], dtype=object)[
            np.where(e.individual, 1, np.where(e.cooperative, 2, 0))
        ],
        "registered_on": e.registered_on,
        "registered_capital": np.round(capital, 2),
    }
    disclose(
        schema["columns"],
        dict.fromkeys(
            ("industry", "region", "size_class", "entity_type", "registered_on", "registered_capital"),
            "public",
        ),
        GSXT,
    )
    return Table("registry", PROVIDERS["registry"], schema, columns)


def _tax(rng: np.random.Generator, e: _Enterprises) -> tuple[Table, Array]:
    """Monthly taxable sales and tax paid; returns the table and the full (n, _PRE + months) sales matrix."""
    n, t = e.n, e.t()
    region_mult = np.array([r[3] for r in REGIONS])[e.region]
    median = np.where(e.individual, 20_000.0, np.array([60_000.0, 600_000.0, 5_000_000.0])[e.size])
    sigma = np.where(e.individual, 0.8, np.array([1.0, 0.8, 0.8])[e.size])
    base = median * np.exp(sigma * e.scale) * e.industry_param("sales") * region_mult
    seasons = np.array(
        [INDUSTRY_SEASON.get(i.letter, tuple(_SALES_SEASON.tolist())) for i in INDUSTRIES], dtype=np.float64
    )
    season = seasons[e.industry][:, e.calendar - 1] * (1.0 - 0.45 * e.festival)[None, :]
    noise_sd = np.where(e.size == 2, 0.15, np.where(e.size == 1, 0.2, 0.28))
    since = t[None, :] - e.reg_t[:, None]
    ramp = 1.0 - 0.6 * np.exp(-np.maximum(since, 0) / 6.0)
    log_noise = noise_sd[:, None] * rng.standard_normal((n, len(t)))
    sales = base[:, None] * np.exp(e.sales_trend[:, None] * (t / 12.0)[None, :] + log_noise)
    sales *= season * ramp
    sales[since < 0] = 0.0
    sales = np.round(sales, 2)

    small_scale = e.individual | (e.size == 0) | (base * 12 < 5_000_000)
    vat_rate = np.clip(0.025 * np.exp(0.35 * rng.standard_normal(n)), 0.003, 0.08)
    vat = np.where(
        small_scale[:, None],
        np.where(sales > 100_000, 0.01 * sales, 0.0),
        vat_rate[:, None] * sales,
    )
    surcharge = vat * np.where(small_scale, 0.06, 0.12)[:, None]
    margin = np.clip(0.07 - 0.03 * e.distress + 0.04 * rng.standard_normal(n), -0.2, 0.35)
    cit_rate = np.where(e.individual, 0.0, np.where(e.size == 2, 0.25, 0.05))
    previous_quarter = np.zeros_like(sales)
    previous_quarter[:, _PRE:] = sales[:, _PRE - 1 : -1] + sales[:, _PRE - 2 : -2] + sales[:, _PRE - 3 : -3]
    quarter_month = np.isin(e.calendar, (1, 4, 7, 10))
    cit = (np.maximum(margin, 0.0) * cit_rate)[:, None] * previous_quarter * quarter_month[None, :]
    tax_paid = np.round(vat + surcharge + cit, 2)

    window = np.arange(e.months)
    filed = (window[None, :] >= e.reg_t[:, None]) & (window[None, :] < e.stop_t[:, None])
    filed &= rng.random((n, e.months)) >= e.gap_rate[:, None]
    i, j = e.monthly_rows(filed)
    schema = {
        "dataset": "tax",
        "subject_key": "uscc",
        "period_key": "month",
        "record_key": None,
        "columns": [
            _USCC_COLUMN,
            column("month", "month", "tax period (month filed for)", "C1"),
            column("taxable_sales", "float", "sales declared in the VAT return for the month", "C2", "CNY"),
            column(
                "tax_paid",
                "float",
                "tax paid for the month: VAT, surcharges and quarterly corporate income tax prepayment",
                "C2",
                "CNY",
            ),
        ],
    }
    columns = {
        "uscc": e.uscc[i],
        "month": e.month_labels[j],
        "taxable_sales": sales[:, _PRE:][i, j],
        "tax_paid": tax_paid[:, _PRE:][i, j],
    }
    disclose(schema["columns"], {"taxable_sales": "masked", "tax_paid": "masked"})
    return Table("tax", PROVIDERS["tax"], schema, columns), sales


def _social_insurance(rng: np.random.Generator, e: _Enterprises) -> Table:
    n = e.n
    covered = rng.random(n) < np.where(e.individual, 0.3, np.array([0.88, 0.96, 0.99])[e.size])
    median = np.where(e.individual, 2.0, np.array([5.0, 30.0, 150.0])[e.size])
    low = np.where(e.individual, 1.0, np.array([1.0, 8.0, 60.0])[e.size])
    high = np.where(e.individual, 8.0, np.array([25.0, 120.0, 600.0])[e.size])
    staff0 = np.clip(median * np.exp(0.5 * e.scale + 0.5 * rng.standard_normal(n)), low, high)
    tt = np.arange(e.months) / 12.0
    level = staff0[:, None] * np.exp(
        e.staff_trend[:, None] * tt[None, :] + 0.04 * rng.standard_normal((n, e.months))
    )
    headcount = np.rint(level).astype(np.int64)
    wage_median = np.where((e.individual) | (e.size == 0), 4800.0, 6500.0)
    wage = np.clip(wage_median * np.exp(0.3 * rng.standard_normal(n)), _SI_BASE_MIN, _SI_BASE_MAX)
    # the contribution base is adjusted every July
    years_of_july = np.cumsum(e.calendar[_PRE:] == 7)
    base = wage[:, None] * (1.03**years_of_july)[None, :]
    contributions = np.round(headcount * base * _SI_RATE, 2)
    window = np.arange(e.months)
    present = covered[:, None] & (window[None, :] >= e.reg_t[:, None]) & (window[None, :] < e.stop_t[:, None])
    present &= rng.random((n, e.months)) >= 0.003
    i, j = e.monthly_rows(present)
    schema = {
        "dataset": "social_insurance",
        "subject_key": "uscc",
        "period_key": "month",
        "record_key": None,
        "columns": [
            _USCC_COLUMN,
            column("month", "month", "contribution month", "C1"),
            column("headcount", "int", "employees insured in the month", "C2", "persons"),
            column(
                "contributions",
                "float",
                "social insurance contributions (employer and employee shares) for the month",
                "C2",
                "CNY",
            ),
        ],
    }
    columns = {
        "uscc": e.uscc[i],
        "month": e.month_labels[j],
        "headcount": headcount[i, j],
        "contributions": contributions[i, j],
    }
    disclose(schema["columns"], {"headcount": "masked", "contributions": "aggregate_only"})
    return Table("social_insurance", PROVIDERS["social_insurance"], schema, columns)


def _utilities(rng: np.random.Generator, e: _Enterprises, sales: Array) -> tuple[Table, Array]:
    """Electricity, water and arrears; returns the table and the per-enterprise worst arrears in bills."""
    n, months = e.n, e.months
    tt = np.arange(months) / 12.0
    window = np.arange(months)
    calendar = e.calendar[_PRE:]
    festival = e.festival[_PRE:]
    base_sales = np.maximum(sales.sum(axis=1) / np.maximum((sales > 0).sum(axis=1), 1), 1.0)
    idle = window[None, :] >= e.stop_t[:, None]
    activity = np.exp(0.7 * e.sales_trend[:, None] * tt[None, :]) * np.where(idle, 0.15, 1.0)

    kwh_base = e.industry_param("kwh_per_cny") * base_sales * np.exp(0.5 * rng.standard_normal(n))
    power_season = _POWER_SEASON[calendar - 1] * (1.0 - 0.35 * festival)
    kwh = (
        kwh_base[:, None] * activity * power_season[None, :] * np.exp(0.1 * rng.standard_normal((n, months)))
    )
    kwh = np.rint(np.maximum(kwh, 30.0))
    kwh[rng.random((n, months)) < 0.003] = np.nan

    staff_proxy = np.where(e.individual, 2.0, np.array([5.0, 30.0, 150.0])[e.size]) * np.exp(0.5 * e.scale)
    water_base = (2.5 * staff_proxy + e.industry_param("water_per_10k_cny") * base_sales / 10_000.0) * np.exp(
        0.4 * rng.standard_normal(n)
    )
    water_season = _WATER_SEASON[calendar - 1] * (1.0 - 0.3 * festival)
    water = (
        water_base[:, None]
        * activity
        * water_season[None, :]
        * np.exp(0.1 * rng.standard_normal((n, months)))
    )
    water = np.round(np.maximum(water, 1.0), 1)
    landlord_billed = rng.random(n) < 0.12
    water[landlord_billed, :] = np.nan
    water[rng.random((n, months)) < 0.003] = np.nan

    bill = np.nan_to_num(kwh) * _ELECTRICITY_PRICE + np.nan_to_num(water) * _WATER_PRICE
    bill = np.where(np.isnan(kwh), kwh_base[:, None] * _ELECTRICITY_PRICE, bill)
    p_enter = _sigmoid(-5.2 + 1.3 * e.distress)
    p_stay = _sigmoid(0.6 + 0.7 * e.distress)
    arrears = np.zeros((n, months))
    in_arrears = np.zeros(n, dtype=bool)
    previous = np.zeros(n)
    draws = rng.random((n, months))
    unpaid = rng.uniform(0.3, 1.0, size=(n, months))
    for k in range(months):
        enter = np.where(idle[:, k], np.minimum(4 * p_enter, 0.9), p_enter)
        in_arrears = np.where(in_arrears, draws[:, k] < p_stay, draws[:, k] < enter)
        in_arrears &= k >= e.reg_t
        previous = np.where(in_arrears, 0.7 * previous + unpaid[:, k] * bill[:, k], 0.0)
        arrears[:, k] = previous
    arrears = np.round(arrears, 2)
    mean_bill = np.maximum(bill.mean(axis=1), 1.0)
    worst_in_bills = arrears.max(axis=1) / mean_bill

    present = window[None, :] >= e.reg_t[:, None]
    i, j = e.monthly_rows(present)
    schema = {
        "dataset": "utilities",
        "subject_key": "uscc",
        "period_key": "month",
        "record_key": None,
        "columns": [
            _USCC_COLUMN,
            column("month", "month", "billing month", "C1"),
            column(
                "electricity_kwh", "float", "electricity consumed; empty if no meter reading", "C2", "kWh"
            ),
            column(
                "water_m3", "float", "water consumed; empty if billed to the landlord or not read", "C2", "m3"
            ),
            column("arrears", "float", "utility bills outstanding and overdue at month end", "C2", "CNY"),
        ],
    }
    columns = {
        "uscc": e.uscc[i],
        "month": e.month_labels[j],
        "electricity_kwh": kwh[i, j],
        "water_m3": water[i, j],
        "arrears": arrears[i, j],
    }
    disclose(schema["columns"], {"electricity_kwh": "aggregate_only", "arrears": "masked"})
    return Table("utilities", PROVIDERS["utilities"], schema, columns), worst_in_bills


def _event_window(e: _Enterprises) -> tuple[Array, Array, Array]:
    """Per enterprise: first and end day at which events can happen, and that span as a share of the window."""
    window_start = e.start.astype("datetime64[D]")
    low = np.maximum(e.registered_on, window_start)
    high = np.full(e.n, e.as_of)
    share = (high - low).astype(np.int64) / max(int((e.as_of - window_start).astype(np.int64)), 1)
    return low, high, share


def _procurement(rng: np.random.Generator, e: _Enterprises) -> tuple[Table, Array]:
    """Government procurement awards; returns the table and the number of awards per enterprise."""
    low, high, share_active = _event_window(e)
    rate = np.array([0.03, 0.2, 0.7])[e.size] * e.industry_param("procurement") * np.exp(-0.25 * e.distress)
    rate *= np.where(e.individual, 0.1, 1.0) * share_active * e.months / 24.0
    counts = rng.poisson(rate)
    idx = np.repeat(np.arange(e.n), counts)
    dates = _random_dates(rng, low[idx], high[idx])
    amount_median = np.where(e.individual, 50_000.0, np.array([150_000.0, 600_000.0, 3_000_000.0])[e.size])
    amounts = np.round(amount_median[idx] * np.exp(1.1 * rng.standard_normal(len(idx))), -2)
    amounts = np.maximum(amounts, 1000.0)
    order = np.argsort(dates, kind="stable")
    year = dates[order].astype("datetime64[Y]").astype(np.int64) + 1970
    seq = _grouped_sequence(rng, year, 1, 30)
    region_code = np.array([str(r[0]) for r in REGIONS])[e.region[idx[order]]]
    ids = np.empty(len(idx), dtype=object)
    ids[order] = [
        f"QHZC-{r}-{y}-{s:06d}"
        for r, y, s in zip(region_code.tolist(), year.tolist(), seq.tolist(), strict=True)
    ]
    rows = np.lexsort((dates, idx))
    schema = {
        "dataset": "procurement",
        "subject_key": "uscc",
        "period_key": None,
        "record_key": "award_id",
        "columns": [
            _USCC_COLUMN,
            column(
                "award_id", "string", "procurement project and award number (as in the award notice)", "C1"
            ),
            column("award_date", "date", "date the award was announced", "C1"),
            column("amount", "float", "contract amount awarded", "C2", "CNY"),
        ],
    }
    columns = {
        "uscc": e.uscc[idx[rows]],
        "award_id": ids[rows],
        "award_date": dates[rows],
        "amount": amounts[rows],
    }
    return Table("procurement", PROVIDERS["procurement"], schema, columns), counts


def _court(rng: np.random.Generator, e: _Enterprises) -> tuple[Table, Array, Array]:
    """Court cases; returns the table, enforcement cases as defendant and other cases as defendant."""
    low, high, share_active = _event_window(e)
    exposure = (
        e.industry_param("litigation") * np.where(e.individual, 0.5, 1.0) * share_active * e.months / 24.0
    )
    as_defendant = rng.poisson(np.array([0.06, 0.2, 0.5])[e.size] * exposure * np.exp(0.9 * e.distress - 0.3))
    as_plaintiff = rng.poisson(np.array([0.04, 0.2, 0.6])[e.size] * exposure * np.exp(0.1 * e.distress))
    idx = np.r_[np.repeat(np.arange(e.n), as_defendant), np.repeat(np.arange(e.n), as_plaintiff)]
    defendant = np.r_[np.ones(as_defendant.sum(), dtype=bool), np.zeros(as_plaintiff.sum(), dtype=bool)]
    m = len(idx)
    p_enforce = np.where(defendant, _sigmoid(-1.5 + 0.9 * e.distress[idx]), 0.13)
    enforce = rng.random(m) < p_enforce
    civil = np.where(
        defendant[:, None], np.array([[0.55, 0.2, 0.25]]), np.array([[0.85, 0.03, 0.12]])
    ).cumsum(axis=1)
    civil_type = (rng.random(m)[:, None] > civil).sum(axis=1).clip(0, 2)
    case_type = np.where(enforce, 3, civil_type)
    dates = _random_dates(rng, low[idx], high[idx])
    size_mult = np.where(e.individual, 0.5, np.array([1.0, 3.0, 10.0])[e.size])[idx]
    median = np.array([150_000.0, 25_000.0, 300_000.0, 200_000.0])[case_type]
    sigma = np.array([1.2, 0.8, 1.1, 1.2])[case_type]
    labour = case_type == 1
    amounts = (
        median * np.where(labour, np.sqrt(size_mult), size_mult) * np.exp(sigma * rng.standard_normal(m))
    )
    amounts = np.round(amounts, 2)
    age = (e.as_of - dates).astype(np.int64)
    tau = np.where(enforce, 400.0, 200.0) * np.where(
        defendant & enforce, 1.0 + _sigmoid(e.distress[idx]), 1.0
    )
    open_ = rng.random(m) < np.exp(-age / tau)

    kind = np.where(enforce, 1, 0)
    year = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    prefecture = np.array([int(str(r[0])[2:4]) for r in REGIONS])[e.region[idx]]
    district = rng.integers(2, 13, size=e.n)[idx]  # the basic-level court of the enterprise's district
    # case numbers run per court, year and kind; other parties' cases fill the gaps
    court_key = ((kind * 10_000 + year) * 100 + prefecture) * 100 + district
    order = np.lexsort((dates, court_key))
    seq = _grouped_sequence(rng, court_key[order], 1, 60)
    word = np.array(["民初", "执"], dtype=object)[kind]
    ids = np.empty(m, dtype=object)
    ids[order] = [
        f"({y})青{p:02d}{d:02d}{w}{s}号"
        for y, p, d, w, s in zip(
            year[order].tolist(),
            prefecture[order].tolist(),
            district[order].tolist(),
            word[order].tolist(),
            seq.tolist(),
            strict=True,
        )
    ]
    rows = np.lexsort((dates, idx))
    schema = {
        "dataset": "court",
        "subject_key": "uscc",
        "period_key": None,
        "record_key": "case_id",
        "columns": [
            _USCC_COLUMN,
            column(
                "case_id", "string", "case number, e.g. (2024)青0102民初1234号; names the judgement", "C3"
            ),
            column("filed_on", "date", "date the case was filed", "C2"),
            column(
                "case_type", "string", "contract dispute, labour dispute, loan dispute or enforcement", "C2"
            ),
            column("role", "string", "the enterprise's role: defendant (or respondent) or plaintiff", "C2"),
            column("amount", "float", "amount in dispute or to be enforced", "C3", "CNY"),
            column("status", "string", "open or closed at the end of the window", "C2"),
        ],
    }
    columns = {
        "uscc": e.uscc[idx[rows]],
        "case_id": ids[rows],
        "filed_on": dates[rows],
        "case_type": np.array(CASE_TYPES, dtype=object)[case_type[rows]],
        "role": np.array(["plaintiff", "defendant"], dtype=object)[defendant[rows].astype(np.int64)],
        "amount": amounts[rows],
        "status": np.array(["closed", "open"], dtype=object)[open_[rows].astype(np.int64)],
    }
    enforcement = np.bincount(idx[defendant & enforce], minlength=e.n)
    other = np.bincount(idx[defendant & ~enforce], minlength=e.n)
    disclose(
        schema["columns"], dict.fromkeys(("filed_on", "case_type", "role", "status"), "public"), COURT_PUBLIC
    )
    return Table("court", PROVIDERS["court"], schema, columns), enforcement, other


RECORD_KINDS: Final = ("administrative_penalty", "abnormal_operation", "serious_dishonesty")
"""Dishonesty information kinds (行政处罚、经营异常名录、严重失信主体名单)."""
AUTHORITIES: Final = ("market_regulation", "tax", "environment", "work_safety")
GRADES: Final = ("minor", "general", "serious")
PUBLICITY_MONTHS: Final[dict[str, tuple[int, int]]] = {
    "minor": (0, 3),
    "general": (3, 12),
    "serious": (12, 36),
}
"""Grade -> (minimum, maximum) publicity months under the NDRC 信用修复管理办法 (2025): minor information is in
principle not published and used at most 3 months; general 3 months to 1 year; serious 1 to 3 years."""
_AUTHORITY_WORD: Final = {
    "market_regulation": "市监",
    "tax": "税",
    "environment": "环",
    "work_safety": "应急",
}


def _penalties(rng: np.random.Generator, e: _Enterprises, tax: Table) -> tuple[Table, Table]:
    """Dishonesty records and the tax table with its ``arrears`` column (month-end tax arrears, CNY)."""
    has = rng.random(e.n) < _sigmoid(-3.1 + 0.9 * e.distress)
    counts = np.where(has, 1 + rng.poisson(0.25, e.n), 0)
    idx = np.repeat(np.arange(e.n), counts)
    m = len(idx)
    kind = _choice(rng, np.array([0.78, 0.17, 0.05]), m)
    authority = np.where(
        kind == 0,
        _choice(rng, np.array([0.45, 0.3, 0.15, 0.1]), m),
        np.where(kind == 1, 0, np.where(rng.random(m) < 0.6, 1, 0)),
    )
    grade = np.where(kind == 0, _choice(rng, np.array([0.4, 0.55, 0.05]), m), np.where(kind == 1, 1, 2))
    window_start = e.start.astype("datetime64[D]")
    low = np.maximum(e.registered_on[idx], window_start - 730)
    decided = _random_dates(rng, low, np.full(m, e.as_of - 10))
    conduct_end = decided - rng.integers(5, 90, size=m)
    months = np.array(list(PUBLICITY_MONTHS.values()), dtype=np.int64)
    size_mult = np.where(e.individual, 0.3, np.array([1.0, 3.0, 10.0])[e.size])[idx]
    fined = (kind == 0) | (kind == 2)
    fine = np.where(
        fined,
        np.round(
            np.array([800.0, 8000.0, 60000.0])[grade] * size_mult * np.exp(0.7 * rng.standard_normal(m)), -1
        ),
        np.nan,
    )
    paid = fined & (rng.random(m) < _sigmoid(1.0 - 0.8 * e.distress[idx]))
    paid_on = np.where(paid, decided + rng.integers(3, 60, size=m), np.datetime64("NaT"))
    paid_on = np.where(paid_on.astype("datetime64[D]") < e.as_of, paid_on, np.datetime64("NaT")).astype(
        "datetime64[D]"
    )
    owes_tax = (authority == 1) & (kind != 1)
    arrears = np.where(owes_tax, np.round(fine * np.exp(0.5 * rng.standard_normal(m)) * 2.0, 2), np.nan)
    cleared = owes_tax & (rng.random(m) < _sigmoid(0.6 - 0.8 * e.distress[idx]))
    # the tax table shows the arrears from the decision month, and falling to zero when cleared
    decided_t = (decided.astype("datetime64[M]") - e.start).astype(np.int64)
    cleared_t = decided_t + rng.integers(1, 8, size=m)
    t_month = (np.asarray(tax.columns["month"].tolist(), dtype="datetime64[M]") - e.start).astype(np.int64)
    row_of = {u: i for i, u in enumerate(e.uscc.tolist())}
    tax_i = np.fromiter((row_of[u] for u in tax.columns["uscc"].tolist()), dtype=np.int64, count=tax.n_rows)
    owed = np.zeros(tax.n_rows)
    bounds = np.searchsorted(tax_i, np.arange(e.n + 1))  # tax rows are enterprise-major
    for r in np.flatnonzero(owes_tax).tolist():
        lo, hi = bounds[idx[r]], bounds[idx[r] + 1]
        tm = t_month[lo:hi]
        active = (tm >= decided_t[r]) & ((tm < cleared_t[r]) | ~cleared[r])
        owed[lo:hi][active] += arrears[r]
    year = decided.astype("datetime64[Y]").astype(np.int64) + 1970
    order = np.lexsort((decided, year))
    seq = _grouped_sequence(rng, year[order], 1, 40)
    words = np.array([_AUTHORITY_WORD[a] for a in AUTHORITIES], dtype=object)[authority]
    prefix = np.array(["罚", "异", "严失"], dtype=object)[kind]
    ids = np.empty(m, dtype=object)
    ids[order] = [
        f"苏{w}{p}〔{y}〕{s}号"
        for w, p, y, s in zip(
            words[order].tolist(), prefix[order].tolist(), year[order].tolist(), seq.tolist(), strict=True
        )
    ]
    rows = np.lexsort((decided, idx))
    schema = {
        "dataset": "penalties",
        "subject_key": "uscc",
        "period_key": None,
        "record_key": "record_id",
        "columns": [
            _USCC_COLUMN,
            column("record_id", "string", "decision number of the record, e.g. 苏市监罚〔2025〕12号", "C1"),
            column(
                "kind", "string", "administrative_penalty, abnormal_operation or serious_dishonesty", "C1"
            ),
            column(
                "authority",
                "string",
                "issuing authority: market_regulation, tax, environment, work_safety",
                "C1",
            ),
            column("decided_on", "date", "date of the decision or listing", "C1"),
            column(
                "conduct_ended_on", "date", "date the conduct ended (start of the 5-year retention)", "C1"
            ),
            column("grade", "string", "minor, general or serious dishonesty information", "C1"),
            column("min_publicity_months", "int", "months before repair may be applied for", "C1"),
            column("max_publicity_months", "int", "months after which publicity and use end", "C1"),
            column("fine_amount", "float", "fine imposed (empty: none)", "C1", "CNY"),
            column(
                "fine_paid_on",
                "date",
                "date the fine was paid, per the issuing authority (empty: unpaid)",
                "C2",
            ),
            column(
                "tax_arrears",
                "float",
                "tax arrears the decision found (empty: none); see tax.arrears",
                "C2",
                "CNY",
            ),
        ],
    }
    columns = {
        "uscc": e.uscc[idx[rows]],
        "record_id": ids[rows],
        "kind": np.array(RECORD_KINDS, dtype=object)[kind[rows]],
        "authority": np.array(AUTHORITIES, dtype=object)[authority[rows]],
        "decided_on": decided[rows],
        "conduct_ended_on": conduct_end[rows],
        "grade": np.array(GRADES, dtype=object)[grade[rows]],
        "min_publicity_months": months[grade[rows], 0],
        "max_publicity_months": months[grade[rows], 1],
        "fine_amount": fine[rows],
        "fine_paid_on": paid_on[rows],
        "tax_arrears": arrears[rows],
    }
    disclose(
        schema["columns"],
        dict.fromkeys(
            (
                "record_id",
                "kind",
                "authority",
                "decided_on",
                "conduct_ended_on",
                "grade",
                "min_publicity_months",
                "max_publicity_months",
                "fine_amount",
            ),
            "public",
        ),
        CREDIT_CHINA,
    )
    disclose(schema["columns"], {"fine_paid_on": "masked", "tax_arrears": "masked"})
    schema["published_on"] = "decided_on"
    tax_schema = {
        **tax.schema,
        "columns": [
            *tax.schema["columns"],
            {
                **column("arrears", "float", "tax arrears outstanding at the end of the month", "C2", "CNY"),
                "disclosure": "masked",
            },
        ],
    }
    new_tax = Table("tax", tax.provider, tax_schema, {**tax.columns, "arrears": np.round(owed, 2)})
    return Table("penalties", PROVIDERS["penalties"], schema, columns), new_tax


def _labels(
    rng: np.random.Generator,
    e: _Enterprises,
    arrears_in_bills: Array,
    enforcement: Array,
    other_defendant: Array,
    awards: Array,
) -> Table:
    """Latent default probability (12 months after the window) from realised signs plus unobserved noise."""
    age_years = (e.as_of - e.registered_on).astype(np.int64) / 365.25
    stopped = e.stop_t < e.months
    logit = (
        _LABEL_INTERCEPT
        - 3.5 * e.sales_trend
        - 2.5 * e.staff_trend
        + 0.7 * np.log1p(arrears_in_bills)
        + 0.75 * np.minimum(enforcement, 3)
        + 0.3 * np.minimum(other_defendant, 3)
        + 1.3 * stopped
        + 3.5 * e.gap_rate
        + 0.8 * np.exp(-age_years / 2.0)
        + np.array([0.35, 0.0, -0.35])[e.size]
        + 0.2 * e.individual
        + e.industry_param("risk")
        - 0.3 * (awards > 0)
        + _LABEL_NOISE * rng.standard_normal(e.n)
    )
    probability = np.round(_sigmoid(logit), 6)
    defaulted = (rng.random(e.n) < probability).astype(np.int64)
    schema = {
        "dataset": "labels",
        "subject_key": "uscc",
        "period_key": None,
        "record_key": None,
        "columns": [
            _USCC_COLUMN,
            column(
                "default_probability",
                "float",
                "latent probability of default within 12 months after the window (synthetic ground truth)",
                "C3",
            ),
            column(
                "defaulted",
                "int",
                "1 if the enterprise defaulted within 12 months after the window, else 0",
                "C3",
            ),
        ],
    }
    columns = {"uscc": e.uscc, "default_probability": probability, "defaulted": defaulted}
    return Table("labels", PROVIDERS["labels"], schema, columns)
