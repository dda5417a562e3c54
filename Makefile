# Pollen: `make demo` runs the whole marketplace; `make test` runs every check.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint typecheck pytest demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to the CPU build in pyproject.toml (the wheel on this machine).
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check crypto

typecheck: setup
	$(BIN)/mypy --strict crypto market

pytest: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

demo: setup
	$(BIN)/pollen demo

bench: setup
	$(BIN)/python -m bench all

clean:
	rm -rf $(VENV) .pollen-demo .pytest_cache .mypy_cache .ruff_cache
