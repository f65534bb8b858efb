# The two set-up commands of README.md: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The Procfile runner of `make run` (pyproject.toml's "dev" extra); production runs the Procfile its own way.
HONCHO := honcho==2.0.0
# pytest-xdist workers for `make test`: most tests wait on Redis, PostgreSQL, the emulator or Chromium,
# so two processes keep the 2 cores busy (each worker has its own Redis and PostgreSQL database).
TEST_WORKERS ?= 2

.PHONY: run test lint bench soak venv fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# `make run`: the runtime lock and the Procfile runner only.
$(BIN)/.run-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt $(HONCHO)
	touch $@

# `make test`, `make lint`, `make bench`: the runtime lock plus the test tools.
$(BIN)/.test-installed: requirements.txt requirements-test.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-test.txt
	touch $@

venv: $(BIN)/.test-installed

## Run the whole system on the embedded defaults (SQLite, local Redis, the Calendar emulator):
## the Procfile's processes plus the emulator, under honcho.
run: $(BIN)/.run-installed
	scripts/ensure-services.sh redis
	$(BIN)/python -m scripts.devstack

## Lint, then every test on SQLite and PostgreSQL with real Redis and headless Chromium.
test: $(BIN)/.test-installed
	scripts/ensure-services.sh redis postgres chromium
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

## Channel renewal over five minutes of real time, Google giving one-minute channels (the suite runs 150 s).
soak: $(BIN)/.test-installed
	scripts/ensure-services.sh redis
	ROOMBRIDGE_SOAK_SECONDS=300 $(BIN)/python -m pytest -q \
		tests/jobs/test_procfile_stack.py -k without_a_gap

lint: $(BIN)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports

## The Hypothesis tests exploring (not replaying: no CI=true), FUZZ_EXAMPLES (default 2000) examples
## each, on SQLite and PostgreSQL. Not part of `make test`; the tests' time limit is lifted.
fuzz: $(BIN)/.test-installed
	scripts/ensure-services.sh redis postgres
	env -u CI HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider -o timeout=0 \
		-k fuzzed tests/faults/test_fuzzing.py tests/webapp/test_api.py

## Benchmarks: not tests; they print a table (see benchmarks/README.md).
bench: $(BIN)/.test-installed
	scripts/ensure-services.sh redis postgres
	command -v wrk >/dev/null || apt-get install -y -qq wrk
	$(BIN)/python -m benchmarks
