"""Feature sources: which live dataset plays which part (registry, tax, ...) in platform-wide computations.

Derived features (scoring) and cohort attributes (aggregate queries) read well-known kinds of data: the
enterprise registry, monthly tax filings, social insurance, utilities, procurement awards, court cases and
dishonesty records (``penalties``: :mod:`pps.governance.records`).
A source is bound to the one live dataset of that name (``registry``, ``tax``, ...) that has a current
version. Two live datasets with the same name from different providers make the source *ambiguous*: it is
then unavailable, with a reason, rather than silently picking one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from pps.data.datasets.schema import DatasetSchema
from pps.infra.storage.tables import Dataset, DatasetVersion

SOURCES: Final[tuple[str, ...]] = (
    "registry",
    "tax",
    "social_insurance",
    "utilities",
    "procurement",
    "court",
    "penalties",
)
HOUSEHOLD_SOURCES: Final[tuple[str, ...]] = ("household_ratings", "household_production")
"""Sources of household features (farm and herding households, keyed by person code)."""
FEATURE_SOURCES: Final[tuple[str, ...]] = SOURCES + HOUSEHOLD_SOURCES


@dataclass(frozen=True)
class BoundSource:
    """A source bound to one dataset version."""

    name: str
    dataset_id: str
    provider_org_id: str
    version: int
    schema: DatasetSchema

    @property
    def key(self) -> tuple[str, str, int]:
        """What identifies the data read: a new version (or another dataset) is another key."""
        return (self.name, self.dataset_id, self.version)


@dataclass(frozen=True)
class SourceBinding:
    bound: dict[str, BoundSource]
    unavailable: dict[str, str]
    """source name -> why it is not bound (missing, ambiguous, no version yet)"""

    @property
    def key(self) -> tuple[tuple[str, str, int], ...]:
        return tuple(sorted(b.key for b in self.bound.values()))


def bind_sources(session: Session, names: tuple[str, ...] = FEATURE_SOURCES) -> SourceBinding:
    """Bind each named source to its live dataset (see the module docstring)."""
    rows = session.execute(
        select(Dataset).where(Dataset.deleted_at.is_(None), Dataset.name.in_(names)).order_by(Dataset.id)
    ).scalars()
    by_name: dict[str, list[Dataset]] = {}
    for ds in rows:
        by_name.setdefault(ds.name, []).append(ds)
    bound: dict[str, BoundSource] = {}
    unavailable: dict[str, str] = {}
    for name in names:
        candidates = by_name.get(name, [])
        if not candidates:
            unavailable[name] = f"no live dataset named {name!r}"
            continue
        if len(candidates) > 1:
            unavailable[name] = (
                f"{len(candidates)} live datasets are named {name!r} "
                f"({', '.join(d.id for d in candidates)}); an operator must retire all but one"
            )
            continue
        ds = candidates[0]
        if ds.current_version is None:
            unavailable[name] = f"dataset {ds.id} ({name}) has no version yet"
            continue
        version = session.get(DatasetVersion, (ds.id, ds.current_version))
        if version is None or version.wrapped_dek is None:
            unavailable[name] = f"dataset {ds.id} ({name}) has no readable version"
            continue
        bound[name] = BoundSource(
            name=name,
            dataset_id=ds.id,
            provider_org_id=ds.provider_org_id,
            version=version.version,
            schema=DatasetSchema.model_validate_json(version.schema_json),
        )
    return SourceBinding(bound, unavailable)
