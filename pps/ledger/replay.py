"""The ledger as the source of truth for governed state: replay entries, compare with the tables.

Governed state (consents and their use counts, privacy budgets, objections, and whatever later kinds register
here) lives in ordinary tables so that the service can decide fast; every change to it is also a ledger entry,
in the same transaction. The ledger proves its own rows (:mod:`pps.ledger.verify`), but a direct ``UPDATE``
of ``consents`` or ``privacy_budgets`` would be obeyed and go unseen. So each kind of governed state has a
**reducer** — which entry actions change it and how (``fold``), and how to compare the result with its table
(``compare``) — and :class:`Reconciler` replays the ledger through them and names every row whose stored value
is not the value the entries give: table, row id, column, the ledger's value and the row's.

A new kind plugs in with :func:`register` (one reducer per table), from its own module; this module knows
nothing of consents or budgets. The reducers shipped with PPS are in :mod:`pps.governance.state`.

Cost: a replay reads only the entries whose action some reducer folds (through the ``(action, idx)`` index),
and a :class:`Reconciler` keeps its folded state, so a later run reads only the entries appended since;
every run then compares every row of the reduced tables (one keyset-paged scan each). Both run inside one
read snapshot, so a row and the entry written with it in one transaction are seen together or not at all.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from pps.infra.storage.tables import LedgerEntry
from pps.ledger.store import Ledger

_PAGE = 5_000


@dataclass(frozen=True)
class Divergence:
    """One row whose stored value the ledger does not give."""

    table: str
    row_id: str
    column: str
    """the column, or ``*`` when the whole row is missing on one side"""
    ledger: Any
    """the value the ledger's entries give (None: no entry made this row)"""
    row: Any
    """the value stored in the row (None: the row is missing)"""

    def describe(self) -> str:
        if self.column == "*":
            if self.row is None:
                return f"{self.table} {self.row_id}: the ledger records it, the table has no such row"
            return f"{self.table} {self.row_id}: the table holds it, no ledger entry made it"
        return (
            f"{self.table} {self.row_id}: {self.column} is {_show(self.row)} in the table, "
            f"{_show(self.ledger)} by the ledger"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "id": self.row_id,
            "column": self.column,
            "ledger": _jsonable(self.ledger),
            "row": _jsonable(self.row),
        }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _show(value: Any) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False, sort_keys=True)


class Reducer(Protocol):
    """How one kind of governed state follows from ledger entries.

    ``fold`` is called with the kind's state (a dict the reducer owns, empty at first) for every entry whose
    action is in ``actions``, in index order; it must be a pure function of the entries (no database reads),
    so that replaying the same entries always gives the same state. ``compare`` reads the table and yields a
    :class:`Divergence` for every row, column or missing row on which table and state disagree.
    """

    name: str
    """the kind, e.g. ``consents``"""
    table: str
    actions: frozenset[str]

    def fold(self, state: dict[str, Any], doc: dict[str, Any]) -> None: ...

    def compare(self, session: Session, state: dict[str, Any]) -> Iterator[Divergence]: ...


_REGISTRY: dict[str, Reducer] = {}
_REGISTRY_LOCK = threading.Lock()


def register(reducer: Reducer) -> Reducer:
    """Add a kind of governed state (idempotent per name; a second, different reducer for a name is a bug)."""
    with _REGISTRY_LOCK:
        existing = _REGISTRY.get(reducer.name)
        if existing is not None and type(existing) is not type(reducer):
            raise ValueError(
                f"a reducer for {reducer.name!r} is already registered ({type(existing).__name__})"
            )
        _REGISTRY[reducer.name] = reducer
    return reducer


def registered() -> tuple[Reducer, ...]:
    with _REGISTRY_LOCK:
        return tuple(_REGISTRY.values())


