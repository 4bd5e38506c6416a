# Everything a fresh machine needs, from Python 3.11+ upwards.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv demo serve test test-fast fuzz lint format clean console-screenshots kind-demo

help:
	@echo "make demo   run the main job end to end on embedded defaults (SQLite, local files and processes)"
	@echo "make kind-demo  the same on a local Kubernetes cluster (kind), from the Helm chart"
	@echo "make serve  run the service on embedded defaults"
	@echo "make test   start the test services and run the whole test suite"
	@echo "make fuzz   schemathesis over the whole contract, as admin and as consumer (~4 min)"
	@echo "make lint   ruff and mypy"

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -c requirements.lock -e '.[dev,s3,kubernetes,tracing]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/provider demo

serve: venv
	$(BIN)/provider serve

# PostgreSQL must be running; the S3 tests start their own radosgw (tests/services/radosgw.sh).
test: venv
	bash tests/services/postgres.sh
	bash tests/services/chromium.sh
	bash tests/services/snakemake.sh
	bash tests/services/image-base.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: venv
	PROVIDER_TEST_POSTGRES_URL=off PROVIDER_TEST_S3_ENDPOINT=off $(BIN)/python -m pytest -x -n auto $(PYTEST_ARGS)

# schemathesis against a live service on loopback, in a network namespace of its own: every check,
# the contract's links, at least 5,000 cases (FUZZ_ARGS: --seed N, --max-examples N, --keep DIR).
fuzz: venv
	$(BIN)/python -m tests.fuzz_contract $(FUZZ_ARGS)

# The Kubernetes quick start on kind: cluster, images, PostgreSQL, MinIO, the chart, the demo
# (needs docker, kind, kubectl and helm; docs/deploy.md).
kind-demo:
	bash deploy/kind/quickstart.sh

# The screenshots in docs/console.md, taken by the console's browser tests.
console-screenshots: venv
	bash tests/services/chromium.sh
	PROVIDER_CONSOLE_SCREENSHOTS=docs/console $(BIN)/python -m pytest -q tests/test_console.py

lint: venv
	$(BIN)/ruff check provider tests $(wildcard bench)
	$(BIN)/ruff format --check provider tests $(wildcard bench)
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format provider tests $(wildcard bench)
	$(BIN)/ruff check --fix provider tests $(wildcard bench)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
