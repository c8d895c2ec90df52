# All set-up happens here: `make test` and `make demo` work on a fresh clone with no network but PyPI.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch first, pinned to the CPU wheel on local disk; a bare `torch` requirement would pull CUDA builds.
TORCH_PIN := constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install test test-distributed test-slow test-demo test-all lint demo bench clean

# OpenMP threads that find no work sleep at once instead of spinning: beside another CPU-bound process a
# spinning thread pool ran the demo 10x slower, not 2x (README, "Sharing the CPU").
export OMP_WAIT_POLICY ?= PASSIVE

$(STAMP): setup.py setup.cfg constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(TORCH_PIN) torch
	DS_BUILD_OPS=0 $(PIP) install -q -c $(TORCH_PIN) -e ".[dev,deepspeed]"
	$(PY) -c "from evl_kd_trainer.cli import warm_help_cache; warm_help_cache()"  # `evl-kd <cmd> --help` at once
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu and not demo and not distributed" -q

# Multi-process runs (torchrun on gloo: DDP, ZeRO-2, ZeRO-3); time limits scale with the machine's speed.
test-distributed: $(STAMP)
	$(PY) -m pytest -m "distributed and not slow" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow" -q

test-demo: $(STAMP)
	$(PY) -m pytest -m "demo" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check evl_kd_trainer tests examples benchmarks
	$(VENV)/bin/ruff format --check evl_kd_trainer tests examples benchmarks

demo: $(STAMP)
	$(PY) examples/demo.py --output_dir demo_output

bench: $(STAMP)
	$(PY) benchmarks/bench_losses.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache build *.egg-info
