"""The layers of DESIGN.md §3 hold, and the tool that holds them would notice a breach.

`make lint` runs ``lint-imports`` with the contracts in ``pyproject.toml``; here the same contracts run on the
tree as it is (they must hold) and on a copy with one forbidden import added (they must break, naming it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "pyproject.toml"
LINT = Path(sys.executable).with_name("lint-imports")


def _roots() -> list[str]:
    config = tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]
    return list(config["root_packages"])


def _where(package: str) -> Path:
    for base in (REPO, REPO / "client"):
        if (base / package / "__init__.py").is_file():
            return base / package
    raise AssertionError(f"root package {package} not found in the repository")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT), "--no-cache", str(CONFIG)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("tree")
    for package in _roots():
        shutil.copytree(_where(package), tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_the_contracts_hold_on_the_tree(copy: Path) -> None:
    result = _lint(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize(
    ("module", "line", "named"),
    [
        (
            "protocols/__init__.py",
            "from pps import errors as _errors\n",
            "protocols is not allowed to import pps",
        ),
        ("pps/__init__.py", "import api as _api\n", "pps is not allowed to import api"),
        (
            "models/__init__.py",
            "import enclave_sim as _enclave\n",
            "models is not allowed to import enclave_sim",
        ),
        ("pps_client/__init__.py", "import pps as _server\n", "pps_client is not allowed to import pps"),
        (
            "pps_client/__init__.py",
            "import sqlalchemy as _db\n",
            "pps_client is not allowed to import sqlalchemy",
        ),
        ("pps/__init__.py", "import pps_client as _sdk\n", "pps is not allowed to import pps_client"),
        ("pps_wire/__init__.py", "import protocols as _p\n", "pps_wire is not allowed to import protocols"),
        (
            "pps/infra/storage/migrations/versions/0001_initial.py",
            "import pps.infra.storage.tables\n",
            "is not allowed to import",
        ),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    copy: Path, tmp_path: Path, module: str, line: str, named: str
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(copy, tree)
    target = tree / module
    target.write_text(target.read_text() + line)
    result = _lint(tree)
    assert result.returncode != 0, result.stdout
    assert named in " ".join(result.stdout.split()), result.stdout
