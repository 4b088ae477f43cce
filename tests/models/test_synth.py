"""The synthetic platform-data generator (models.synth) and the enterprise features (models.features)."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from models.features import FEATURES, enterprise_features, feature_matrix
from models.synth import COLUMN_TYPES, REGIONS, SENSITIVITY_CLASSES, PlatformData, Table, generate
from pps.identity.uscc import validate_uscc

N = 3000
SEED = 20240
PROVIDER_TABLES = ("registry", "tax", "social_insurance", "utilities", "procurement", "court", "penalties")


@pytest.fixture(scope="module")
def data() -> PlatformData:
    return generate(N, SEED)


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "fM":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def test_tables_and_providers(data: PlatformData) -> None:
    assert [t.name for t in data.provider_tables()] == list(PROVIDER_TABLES)
    assert [t.name for t in data.tables()] == [*PROVIDER_TABLES, "labels"]
    assert data.tax.provider == "Tax bureau"
    for table in data.tables():
        assert table.provider
        lengths = {name: len(col) for name, col in table.columns.items()}
        assert len(set(lengths.values())) == 1, (table.name, lengths)
        assert len(table) == table.n_rows > 0
    assert data.registry.n_rows == data.labels.n_rows == N
    assert data.tax.n_rows <= N * data.months


def test_usccs_are_valid_unique_and_qinghai(data: PlatformData) -> None:
    codes = data.registry.columns["uscc"].tolist()
    assert len(set(codes)) == N
    divisions = {str(r[0]) for r in REGIONS}
    assert all(d.startswith("63") for d in divisions)
    for code in codes:
        assert validate_uscc(code) == code  # both the GB 32100 and the GB 11714 check characters
        assert code[:2] in ("91", "92", "93")
        assert code[2:8] in divisions
    # enterprises, individual businesses and farmers' cooperatives
    assert {c[:2] for c in codes} == {"91", "92", "93"}
    kinds = {"91": "enterprise", "92": "individual_business", "93": "cooperative"}
    assert [kinds[c[:2]] for c in codes] == data.registry.columns["entity_type"].tolist()
    assert np.array_equal(data.registry.columns["region"], np.array([c[2:8] for c in codes], dtype=object))
    individual = np.array([c[1] == "2" for c in codes])
    assert set(data.registry.columns["size_class"][individual].tolist()) == {"micro"}
    # every provider row refers to a registered enterprise; the labels cover exactly the registry
    registered = set(codes)
    for table in data.provider_tables():
        assert set(table.columns["uscc"].tolist()) <= registered, table.name
    assert data.labels.columns["uscc"].tolist() == codes


def test_keys_are_unique(data: PlatformData) -> None:
    for table in data.tables():
        keys = list(zip(*(table.columns[k].tolist() for k in table.key_columns), strict=True))
        assert len(set(keys)) == len(keys), table.name
    assert data.tax.key_columns == ["uscc", "month"]
    assert data.court.key_columns == ["uscc", "case_id"]
    assert data.procurement.key_columns == ["uscc", "award_id"]
    assert data.registry.key_columns == ["uscc"]


_DTYPE_KIND = {"uscc": "O", "string": "O", "month": "O", "int": "i", "float": "f", "bool": "b", "date": "M"}


def test_schemas_declare_every_column(data: PlatformData) -> None:
    for table in data.tables():
        schema = table.schema
        assert set(schema) == {"dataset", "subject_key", "period_key", "record_key", "columns"}
        assert schema["dataset"] == table.name
        names = [c["name"] for c in schema["columns"]]
        assert names == list(table.columns), table.name
        assert schema["subject_key"] == "uscc"
        assert schema["period_key"] is None or schema["record_key"] is None
        for key in (schema["period_key"], schema["record_key"]):
            assert key is None or key in names
        for col in schema["columns"]:
            assert set(col) == {"name", "type", "unit", "description", "sensitivity"}
            assert re.fullmatch(r"[a-z][a-z0-9_]*", col["name"])
            assert col["type"] in COLUMN_TYPES
            assert col["sensitivity"] in SENSITIVITY_CLASSES
            assert col["unit"] is None or isinstance(col["unit"], str)
            assert isinstance(col["description"], str) and col["description"]
            values = table.columns[col["name"]]
            assert values.dtype.kind == _DTYPE_KIND[col["type"]], (table.name, col["name"], values.dtype)
            if values.dtype.kind == "O":
                assert all(isinstance(v, str) for v in values[:100].tolist())
            if col["type"] == "month":
                assert all(re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", v) for v in values[:100].tolist())
    by_name = {t.name: {c["name"]: c for c in t.schema["columns"]} for t in data.tables()}
    assert by_name["tax"]["month"]["type"] == "month" and data.tax.schema["period_key"] == "month"
    assert by_name["registry"]["industry"]["sensitivity"] == "C1"
    assert by_name["tax"]["tax_paid"]["sensitivity"] == "C2"
    assert by_name["court"]["case_id"]["sensitivity"] == "C3"
    assert set(data.court.columns["case_type"].tolist()) <= {
        "contract dispute",
        "labour dispute",
        "loan dispute",
        "enforcement",
    }
    assert set(data.court.columns["role"].tolist()) == {"defendant", "plaintiff"}
    assert set(data.court.columns["status"].tolist()) == {"open", "closed"}


def test_schemas_fit_the_upload_api(data: PlatformData) -> None:
    schema_module = pytest.importorskip("pps.data.datasets.schema")
    for table in data.tables():
        parsed = schema_module.DatasetSchema.model_validate(table.schema)
        assert parsed.key_columns == table.key_columns


def test_same_seed_same_data_other_seed_other_data() -> None:
    a, b, c = generate(1500, 11), generate(1500, 11), generate(1500, 12)
    for ta, tb in zip(a.tables(), b.tables(), strict=True):
        assert list(ta.columns) == list(tb.columns)
        for name in ta.columns:
            assert _equal(ta.columns[name], tb.columns[name]), (ta.name, name)
        assert ta.schema == tb.schema
    assert a.registry.columns["uscc"].tolist() != c.registry.columns["uscc"].tolist()
    assert not _equal(a.tax.columns["taxable_sales"], c.tax.columns["taxable_sales"])


def test_window_parameters() -> None:
    d = generate(300, 1, months=12, start="2023-07")
    months = sorted(set(d.tax.columns["month"].tolist()))
    assert months[0] >= "2023-07" and months[-1] <= "2024-06"
    assert str(d.as_of) == "2024-07-01"
    assert d.court.n_rows == 0 or (d.court.columns["filed_on"] < d.as_of).all()
    for bad in ({"months": 0}, {"start": "2024-13"}, {"start": "2024-1"}):
        with pytest.raises(ValueError):
            generate(10, 1, **bad)
    with pytest.raises(ValueError):
        generate(0, 1)


def test_default_rate(data: PlatformData) -> None:
    defaulted = data.labels.columns["defaulted"]
    probability = data.labels.columns["default_probability"]
    assert set(np.unique(defaulted).tolist()) <= {0, 1}
    assert 0.03 <= defaulted.mean() <= 0.15
    assert ((probability > 0) & (probability < 1)).all()
    assert abs(probability.mean() - defaulted.mean()) < 0.02


def test_heavy_tails_seasonality_and_missing_values(data: PlatformData) -> None:
    tax = data.tax.columns
    sales, paid = tax["taxable_sales"], tax["tax_paid"]
    assert np.percentile(sales, 99) > 10 * np.median(sales)
    positive = paid[paid > 0]
    assert np.percentile(positive, 99) > 10 * np.median(positive)
    arrears = data.utilities.columns["arrears"]
    assert (arrears == 0).mean() > 0.8
    assert arrears.max() > 20 * np.median(arrears[arrears > 0])
    # Spring Festival dip and year-end peak in taxable sales
    month = np.array([m[5:] for m in tax["month"].tolist()])
    assert sales[month == "12"].mean() > sales[month == "03"].mean() > sales[month == "02"].mean()
    # missing months: some enterprises did not file every month they existed
    codes, filed = np.unique(tax["uscc"].astype(str), return_counts=True)
    registered = dict(
        zip(data.registry.columns["uscc"].tolist(), data.registry.columns["registered_on"], strict=True)
    )
    start = np.datetime64(data.start, "M")
    existed = np.array(
        [
            data.months - max(int((registered[c].astype("datetime64[M]") - start).astype(int)), 0)
            for c in codes
        ]
    )
    assert (filed <= existed).all()
    assert (filed < existed).mean() > 0.05
    assert len(codes) <= N
    # NaN for missing floats: water billed to landlords, unread meters
    assert np.isnan(data.utilities.columns["water_m3"]).mean() > 0.05
    # most enterprises have no procurement awards and no court cases
    assert len(set(data.procurement.columns["uscc"].tolist())) < N / 2
    assert len(set(data.court.columns["uscc"].tolist())) < N / 2


def test_features_are_finite_and_documented(data: PlatformData) -> None:
    codes, features = enterprise_features(data)
    assert codes.tolist() == data.registry.columns["uscc"].tolist()
    assert list(features) == list(FEATURES)
    for name, values in features.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
        assert values.shape == (N,) and values.dtype == np.float64
        assert np.isfinite(values).all(), name
    assert feature_matrix(features).shape == (N, len(FEATURES))
    # spot checks against the tables
    first = codes[0]
    tax = data.tax.columns
    mine = tax["uscc"] == first
    assert features["tax_months_filed"][0] == mine.sum()
    court = data.court.columns
    enforcement = (court["role"] == "defendant") & (court["case_type"] == "enforcement")
    per_code = dict(zip(*np.unique(court["uscc"][enforcement].astype(str), return_counts=True), strict=True))
    expected = np.array([per_code.get(c, 0) for c in codes.tolist()])
    assert np.array_equal(features["enforcement_cases_defendant"], expected)
    assert features["size_class_ordinal"].max() == 2


def test_logistic_regression_learns_something_but_not_everything() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = generate(20_000, SEED)
    _, features = enterprise_features(data)
    x = feature_matrix(features)
    y = data.labels.columns["defaulted"]
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x_train, y_train)
    auc = roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
    assert 0.70 <= auc <= 0.85, auc


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def test_write_csv_round_trips(tmp_path: Path) -> None:
    data = generate(400, 3)
    paths = data.write_csv(tmp_path)
    assert sorted(p.name for p in paths) == sorted(
        f"{t.name}{suffix}" for t in data.tables() for suffix in (".csv", ".schema.json")
    )
    for table in data.tables():
        header, rows = _read_csv(tmp_path / f"{table.name}.csv")
        assert header == list(table.columns)
        assert len(rows) == table.n_rows
        schema = json.loads((tmp_path / f"{table.name}.schema.json").read_text(encoding="utf-8"))
        assert schema == table.schema
        for j, name in enumerate(header):
            kind = table.columns[name].dtype.kind
            k = len(rows) // 2
            cell, value = rows[k][j], table.columns[name][k]
            if kind == "f":
                assert (cell == "" and math.isnan(value)) or float(cell) == value
            elif kind == "i":
                assert int(cell) == value
            elif kind == "M":
                if np.isnat(value):  # a missing date is an empty cell
                    assert cell == ""
                else:
                    assert cell == str(value) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", cell)
            else:
                assert cell == value
    # empty cells for missing values, and non-ASCII case numbers survive
    header, rows = _read_csv(tmp_path / "utilities.csv")
    water = header.index("water_m3")
    assert sum(r[water] == "" for r in rows) == int(np.isnan(data.utilities.columns["water_m3"]).sum()) > 0
    if data.court.n_rows:
        _, rows = _read_csv(tmp_path / "court.csv")
        assert rows[0][1] == data.court.columns["case_id"][0] and "青" in rows[0][1]
    only_providers = data.write_csv(tmp_path / "providers", include_labels=False)
    assert not any(p.name.startswith("labels") for p in only_providers)


def test_table_write_csv_creates_directory(tmp_path: Path) -> None:
    table = Table(
        "tiny",
        "Test",
        {
            "dataset": "tiny",
            "subject_key": "uscc",
            "period_key": None,
            "record_key": None,
            "columns": [
                {"name": "uscc", "type": "uscc", "unit": None, "description": "code", "sensitivity": "C1"},
                {"name": "flag", "type": "bool", "unit": None, "description": "a flag", "sensitivity": "C1"},
                {"name": "x", "type": "float", "unit": None, "description": "a number", "sensitivity": "C2"},
            ],
        },
        {
            "uscc": np.array(["91350100M000100Y43"], dtype=object),
            "flag": np.array([True]),
            "x": np.array([np.nan]),
        },
    )
    paths = table.write_csv(tmp_path / "a" / "b")
    assert paths[0].read_text(encoding="utf-8") == "uscc,flag,x\n91350100M000100Y43,true,\n"


@pytest.mark.slow
@pytest.mark.e2e  # heavy: run by `make test-e2e` and .ci/run, not `make test`
def test_hundred_thousand_enterprises() -> None:
    n = 100_000
    data = generate(n, 1)
    assert data.registry.n_rows == data.labels.n_rows == n
    assert len(set(data.registry.columns["uscc"].tolist())) == n
    for name in ("tax", "social_insurance", "utilities"):
        table = getattr(data, name)
        assert 0 < table.n_rows <= n * data.months
        assert len(set(table.columns["uscc"].tolist())) <= n
    assert data.utilities.n_rows >= data.tax.n_rows >= data.social_insurance.n_rows
    codes, features = enterprise_features(data)
    assert len(codes) == n and all(len(v) == n for v in features.values())


def test_qinghai_industries_seasons_and_regions() -> None:
    data = generate(6000, 7)
    reg = data.registry.columns
    industry, region, uscc = reg["industry"], reg["region"], reg["uscc"]
    pastoral = np.isin(region, ["632200", "632300", "632500", "632600", "632700"])
    # herding and farming dominate the pastoral prefectures; clean energy and mining sit in Haixi
    assert (industry[pastoral] == "A").mean() > 2 * (industry[region == "630100"] == "A").mean()
    haixi = region == "632800"
    assert np.isin(industry[haixi], ["B", "D"]).mean() > 2 * np.isin(industry[~haixi], ["B", "D"]).mean()
    coops = np.array([c[:2] == "93" for c in uscc.tolist()])
    assert (industry[coops] == "A").mean() > 0.6
    # herders sell in autumn, tourism peaks in summer, electricity peaks in winter
    tax = data.tax.columns
    by_uscc = dict(zip(uscc.tolist(), industry.tolist(), strict=True))
    letters = np.array([by_uscc[u] for u in tax["uscc"].tolist()])
    month = np.array([int(m[5:7]) for m in tax["month"].tolist()])

    def mean_sales(letter: str, months: list[int]) -> float:
        pick = (letters == letter) & np.isin(month, months)
        return float(np.median(tax["taxable_sales"][pick]))

    assert mean_sales("A", [9, 10, 11]) > 1.3 * mean_sales("A", [2, 3, 4])
    assert mean_sales("H", [7, 8]) > 1.8 * mean_sales("H", [1, 2, 3, 12])
    util = data.utilities.columns
    umonth = np.array([int(m[5:7]) for m in util["month"].tolist()])
    kwh = util["electricity_kwh"]
    winter = np.nanmedian(kwh[np.isin(umonth, [12, 1])])
    summer = np.nanmedian(kwh[np.isin(umonth, [6, 7, 8])])
    assert winter > 1.1 * summer
