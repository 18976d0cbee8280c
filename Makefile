# The two commands that matter: `make demo` and `make test`. Both bootstrap .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel of PyTorch; override (e.g. TORCH_SPEC="torch==2.14.1") on machines with another wheel.
TORCH_SPEC ?= torch==2.13.0
# the package and its runtime dependencies: what `make demo` and `make ui` need
STAMP := $(VENV)/.installed
# the linters and test tools on top
DEV_STAMP := $(VENV)/.installed-dev
# what the tests and the stack need on top: PostgreSQL storage, Playwright, the executors,
# the ONNX Runtime / OpenVINO inference engines
EXTRAS_STAMP := $(VENV)/.installed-extras
STACK_DIR ?= $(CURDIR)/.stack
export DAGSTER_HOME := $(CURDIR)/.dagster_home
# one set of settings for the demo and the UI (storage/ and inbox/ are relative to this folder)
export VQGANODIP_PRESET ?= demo

.PHONY: demo test lint ui bench install clean-demo stack stack-down stack-status stack-clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e .
	@touch $(STAMP)

$(DEV_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(DEV_STAMP)

$(EXTRAS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,stack,docker,k8s,celery,engines]'
	@touch $(EXTRAS_STAMP)

install: $(STAMP)

demo: $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/vqganodip demo

test: $(EXTRAS_STAMP)
	$(BIN)/ruff check vqganodip_pipeline vqganodip_pipeline_tests bench
	$(BIN)/pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check vqganodip_pipeline vqganodip_pipeline_tests bench
	$(BIN)/ruff format --check vqganodip_pipeline vqganodip_pipeline_tests bench

ui: $(STAMP)
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/vqganodip settings
	$(BIN)/dagster dev -w workspace.yaml

# The production topology on 127.0.0.1 without containers (vqganodip_pipeline/stack.py):
# PostgreSQL, moto as S3, the gRPC code server, webserver and daemon; `stack-down` stops them.
stack: $(EXTRAS_STAMP)
	$(BIN)/python -m vqganodip_pipeline.stack up --root $(STACK_DIR)

stack-down:
	@test -x $(BIN)/python || { echo "no $(VENV): nothing was started"; exit 0; }
	$(BIN)/python -m vqganodip_pipeline.stack down --root $(STACK_DIR)

stack-status:
	$(BIN)/python -m vqganodip_pipeline.stack status --root $(STACK_DIR)

# moto keeps S3 in memory: a restarted stack has an empty bucket; start afresh with this
stack-clean: stack-down
	rm -rf $(STACK_DIR)

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean-demo:
	rm -rf .dagster_home storage inbox
