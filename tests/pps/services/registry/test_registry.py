"""The model registry on its own: owners, sealed parts, evaluations checked and never overwritten by a co-owner."""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import evaluate
from pps.errors import Conflict, InvalidInput, NotFound
from pps.infra.storage.tables import ModelArtifact, Role
from pps.ledger.entry import Actor
from pps.runtime import Runtime
from tests.conftest import OrgFactory


def test_parts_are_sealed_and_evaluations_belong_to_their_owner(
    runtime: Runtime, make_org: OrgFactory
) -> None:
    a, b, c = (make_org(Role.bank) for _ in range(3))
    with runtime.db.transaction() as s:
        record = runtime.models.register(
            s,
            kind="horizontal_lr",
            name="shared",
            owners=[a.id, b.id],
            feature_schema=["f1", "f2"],
            training={"rounds": 3},
            artifacts={a.id: {"weights": [0.123456789, 2.0]}, b.id: {"weights": [0.123456789, 2.0]}},
            ledger_indices=[],
            actor=Actor(a.id, "bank"),
        )
        sealed = s.get(ModelArtifact, (record.id, a.id))
        assert sealed is not None and b"0.123456789" not in sealed.sealed  # parameters are sealed at rest
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    ev = evaluate(y, y * 0.3 + rng.random(200))
    with runtime.db.transaction() as s:
        runtime.models.post_evaluation(s, record.id, ev.to_dict(), actor=Actor(a.id, "bank"))
    with runtime.db.transaction() as s, pytest.raises(Conflict):
        runtime.models.post_evaluation(s, record.id, ev, actor=Actor(b.id, "bank"))
    with runtime.db.transaction() as s, pytest.raises(NotFound):
        runtime.models.post_evaluation(s, record.id, ev, actor=Actor(c.id, "bank"))
    bad = ev.to_dict()
    bad["confusion"]["tp"] += 1  # counts that no longer add up
    with runtime.db.transaction() as s, pytest.raises(InvalidInput):
        runtime.models.post_evaluation(s, record.id, bad, actor=Actor(a.id, "bank"))
    with runtime.db.transaction(write=False) as s:
        seen = runtime.models.get(s, record.id, org_id=b.id, sees_everything=False)
        assert seen.evaluated_by == a.id and seen.evaluation is not None
        assert seen.evaluation.auc == pytest.approx(ev.auc)
        with pytest.raises(NotFound):
            runtime.models.get(s, record.id, org_id=c.id, sees_everything=False)
