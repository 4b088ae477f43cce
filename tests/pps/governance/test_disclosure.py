"""Disclosure accounting (issue 17): at most ``budget`` distinct models reach a bank about a subject per window,
counted in bulk (one read per chunk of subjects, one insert and one update per release)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from pps.governance.disclosure import DisclosureAccounting
from pps.infra.storage.tables import Disclosure, Role, utcnow
from pps.runtime import Runtime
from tests.conftest import OrgFactory
from tests.helpers import uscc_for

pytestmark = pytest.mark.db


def _rows(rt: Runtime, bank: str) -> dict[tuple[str, str], tuple[int, str]]:
    with rt.db.transaction(write=False) as s:
        return {
            (r.subject_uscc, r.model_digest): (r.releases, r.granularity)
            for r in s.scalars(select(Disclosure).where(Disclosure.bank_org_id == bank))
        }


def test_the_budget_the_window_and_a_model_counted_again(runtime: Runtime, make_org: OrgFactory) -> None:
    bank = make_org(Role.bank, "Bank A").id
    other = make_org(Role.bank, "Bank B").id
    subjects = [uscc_for(i) for i in range(7)]
    acct = DisclosureAccounting(budget=2, window_days=90)
    now = utcnow()
    grain = dict.fromkeys(subjects, "grade")
    with runtime.db.transaction() as s:
        assert (
            acct.spend(s, bank=bank, subjects=subjects, model_digest="m1", granularity=grain, now=now).kept
            == subjects
        )
        # the same model again: counted, no new model
        again = acct.spend(s, bank=bank, subjects=subjects, model_digest="m1", granularity=grain, now=now)
        assert again.kept == subjects and not again.refused
        assert (
            acct.spend(
                s, bank=bank, subjects=subjects[:3], model_digest="m2", granularity=grain, now=now
            ).kept
            == subjects[:3]
        )
        third = acct.spend(s, bank=bank, subjects=subjects, model_digest="m3", granularity=grain, now=now)
    # the first three have reached the budget of two models; the others take the third
    assert sorted(third.refused) == sorted(subjects[:3]) and third.kept == subjects[3:]
    assert "budget 2" in third.refused[subjects[0]]
    rows = _rows(runtime, bank)
    assert rows[(subjects[0], "m1")] == (2, "grade")
    assert (subjects[0], "m3") not in rows and rows[(subjects[4], "m3")] == (1, "grade")
    # another bank's budget is its own
    with runtime.db.transaction() as s:
        assert not acct.spend(
            s, bank=other, subjects=subjects, model_digest="m9", granularity={}, now=now
        ).refused
    assert _rows(runtime, other)[(subjects[0], "m9")] == (1, "decision")
    # after the window, the old models no longer count; a model counted before it counts again from now
    later = now + timedelta(days=91)
    with runtime.db.transaction() as s:
        after = acct.spend(
            s, bank=bank, subjects=subjects[:3], model_digest="m1", granularity=grain, now=later
        )
        assert after.kept == subjects[:3]
        assert (
            acct.spend(
                s, bank=bank, subjects=subjects[:3], model_digest="m4", granularity=grain, now=later
            ).kept
            == subjects[:3]
        )
    with runtime.db.transaction(write=False) as s:
        row = s.get(Disclosure, (bank, subjects[0], "m1"))
        assert row is not None and row.releases == 3 and row.first_at == later and row.last_at == later
