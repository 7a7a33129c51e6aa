# FlexBERT: `make demo` runs the whole loop on CPU, `make test` runs the test suite.
# Both install into .venv first when needed (idempotent: a second run is quick).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO := runs/demo
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test demo clean-demo bench lint

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

test: install
	$(PY) -m pytest -q tests

demo: install
	$(PY) scripts/demo.py --out $(DEMO)

clean-demo:
	rm -rf $(DEMO)
