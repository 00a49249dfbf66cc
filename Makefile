# Set-up is automatic: `make demo` and `make test` create the virtual environment on first use.
# PY picks the interpreter; VENV the environment folder (CI uses a cached one for Python 3.12).
PY ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.posterior-installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

# Install the pinned CPU build of torch first, so that resolving the project finds torch
# already satisfied and never pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/posterior demo --out out/demo

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check posterior tests benchmarks examples scripts
	$(BIN)/ruff format --check posterior tests benchmarks examples scripts

clean:
	rm -rf $(VENV) out .pytest_cache
