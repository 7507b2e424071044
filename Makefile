# Two commands on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
KERNELS := $(VENV)/.kernels
# Data and weights shipped beside the checkout (CI, developer machines); users without them download to a cache.
SHARED := $(abspath ../shared)
export SPIKEGCN_DATA ?= $(if $(wildcard $(SHARED)/datasets),$(SHARED)/datasets,)
export SPIKEGCN_WEIGHTS ?= $(if $(wildcard $(SHARED)/weights),$(SHARED)/weights,)
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install run test lint bench clean

install: $(STAMP) $(KERNELS)

# Order matters: the pinned CPU torch first (an unpinned one pulls GBs of CUDA packages), then torch-scatter
# built against it without build isolation, then the project.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-build-isolation torch-scatter
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

# The fused C++ CPU kernels, built explicitly once (and again when their source changes); nothing compiles on
# first use, and without a compiler the pure-torch path serves.
$(KERNELS): $(STAMP) $(wildcard spikegcn/kernels/csrc/*.cpp)
	$(VENV)/bin/spikegcn build-kernels || echo "spikegcn: compiled CPU kernels not built; the torch path serves"
	touch $(KERNELS)

run: install
	$(VENV)/bin/spikegcn textgcn --dataset demo

test: install
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/neuron_core.py

clean:
	rm -rf $(VENV) build *.egg-info
