"""The notebooks run, start to finish, in a fresh kernel of this very interpreter, and show what they claim.

Each notebook is executed once with nbclient (every cell must succeed), then its printed output is checked
for the figures that prove the work happened (AUCs in a sane range, entries verified, tampering caught). The
stored notebooks carry no outputs.

The kernel is this interpreter (``sys.executable -m ipykernel_launcher``) through a kernelspec written to a
temporary folder, so a stray ``python3`` kernelspec elsewhere on the machine cannot pick another Python.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

pytestmark = pytest.mark.e2e

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["01_encrypted_scoring", "02_joint_model_training", "03_auditor_verification"]
KERNEL = "pps-venv"


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory: pytest.TempPathFactory) -> KernelSpecManager:
    kernels = tmp_path_factory.mktemp("kernels")
    spec = kernels / KERNEL
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "PPS (this venv)",
                "language": "python",
            }
        )
    )
    return KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)


def _text(nb: Any) -> str:
    """Everything the notebook printed or displayed as text, in order."""
    parts: list[str] = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def _images(nb: Any, mime: str) -> int:
    return sum(
        mime in out.get("data", {})
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if out.output_type in ("execute_result", "display_data")
    )


class Executed:
    def __init__(self, nb: Any) -> None:
        self.nb = nb
        self.text = _text(nb)

    def number(self, pattern: str) -> float:
        found = re.search(pattern, self.text)
        assert found, f"no output matches {pattern!r}; the notebook printed:\n{self.text[-3000:]}"
        return float(found.group(1))


_RUNS: dict[str, Executed] = {}


@pytest.fixture(scope="module")
def run(kernel_specs: KernelSpecManager) -> Iterator[Any]:
    def execute(name: str) -> Executed:
        if name not in _RUNS:
            nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
            km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
            client = NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}})
            client.execute()  # raises CellExecutionError, with the cell and its traceback, if any cell fails
            _RUNS[name] = Executed(nb)
        return _RUNS[name]

    yield execute
    _RUNS.clear()


MIN_DEFAULTS = 10
"""An AUC over fewer defaults than this says nothing (one default: the AUC is that one case's rank)."""


def test_encrypted_scoring(run: Any) -> None:
    ex = run("01_encrypted_scoring")
    assert ex.number(r"PSI: (\d+) of Bank A's 165 applicants") == 100
    assert ex.number(r"scored (\d+) applicants") == 80  # the 20 with a narrower consent are not scored
    assert "field_not_covered" in ex.text
    scoring_auc = ex.number(r"AUC of Bank A's encrypted model on its scored applicants: ([0-9.]+)")
    assert 0.0 <= scoring_auc <= 1.0
    if ex.number(r"scored applicants: [0-9.]+ \((\d+) defaults\)") >= MIN_DEFAULTS:
        assert scoring_auc > 0.55  # (the synthetic Qinghai labels give the sandbox's applicants few defaults)
    assert ex.number(r"Bank A verified (\d+) of its own ledger entries") >= 2
    assert "score:scores" in ex.text  # the auditor's view shows the release to the bank
    assert re.search(r"enterprise \w{18} verified its history: .*policy\.release", ex.text)
    assert _images(ex.nb, "image/png") >= 1  # the score distribution


def test_joint_model_training(run: Any) -> None:
    ex = run("02_joint_model_training")
    assert (
        "'aligned': 300, 'used': 300" in ex.text
    )  # PSI left out the 30 customers without a training consent
    assert "coordinator: enclave" in ex.text
    assert ex.number(r"held-out applicants scored: (\d+)") == 100
    vertical = ex.number(r"vertical model on held-out applicants: AUC ([0-9.]+)")
    assert 0.0 <= vertical <= 1.0
    if ex.number(r"defaults among them: (\d+)") >= MIN_DEFAULTS:
        assert vertical > 0.6
    # the joint model's quality is measured where it means something: German credit below, and
    # benchmarks/bench_model_quality.py (docs/benchmarks.md 8c)
    german_fed = ex.number(r"German credit AUC: vertical ([0-9.]+)")
    german_central = ex.number(r"German credit AUC: vertical [0-9.]+, centralised ([0-9.]+)")
    assert german_fed > 0.7 and abs(german_fed - german_central) < 0.03
    assert re.search(
        r"federation done after 3 rounds; model mdl_\w+; last round's survivors: Bank A, Bank B, Bank C",
        ex.text,
    )
    assert 0.6 < ex.number(r"horizontal AUC on the pooled test set: federated ([0-9.]+)") <= 1.0
    assert _images(ex.nb, "image/svg+xml") >= 2  # ROC and KS
    assert _images(ex.nb, "image/png") >= 1  # the loss curve


def test_auditor_verification(run: Any) -> None:
    ex = run("03_auditor_verification")
    first = ex.number(r"verified (\d+) entries against the signed checkpoint of size")
    assert first == ex.number(r"checkpoint verified: (\d+) entries")
    second = ex.number(r"checkpoint (\d+) is consistent with checkpoint")
    assert second > first
    assert ex.number(r"verified (\d+) entries in all") == second
    assert "tampering detected in 3 of 3 cases" in ex.text
    assert "does not hash to its leaf hash" in ex.text and "does not lead to the signed root" in ex.text
    assert _images(ex.nb, "image/png") >= 1  # the access history


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_stored_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert all("execution" not in c.metadata for c in code)
