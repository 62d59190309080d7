# Two commands on a fresh clone:  `make run` (the main job)  and  `make test`.
# Each creates the virtual environment in .venv and installs the package when missing
# (again whenever pyproject.toml changes).

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test test-all lint bench install clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## The main job: plan on a task from the command line (ARGS="--help" lists the flags).
run: $(STAMP)
	$(PY) run_planning.py $(ARGS)

## Lint (ruff, configured in pyproject.toml).
lint: $(STAMP)
	$(PY) -m ruff check .

## The default test run: lint, then the fast tiers plus a selection of slow ones, under 10 minutes.
test: lint
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

## Every test, slow ones included.
test-all: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

## Planner speed benchmark (installs the comparison baseline).
bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) benchmarks/planner_speed.py

clean-venv:
	rm -rf $(VENV)
