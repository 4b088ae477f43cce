"""Helpers shared by the PSI tests: a stand-in for the caller's item check, sets and a session."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import protocols.psi as psi
from protocols.psi import PSIClient, PSIParams, PSIServer
from tests.helpers import uscc_for

ROOT = Path(__file__).resolve().parents[3]
NOT_A_POINT = b"\x02" + (1).to_bytes(32, "big")  # x = 1 is not the x coordinate of a P-256 point
X_TOO_LARGE = b"\x03" + b"\xff" * 32  # x >= p
SERVER_N = 1_500
SMALL = PSIParams(max_client_items=1_000)


class NotAnItem(Exception):
    """The caller's own error for an invalid item (the protocol passes it through as raised)."""


def canonical(item: str) -> str:
    """A stand-in for the caller's ``normalise`` (the service passes the USCC check): trimmed, upper-case,
    18 characters. Module-level, so that spawned setup workers can run it."""
    if not isinstance(item, str):
        raise NotAnItem("an item is a string")
    code = item.strip().upper()
    if len(code) != 18:
        raise NotAnItem(f"an item has 18 characters, got {len(code)}")
    return code


def client_set(overlap: int, outside: int, seed: int = 0) -> tuple[list[str], set[str]]:
    """``overlap`` random members of the server set and ``outside`` non-members, shuffled."""
    rng = random.Random(seed)
    inside = [uscc_for(i) for i in rng.sample(range(SERVER_N), overlap)]
    others = [uscc_for(SERVER_N + 10_000 + i) for i in rng.sample(range(100_000), outside)]
    items = inside + others
    rng.shuffle(items)
    return items, set(inside)


def wrong_check_character(code: str) -> str:
    return code[:17] + ("0" if code[17] != "0" else "1")


def session(
    setup: psi.PreparedSetup, items: list[str], *, reveal: bool
) -> tuple[PSIClient, PSIServer, bytes, bytes]:
    client = PSIClient(
        items, normalise=canonical, reveal_intersection=reveal, max_items=setup.params.max_client_items
    )
    server = PSIServer(setup, reveal_intersection=reveal)
    request = client.create_request()
    return client, server, request, server.process_request(request)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
