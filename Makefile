# Pollen: `make demo` runs the whole marketplace; `make test` runs every check.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The dashboard's browser tests drive Debian's Chromium (never a Playwright download).
CHROMIUM := /usr/bin/chromium

.PHONY: setup browser test lint typecheck pytest demo bench clean

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
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy --strict crypto dataspec market agents

# Installs Chromium when missing (as root, e.g. CI on a fresh Debian 12); otherwise says how.
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "need $(CHROMIUM): sudo apt-get install -y chromium"; exit 1; \
	  fi; }

# POLLEN_REQUIRE_BROWSER=1 / POLLEN_REQUIRE_S3=1: a missing browser or SeaweedFS binary fails
# the dashboard or S3 tests instead of skipping them. The 15 slowest tests are listed at the
# end: CI is meant to stay under 20 minutes.
pytest: setup browser
	POLLEN_REQUIRE_BROWSER=1 POLLEN_REQUIRE_S3=1 $(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

test: lint typecheck pytest

demo: setup
	$(BIN)/pollen demo

bench: setup
	$(BIN)/python -m bench all

clean:
	rm -rf $(VENV) .pollen-demo .pytest_cache .mypy_cache .ruff_cache
