"""The extraction defence: a bank that crafts its model to read a raw feature back gets no more than the
feature at its published resolution, only as often as consent allows, and only at the rate limit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models.features import FEATURE_RESOLUTION, enterprise_features
from pps.infra.storage.tables import Role
from pps.runtime import Runtime
from pps_client import Client
from protocols.he_scoring import BankScoringKey
from tests.conftest import OrgFactory
from tests.pps.services.scoring.conftest import PURPOSE, Platform, _consent

pytestmark = [pytest.mark.db, pytest.mark.slow]

TARGET = "log_sales_mean_last6"


def test_a_one_hot_model_reads_only_the_quantised_feature_and_only_max_uses_times(
    runtime: Runtime, platform: Platform, make_org: OrgFactory, base_url: str
) -> None:
    bank = make_org(Role.bank)
    victims: list[str] = platform.data.registry.columns["uscc"][:40].tolist()
    scope: list[dict[str, Any]] = [{"dataset_id": platform.datasets["tax"], "fields": ["taxable_sales"]}]
    _consent(runtime, bank.id, victims, scope, max_uses=2)
    key = BankScoringKey.create()
    amplify = 1000.0  # a huge weight on one feature and nothing else: the score *is* the feature
    crafted = key.encrypt_model({TARGET: amplify}, 0.0)
    client = Client(base_url, bank.token)

    result = client.scoring.score(key, crafted, purpose=PURPOSE, subjects=victims)
    assert result.subjects == victims
    read = np.asarray(result.raw) / amplify

    usccs, raw = enterprise_features(platform.data)
    position = {u: i for i, u in enumerate(usccs.tolist())}
    truth = raw[TARGET][[position[v] for v in victims]]
    step = FEATURE_RESOLUTION[TARGET]
    # what the bank reads is the feature on its published grid, not the raw value
    assert np.max(np.abs(read / step - np.round(read / step))) < 1e-4
    assert np.max(np.abs(read - truth)) <= step / 2 + 1e-6
    off = np.abs(read - truth)[truth > 0]
    assert np.mean(off) > step / 10  # the raw value is not recovered: it sits anywhere in its grid cell
    # amplifying harder reads the same grid value: the resolution, not the noise, is the bound
    result_2 = client.scoring.score(
        key, key.encrypt_model({TARGET: amplify * 100}, 0.0), purpose=PURPOSE, subjects=victims
    )
    np.testing.assert_allclose(np.asarray(result_2.raw) / (amplify * 100), read, atol=1e-6)
    # consent allowed two uses: a third crafted query scores nobody
    result_3 = client.scoring.score(key, crafted, purpose=PURPOSE, subjects=victims)
    assert result_3.subjects == [] and result_3.raw is None
    assert {r.reason for r in result_3.not_scored} == {"uses_exhausted"}
