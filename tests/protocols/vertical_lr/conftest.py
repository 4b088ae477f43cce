"""Fixtures of the vertical-LR tests: a coordinator key and the breast-cancer split."""

from __future__ import annotations

import pytest

from models import datasets
from protocols import paillier_fast as pf
from tests.protocols.vertical_lr.common import KEY_BITS


@pytest.fixture(scope="module")
def coordinator_key() -> pf.PrivateKey:
    return pf.generate_keypair(KEY_BITS)[1]


@pytest.fixture(scope="module")
def breast() -> datasets.VerticalSplit:
    return datasets.breast_cancer_vertical()
