PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install test demo lint bench

# torch first: a bare `torch` requirement would pull the CUDA build; 2.13.0 takes the CPU wheel.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	$(PIP) install -q -e ".[dev,space]"
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: install
	$(PYTHON) -m pytest -q

# The paper's multiple-choice evaluation rates the feedback model when the shared fixtures are beside the checkout.
PAPER_EVAL := ../shared/fixtures/anthropic-paper/438HHHEvaluations.jsonl

demo: install
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 hf-cai demo \
		$(if $(wildcard $(PAPER_EVAL)),--eval.multiple_choice_files='[$(PAPER_EVAL)]')

lint:
	$(PYTHON) -m ruff check hf_cai tests spaces benchmarks examples

bench: install
	$(PYTHON) benchmarks/generation.py
	$(PYTHON) benchmarks/training.py
