"""Platform features: the named per-enterprise features banks' models read, computed inside the safe-room.

The features of :data:`models.features.FEATURES` are derived from the provider datasets bound as sources
(:mod:`pps.data.sources`: registry, tax, social insurance, utilities, procurement, court). Banks discover them
with :meth:`FeatureStore.catalogue` — name, description, kind, unit, resolution and the exact dataset fields
each one reads — but never their values: values only ever enter computations (encrypted scoring) whose
release the policy engine decides, per subject, against the consent for *those fields*.

* **Lineage is exact.** A feature reads the fields :data:`models.features.FEATURE_INPUTS` names; a request
  that uses it asks the policy engine for exactly those fields, so a consent that does not cover one of them
  denies that subject. A feature that reads a C3 field (court amounts) is listed but never available.
* **Resolution.** Continuous features are rounded to :data:`models.features.FEATURE_RESOLUTION` before any
  use, so a model crafted to read a feature back learns it at that grid and no finer (``docs/security.md``).
* **Window.** Monthly sources are read over their full span of months; "last six months" means the last six
  months present in any monthly source. Rows of enterprises not in the registry are ignored.
* **Dishonesty records.** The ``penalties`` source (:mod:`pps.governance.records`) counts only the records still
  usable at the moment of the build: not repaired, within their maximum publicity period and their 5-year
  retention. The table remembers which records it counted per subject (:attr:`FeatureTable.counted`), so that
  the release re-decides a subject whose counted record was repaired or expired meanwhile.
* **Cache.** The feature table is computed once per set of bound dataset versions (a new upload, a deletion
  or a rebinding makes a new key) and kept in memory; at 10^5 enterprises x 24 months it takes a few seconds.
"""

from __future__ import annotations

import datetime
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from models.features import (
    FEATURE_INPUTS,
    FEATURE_KINDS,
    FEATURE_RESOLUTION,
    FEATURE_UNITS,
    FEATURES,
    enterprise_features,
)
from models.households import (
    HOUSEHOLD_FEATURE_INPUTS,
    HOUSEHOLD_FEATURE_KINDS,
    HOUSEHOLD_FEATURE_RESOLUTION,
    HOUSEHOLD_FEATURE_UNITS,
    HOUSEHOLD_FEATURES,
    household_features,
)
from models.synth import SIZE_CLASSES, PlatformData, Table
from pps.data.datasets.service import DatasetService
from pps.data.sources import SourceBinding, bind_sources
from pps.errors import DataIntegrityError, InvalidInput
from pps.governance import records as dishonesty
from pps.governance.policy import Decision, PolicyEngine, Request
from pps.infra.storage.db import Database
from pps.infra.storage.tables import DatasetVersion, utcnow
from pps.ledger.entry import Actor, ObjectRef

FloatArray = npt.NDArray[np.float64]

# the columns enterprise_features reads from each source, and the (empty) dtype to use when a source is absent
_READS: dict[str, dict[str, str]] = {
    "registry": {
        "uscc": "O",
        "registered_on": "O",
        "size_class": "O",
        "registered_capital": "f8",
        "industry": "O",
    },
    "tax": {"uscc": "O", "month": "O", "taxable_sales": "f8", "tax_paid": "f8"},
    "social_insurance": {"uscc": "O", "month": "O", "headcount": "f8", "contributions": "f8"},
    "utilities": {"uscc": "O", "month": "O", "electricity_kwh": "f8", "arrears": "f8"},
    "procurement": {"uscc": "O", "amount": "f8"},
    "court": {"uscc": "O", "role": "O", "case_type": "O", "status": "O", "amount": "f8"},
}
_MONTHLY = ("tax", "social_insurance", "utilities")
_HOUSEHOLD_READS: dict[str, dict[str, str]] = {
    "household_ratings": {
        "resident_id": "O",
        "grade": "O",
        "livestock_units": "f8",
        "land_mu": "f8",
        "insured": "f8",
        "subsidies_last_year": "f8",
        "cooperative_member": "f8",
        "family_farm": "f8",
    },
    "household_production": {"resident_id": "O", "sales_income": "f8", "yield_index": "f8"},
}
"""What household_features reads (the subject key is read under its declared name, given as resident_id)."""
DEFAULT_WINDOW_MONTHS = 24


