# The two commands of the README: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-e2e serve lint bench clean

$(STAMP): pyproject.toml client/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "PPS needs Python >= 3.11 (set PYTHON=python3.11)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e './client[all]' -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## the end-to-end scenario on the embedded default (SQLite, in-process)
demo: $(STAMP)
	$(VENV)/bin/pps-demo

## the test suite on every core (SQLite; set PPS_TEST_DATABASE_URL to run the storage and ledger suites on
## PostgreSQL); the slowest end-to-end cases (marked e2e) run with `make test-e2e`, and both in .ci/run
test: $(STAMP)
	$(PY) -m pytest --numprocesses=auto --dist=worksteal -m "not e2e"

## the end-to-end cases: the demo scenario, the notebooks, the browser walks (Debian's chromium), the SDK
## installed alone in a fresh venv, `pps serve` and the CLIs as subprocesses
test-e2e: $(STAMP)
	$(PY) -m pytest --numprocesses=auto --dist=worksteal -m e2e $(PYTEST_ARGS)

## the API at http://127.0.0.1:8000 (OpenAPI docs at /docs)
serve: $(STAMP)
	$(VENV)/bin/pps serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## the benchmarks (about 10 minutes; figures in docs/benchmarks.md)
bench: $(STAMP)
	$(PY) benchmarks/bench_ledger.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_psi.py
	$(PY) benchmarks/bench_scoring.py
	$(PY) benchmarks/bench_scoring_service.py
	$(PY) benchmarks/bench_aggregates.py
	$(PY) benchmarks/bench_vertical_lr.py
	$(PY) benchmarks/bench_vertical_service.py
	$(PY) benchmarks/bench_secagg.py
	$(PY) benchmarks/bench_sealed.py
	$(PY) benchmarks/bench_scaleout.py
	$(PY) benchmarks/bench_upload_limits.py

clean:
	rm -rf $(VENV) .pps-demo .pytest_cache .mypy_cache .ruff_cache
