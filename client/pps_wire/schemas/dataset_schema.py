"""The declared schema of a dataset: columns with type, unit, description and sensitivity class.

Sensitivity classes follow JR/T 0171-2020: C1 (low), C2 (sensitive personal/financial), C3 (most sensitive).
C3 columns are held for the subject's own view and never released in any form to anyone else.
Enterprise data is graded under JR/T 0197-2020 as well: ``level`` 1-5 (5 most sensitive; derived from the
class when not declared: C1 -> 2, C2 -> 3, C3 -> 4) and ``important`` (important data, 重要数据). Level 5 and
important data are treated as C3: never granted, never released. ``income_or_assets`` marks income, deposit,
property and tax amounts, which a person may consent to only after the warning of 征信业管理条例 Art. 14.
Each column has a disclosure mode (issue 23; ``docs/disclosure.md``), widest first: ``public`` (lawfully public,
shown with where it is published, no consent needed), ``masked`` (ranges, months, initials; only under consent),
``aggregate_only`` (only summaries over the subject's rows), ``compute_only`` (only inside scoring, training, the
enclave and cohort aggregates), ``never``. The provider declares it; the rules cap it (C3, level 5 and important
data are ``never``; a person's data is never ``public``); undeclared, it is derived: ``never`` for what is never
released, ``masked`` for C1, ``compute_only`` otherwise. A consent may narrow it, never widen it.
The row key is the subject key (a USCC column) together with, optionally, a period column (monthly data)
or a record column (events such as court cases); keys must be unique within a version.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class ColumnType(StrEnum):
    uscc = "uscc"
    resident_id = "resident_id"
    """a person's GB 11643 resident ID number as the provider uploads it; validated and replaced by the person
    code (a keyed pseudonym) before anything is stored, so a dataset never holds the number"""
    string = "string"
    int = "int"
    float = "float"
    bool = "bool"
    date = "date"
    month = "month"


class Sensitivity(StrEnum):
    C1 = "C1"
    C2 = "C2"
    C3 = "C3"


class Disclosure(StrEnum):
    """How a field may leave through a query or the credit report, widest first (see the module docstring)."""

    public = "public"
    masked = "masked"
    aggregate_only = "aggregate_only"
    compute_only = "compute_only"
    never = "never"


DISCLOSURE_ORDER: tuple[Disclosure, ...] = tuple(Disclosure)
"""Widest first: a narrowing may only move a field to the right."""


def narrowest(*modes: Disclosure) -> Disclosure:
    """The narrowest of ``modes`` (what a consent's narrowing and the provider's mode leave together)."""
    return max(modes, key=DISCLOSURE_ORDER.index)


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="snake_case column name", max_length=63)
    type: ColumnType
    unit: str | None = Field(None, max_length=40)
    description: str = Field("", max_length=500)
    sensitivity: Sensitivity
    level: int | None = Field(None, ge=1, le=5, description="JR/T 0197-2020 level, 1 (lowest) to 5")
    important: bool = Field(False, description="important data (JR/T 0197-2020, 重要数据): never released")
    income_or_assets: bool = Field(
        False, description="income, deposits, property or tax amounts (征信业管理条例 Art. 14)"
    )

    disclosure: Disclosure | None = Field(
        None,
        description="how the field may leave through a query or the credit report; default derived from its grade "
        "(never for C3, level 5 and important data; masked for C1; compute_only otherwise)",
    )
    published_in: str | None = Field(
        None,
        max_length=200,
        description="where the value is lawfully published (needed for disclosure 'public'), e.g. "
        "国家企业信用信息公示系统",
    )

    @property
    def mode(self) -> Disclosure:
        """The disclosure mode the provider declared, or the one derived from the grade."""
        if self.disclosure is not None:
            return self.disclosure
        if self.never_released:
            return Disclosure.never
        return Disclosure.masked if self.sensitivity is Sensitivity.C1 else Disclosure.compute_only

    @property
    def grade(self) -> int:
        """The JR/T 0197 level, declared or derived from the class."""
        return self.level if self.level is not None else {"C1": 2, "C2": 3, "C3": 4}[self.sensitivity.value]

    @property
    def never_released(self) -> bool:
        """Class C3, level 5 or important data: held for the subject's own view only."""
        return self.sensitivity is Sensitivity.C3 or self.grade >= 5 or self.important

    @model_validator(mode="after")
    def _check_name(self) -> Self:
        if not _NAME.match(self.name):
            raise ValueError(
                f"column name {self.name!r} must be snake_case (a-z, 0-9, _), starting with a letter"
            )
        if self.never_released and self.disclosure not in (None, Disclosure.never):
            raise ValueError(
                f"column {self.name!r} is class C3, level 5 or important data: its disclosure can only be 'never'"
            )
        if self.disclosure is Disclosure.public and not (self.published_in or "").strip():
            raise ValueError(
                f"column {self.name!r} is declared public: name where it is lawfully published (published_in)"
            )
        return self


class DatasetSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str | None = Field(
        None, description="informative name (the generator writes it)", max_length=100
    )
    subject_key: str = Field(
        description="the column naming the subject: a USCC (an enterprise) or a resident ID number (a person)"
    )
    period_key: str | None = Field(
        None, description="a month or date column that, with the subject, keys a row"
    )
    record_key: str | None = Field(None, description="an event id column that, with the subject, keys a row")
    negative: bool = Field(
        False,
        description="the dataset holds negative information (不良信息); about a person it is accepted only after "
        "the provider gave that person notice (征信业管理条例 Art. 15)",
    )
    published_on: str | None = Field(
        None,
        description="a date column giving each row's publication date (for public fields; default: the date the "
        "version was uploaded)",
    )
    columns: list[ColumnSpec] = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _check_keys(self) -> Self:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate column names: {', '.join(dupes)}")
        by_name = {c.name: c for c in self.columns}
        key = by_name.get(self.subject_key)
        if key is None:
            raise ValueError(f"subject_key {self.subject_key!r} is not a declared column")
        if key.type not in (ColumnType.uscc, ColumnType.resident_id):
            raise ValueError(f"subject_key {self.subject_key!r} must have type 'uscc' or 'resident_id'")
        others = [
            c.name for c in self.columns if c.type is ColumnType.resident_id and c.name != self.subject_key
        ]
        if others:
            raise ValueError(
                f"only the subject key may hold resident ID numbers; {', '.join(others)} must not "
                "(a dataset names one person per row)"
            )
        if self.period_key and self.record_key:
            raise ValueError("give period_key or record_key, not both")
        for label, name in (("period_key", self.period_key), ("record_key", self.record_key)):
            if name is None:
                continue
            if name not in by_name:
                raise ValueError(f"{label} {name!r} is not a declared column")
            if name == self.subject_key:
                raise ValueError(f"{label} must differ from the subject key")
        if self.period_key and by_name[self.period_key].type not in (ColumnType.month, ColumnType.date):
            raise ValueError("period_key must be a month or date column")
        if self.published_on is not None and (
            self.published_on not in by_name or by_name[self.published_on].type is not ColumnType.date
        ):
            raise ValueError(f"published_on {self.published_on!r} must be a declared date column")
        if key.type is ColumnType.resident_id:
            public = [c.name for c in self.columns if c.disclosure is Disclosure.public]
            if public:
                raise ValueError(
                    f"a person's data is never public here: {', '.join(public)} (PIPL Art. 13(6) allows lawfully "
                    "public personal information only within a reasonable scope; use masked)"
                )
        return self

    @property
    def key_columns(self) -> list[str]:
        extra = self.period_key or self.record_key
        return [self.subject_key, extra] if extra else [self.subject_key]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)
