"""Sealed scoring under the published model policy (settings as in production: ``unsafe_unapproved_models``
off): a crafted model is refused by the enclave before any score exists, with its reason and a ledger entry;
an honest one is released at the published grid and counted against each subject's disclosure budget."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from pps.infra.settings import Settings
from pps.infra.storage.tables import Disclosure, LedgerEntry, Role
from pps.runtime import Runtime
from pps_client import APIError, Client
from tests.conftest import OrgFactory
from tests.helpers import signed, uscc_for
from tests.pps.services.sealed.test_sealed_service import PURPOSE

pytestmark = [pytest.mark.db, pytest.mark.slow]

N = 80
COLUMNS = ("sales", "payroll", "power", "arrears")
BOUNDS = dict.fromkeys(COLUMNS, (0.0, 1000.0))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"unsafe_unapproved_models": False})


@pytest.fixture
def world(runtime: Runtime, make_org: OrgFactory, base_url: str) -> dict[str, Any]:
    provider, bank = make_org(Role.data_provider, "power company"), make_org(Role.bank, "Bank A")
    rng = np.random.default_rng(24)
    subjects = [uscc_for(910_000 + i) for i in range(N)]
    columns = {k: rng.uniform(0, 1000, N).round(3) for k in COLUMNS}
    with Client(base_url, provider.token, timeout=120) as p:
        context = p.sealed.context(vendor_key=runtime.enclave.vendor_public_key)
        up = p.sealed.upload(
            "sealed utilities",
            context=context,
            subjects=subjects,
            columns={k: v.tolist() for k, v in columns.items()},
            bounds=BOUNDS,
        )
    _consent_all(runtime, bank.id, up.dataset_id, subjects[:40])
    return {"bank": bank, "subjects": subjects, "columns": columns, "dataset_id": up.dataset_id}


def _consent_all(rt: Runtime, bank_id: str, dataset_id: str, usccs: list[str]) -> None:
    from datetime import timedelta

    from pps.governance.consent import Terms
    from pps.infra.storage.tables import Organization, utcnow
    from pps.ledger.entry import Actor

    with rt.db.transaction() as s:
        bank = s.get(Organization, bank_id)
        assert bank is not None
        for u in usccs:
            terms = Terms(
                purpose=PURPOSE,
                scope=[{"dataset_id": dataset_id, "fields": list(COLUMNS)}],
                operations=["score"],
                valid_until=utcnow() + timedelta(days=30),
                granularity="score",
            )
            c = rt.consents.request(
                s, bank=bank, subject_uscc=u, terms=terms, actor=Actor(None, "subject", "api")
            )
            rt.consents.approve(s, c, signed=signed(rt, s, c), actor=Actor(None, "subject", "api"))


def _entries(rt: Runtime, action: str) -> list[dict[str, Any]]:
    with rt.db.transaction(write=False) as s:
        docs = [
            json.loads(e) for e in s.execute(select(LedgerEntry.entry).order_by(LedgerEntry.idx)).scalars()
        ]
    return [d for d in docs if d["action"] == action]


def test_a_crafted_sealed_model_is_refused_and_an_honest_one_released_at_the_grid(
    runtime: Runtime, base_url: str, world: dict[str, Any]
) -> None:
    asked = world["subjects"][:10]
    with Client(base_url, world["bank"].token, timeout=120) as bank:
        for crafted in ({"sales": 1.0}, {"sales": 1e-6, "payroll": 1e-3, "power": 1.0}):
            with pytest.raises(APIError) as exc:
                bank.sealed.score(
                    vendor_key=runtime.enclave.vendor_public_key,
                    purpose=PURPOSE,
                    dataset_id=world["dataset_id"],
                    subjects=asked,
                    weights=crafted,
                )
            assert exc.value.code == "model_refused" and "model policy" in str(exc.value)
        refusals = _entries(runtime, "model.refuse")
        assert len(refusals) == 2 and all(r["detail"]["path"] == "sealed.score" for r in refusals)
        assert not _entries(runtime, "sealed.score")  # nothing was released
        honest = {"sales": 0.001, "payroll": -0.0012, "power": 0.0008, "arrears": -0.0009}
        scored = bank.sealed.score(
            vendor_key=runtime.enclave.vendor_public_key,
            purpose=PURPOSE,
            dataset_id=world["dataset_id"],
            subjects=asked,
            weights=honest,
        )
    index = {u: i for i, u in enumerate(world["subjects"])}
    for u, got in scored.scores.items():
        want = sum(w * round(world["columns"][k][index[u]] / 10.0) * 10.0 for k, w in honest.items())
        assert got == pytest.approx(want, abs=1e-4)
    (entry,) = _entries(runtime, "sealed.score")
    digest = entry["detail"]["model_digest"]
    assert len(digest) == 64 and entry["detail"]["resolution"] == dict.fromkeys(sorted(honest), "10.0")
    with runtime.db.transaction(write=False) as s:  # counted against each subject's disclosure budget
        rows = s.scalars(select(Disclosure).where(Disclosure.model_digest == digest)).all()
    assert sorted(r.subject_uscc for r in rows) == sorted(asked)