@dataclass(frozen=True)
class FeatureInfo:
    """What a bank may know about a feature: everything but its values."""

    name: str
    description: str
    kind: str
    unit: str
    resolution: float
    inputs: dict[str, tuple[str, ...]]
    """source name -> fields read"""
    datasets: dict[str, tuple[str, ...]]
    """dataset id -> non-key fields read (what a consent must cover; an empty tuple: only the presence of the
    subject's rows, which any consent that includes the dataset covers); empty where a source is not bound"""
    available: bool
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "unit": self.unit,
            "resolution": self.resolution,
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "datasets": {k: list(v) for k, v in self.datasets.items()},
            "available": self.available,
            "reason": self.reason,
        }


@dataclass(frozen=True, eq=False)
class FeatureTable:
    """Every registered enterprise's features, at their resolution, for one set of dataset versions."""

    key: tuple[tuple[str, str, int], ...]
    usccs: tuple[str, ...]
    position: dict[str, int]
    values: dict[str, FloatArray]
    window: tuple[str, int]
    """(first month ``YYYY-MM``, number of months)"""
    counted: dict[str, tuple[dishonesty.Counted, ...]] = dc_field(default_factory=dict)
    """per subject: the dishonesty records the features counted (see :mod:`pps.governance.records`)"""

    def rows(self, subjects: Sequence[str]) -> tuple[list[str], list[int], list[str]]:
        """``(found subjects, their rows, subjects with no registry record)`` in the order given."""
        found, rows, missing = [], [], []
        for s in subjects:
            r = self.position.get(s)
            if r is None:
                missing.append(s)
            else:
                found.append(s)
                rows.append(r)
        return found, rows, missing

    def matrix(self, names: Sequence[str], rows: Sequence[int]) -> FloatArray:
        idx = np.asarray(rows, dtype=np.int64)
        if not names:
            return np.empty((len(idx), 0))
        return np.column_stack([self.values[n][idx] for n in names])