@dataclass(frozen=True)
class StateReport:
    """What one reconciliation found."""

    tree_size: int
    """the ledger size the state was replayed up to"""
    entries_replayed: int
    """entries folded by this run (all relevant ones the first time, only the new ones after)"""
    rows_checked: dict[str, int]
    divergences: tuple[Divergence, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.divergences

    def divergent_ids(self, table: str) -> frozenset[str]:
        return frozenset(d.row_id for d in self.divergences if d.table == table)

    def summary(self) -> str:
        if self.ok:
            return "ok"
        by_table: dict[str, set[str]] = {}
        for d in self.divergences:
            by_table.setdefault(d.table, set()).add(d.row_id)
        return "divergent rows: " + "; ".join(
            f"{table} {', '.join(sorted(ids)[:5])}{' …' if len(ids) > 5 else ''}"
            for table, ids in sorted(by_table.items())
        )


class Reconciler:
    """Replays the ledger through the reducers and compares their state with the tables.

    It keeps the folded state between runs (a service runs it at start and then on a schedule): each run
    folds only the entries appended since the last, then compares every row. Thread-safe: runs are serialised.
    """

    def __init__(self, ledger: Ledger, reducers: Iterable[Reducer] | None = None) -> None:
        self.ledger = ledger
        self._fixed = tuple(reducers) if reducers is not None else None
        self._lock = threading.Lock()
        self._states: dict[str, dict[str, Any]] = {}
        self._replayed_to = 0
        self.last: StateReport | None = None

    @property
    def reducers(self) -> tuple[Reducer, ...]:
        return self._fixed if self._fixed is not None else registered()

    def run(self, session: Session) -> StateReport:
        """Catch up with the ledger and compare, in the caller's (read, snapshot) transaction."""
        with self._lock:
            started = time.perf_counter()
            reducers = self.reducers
            by_action: dict[str, list[Reducer]] = {}
            for r in reducers:
                for action in r.actions:
                    by_action.setdefault(action, []).append(r)
            new = [r.name for r in reducers if r.name not in self._states]
            if new:  # a kind registered since the last run: replay from the start (for all, to stay simple)
                self._states = {}
                self._replayed_to = 0
            for r in reducers:
                self._states.setdefault(r.name, {})
            size = self.ledger.size(session)
            folded = 0
            after = self._replayed_to - 1
            actions = sorted(by_action)
            while actions:
                rows = session.execute(
                    select(LedgerEntry.idx, LedgerEntry.entry)
                    .where(LedgerEntry.action.in_(actions), LedgerEntry.idx > after, LedgerEntry.idx < size)
                    .order_by(LedgerEntry.idx)
                    .limit(_PAGE)
                ).all()
                for idx, data in rows:
                    doc = json.loads(bytes(data))
                    for r in by_action.get(doc.get("action", ""), ()):
                        r.fold(self._states[r.name], doc)
                    after = idx
                folded += len(rows)
                if len(rows) < _PAGE:
                    break
            self._replayed_to = size
            divergences: list[Divergence] = []
            checked: dict[str, int] = {}
            for r in reducers:
                counter = _Counter()
                divergences.extend(r.compare(session, self._states[r.name] | {"__count__": counter}))
                checked[r.table] = counter.n
            report = StateReport(
                tree_size=size,
                entries_replayed=folded,
                rows_checked=checked,
                divergences=tuple(divergences),
                seconds=time.perf_counter() - started,
            )
            self.last = report
            return report


@dataclass
class _Counter:
    """Handed to ``compare`` as ``state["__count__"]``: how many rows it read (for the report)."""

    n: int = 0

    def add(self, k: int = 1) -> None:
        self.n += k


def count_rows(state: dict[str, Any], k: int = 1) -> None:
    """For reducers: count rows read from the table (shown in the report)."""
    counter = state.get("__count__")
    if isinstance(counter, _Counter):
        counter.add(k)


@dataclass
class Quarantine:
    """The governed rows a reconciliation found divergent, which the service refuses to act on.

    Kept per table (``consents``: consent ids; ``privacy_budgets``: bank ids) and replaced as a whole by each
    run; read on every decision, so lookups take no lock beyond the attribute read.
    """

    _rows: dict[str, frozenset[str]] = field(default_factory=dict)
    reason: str = "ok"

    def update(self, report: StateReport) -> None:
        tables = {d.table for d in report.divergences}
        self._rows = {t: report.divergent_ids(t) for t in tables}
        self.reason = report.summary()

    def rows(self, table: str) -> frozenset[str]:
        return self._rows.get(table, frozenset())

    def holds(self, table: str, row_id: str) -> bool:
        return row_id in self._rows.get(table, frozenset())
