"""Fixtures of the PSI tests: a server set and setups made from it, and one valid message of each type."""

from __future__ import annotations

import pytest

import protocols.psi as psi
from protocols.psi import PSIParams, ServerSet, SetupStructure, prepare_setup
from tests.helpers import uscc_for
from tests.protocols.psi.common import SERVER_N, SMALL, canonical, session


@pytest.fixture(scope="module")
def server_set() -> ServerSet:
    return ServerSet.of(uscc_for(i) for i in range(SERVER_N))


@pytest.fixture(scope="module")
def prepared(server_set: ServerSet) -> psi.PreparedSetup:
    return prepare_setup(server_set, SMALL, normalise=canonical, shards=3, workers=1)


@pytest.fixture(scope="module")
def prepared_raw(server_set: ServerSet) -> psi.PreparedSetup:
    return prepare_setup(
        server_set,
        PSIParams(max_client_items=1_000, structure=SetupStructure.RAW),
        normalise=canonical,
        workers=1,
    )


@pytest.fixture(scope="module")
def valid_messages(prepared: psi.PreparedSetup) -> dict[str, bytes]:
    _, server, request, response = session(prepared, [uscc_for(i) for i in range(5)], reveal=True)
    return {"setup": server.setup_message(), "request": request, "response": response}