class FeatureStore:
    def __init__(self, datasets: DatasetService, *, cache_size: int = 2) -> None:
        self.datasets = datasets
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[tuple[str, str, int], ...], FeatureTable] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[tuple[tuple[str, str, int], ...], threading.Lock] = {}
        self.records = dishonesty.RecordBook(datasets)
        self.clock: Callable[[], datetime.datetime] = utcnow
        """what "now" is for the records' periods (tests move it)"""

    def clear(self) -> None:
        """Drop every cached table (after an erasure: no copy of the erased subject's features stays in
        memory; the next use rebuilds from the new versions)."""
        with self._lock:
            self._cache.clear()

    def _records_key(self, session: Session, binding: SourceBinding) -> tuple[str, str, int] | None:
        """What identifies the records in use: the exclusions written so far and the day (periods end by
        date). None without a records source."""
        bound = binding.bound.get(dishonesty.SOURCE)
        if bound is None:
            return None
        excluded = dishonesty.RecordBook.excluded(session, bound.dataset_id)
        digest = hashlib.sha256(repr(sorted(excluded.items())).encode()).hexdigest()[:32]
        return ("records", digest, self.clock().date().toordinal())

    # --- discovery --------------------------------------------------------------------------------------

    def catalogue(self, session: Session, binding: SourceBinding | None = None) -> list[FeatureInfo]:
        """Every enterprise feature, and every household feature once household ratings are on the platform."""
        binding = binding or bind_sources(session)
        families: list[tuple[str, dict[str, str], Any, Any, Any, Any]] = [
            ("registry", FEATURES, FEATURE_INPUTS, FEATURE_KINDS, FEATURE_UNITS, FEATURE_RESOLUTION)
        ]
        if "household_ratings" in binding.bound:
            families.append(
                (
                    "household_ratings",
                    HOUSEHOLD_FEATURES,
                    HOUSEHOLD_FEATURE_INPUTS,
                    HOUSEHOLD_FEATURE_KINDS,
                    HOUSEHOLD_FEATURE_UNITS,
                    HOUSEHOLD_FEATURE_RESOLUTION,
                )
            )
        out = []
        for anchor, names, all_inputs, kinds, units, resolutions in families:
            out.extend(self._family(binding, anchor, names, all_inputs, kinds, units, resolutions))
        return out

    def _family(
        self,
        binding: SourceBinding,
        anchor: str,
        names: Mapping[str, str],
        all_inputs: Mapping[str, Mapping[str, tuple[str, ...]]],
        kinds: Mapping[str, str],
        units: Mapping[str, str],
        resolutions: Mapping[str, float],
    ) -> list[FeatureInfo]:
        out = []
        for name, description in names.items():
            inputs = all_inputs[name]
            datasets: dict[str, tuple[str, ...]] = {}
            reasons = []
            if anchor not in binding.bound:
                reasons.append(f"{anchor}: {binding.unavailable.get(anchor, 'not bound')}")
            for source, fields in inputs.items():
                bound = binding.bound.get(source)
                if bound is None:
                    reasons.append(f"{source}: {binding.unavailable.get(source, 'not bound')}")
                    continue
                keys = set(bound.schema.key_columns)
                datasets[bound.dataset_id] = tuple(sorted(set(fields) - keys))
                for field in fields:
                    try:
                        col = bound.schema.column(field)
                    except KeyError:
                        reasons.append(f"{source} ({bound.dataset_id}) has no field {field!r}")
                        continue
                    if col.never_released:
                        reasons.append(
                            f"reads {source}.{field}, class C3, level 5 or important data, never released"
                        )
            out.append(
                FeatureInfo(
                    name=name,
                    description=description,
                    kind=kinds[name],
                    unit=units[name],
                    resolution=resolutions[name],
                    inputs=dict(inputs),
                    datasets=datasets,
                    available=not reasons,
                    reason="; ".join(reasons),
                )
            )
        return out

    def fields_for(
        self, session: Session, names: Sequence[str], binding: SourceBinding | None = None
    ) -> dict[str, tuple[str, ...]]:
        """The dataset fields a computation over ``names`` reads (for the policy engine), or an error naming
        the features that are unknown or unavailable."""
        binding = binding or bind_sources(session)
        info = {f.name: f for f in self.catalogue(session, binding)}
        unknown = [n for n in names if n not in info]
        if unknown:
            raise InvalidInput(
                f"unknown feature(s): {', '.join(unknown)}; GET /v1/features lists the features a model may use"
            )
        unavailable = [f"{n} ({info[n].reason})" for n in names if not info[n].available]
        if unavailable:
            raise InvalidInput(f"feature(s) not available: {'; '.join(unavailable)}")
        fields: dict[str, set[str]] = {}
        for n in names:
            for dataset_id, fs in info[n].datasets.items():
                fields.setdefault(dataset_id, set()).update(fs)
        if not fields:
            raise InvalidInput("a model must read at least one feature derived from a dataset")
        return {k: tuple(sorted(v)) for k, v in sorted(fields.items())}

    # --- values -----------------------------------------------------------------------------------------

    def table(self, session: Session, binding: SourceBinding | None = None) -> FeatureTable:
        """The feature table of the bound dataset versions (cached)."""
        binding = binding or bind_sources(session)
        if "registry" not in binding.bound and "household_ratings" not in binding.bound:
            raise InvalidInput(
                f"no features can be computed: {binding.unavailable.get('registry', 'no registry dataset')}"
            )
        records_key = self._records_key(session, binding)
        key = binding.key + ((records_key,) if records_key is not None else ())
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            build_lock = self._building.setdefault(key, threading.Lock())
        with build_lock:  # one build per key; others wait for it
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    return hit
            table = self._build(session, binding, key)
            with self._lock:
                self._cache[key] = table
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
                self._building.pop(key, None)
            return table

    def _read(self, session: Session, binding: SourceBinding, source: str) -> dict[str, Any]:
        wanted = _READS[source]
        bound = binding.bound.get(source)
        if bound is None:
            return {c: np.empty(0, dtype=dt) for c, dt in wanted.items()}
        version = session.get(DatasetVersion, (bound.dataset_id, bound.version))
        if version is None:  # pragma: no cover - bound a moment ago in the same transaction
            raise DataIntegrityError(f"dataset {bound.dataset_id} lost its version {bound.version}")
        present = {c.name for c in bound.schema.columns}
        columns = self.datasets.read_columns(session, version, [c for c in wanted if c in present])
        out: dict[str, Any] = {}
        n = version.row_count
        for name, dt in wanted.items():
            col = columns.get(name)
            if col is None:
                out[name] = np.full(n, np.nan) if dt == "f8" else np.full(n, "", dtype=object)
                continue
            if dt == "f8":
                values = np.asarray(col.values, dtype=np.float64).copy()
                values[~col.valid] = np.nan
                out[name] = values
            else:
                out[name] = np.asarray(col.values, dtype=object)
        return out

    def _penalties(
        self, session: Session, binding: SourceBinding, known: set[str]
    ) -> tuple[Table | None, dict[str, tuple[dishonesty.Counted, ...]]]:
        bound = binding.bound.get(dishonesty.SOURCE)
        if bound is None:
            return None, {}
        today = self.clock().date()
        usable = [
            r
            for r in self.records.usable(
                session, self.records.read(session, binding), bound.dataset_id, today
            )
            if r.uscc in known
        ]
        counted: dict[str, list[dishonesty.Counted]] = {}
        for r in usable:
            ends = min(r.publicity_ends, r.retention_ends)
            counted.setdefault(r.uscc, []).append(dishonesty.Counted(bound.dataset_id, r.record_id, ends))
        columns = {
            "uscc": np.asarray([r.uscc for r in usable], dtype=object),
            "kind": np.asarray([r.kind for r in usable], dtype=object),
            "grade": np.asarray([r.grade for r in usable], dtype=object),
        }
        return Table("penalties", "", {}, columns), {u: tuple(c) for u, c in counted.items()}

    def _build(
        self, session: Session, binding: SourceBinding, key: tuple[tuple[str, str, int], ...]
    ) -> FeatureTable:
        """Enterprises (if a registry is bound) and households (if household ratings are), one row each; an
        enterprise's household features and a household's enterprise features are 0 and never requested
        together: the policy engine asks for the fields of the features a model reads."""
        parts: list[tuple[tuple[str, ...], dict[str, FloatArray]]] = []
        window = ("2000-01", DEFAULT_WINDOW_MONTHS)
        counted: dict[str, tuple[dishonesty.Counted, ...]] = {}
        if "registry" in binding.bound:
            codes, values, window, counted = self._build_enterprises(session, binding)
            parts.append((codes, values))
        if "household_ratings" in binding.bound:
            parts.append(self._build_households(session, binding))
        names = list(FEATURES) + (list(HOUSEHOLD_FEATURES) if "household_ratings" in binding.bound else [])
        usccs_t: tuple[str, ...] = tuple(c for codes, _ in parts for c in codes)
        merged: dict[str, FloatArray] = {}
        for name in names:
            column = np.concatenate(
                [values[name] if name in values else np.zeros(len(codes)) for codes, values in parts]
            )
            column.setflags(write=False)
            merged[name] = column
        return FeatureTable(
            key=key,
            usccs=usccs_t,
            position={u: i for i, u in enumerate(usccs_t)},
            values=merged,
            window=window,
            counted=counted,
        )

    def _build_households(
        self, session: Session, binding: SourceBinding
    ) -> tuple[tuple[str, ...], dict[str, FloatArray]]:
        read: dict[str, dict[str, Any]] = {}
        for source, wanted in _HOUSEHOLD_READS.items():
            bound = binding.bound.get(source)
            if bound is None:
                read[source] = {
                    c: np.empty(0, dtype=object if dt == "O" else np.float64) for c, dt in wanted.items()
                }
                continue
            version = session.get(DatasetVersion, (bound.dataset_id, bound.version))
            if version is None:  # pragma: no cover - bound a moment ago in the same transaction
                raise DataIntegrityError(f"dataset {bound.dataset_id} lost its version {bound.version}")
            key = bound.schema.subject_key
            columns = self.datasets.read_columns(
                session, version, [key, *(c for c in wanted if c != "resident_id")]
            )
            out: dict[str, Any] = {"resident_id": np.asarray(columns[key].values, dtype=object)}
            for name, dt in wanted.items():
                if name == "resident_id":
                    continue
                col = columns[name]
                cells = np.asarray(col.values, dtype=object if dt == "O" else np.float64).copy()
                if dt != "O":
                    cells[~col.valid] = np.nan
                out[name] = cells
            read[source] = out
        codes, features = household_features(read["household_ratings"], read["household_production"])
        rounded: dict[str, FloatArray] = {}
        for name, column in features.items():
            step = HOUSEHOLD_FEATURE_RESOLUTION[name]
            v = np.nan_to_num(column, nan=0.0, posinf=0.0, neginf=0.0)
            rounded[name] = np.round(v / step) * step if step > 0 else v
        return tuple(str(c) for c in codes.tolist()), rounded

    def _build_enterprises(
        self, session: Session, binding: SourceBinding
    ) -> tuple[
        tuple[str, ...], dict[str, FloatArray], tuple[str, int], dict[str, tuple[dishonesty.Counted, ...]]
    ]:
        data = {source: self._read(session, binding, source) for source in _READS}
        reg = data["registry"]
        usccs = np.asarray(reg["uscc"], dtype=object)
        unique, first = np.unique(usccs, return_index=True)
        if len(unique) != len(usccs):  # keys are unique within a version; keep the first row of each anyway
            keep = np.sort(first)
            data["registry"] = {k: np.asarray(v)[keep] for k, v in reg.items()}
            reg, usccs = data["registry"], np.asarray(data["registry"]["uscc"], dtype=object)
        known = set(usccs.tolist())
        bad_size = sorted({s for s in reg["size_class"].tolist() if s not in SIZE_CLASSES})
        if bad_size:
            raise DataIntegrityError(
                f"the registry has size classes {bad_size}; expected one of {list(SIZE_CLASSES)}"
            )
        try:
            reg["registered_on"] = np.asarray(reg["registered_on"].tolist(), dtype="datetime64[D]")
        except ValueError as exc:
            raise DataIntegrityError(f"the registry has an unreadable registration date: {exc}") from None
        for source in _READS:
            if source == "registry":
                continue
            cols = data[source]
            mask = np.fromiter(
                (u in known for u in cols["uscc"].tolist()), dtype=bool, count=len(cols["uscc"])
            )
            data[source] = {k: np.asarray(v)[mask] for k, v in cols.items()}
        months = sorted({m for s in _MONTHLY for m in set(data[s]["month"].tolist()) if m})
        if months:
            first_m, last_m = months[0], months[-1]
            span = (int(last_m[:4]) * 12 + int(last_m[5:7])) - (int(first_m[:4]) * 12 + int(first_m[5:7])) + 1
        else:
            first_m, span = "2000-01", DEFAULT_WINDOW_MONTHS
        for s in _MONTHLY:
            data[s]["month"] = np.asarray(data[s]["month"], dtype=object)
        penalties, counted = self._penalties(session, binding, known)
        platform = PlatformData(
            registry=Table("registry", "", {}, data["registry"]),
            tax=Table("tax", "", {}, data["tax"]),
            social_insurance=Table("social_insurance", "", {}, data["social_insurance"]),
            utilities=Table("utilities", "", {}, data["utilities"]),
            procurement=Table("procurement", "", {}, data["procurement"]),
            court=Table("court", "", {}, data["court"]),
            labels=Table("labels", "", {}, {}),
            seed=0,
            start=first_m,
            months=span,
            penalties=penalties,
        )
        codes, features = enterprise_features(platform)
        values = {}
        for name, column in features.items():
            step = FEATURE_RESOLUTION[name]
            v = np.nan_to_num(column, nan=0.0, posinf=0.0, neginf=0.0)
            values[name] = np.round(v / step) * step if step > 0 else v
        return tuple(codes.tolist()), values, (first_m, span), counted


