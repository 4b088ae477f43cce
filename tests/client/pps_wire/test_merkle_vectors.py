"""The transparency-dev RFC 6962/9162 proof vectors: accept every wantErr=false, reject every wantErr=true."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from pps_wire.errors import ProofVerificationError
from pps_wire.merkle import verify_consistency, verify_inclusion
from tests.conftest import VECTORS as ALL_VECTORS

VECTORS = ALL_VECTORS / "merkle"


def _cases(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(f, id=str(f.relative_to(VECTORS / kind))) for f in files]


def _b(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def test_vectors_are_present() -> None:
    assert VECTORS.is_dir(), f"{VECTORS} is missing: the vectors are vendored in tests/vectors/merkle"
    assert len(_cases("inclusion")) > 50
    assert len(_cases("consistency")) > 50


@pytest.mark.parametrize("path", _cases("inclusion"))
def test_inclusion_vector(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b(p) for p in case["proof"] or []]

    def run() -> None:
        verify_inclusion(case["leafIdx"], case["treeSize"], _b(case["leafHash"]), proof, _b(case["root"]))

    if case["wantErr"]:
        with pytest.raises(ProofVerificationError):
            run()
    else:
        run()


@pytest.mark.parametrize("path", _cases("consistency"))
def test_consistency_vector(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b(p) for p in case["proof"] or []]

    def run() -> None:
        verify_consistency(case["size1"], case["size2"], _b(case["root1"]), _b(case["root2"]), proof)

    if case["wantErr"]:
        with pytest.raises(ProofVerificationError):
            run()
    else:
        run()
