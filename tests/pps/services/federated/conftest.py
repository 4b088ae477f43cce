"""Three banks with their SDK clients over the real API, and a non-IID split of their portfolios."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from models.fl import non_iid_banks
from pps.infra.storage.tables import Role
from pps_client import Client
from tests.conftest import OrgFactory, OrgHandle


@pytest.fixture(scope="session")
def split() -> Any:
    return non_iid_banks(1500, banks=3, seed=3)


@pytest.fixture
def banks(make_org: OrgFactory) -> list[OrgHandle]:
    return [make_org(Role.bank) for _ in range(3)]


@pytest.fixture
def clients(banks: list[OrgHandle], base_url: str) -> Iterator[list[Client]]:
    made = [Client(base_url, b.token) for b in banks]
    yield made
    for c in made:
        c.close()


@pytest.fixture(scope="session")
def split4() -> Any:
    return non_iid_banks(2000, banks=4, seed=3)


@pytest.fixture
def banks4(banks: list[OrgHandle], make_org: OrgFactory) -> list[OrgHandle]:
    return [*banks, make_org(Role.bank)]


@pytest.fixture
def clients4(clients: list[Client], banks4: list[OrgHandle], base_url: str) -> Iterator[list[Client]]:
    fourth = Client(base_url, banks4[3].token)
    yield [*clients, fourth]
    fourth.close()
