# The two set-up commands of README.md: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench venv

$(BIN)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

venv: $(BIN)/.installed

## Run the whole system on the embedded defaults (SQLite, local Redis, the Calendar emulator).
run: venv
	scripts/ensure-services.sh redis
	$(BIN)/python scripts/devstack.py

## Lint, then every test on SQLite and PostgreSQL with real Redis and headless Chromium.
test: venv
	scripts/ensure-services.sh redis postgres chromium
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

## Benchmarks: not tests; they print a table (see benchmarks/README.md).
bench: venv
	scripts/ensure-services.sh redis postgres
	command -v wrk >/dev/null || apt-get install -y -qq wrk
	$(BIN)/python -m benchmarks
