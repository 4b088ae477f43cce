"""``protocols`` is a library below ``pps``: no module in it imports ``pps``, ``api``, ``models`` or
``enclave_sim`` (at the top, in a function, or under ``TYPE_CHECKING``: every import statement counts)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"
FORBIDDEN = ("pps", "api", "models", "enclave_sim")
FILES = sorted(PROTOCOLS.rglob("*.py"))


def imported_modules(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
            "import_module",
            "__import__",
        }:
            found.extend(
                a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)
            )
    return found


def test_there_is_something_to_check() -> None:
    assert len(FILES) > 30 and PROTOCOLS / "errors.py" in FILES


@pytest.mark.parametrize("path", FILES, ids=[str(f.relative_to(PROTOCOLS)) for f in FILES])
def test_no_protocol_module_imports_the_layers_above_or_beside_it(path: Path) -> None:
    bad = [m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN]
    assert not bad, f"{path.relative_to(PROTOCOLS.parent)} imports {bad}"


def test_relative_imports_are_not_used() -> None:
    """Absolute imports only: the enclave loads measured modules by their full names."""
    for path in FILES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree)), path
