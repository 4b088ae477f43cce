"""Aggregate queries under output controls: cohort statistics that cannot single anyone out.

A bank asks for a **count, sum, mean or histogram** of one numeric field of one dataset (e.g. the ``tax``
source's ``taxable_sales`` over a month range) over a **cohort** — enterprises filtered and optionally grouped
by the registry's ``industry``, ``region`` and ``size_class`` — in one of two **scopes**:

* ``consented``: only the enterprises whose consent allows operation ``aggregate`` for this bank and purpose
  over every field the query reads (the measured field *and* the registry fields the cohort uses), as the
  policy engine decides; their consents each spend one use, and each of them sees (redacted to itself) a
  ledger entry saying that it was in a cohort released to this bank;
* ``platform``: every enterprise with data, where each dataset's provider opted in (``platform_aggregates``)
  for any C2 field read; C1 fields need no opt-in. No enterprise is named in the ledger, the datasets are.

Each enterprise contributes one value per cell: its rows in range summed, then clamped to the query's
``[lower, upper]`` (required for sum, mean and histogram). ``count`` is the number of enterprises in the cell
with data.

Output controls, in the order they apply (``docs/protocols.md`` has the format, ``docs/security.md`` the
residual risks):

1. **C3 never**: a query reading a C3 field is refused (``Refused``, control ``c3``), in either scope.
2. **Platform opt-in**: a platform-scope query reading a C2 field of a dataset whose provider has not opted in
   is refused (control ``platform_opt_in``).
3. **Minimum cohort size** ``k`` (``PPS_AGGREGATE_MIN_COHORT_SIZE``, default 10): a cell with fewer than ``k``
   enterprises is suppressed — left out of the answer, so the bank cannot tell it from an empty one. If every
   cell is suppressed, nothing is released and nothing is spent.
4. **Differencing**: a released cell whose member set differs from a member set already released to the same
   bank (in any earlier query, or in this one) by at least one and fewer than ``k`` enterprises is refused
   (control ``differencing``). The check is exact over the sets: members are kept per bank as sorted keyed
   64-bit hashes of their USCCs (BLAKE2b keyed from ``PPS_SECRET_KEY``), only sets whose size is within ``k``
   are loaded, and the symmetric difference is counted by binary search.
5. **Budget**: the query's epsilon is spent from the bank's budget with one guarded
   ``UPDATE … WHERE spent + ε <= total RETURNING`` in the transaction that releases the answer, after the
   bank's budget row is locked (which also serialises the differencing check per bank): concurrent queries
   can never overspend (``BudgetExhausted``). Cells are disjoint, so one query costs ε whatever its number of
   cells (parallel composition); a mean splits ε between its noisy count and noisy sum.
6. **Noise**: OpenDP's Laplace measurements (:mod:`pps.data.dp`), pure ε-DP per query, with the subject as the
   unit of privacy.

Who learns what
---------------
* The **bank** learns the noisy statistics of the released cells, the noise scales, and that the other cells
  (if any) had fewer than ``k`` enterprises or were empty; a refusal tells it which control refused. It never
  learns who is in a cohort.
* The **safe-room** (host) computes on plaintext, as for every computation here, and keeps the member sets
  (as keyed hashes) of every released cell.
* **Enterprises** (consented scope) see that they were in a cohort released to the bank, for which purpose,
  and the fields read — never the others in it or the answer.
* **Providers** see in their lineage that their datasets were used (details withheld).

Assumptions: the bank may be malicious and adaptive — it picks cohorts, bounds, epsilons and repeats queries
— but cannot change platform data. Against that, the guarantee is ε-DP per query and composition up to the
bank's total budget; banks colluding with each other add up their budgets. The suppression of small cells
and the refusals depend on exact counts, which is not differentially private (see ``docs/security.md``).

Every answered query is a ledger entry ``aggregate.release`` and every refused one ``aggregate.refused``
(naming the control); input errors change nothing and write nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pps.data import dp
from pps.data.datasets import codec
from pps.data.datasets.schema import ColumnType, DatasetSchema, Sensitivity
from pps.data.datasets.service import DatasetService
from pps.data.sources import SOURCES, bind_sources
from pps.errors import BudgetExhausted, DataIntegrityError, InvalidInput, NotFound, Refused, StateDivergent
from pps.governance import records as dishonesty
from pps.governance.consent import check_purpose
from pps.governance.objections import open_disputes
from pps.governance.policy import PolicyEngine, Request
from pps.governance.release import Gate
from pps.governance.state import BUDGETS_TABLE
from pps.infra.storage.db import Database
from pps.infra.storage.tables import (
    Consent,
    Dataset,
    DatasetVersion,
    ObjectionState,
    Organization,
    PrivacyBudget,
    ReleasedCohort,
    Role,
    new_id,
    utcnow,
)
from pps.ledger.entry import Actor, EntryDraft, ObjectRef, Release
from pps.ledger.replay import Quarantine
from pps.ledger.store import Ledger

COHORT_ATTRIBUTES: Final = ("industry", "region", "size_class")
"""The registry fields a cohort can be filtered and grouped by."""
STATISTICS: Final = ("count", "sum", "mean", "histogram")
SCOPES: Final = ("consented", "platform")
OPERATION: Final = "aggregate"
MICRO: Final = 1_000_000
"""Budgets are kept in micro-epsilon."""
MAX_BOUND: Final = 1e15
MAX_BINS: Final = 100
MAX_FILTER_VALUES: Final = 200
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")

U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]


# --- the query ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AggregateSpec:
    """One aggregate query, as the bank asks it (checked by :meth:`check` before anything is read)."""

    statistic: str
    scope: str
    purpose: str
    epsilon: float
    dataset: str | None = None
    """the measured dataset: a source name (``tax``, ...) or a dataset id; None for a count of the registry"""
    field: str | None = None
    months: tuple[str, str] | None = None
    """inclusive ``(first, last)`` months ``YYYY-MM`` of a monthly dataset; None: every month"""
    cohort: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    """registry attribute -> the values a member may have"""
    group_by: tuple[str, ...] = ()
    lower: float | None = None
    upper: float | None = None
    bins: int | None = None

    def check(self, *, max_epsilon: float) -> int:
        """Validate everything that needs no database; return the epsilon to spend in micro-epsilon."""
        if self.statistic not in STATISTICS:
            raise InvalidInput(f"statistic must be one of {', '.join(STATISTICS)}")
        if self.scope not in SCOPES:
            raise InvalidInput(f"scope must be one of {', '.join(SCOPES)}")
        check_purpose(self.purpose)
        if not isinstance(self.epsilon, int | float) or not math.isfinite(self.epsilon) or self.epsilon <= 0:
            raise InvalidInput("epsilon must be a positive number")
        if self.epsilon > max_epsilon:
            raise InvalidInput(f"epsilon may be at most {max_epsilon} per query (PPS_AGGREGATE_MAX_EPSILON)")
        micro = math.ceil(self.epsilon * MICRO - 1e-6)
        if micro < 1:
            raise InvalidInput(f"epsilon must be at least {1 / MICRO}")
        if (self.dataset is None) != (self.field is None):
            raise InvalidInput("give the measured dataset and field together")
        if self.statistic != "count" and self.field is None:
            raise InvalidInput(f"a {self.statistic} needs a measured dataset and field")
        bounded = self.statistic in ("sum", "mean", "histogram")
        if bounded:
            if self.lower is None or self.upper is None:
                raise InvalidInput(
                    f"a {self.statistic} needs bounds [lower, upper]: each enterprise's contribution is "
                    "clamped to them, which is what bounds the noise needed"
                )
            for name, v in (("lower", self.lower), ("upper", self.upper)):
                if not math.isfinite(v) or abs(v) > MAX_BOUND:
                    raise InvalidInput(f"bounds.{name} must be a finite number within ±{MAX_BOUND:g}")
            if not self.lower < self.upper:
                raise InvalidInput("bounds.lower must be below bounds.upper")
        elif self.lower is not None or self.upper is not None:
            raise InvalidInput("bounds are used by sum, mean and histogram only")
        if self.statistic == "histogram":
            if self.bins is None or not 2 <= self.bins <= MAX_BINS:
                raise InvalidInput(f"a histogram needs bins between 2 and {MAX_BINS}")
        elif self.bins is not None:
            raise InvalidInput("bins are used by histogram only")
        if self.months is not None:
            first, last = self.months
            if not _MONTH.match(first) or not _MONTH.match(last):
                raise InvalidInput("months.from and months.to must be months YYYY-MM")
            if first > last:
                raise InvalidInput("months.from must not be after months.to")
            if self.field is None:
                raise InvalidInput("a month range needs a measured (monthly) dataset")
        for name, values in self.cohort.items():
            if name not in COHORT_ATTRIBUTES:
                raise InvalidInput(f"cohort attribute {name!r} is not one of {', '.join(COHORT_ATTRIBUTES)}")
            if not values or len(values) > MAX_FILTER_VALUES:
                raise InvalidInput(f"cohort.{name} needs 1 to {MAX_FILTER_VALUES} values")
            if not all(isinstance(v, str) and 0 < len(v) <= 64 for v in values):
                raise InvalidInput(f"cohort.{name} values must be strings of 1 to 64 characters")
        if len(set(self.group_by)) != len(self.group_by) or not set(self.group_by) <= set(COHORT_ATTRIBUTES):
            raise InvalidInput(f"group_by names distinct attributes among {', '.join(COHORT_ATTRIBUTES)}")
        if self.field is None and not self.attributes:
            raise InvalidInput("a count needs a measured dataset and field, or a cohort attribute")
        return micro

    @property
    def attributes(self) -> tuple[str, ...]:
        """The registry attributes the cohort reads (filters and groups), in a fixed order."""
        used = set(self.cohort) | set(self.group_by)
        return tuple(a for a in COHORT_ATTRIBUTES if a in used)

    def ledger_form(self) -> dict[str, Any]:
        """The spec for the ledger (no floats there: numbers as their shortest exact decimal strings)."""

        def num(v: float | None) -> str | None:
            return None if v is None else repr(float(v))

        return {
            "statistic": self.statistic,
            "scope": self.scope,
            "dataset": self.dataset,
            "field": self.field,
            "months": list(self.months) if self.months else None,
            "cohort": {k: sorted(v) for k, v in sorted(self.cohort.items())},
            "group_by": list(self.group_by),
            "lower": num(self.lower),
            "upper": num(self.upper),
            "bins": self.bins,
            "epsilon": num(self.epsilon),
        }


@dataclass(frozen=True)
class Cell:
    """One released cell: its group (attribute -> value; empty without ``group_by``) and its statistic."""

    group: dict[str, str]
    count: int | None = None
    sum: float | None = None
    mean: float | None = None
    histogram: list[int] | None = None
    disputed_inputs: bool = False
    annotated_inputs: bool = False
    """a member has an input whose objection could not be verified (annotated, 征信业管理条例 Art. 25)"""
    """whether a member of the cell has an open objection on a field the query reads (never who)"""


@dataclass(frozen=True)
class Answer:
    query_id: str
    statistic: str
    scope: str
    purpose: str
    epsilon_spent: float
    budget_remaining: float
    min_cohort_size: int
    cells: list[Cell]
    noise_scale: dict[str, float]
    """Laplace scale per released quantity (``count``, ``sum``, ``histogram``)"""
    bin_edges: list[float] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "statistic": self.statistic,
            "scope": self.scope,
            "purpose": self.purpose,
            "epsilon_spent": self.epsilon_spent,
            "budget_remaining": self.budget_remaining,
            "min_cohort_size": self.min_cohort_size,
            "cells": [
                {
                    "group": c.group,
                    **{
                        k: v
                        for k, v in (
                            ("count", c.count),
                            ("sum", c.sum),
                            ("mean", c.mean),
                            ("histogram", c.histogram),
                        )
                        if v is not None
                    },
                    "disputed_inputs": c.disputed_inputs,
                    "annotated_inputs": c.annotated_inputs,
                }
                for c in self.cells
            ],
            "noise_scale": self.noise_scale,
            "bin_edges": self.bin_edges,
        }


@dataclass(frozen=True)
class Budget:
    bank_org_id: str
    total: float
    spent: float

    @property
    def remaining(self) -> float:
        return max(0.0, self.total - self.spent)

    @classmethod
    def of_micro(cls, bank_org_id: str, total: int, spent: int) -> Budget:
        return cls(bank_org_id, total / MICRO, spent / MICRO)


# --- data in memory ----------------------------------------------------------------------------------


@dataclass
class _Frame:
    """One dataset version as the queries read it: subjects as keyed 64-bit codes, rows mapped to them."""

    codes: U64
    """sorted, unique: the subjects with rows in this version"""
    row_subject: npt.NDArray[np.intp]
    months: npt.NDArray[np.int32] | None
    """per row: year * 12 + month - 1 of the period key, -1 where missing; None without a period key"""
    numeric: dict[str, tuple[F64, npt.NDArray[np.bool_]]] = dataclasses.field(default_factory=dict)
    per_subject: dict[str, npt.NDArray[np.str_]] = dataclasses.field(default_factory=dict)
    """per subject (aligned with ``codes``): a text attribute (the last row's value; "" where missing)"""


def _month_number(text: str) -> int:
    return int(text[:4]) * 12 + int(text[5:7]) - 1


def _months_of(col: codec.Column) -> npt.NDArray[np.int32]:
    n = len(col)
    if n == 0:
        return np.empty(0, dtype=np.int32)
    texts = np.where(col.valid, col.values, "0000-01").astype("S10")
    digits = np.frombuffer(texts.tobytes(), dtype=np.uint8).reshape(n, 10).astype(np.int32) - 48
    year = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    month = digits[:, 5] * 10 + digits[:, 6]
    out = (year * 12 + month - 1).astype(np.int32)
    out[~col.valid] = -1
    return out


class _FrameCache:
    """Decrypted dataset versions kept in memory (LRU): a new version is a new key, so nothing goes stale."""

    def __init__(self, datasets: DatasetService, member_key: bytes, capacity: int) -> None:
        self.datasets = datasets
        self.member_key = member_key
        self.capacity = capacity
        self._frames: OrderedDict[tuple[str, int], _Frame] = OrderedDict()
        self._lock = threading.Lock()

    def codes_of(self, usccs: Iterable[str]) -> U64:
        """The keyed 64-bit codes of USCCs (BLAKE2b under the member key), in the order given."""
        key = self.member_key
        return np.fromiter(
            (
                int.from_bytes(hashlib.blake2b(u.encode(), key=key, digest_size=8).digest(), "little")
                for u in usccs
            ),
            dtype=np.uint64,
        )

    def frame(
        self, session: Session, version: DatasetVersion, numeric: Sequence[str], text: Sequence[str]
    ) -> _Frame:
        key = (version.dataset_id, version.version)
        with self._lock:
            frame = self._frames.get(key)
            if frame is None:
                frame = self._load(session, version)
                self._frames[key] = frame
                while len(self._frames) > self.capacity:
                    self._frames.popitem(last=False)
            self._frames.move_to_end(key)
            missing_num = [c for c in numeric if c not in frame.numeric]
            missing_text = [c for c in text if c not in frame.per_subject]
            if missing_num or missing_text:
                cols = self.datasets.read_columns(session, version, [*missing_num, *missing_text])
                for name in missing_num:
                    col = cols[name]
                    values = np.asarray(col.values, dtype=np.float64)
                    frame.numeric[name] = (values, col.valid & np.isfinite(values))
                for name in missing_text:
                    col = cols[name]
                    per = np.full(len(frame.codes), "", dtype=object)
                    per[frame.row_subject[col.valid]] = col.values[col.valid]
                    frame.per_subject[name] = per.astype(str)
            return frame

    def _load(self, session: Session, version: DatasetVersion) -> _Frame:
        schema = DatasetSchema.model_validate_json(version.schema_json)
        period = schema.period_key
        cols = self.datasets.read_columns(
            session, version, [schema.subject_key, *([period] if period else [])]
        )
        subject = cols[schema.subject_key]
        if not subject.valid.all():
            raise DataIntegrityError(
                f"dataset {version.dataset_id}@{version.version} has rows without subject"
            )
        usccs, inverse = np.unique(subject.values.astype("U18"), return_inverse=True)
        codes = self.codes_of(usccs.tolist())
        order = np.argsort(codes)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        sorted_codes = codes[order]
        if len(sorted_codes) > 1 and bool((sorted_codes[1:] == sorted_codes[:-1]).any()):
            raise DataIntegrityError("two subjects share a member code; rotate PPS_SECRET_KEY's derived key")
        months = None
        if period:
            ptype = schema.column(period).type
            if ptype not in (ColumnType.month, ColumnType.date):  # guaranteed by the schema; kept explicit
                raise DataIntegrityError(f"period key {period} is neither a month nor a date")
            months = _months_of(cols[period])
        return _Frame(sorted_codes, rank[inverse.ravel()].astype(np.intp), months)


def _common(a: U64, b: U64) -> int:
    """How many elements two sorted arrays of distinct values share."""
    if len(a) == 0 or len(b) == 0:
        return 0
    if len(a) > len(b):
        a, b = b, a
    idx = np.searchsorted(b, a)
    idx[idx == len(b)] = 0
    return int(np.count_nonzero(b[idx] == a))


# --- the plan: what a query reads --------------------------------------------------------------------


@dataclass
class _Plan:
    measure: Dataset | None
    measure_version: DatasetVersion | None
    measure_schema: DatasetSchema | None
    registry: Dataset | None
    registry_version: DatasetVersion | None
    fields: dict[str, tuple[str, ...]]
    """dataset id -> fields read (what the policy engine is asked about)"""

    @property
    def dataset_ids(self) -> list[str]:
        return sorted(self.fields)


@dataclass
class _CellData:
    group: dict[str, str]
    members: U64
    contributions: F64


class AggregateService:
    def __init__(
        self,
        db: Database,
        ledger: Ledger,
        policy: PolicyEngine,
        datasets: DatasetService,
        *,
        secret_key: bytes,
        min_cohort_size: int = 10,
        max_epsilon: float = 1.0,
        default_budget: float = 1.0,
        cache_versions: int = 8,
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.policy = policy
        self.datasets = datasets
        self.min_cohort_size = min_cohort_size
        self.max_epsilon = max_epsilon
        self.default_budget_micro = round(default_budget * MICRO)
        self.quarantine = Quarantine()
        """budgets whose rows the last reconciliation with the ledger found divergent (set by the runtime)"""
        member_key = hmac.new(secret_key, b"pps/aggregates/member-codes/v1", hashlib.sha256).digest()
        self.frames = _FrameCache(datasets, member_key, cache_versions)

    # --- budgets -------------------------------------------------------------------------------------

    def budget(self, session: Session, bank_org_id: str) -> Budget:
        row = session.execute(
            select(PrivacyBudget.total_micro, PrivacyBudget.spent_micro).where(
                PrivacyBudget.bank_org_id == bank_org_id
            )
        ).first()
        if row is None:
            return Budget.of_micro(bank_org_id, self.default_budget_micro, 0)
        return Budget.of_micro(bank_org_id, row.total_micro, row.spent_micro)

    def lock_budget(self, session: Session, bank_org_id: str) -> tuple[int, int]:
        """Create the bank's budget row if needed and lock it until the transaction ends (this serialises the
        bank's releases: the differencing control sees them all). Used by sealed aggregates too.

        A new row is recorded (``aggregate.budget.open``, its total) so that the ledger alone gives every
        budget (:mod:`pps.governance.state`); a row the last reconciliation found divergent is refused."""
        if self.quarantine.holds(BUDGETS_TABLE, bank_org_id):
            raise StateDivergent(
                f"the privacy budget of {bank_org_id} differs from what the ledger records, so it is not used: "
                "the operator must reconcile it (pps audit verify --state names the difference)",
                details={"control": "state", "table": BUDGETS_TABLE, "id": bank_org_id},
            )
        values = {
            "bank_org_id": bank_org_id,
            "total_micro": self.default_budget_micro,
            "spent_micro": 0,
            "updated_at": utcnow(),
        }
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        # RETURNING says whether this statement made the row; the driver's rowcount for INSERT ... ON CONFLICT
        # DO NOTHING proved unreliable on PostgreSQL (psycopg): budgets opened there went unrecorded
        opened = session.execute(
            insert(PrivacyBudget)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["bank_org_id"])
            .returning(PrivacyBudget.bank_org_id)
        ).first()
        if opened is not None:
            self.ledger.append(
                session,
                EntryDraft(
                    action="aggregate.budget.open",
                    actor=Actor(None, "service", "job"),
                    objects=(ObjectRef("org", bank_org_id),),
                    detail={"total_micro": self.default_budget_micro},
                ),
            )
        row = session.execute(
            select(PrivacyBudget.total_micro, PrivacyBudget.spent_micro)
            .where(PrivacyBudget.bank_org_id == bank_org_id)
            .with_for_update()
        ).one()
        return int(row.total_micro), int(row.spent_micro)

    def spend_budget(self, session: Session, bank_org_id: str, micro: int) -> tuple[int, int] | None:
        """Spend ``micro`` of the bank's budget if it covers it; returns (total, spent) or None."""
        row = session.execute(
            update(PrivacyBudget)
            .where(
                PrivacyBudget.bank_org_id == bank_org_id,
                PrivacyBudget.spent_micro + micro <= PrivacyBudget.total_micro,
            )
            .values(spent_micro=PrivacyBudget.spent_micro + micro, updated_at=utcnow())
            .returning(PrivacyBudget.total_micro, PrivacyBudget.spent_micro)
            .execution_options(synchronize_session=False)
        ).first()
        return None if row is None else (int(row.total_micro), int(row.spent_micro))

    def set_budget(
        self,
        session: Session,
        bank_org_id: str,
        total_epsilon: float,
        *,
        actor: Actor,
        request_id: str | None = None,
    ) -> Budget:
        """Set a bank's total epsilon (an operator's decision; written to the ledger)."""
        bank = session.get(Organization, bank_org_id)
        if bank is None or bank.role is not Role.bank:
            raise NotFound(f"{bank_org_id} is not a bank")
        if not math.isfinite(total_epsilon) or not 0 <= total_epsilon <= 1e6:
            raise InvalidInput("a budget is an epsilon between 0 and 1000000")
        total = round(total_epsilon * MICRO)
        before, spent = self.lock_budget(session, bank_org_id)
        if total < spent:
            raise InvalidInput(
                f"{bank_org_id} has already spent {spent / MICRO:g}; the total cannot be lower "
                f"(set it to {spent / MICRO:g} to stop further queries)"
            )
        session.execute(
            update(PrivacyBudget)
            .where(PrivacyBudget.bank_org_id == bank_org_id)
            .values(total_micro=total, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        self.ledger.append(
            session,
            EntryDraft(
                action="aggregate.budget.set",
                actor=actor,
                objects=(ObjectRef("org", bank_org_id),),
                request_id=request_id,
                detail={"total_micro": total, "previous_total_micro": before, "spent_micro": spent},
            ),
        )
        return Budget.of_micro(bank_org_id, total, spent)

    # --- the provider's opt-in -----------------------------------------------------------------------

    def set_platform_aggregates(
        self, session: Session, ds: Dataset, enabled: bool, *, actor: Actor, request_id: str | None = None
    ) -> Dataset:
        """The provider allows (or stops) platform-scope aggregates over its dataset's C2 fields."""
        if ds.deleted_at is not None:
            raise NotFound(f"dataset {ds.id} does not exist")
        ds.platform_aggregates = bool(enabled)
        session.flush()
        self.ledger.append(
            session,
            EntryDraft(
                action="dataset.aggregates",
                actor=actor,
                objects=(ObjectRef("dataset", ds.id),),
                request_id=request_id,
                detail={"platform_aggregates": bool(enabled)},
            ),
        )
        return ds

    # --- answering -----------------------------------------------------------------------------------

    def answer(
        self, spec: AggregateSpec, *, actor: Actor, request_id: str | None = None, now: datetime | None = None
    ) -> Answer:
        """Answer one query (own transactions): checked, computed, controlled, spent and logged — or refused.

        Input errors raise :class:`InvalidInput` and change nothing. A refusal by an output control raises
        :class:`Refused` (or :class:`BudgetExhausted`) after an ``aggregate.refused`` entry is committed.
        """
        bank = actor.org_id
        if bank is None:
            raise InvalidInput("an aggregate query is made by a bank")
        micro = spec.check(max_epsilon=self.max_epsilon)
        query_id = new_id("agg")
        with self.db.transaction(write=False) as s:  # validate and warm the cache outside the write lock
            plan = self._plan(s, spec)
            self._load(s, spec, plan)
        try:
            with self.db.transaction() as s:
                return self._answer(s, spec, micro, query_id, actor, request_id, now)
        except Refused as exc:
            with self.db.transaction() as s:
                self.ledger.append(
                    s,
                    EntryDraft(
                        action="aggregate.refused",
                        actor=actor,
                        objects=(
                            ObjectRef("aggregate", query_id),
                            *(ObjectRef("dataset", d) for d in plan.dataset_ids),
                        ),
                        purpose=spec.purpose,
                        request_id=request_id,
                        detail={
                            "bank": bank,
                            "spec": spec.ledger_form(),
                            "control": exc.details.get("control", "unknown"),
                            "reason": exc.message,
                        },
                    ),
                )
            exc.details.setdefault("query_id", query_id)
            raise

    def _answer(
        self,
        s: Session,
        spec: AggregateSpec,
        micro: int,
        query_id: str,
        actor: Actor,
        request_id: str | None,
        now: datetime | None,
    ) -> Answer:
        bank = actor.org_id
        assert bank is not None
        k = self.min_cohort_size
        self.lock_budget(s, bank)  # serialises this bank's queries: the differencing check sees them all
        plan = self._plan(s, spec)
        self._check_classes(s, spec, plan)
        allowed: dict[int, str] | None = None
        if spec.scope == "consented":
            allowed = self._consented(s, bank, spec, plan, now)
        cells = [c for c in self._cells(s, spec, plan, allowed) if len(c.members) >= k]
        if cells:
            self._check_differencing(s, bank, cells, k)
            spent = self.spend_budget(s, bank, micro)
            if spent is None:
                left = self.budget(s, bank)
                raise BudgetExhausted(
                    f"refused by the budget control: this query needs epsilon {micro / MICRO:g} and the "
                    f"bank has {left.remaining:g} of {left.total:g} left; ask for a smaller epsilon or ask "
                    "the operator to raise the budget (pps admin budget set)",
                    details={"control": "budget", "remaining": left.remaining, "asked": micro / MICRO},
                )
            total_micro, spent_micro = spent
        else:
            total_micro, spent_micro = self.lock_budget(s, bank)
            micro = 0
        released, scales, edges = self._release(spec, cells)
        disputed = open_disputes(
            s, None, plan.fields
        )  # open objections (pps.governance.objections): a flag per cell
        if disputed and cells:
            codes = self.frames.codes_of(disputed)
            released = [
                dataclasses.replace(c, disputed_inputs=bool(np.isin(cell.members, codes).any()))
                for c, cell in zip(released, cells, strict=True)
            ]
        annotated = open_disputes(s, None, plan.fields, state=ObjectionState.unverifiable)
        if annotated and cells:
            codes = self.frames.codes_of(annotated)
            released = [
                dataclasses.replace(c, annotated_inputs=bool(np.isin(cell.members, codes).any()))
                for c, cell in zip(released, cells, strict=True)
            ]
        self._remember(s, bank, cells, query_id)
        datasets = (ObjectRef("aggregate", query_id), *(ObjectRef("dataset", d) for d in plan.dataset_ids))
        what = f"aggregate:{spec.statistic}"
        if allowed is not None and cells:
            members = sorted({allowed[int(c)] for cell in cells for c in cell.members})
            Gate(
                self.policy,
                Request(bank, tuple(members), plan.fields, OPERATION, spec.purpose),
                job=ObjectRef("aggregate", query_id),
                actor=actor,
                request_id=request_id,
            ).release_all(
                s, what=what, refusal="changed while the query ran; nothing was released — ask again"
            )
        answer = Answer(
            query_id=query_id,
            statistic=spec.statistic,
            scope=spec.scope,
            purpose=spec.purpose,
            epsilon_spent=micro / MICRO,
            budget_remaining=max(0, total_micro - spent_micro) / MICRO,
            min_cohort_size=k,
            cells=released,
            noise_scale=scales,
            bin_edges=edges,
        )
        digest = hashlib.sha256(json.dumps(answer.as_json(), sort_keys=True).encode()).hexdigest()
        self.ledger.append(
            s,
            EntryDraft(
                action="aggregate.release",
                actor=actor,
                objects=datasets,
                purpose=spec.purpose,
                released=(Release(to=bank, what=what),) if cells else (),
                request_id=request_id,
                detail={
                    "bank": bank,
                    "spec": spec.ledger_form(),
                    "fields": {d: list(f) for d, f in sorted(plan.fields.items())},
                    "epsilon_micro": micro,
                    "budget_remaining_micro": max(0, total_micro - spent_micro),
                    "cells_released": len(cells),
                    "cells_with_disputed_inputs": sum(c.disputed_inputs for c in released),
                    "min_cohort_size": k,
                    "answer_sha256": digest,
                },
            ),
            now=now,
        )
        return answer

    # --- steps ---------------------------------------------------------------------------------------

    def _plan(self, s: Session, spec: AggregateSpec) -> _Plan:
        fields: dict[str, tuple[str, ...]] = {}
        measure = version = schema = None
        if spec.dataset is not None and spec.field is not None:
            measure = self._dataset(s, spec.dataset)
            version = self.datasets.current(s, measure)
            if version is not None and version.wrapped_dek is None:
                version = None
            schema = DatasetSchema.model_validate_json(
                version.schema_json if version else measure.schema_json
            )
            try:
                col = schema.column(spec.field)
            except KeyError:
                raise InvalidInput(
                    f"dataset {measure.id} ({measure.name}) has no field {spec.field!r}"
                ) from None
            if spec.field in schema.key_columns:
                raise InvalidInput(f"{spec.field} is a key column of {measure.name}, not a measured value")
            if col.type not in (ColumnType.int, ColumnType.float):
                raise InvalidInput(
                    f"{measure.name}.{spec.field} is {col.type.value}, not numeric (int or float)"
                )
            if spec.months is not None and schema.period_key is None:
                raise InvalidInput(f"{measure.name} is not monthly (it has no period key); drop months")
            fields[measure.id] = (spec.field,)
        registry = registry_version = None
        if spec.attributes:
            binding = bind_sources(s, ("registry",))
            bound = binding.bound.get("registry")
            if bound is None:
                raise InvalidInput(f"cohorts need the registry: {binding.unavailable.get('registry')}")
            registry = s.get(Dataset, bound.dataset_id)
            registry_version = s.get(DatasetVersion, (bound.dataset_id, bound.version))
            for a in spec.attributes:
                try:
                    bound.schema.column(a)
                except KeyError:
                    raise InvalidInput(f"the registry has no field {a!r}") from None
            fields[bound.dataset_id] = tuple(sorted({*fields.get(bound.dataset_id, ()), *spec.attributes}))
        return _Plan(measure, version, schema, registry, registry_version, fields)

    def _dataset(self, s: Session, name: str) -> Dataset:
        if name in SOURCES:
            binding = bind_sources(s, (name,))
            bound = binding.bound.get(name)
            if bound is None:
                raise InvalidInput(f"source {name!r} is unavailable: {binding.unavailable.get(name)}")
            ds = s.get(Dataset, bound.dataset_id)
        else:
            ds = s.get(Dataset, name)
        if ds is None or ds.deleted_at is not None:
            raise InvalidInput(
                f"dataset {name!r} does not exist (name a source: {', '.join(SOURCES)}, or an id)"
            )
        return ds

    def _load(self, s: Session, spec: AggregateSpec, plan: _Plan) -> tuple[_Frame | None, _Frame | None]:
        measure = registry = None
        if plan.measure_version is not None and spec.field is not None:
            same = (
                plan.registry_version is not None
                and plan.registry_version.dataset_id == plan.measure_version.dataset_id
            )
            measure = self.frames.frame(
                s, plan.measure_version, [spec.field], spec.attributes if same else ()
            )
        if plan.registry_version is not None:
            registry = self.frames.frame(s, plan.registry_version, (), spec.attributes)
        return measure, registry

    def _check_classes(self, s: Session, spec: AggregateSpec, plan: _Plan) -> None:
        c3, c2_closed = [], []
        for dataset_id, names in plan.fields.items():
            ds = s.get(Dataset, dataset_id)
            assert ds is not None
            schema = DatasetSchema.model_validate_json(ds.schema_json)
            for name in names:
                col = schema.column(name)
                sensitivity = col.sensitivity
                if col.never_released:
                    c3.append(f"{ds.name}.{name}")
                elif sensitivity is Sensitivity.C2 and not ds.platform_aggregates:
                    c2_closed.append(f"{ds.name}.{name} ({ds.id})")
        if c3:
            raise Refused(
                f"refused by the C3 control: {', '.join(c3)} is class C3 and is never released in any form, "
                "not even as an aggregate",
                details={"control": "c3"},
            )
        if spec.scope == "platform" and c2_closed:
            raise Refused(
                f"refused by the platform opt-in control: {', '.join(c2_closed)} is class C2 and its provider "
                "has not allowed platform-wide aggregates; ask the provider to opt in, or use scope "
                "'consented' (enterprises that consented to you)",
                details={"control": "platform_opt_in"},
            )

    def _consented(
        self, s: Session, bank: str, spec: AggregateSpec, plan: _Plan, now: datetime | None
    ) -> dict[int, str]:
        """Member code -> USCC of every subject whose consent allows this query now."""
        candidates = sorted(
            set(
                s.execute(
                    select(Consent.subject_uscc).where(
                        Consent.bank_org_id == bank, Consent.purpose == spec.purpose
                    )
                ).scalars()
            )
        )
        if not candidates:
            return {}
        decisions = self.policy.decide(
            s, Request(bank, tuple(candidates), plan.fields, OPERATION, spec.purpose), now=now
        )
        usccs = [d.subject for d in decisions if d.allowed]
        return dict(zip((int(c) for c in self.frames.codes_of(usccs)), usccs, strict=True))

    def _cells(
        self, s: Session, spec: AggregateSpec, plan: _Plan, allowed: Mapping[int, str] | None
    ) -> list[_CellData]:
        measure, registry = self._load(s, spec, plan)
        if spec.field is not None:
            if measure is None:  # the dataset has no data yet
                return []
            values, valid = measure.numeric[spec.field]
            keep = valid
            if plan.measure is not None and plan.measure.name == dishonesty.SOURCE:
                assert plan.measure_version is not None
                keep = keep & self._records_in_use(s, plan.measure_version)
            if spec.months is not None:
                assert measure.months is not None
                lo, hi = _month_number(spec.months[0]), _month_number(spec.months[1])
                keep = keep & (measure.months >= lo) & (measure.months <= hi)
            rows = measure.row_subject[keep]
            n = len(measure.codes)
            has = np.bincount(rows, minlength=n) > 0
            sums: F64 = np.asarray(np.bincount(rows, weights=values[keep], minlength=n), dtype=np.float64)
            codes, contributions = measure.codes[has], sums[has]
        else:
            assert registry is not None
            codes, contributions = registry.codes, np.zeros(len(registry.codes), dtype=np.float64)
        mask = np.ones(len(codes), dtype=bool)
        attrs: dict[str, npt.NDArray[np.str_]] = {}
        if spec.attributes:
            assert registry is not None
            n_registry = len(registry.codes)
            pos = np.searchsorted(registry.codes, codes)
            pos[pos == n_registry] = 0
            found = registry.codes[pos] == codes if n_registry else np.zeros(len(codes), dtype=bool)
            for a in spec.attributes:
                per = registry.per_subject[a][pos] if n_registry else np.full(len(codes), "")
                attrs[a] = np.where(found, per, "")  # not in the registry: no attribute, in no cohort
            for a, wanted in spec.cohort.items():
                mask &= np.isin(attrs[a], np.array(sorted(wanted), dtype=str))
            for a in spec.group_by:
                mask &= attrs[a] != ""
        if allowed is not None:
            consented = np.fromiter(allowed, dtype=np.uint64, count=len(allowed))
            mask &= np.isin(codes, consented)
        codes, contributions = codes[mask], contributions[mask]
        if not spec.group_by:
            return [_CellData({}, codes, contributions)]
        if len(codes) == 0:
            return []
        uniques, inverses = [], []
        for a in spec.group_by:
            u, inv = np.unique(attrs[a][mask], return_inverse=True)
            uniques.append(u)
            inverses.append(inv.ravel())
        shape = [len(u) for u in uniques]
        cell_ids, cell_of = np.unique(np.ravel_multi_index(inverses, shape), return_inverse=True)
        cell_of = cell_of.ravel()
        order = np.argsort(cell_of, kind="stable")  # ascending positions within a cell: members stay sorted
        starts = np.searchsorted(cell_of[order], np.arange(len(cell_ids) + 1))
        cells = []
        for i, cell_id in enumerate(cell_ids.tolist()):
            idx = order[starts[i] : starts[i + 1]]
            where = np.unravel_index(cell_id, shape)
            group = {a: str(uniques[j][where[j]]) for j, a in enumerate(spec.group_by)}
            cells.append(_CellData(group, codes[idx], contributions[idx]))
        return cells

    def _records_in_use(self, s: Session, version: DatasetVersion) -> npt.NDArray[np.bool_]:
        """Per row of a dishonesty-records version: still usable (not repaired, expired or past retention)."""
        book = dishonesty.RecordBook(self.datasets)
        today = utcnow().date()
        usable = {r.record_id for r in book.usable(s, book.read(s), version.dataset_id, today)}
        ids = self.datasets.read_columns(s, version, ["record_id"])["record_id"]
        return np.fromiter((v in usable for v in ids.values.tolist()), dtype=bool, count=len(ids))

    # --- the differencing control, for other aggregate paths (sealed datasets) --------------------------

    def member_codes(self, usccs: Iterable[str]) -> U64:
        """A cohort's member set in the form the differencing control keeps: sorted keyed codes."""
        return np.sort(self.frames.codes_of(usccs))

    def check_differencing(self, session: Session, bank_org_id: str, cohorts: Sequence[U64]) -> None:
        """Raise :class:`Refused` (control ``differencing``) if a cohort (sorted member codes, from
        :meth:`member_codes`) differs from one already released to the bank, or from another of ``cohorts``, by
        at least one and fewer than ``min_cohort_size`` members. Call it after :meth:`lock_budget`."""
        cells = [_CellData({}, c, np.zeros(0, dtype=np.float64)) for c in cohorts]
        self._check_differencing(session, bank_org_id, cells, self.min_cohort_size)

    def remember_cohorts(
        self, session: Session, bank_org_id: str, cohorts: Sequence[U64], query_id: str
    ) -> None:
        """Keep released cohorts for the differencing control (in the transaction that releases them)."""
        cells = [_CellData({}, c, np.zeros(0, dtype=np.float64)) for c in cohorts]
        self._remember(session, bank_org_id, cells, query_id)

    def _check_differencing(self, s: Session, bank: str, cells: Sequence[_CellData], k: int) -> None:
        if k <= 1:
            return
        earlier: list[tuple[bytes, U64, str]] = []
        for cell in cells:
            members = cell.members
            size, digest = len(members), hashlib.sha256(members.astype("<u8").tobytes()).digest()
            rows = s.execute(
                select(ReleasedCohort.digest, ReleasedCohort.members, ReleasedCohort.query_id).where(
                    ReleasedCohort.bank_org_id == bank,
                    ReleasedCohort.size > size - k,
                    ReleasedCohort.size < size + k,
                )
            ).all()
            others = [
                (r.digest, np.frombuffer(r.members, dtype="<u8").astype(np.uint64), r.query_id) for r in rows
            ]
            for other_digest, other, query in [*others, *earlier]:
                if other_digest == digest or abs(len(other) - size) >= k:
                    continue
                differ = size + len(other) - 2 * _common(members, other)
                if 0 < differ < k:
                    group = f" (cell {cell.group})" if cell.group else ""
                    where = "another cell of this query" if query == "" else f"query {query}"
                    raise Refused(
                        f"refused by the differencing control: this cohort{group} differs from a cohort already "
                        f"released to you ({where}) by fewer than {k} enterprises, but not none — together they "
                        f"would single those enterprises out. Ask for the same cohort, or one that differs "
                        f"by at least {k}.",
                        details={"control": "differencing", "min_cohort_size": k},
                    )
            earlier.append((digest, members, ""))

    def _release(
        self, spec: AggregateSpec, cells: Sequence[_CellData]
    ) -> tuple[list[Cell], dict[str, float], list[float] | None]:
        eps = spec.epsilon
        out: list[Cell] = []
        scales: dict[str, float] = {}
        edges = None
        lower, upper = spec.lower, spec.upper
        for cell in cells:
            v = cell.contributions
            if spec.statistic == "count":
                c = dp.count(v, eps)
                out.append(Cell(cell.group, count=int(c.value)))
                scales = {"count": c.scale}
            elif spec.statistic == "sum":
                assert lower is not None
                assert upper is not None
                t = dp.total(v, lower, upper, eps)
                out.append(Cell(cell.group, sum=float(t.value)))
                scales = {"sum": t.scale}
            elif spec.statistic == "mean":
                assert lower is not None
                assert upper is not None
                m, c, t = dp.mean(v, lower, upper, eps)
                out.append(Cell(cell.group, count=int(c.value), sum=float(t.value), mean=m))
                scales = {"count": c.scale, "sum": t.scale}
            else:
                assert lower is not None
                assert upper is not None
                assert spec.bins is not None
                h = dp.histogram(v, lower, upper, spec.bins, eps)
                out.append(Cell(cell.group, histogram=list(h.value)))
                scales = {"histogram": h.scale}
                edges = dp.bin_edges(lower, upper, spec.bins)
        return out, scales, edges

    def _remember(self, s: Session, bank: str, cells: Sequence[_CellData], query_id: str) -> None:
        now = utcnow()
        for cell in cells:
            blob = cell.members.astype("<u8").tobytes()
            digest = hashlib.sha256(blob).digest()
            exists = s.execute(
                select(ReleasedCohort.id).where(
                    ReleasedCohort.bank_org_id == bank, ReleasedCohort.digest == digest
                )
            ).first()
            if exists is None:
                s.add(
                    ReleasedCohort(
                        id=new_id("coh"),
                        bank_org_id=bank,
                        size=len(cell.members),
                        digest=digest,
                        members=blob,
                        query_id=query_id,
                        created_at=now,
                    )
                )
        s.flush()
