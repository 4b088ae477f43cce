"""The feature store: features computed inside the safe-room from the uploaded datasets, exact lineage."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import numpy as np
import pytest

from models.features import FEATURE_RESOLUTION, FEATURES, enterprise_features
from models.synth import PlatformData
from pps.data.sources import bind_sources
from pps.errors import InvalidInput
from pps.runtime import Runtime
from tests.conftest import OrgFactory
from tests.helpers import uscc_for
from tests.pps.services.scoring.conftest import Platform, upload_tables

pytestmark = pytest.mark.db


def test_features_from_uploaded_datasets_equal_the_reference_at_their_resolution(
    runtime: Runtime, platform: Platform
) -> None:
    usccs, reference = enterprise_features(platform.data)
    # the reference counts the dishonesty records in use at the end of the window: so does the store, then
    as_of = platform.data.as_of.astype(object)
    runtime.features.clock = lambda: datetime.datetime.combine(as_of, datetime.time(), datetime.UTC)
    with runtime.db.transaction(write=False) as s:
        table = runtime.features.table(s)
    assert table.usccs == tuple(usccs.tolist())
    for name in FEATURES:
        step = FEATURE_RESOLUTION[name]
        got = table.values[name]
        if step == 0:
            np.testing.assert_array_equal(got, reference[name], err_msg=name)
        else:
            assert np.max(np.abs(got - reference[name])) <= step / 2 + 1e-9, name
            np.testing.assert_allclose(np.round(got / step), got / step, atol=1e-9, err_msg=name)


def test_the_catalogue_names_fields_never_values_and_marks_c3_features(
    runtime: Runtime, platform: Platform
) -> None:
    with runtime.db.transaction(write=False) as s:
        info = {f.name: f for f in runtime.features.catalogue(s)}
    assert set(info) == set(FEATURES)
    court = info["log_court_amount_defendant"]
    assert not court.available and "C3" in court.reason
    sales = info["log_sales_mean_last6"]
    assert sales.available and sales.datasets == {platform.datasets["tax"]: ("taxable_sales",)}
    assert info["tax_months_filed"].datasets == {platform.datasets["tax"]: ()}  # presence only
    assert "values" not in sales.as_dict()


def test_fields_for_a_model_are_the_union_of_its_features_lineage(
    runtime: Runtime, platform: Platform
) -> None:
    with runtime.db.transaction(write=False) as s:
        fields = runtime.features.fields_for(s, ["log_sales_mean_last6", "tax_filing_ratio", "industry_c"])
        assert fields == {
            platform.datasets["registry"]: ("industry", "registered_on"),
            platform.datasets["tax"]: ("taxable_sales",),
        }
        with pytest.raises(InvalidInput, match="unknown feature"):
            runtime.features.fields_for(s, ["log_sales_mean_last6", "favourite_colour"])
        with pytest.raises(InvalidInput, match="C3"):
            runtime.features.fields_for(s, ["log_court_amount_defendant"])


def test_a_new_version_is_a_new_table(runtime: Runtime, platform: Platform) -> None:
    with runtime.db.transaction(write=False) as s:
        first = runtime.features.table(s)
        assert runtime.features.table(s) is first  # cached
        key = bind_sources(s).key
    # the dataset versions, then what identifies the dishonesty records in use (exclusions so far, the day)
    assert first.key[: len(key)] == key
    assert [k[0] for k in first.key[len(key) :]] == ["records"]


def test_without_a_registry_no_features(runtime: Runtime) -> None:
    with runtime.db.transaction(write=False) as s, pytest.raises(InvalidInput, match="registry"):
        runtime.features.table(s)


def test_missing_sources_make_their_features_unavailable_and_foreign_rows_are_ignored(
    runtime: Runtime, make_org: OrgFactory, synth_data: PlatformData, tmp_path: Path
) -> None:
    """Only the registry and tax uploaded (as in the demo); the tax table also holds an enterprise that is not
    in the registry: features from the absent sources are unavailable with a reason, the rest are computed,
    and the stray rows change nothing."""
    registry, tax = synth_data.registry, synth_data.tax
    stray = {k: np.concatenate([v, v[:3]]) for k, v in tax.columns.items()}
    stray["uscc"] = np.concatenate([tax.columns["uscc"], np.array([uscc_for(990_001)] * 3, dtype=object)])
    stray["month"] = np.concatenate(
        [tax.columns["month"], np.array(["2024-01", "2024-02", "2024-03"], dtype=object)]
    )
    partial = dataclasses.replace(synth_data, tax=dataclasses.replace(tax, columns=stray))
    upload_tables(runtime, make_org, [partial.registry, partial.tax], tmp_path)
    with runtime.db.transaction(write=False) as s:
        info = {f.name: f for f in runtime.features.catalogue(s)}
        table = runtime.features.table(s)
    assert not info["log_headcount_last"].available
    assert "social_insurance" in info["log_headcount_last"].reason
    assert info["log_sales_mean_last6"].available and info["company_age_years"].available
    assert uscc_for(990_001) not in table.position and len(table.usccs) == len(registry)
    _, reference = enterprise_features(synth_data)
    np.testing.assert_array_equal(table.values["tax_months_filed"], reference["tax_months_filed"])
