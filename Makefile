# HessGPT: two commands do all the set-up on a fresh machine.
#   make demo   build the whole dual-model system at small scale on this CPU, then chat with it
#   make test   the import contract (lint-imports, [tool.importlinter] in pyproject.toml), then the test suite
# Both create/update .venv in the repo and install everything they need; the system packages
# (scripts/install-system-deps.sh) are checked first and installed when run as root.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
TORCH  := torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install system-deps demo-deps demo test test-fast clean-venv

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first and alone: the CPU build. Installing peft/transformers first would pull a multi-GB CUDA build.
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -c constraints.txt "$(TORCH)" -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

# as root: apt-get installs what is missing; as a normal user: one line per missing piece and how to get it
system-deps:
	@bash scripts/install-system-deps.sh --for test

demo-deps:
	@bash scripts/install-system-deps.sh --for demo

demo: demo-deps install
	$(PY) -m hessgpt quickstart --out runs/quickstart

test: install system-deps
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not browser"

clean-venv:
	rm -rf $(VENV)

# llama.cpp's own llama-bench (benchmarks/decode.py's reference), built from the sources the llama-cpp-python
# sdist vendors, into ~/.cache/hessgpt/llama.cpp/<version>/bin (a few minutes on 2 cores; done once)
.PHONY: llama-bench
llama-bench:
	@bash scripts/build-llama-bench.sh
