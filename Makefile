# earl — every entry point a user needs. `make help` lists them.
# Set-up is part of every target: the first call installs, later calls are no-ops unless pyproject.toml changed.

SHELL       := /bin/bash
VENV        ?= .venv
PY          := $(VENV)/bin/python
EARL        := $(VENV)/bin/earl
STAMP       := $(VENV)/.earl-setup
APT_PKGS    := iverilog bubblewrap yosys
APT_TEST    := slurm-wlm munge
CONFIG      ?= configs/verilog_tiny.yaml
RUN_DIR     ?=
PYTEST_ARGS ?=
NODES       ?= 1
GPUS        ?= 1
NPROC       ?= 2
LAUNCHER    ?= zero2
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help setup setup-test test test-fast lint bench bench-gpu train train-security train-ds ablation eval score slurm clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: $(STAMP)  ## install apt packages (when root), .venv, torch, the project

$(STAMP): pyproject.toml Makefile
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then echo "setup: apt installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  else echo "setup: WARNING: missing apt packages:$$missing (run as root or install them)"; fi; fi
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip setuptools wheel 2>&1 | grep -v 'is ignored' || true
	@if $(PY) -c 'import torch' 2>/dev/null; then :; \
	 elif command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch 2>&1 | grep -v 'is ignored'; \
	 else $(PY) -m pip install -q torch==2.13.0 2>&1 | grep -v 'is ignored'; fi; true
	@$(PY) -c 'import deepspeed' 2>/dev/null || DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation 'deepspeed>=0.17' 2>&1 | grep -v 'is ignored' || true
	@$(PY) -m pip install -q -e '.[dev]' 2>&1 | grep -v 'is ignored' || true
	@$(PY) -c 'import torch, trl, deepspeed, pipelines, rewards, sandboxes' 2>/dev/null || { echo "setup: import check failed"; $(PY) -c 'import torch, trl, deepspeed, pipelines, rewards, sandboxes'; exit 1; }
	@touch $(STAMP); echo "setup: ready ($(VENV))"

setup-test: setup  ## also install what the Slurm tests need (slurm-wlm, munge; root only)
	@missing=""; for p in $(APT_TEST); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then echo "setup-test: apt installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; true

test: setup-test  ## run the whole test suite (slow tests included)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup  ## tests not marked slow
	$(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

lint: setup  ## ruff
	$(VENV)/bin/ruff check pipelines rewards sandboxes tests bench

bench: setup  ## benchmarks -> BENCHMARKS.md
	$(PY) -m bench.run

bench-gpu: setup  ## CUDA check: EARL vs TRL step, entropy memory, random 0.5 B Qwen2 (< 10 min) -> BENCHMARKS.md
	CUDA_VISIBLE_DEVICES=$${CUDA_VISIBLE_DEVICES:-0} $(PY) -m bench.gpu --device cuda --out BENCHMARKS.md

train: setup  ## SFT -> EARL-GRPO -> eval on the embedded default (CONFIG=..., RUN_DIR=... to resume)
	$(EARL) train --config $(CONFIG) $(if $(RUN_DIR),--resume $(RUN_DIR),)

train-security: setup  ## security-repair pipeline on the bundled default
	$(EARL) train --config configs/security_repair_tiny.yaml

train-ds: setup  ## the same pipeline under DeepSpeed (LAUNCHER=zero2|zero3, NPROC=2)
	$(EARL) train --config $(CONFIG) --launcher $(LAUNCHER) --num-processes $(NPROC)

ablation: setup  ## EARL gate vs none at equal budget, 3 seeds (RUN_DIR=<run whose SFT model to reuse>)
	$(PY) -m pipelines.ablation --config $(CONFIG) $(if $(RUN_DIR),--sft-run $(RUN_DIR),) --seeds 0 1 2 --out runs/ablation

eval: setup  ## evaluate a checkpoint: make eval MODEL=runs/.../final PROBLEMS=...
	$(EARL) eval --model $(MODEL) --problems $(PROBLEMS)

score: setup  ## score samples: make score PROBLEMS=... SAMPLES=... OUT=...
	$(EARL) score --problems $(PROBLEMS) --samples $(SAMPLES) --out $(OUT)

slurm: setup  ## submit to Slurm: make slurm CONFIG=... NODES=2 GPUS=8
	$(EARL) submit --config $(CONFIG) --nodes $(NODES) --gpus-per-node $(GPUS) $(if $(PARTITION),--partition $(PARTITION)) $(if $(TIME),--time $(TIME))

clean:  ## remove the venv, caches and runs
	rm -rf $(VENV) .cache .pytest_cache runs *.egg-info
