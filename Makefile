# The two commands that matter: `make demo` and `make test`. Both bootstrap .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel of PyTorch; override (e.g. TORCH_SPEC="torch==2.14.1") on machines with another wheel.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/.dagster_home
# one set of settings for the demo and the UI (storage/ and inbox/ are relative to this folder)
export VQGANODIP_PRESET ?= demo

.PHONY: demo test lint ui bench install clean-demo

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/vqganodip demo

test: $(STAMP)
	$(BIN)/ruff check vqganodip_pipeline vqganodip_pipeline_tests bench
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check vqganodip_pipeline vqganodip_pipeline_tests bench
	$(BIN)/ruff format --check vqganodip_pipeline vqganodip_pipeline_tests bench

ui: $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/vqganodip settings
	$(BIN)/dagster dev -w workspace.yaml

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean-demo:
	rm -rf .dagster_home storage inbox
