"""Disclosure modes in the dataset schema (issue 23): derived from the grade when not declared, capped by the
rules (C3, level 5 and important data only ``never``; ``public`` names where it is published; a person's data is
never ``public``), and a narrowing only ever narrows."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from pps_wire.schemas.dataset_schema import DISCLOSURE_ORDER, DatasetSchema, Disclosure, narrowest


def schema(key_type: str = "uscc", **col: Any) -> DatasetSchema:
    return DatasetSchema.model_validate(
        {
            "subject_key": "k",
            "columns": [
                {"name": "k", "type": key_type, "sensitivity": "C1"},
                {"name": "v", "type": "float", "sensitivity": "C1", **col},
            ],
        }
    )


@pytest.mark.parametrize(
    ("col", "mode"),
    [
        ({}, "masked"),
        ({"sensitivity": "C2"}, "compute_only"),
        ({"sensitivity": "C3"}, "never"),
        ({"level": 5}, "never"),
        ({"important": True}, "never"),
        ({"disclosure": "aggregate_only"}, "aggregate_only"),
        ({"disclosure": "public", "published_in": "gsxt"}, "public"),
    ],
)
def test_modes_are_derived_or_declared(col: dict[str, Any], mode: str) -> None:
    assert schema(**col).column("v").mode is Disclosure(mode)


@pytest.mark.parametrize(
    ("key_type", "col", "message"),
    [
        ("uscc", {"sensitivity": "C3", "disclosure": "masked"}, "can only be 'never'"),
        ("uscc", {"important": True, "disclosure": "public", "published_in": "x"}, "can only be 'never'"),
        ("uscc", {"disclosure": "public"}, "published_in"),
        ("resident_id", {"disclosure": "public", "published_in": "x"}, "never public"),
    ],
)
def test_the_rules_cap_what_a_provider_declares(key_type: str, col: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        schema(key_type, **col)


def test_narrowest_never_widens() -> None:
    for a in DISCLOSURE_ORDER:
        for b in DISCLOSURE_ORDER:
            n = narrowest(a, b)
            assert DISCLOSURE_ORDER.index(n) == max(DISCLOSURE_ORDER.index(a), DISCLOSURE_ORDER.index(b))


def test_a_consents_narrowing_is_in_what_the_subject_signs() -> None:
    from pps_wire.subject_sign import canonical_scope

    plain = [
        {"dataset_id": "ds_b", "fields": ["y", "x"]},
        {"dataset_id": "ds_a", "fields": ["z"], "modes": None},
    ]
    assert canonical_scope(plain) == [
        {"dataset_id": "ds_a", "fields": ["z"]},
        {"dataset_id": "ds_b", "fields": ["x", "y"]},
    ]  # as before issue 23: old signatures still verify
    narrowed = [{"dataset_id": "ds_a", "fields": ["z"], "modes": {"z": "aggregate_only"}}]
    assert canonical_scope(narrowed) == [
        {"dataset_id": "ds_a", "fields": ["z"], "modes": {"z": "aggregate_only"}}
    ]