@dataclass(frozen=True)
class Usable:
    """The admitted subjects a computation can use: allowed and with a registry record."""

    allowed: dict[str, Decision]
    subjects: list[str]
    rows: list[int]
    left_out: dict[str, int]
    """subjects left out, counted by reason: a denial's reason, or ``no_data`` (no registry record)"""


@dataclass(frozen=True)
class Admission:
    table: FeatureTable
    fields: dict[str, tuple[str, ...]]
    decisions: list[Decision]

    @property
    def records(self) -> dict[str, tuple[dishonesty.Counted, ...]] | None:
        """The dishonesty records the computation counts per subject, when it reads them (for the release
        decision: :class:`pps.governance.release.Gate`); None when no feature reads them."""
        read = {c.dataset_id for cs in self.table.counted.values() for c in cs}
        return self.table.counted if read & set(self.fields) else None

    def usable(self, order: Sequence[str] | None = None) -> Usable:
        """The allowed subjects that have features, in ``order`` if given (else the decisions' order), their
        rows in the feature table, and how many were left out and why."""
        allowed = {d.subject: d for d in self.decisions if d.allowed}
        wanted = [s for s in order if s in allowed] if order is not None else list(allowed)
        found, rows, no_data = self.table.rows(wanted)
        left_out: dict[str, int] = {}
        for d in self.decisions:
            if not d.allowed and d.reason is not None:
                left_out[d.reason.value] = left_out.get(d.reason.value, 0) + 1
        if no_data:
            left_out["no_data"] = len(no_data)
        return Usable(allowed, found, rows, left_out)


