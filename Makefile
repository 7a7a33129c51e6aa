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

.PHONY: install test demo clean-demo bench lint gpu-report wheelhouse

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

# On a CUDA machine, nothing else needed (no network: run `make wheelhouse` elsewhere first and copy
# wheelhouse/ along): installs the missing wheels, measures, writes docs/benchmarks-gpu.md.
# Uses the machine's own python3 (its torch), not .venv.
GPU_PY ?= python3
gpu-report:
	PYTHONPATH=$(CURDIR) $(GPU_PY) scripts/gpu_report.py $(GPU_REPORT_ARGS)

# On a machine with network: every wheel beyond a preinstalled torch, CPython 3.12 x86-64.
wheelhouse:
	$(PYTHON) scripts/wheelhouse.py --out wheelhouse $(WHEELHOUSE_ARGS)
