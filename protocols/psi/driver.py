"""Both halves in one process, exchanging only bytes (tests, benchmarks, the demo)."""

from __future__ import annotations

from collections.abc import Sequence

from protocols.psi.client import PSIClient, PSIResult
from protocols.psi.messages import DEFAULT_FPR, Normalise
from protocols.psi.server import PSIServer, ServerTranscript
from protocols.psi.setup import PreparedSetup


def run_locally(
    client_items: Sequence[str],
    setup: PreparedSetup,
    *,
    normalise: Normalise,
    reveal_intersection: bool,
) -> tuple[PSIResult, ServerTranscript]:
    """Both halves in one process, exchanging only bytes (tests, benchmarks, the demo)."""
    client = PSIClient(
        client_items,
        normalise=normalise,
        reveal_intersection=reveal_intersection,
        max_items=setup.params.max_client_items,
        max_fpr=max(setup.params.fpr, DEFAULT_FPR),
    )
    server = PSIServer(setup, reveal_intersection=reveal_intersection)
    request = client.create_request()
    response = server.process_request(request)
    return client.finish(server.setup_message(), response), server.transcript()
