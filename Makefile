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

.PHONY: install test demo clean-demo bench lint gpu-report wheelhouse phases-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

# The suite runs on two pytest-xdist workers (the machine's two cores: much of a test's time is a
# process importing torch and Composer, or waiting on its ranks), each taking whole test files
# (--dist loadfile: a file's module fixtures are built once); tests/conftest.py puts the files with
# multi-minute tests first, and --no-loadscope-reorder keeps that order (xdist's default hands out
# the files with the most tests first, which left the few-test, multi-minute files for the end and
# one worker idle while the other finished them).  Two runs by file name rather than one: Streaming keeps every dataset's
# shared-memory blocks (and their file descriptors) until its process exits, and one process over
# the whole suite ran out of descriptors near its end (stop 31's CI).  Both runs go; the exit code
# is non-zero when either failed.  PYTEST_WORKERS=0 runs each group in one process.
TEST_GROUPS := a-m n-z
PYTEST_WORKERS ?= 2
test: install
	@rc=0; for g in $(TEST_GROUPS); do \
	    echo "== pytest: tests/test_[$$g]*.py ($(PYTEST_WORKERS) workers)"; \
	    $(PY) -m pytest -q --durations=20 $$( [ "$(PYTEST_WORKERS)" = 0 ] || echo -n "-n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder" ) \
	        $$(ls tests/test_[$$g]*.py) || rc=1; \
	done; exit $$rc

demo: install
	$(PY) -m flexbert demo --out $(DEMO)

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
	PYTHONPATH=$(CURDIR) $(PYTHON) scripts/wheelhouse.py --out wheelhouse $(WHEELHOUSE_ARGS)

# The three-phase recipe at demo scale: tiny -> tiny-context-extension (512 tokens, theta 160k)
# -> tiny-decay (1-sqrt), each phase from the previous one's final checkpoint; reruns skip
# finished phases.  Needs `make demo`'s corpus and tokenizer.  Its runs live in runs/phases-demo/, apart
# from runs/tiny (a hand-run `train.py configs/tiny.yaml ...` of another model never blocks it).
phases-demo: install
	@test -f $(DEMO)/shards-512/stats.json || $(PY) -m flexbert tokenize \
	    --input $(DEMO)/corpus/pretrain/train.jsonl --val-input $(DEMO)/corpus/pretrain/validation.jsonl \
	    --tokenizer $(DEMO)/tokenizer --out $(DEMO)/shards-512 --max-seq-len 512 --overwrite
	$(PY) -m flexbert phases configs/tiny.yaml configs/tiny-context-extension.yaml configs/tiny-decay.yaml \
	    --runs-root runs/phases-demo --niah
