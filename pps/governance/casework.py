"""What objections (:mod:`pps.governance.objections`) and credit-repair applications (:mod:`pps.governance.repair`)
share as *cases*: a subject, an owner that must answer (the dataset's provider, the designated authority), a state
of which some are open, and a deadline. Listing a party's cases, and which are overdue, is the same query for both.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

T = TypeVar("T")


def is_overdue_case(state: Any, due_at: datetime, open_states: Collection[Any], now: datetime) -> bool:
    """Open, and its deadline passed."""
    return state in open_states and due_at <= now


def list_cases(
    session: Session,
    entity: type[T],
    *,
    equal: Sequence[tuple[Any, Any]] = (),
    state: Any = None,
    open_states: Collection[Any],
    overdue: bool | None = None,
    now: datetime,
    after: str | None = None,
    limit: int = 50,
) -> list[T]:
    """Cases of ``entity`` (a table with ``id``, ``state`` and ``due_at``) in id order, a page of ``limit`` after
    ``after``: those whose columns equal the values in ``equal`` (a ``None`` value does not filter: the caller
    sees every case), in ``state``, and overdue (open, deadline passed) or not."""
    table: Any = entity
    query = select(entity).order_by(table.id).limit(limit)
    for column, value in equal:
        if value is not None:
            query = query.where(column == value)
    if state is not None:
        query = query.where(table.state == state)
    if overdue is True:
        query = query.where(table.state.in_(open_states), table.due_at <= now)
    elif overdue is False:
        query = query.where(or_(table.state.not_in(open_states), table.due_at > now))
    if after is not None:
        query = query.where(table.id > after)
    return list(session.execute(query).scalars())
