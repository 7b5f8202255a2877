# Quick start: `make demo` and `make test`. Each creates or reuses .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.wsimito-installed
export WSIMITO_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml .ci/constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c .ci/constraints-cpu.txt torch
	$(PY) -m pip install -q -c .ci/constraints-cpu.txt -e ".[all]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/wsimito demo --out demo-output

# The same checks as .pre-commit-config.yaml, then the tests (docstring examples included).
test: lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check wsimito tests benchmarks examples scripts
	$(VENV)/bin/ruff format --check wsimito tests benchmarks examples scripts
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
