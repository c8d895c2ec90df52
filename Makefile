# All set-up happens here: `make test` and `make demo` work on a fresh clone with no network but PyPI.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch first, pinned to the CPU wheel on local disk; a bare `torch` requirement would pull CUDA builds.
TORCH_PIN := constraints.txt
STAMP := $(VENV)/.installed

.PHONY: install test test-slow test-demo test-all lint demo bench clean

$(STAMP): setup.py setup.cfg constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(TORCH_PIN) torch
	DS_BUILD_OPS=0 $(PIP) install -q -c $(TORCH_PIN) -e ".[dev,deepspeed]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not gpu and not demo" -q

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