def admit_on_features(
    db: Database,
    features: FeatureStore,
    policy: PolicyEngine,
    *,
    bank: str,
    purpose: str,
    operation: str,
    names: Sequence[str],
    submitted_fields: Mapping[str, Sequence[str]],
    subjects: Sequence[str] | None,
    job: ObjectRef,
    actor: Actor,
    after_table: Callable[[], None] | None = None,
) -> Admission:
    """The admission step of a job that computes on features (scoring, enclave jobs).

    The feature table is read first, outside any write transaction (the first use of a set of dataset
    versions computes it: seconds at 10^5 enterprises). Then, in one write transaction, the sources must be
    the ones the table was built from and the fields the job was submitted with, and the policy engine
    decides and records ``operation`` for ``subjects`` (``None``: every subject with a consent for this bank
    and purpose) over exactly those fields.
    """
    with db.transaction(write=False) as s:
        binding = bind_sources(s)
        table = features.table(s, binding)
    if after_table is not None:
        after_table()
    with db.transaction() as s:
        if bind_sources(s).key != binding.key:
            raise InvalidInput(
                "a dataset behind the features got a new version as the job started; submit it again"
            )
        fields = features.fields_for(s, names, binding)
        if fields != {k: tuple(v) for k, v in submitted_fields.items()}:
            raise InvalidInput(
                "the datasets behind the features changed since submission; submit the job again"
            )
        wanted = tuple(subjects) if subjects is not None else policy.candidates(s, bank, purpose)
        request = Request(bank, wanted, fields, operation, purpose)
        decisions = policy.admit(s, request, job=job, actor=actor) if wanted else []
    return Admission(table, fields, decisions)
