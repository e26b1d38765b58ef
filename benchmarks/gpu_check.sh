#!/usr/bin/env bash
# One prepared GPU check for the device tool (no package installs: the machine's torch/transformers are used).
#   1. the CUDA path of the scorer (parity with the CPU reference in float32, bf16 sanity),
#   2. the scoring benchmark in bfloat16 with SmolLM2-shaped random-weight models.
# Knobs: LENGTHS, CHUNKS, REPEATS, VARIANTS.
set -uo pipefail
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/collect/test_gpu.py 2>&1 | tail -3
python3 -m benchmarks.bench_scoring --device cuda --dtype bfloat16 --random-weights --repeats "${REPEATS:-3}" \
    --lengths "${LENGTHS:-1024,4096,8192,16384,32768}" --chunk-size "${CHUNKS:-256,4096}" \
    --variants "${VARIANTS:-forward,bodies,drift,naive}" --json "${OUT:-/tmp}/bench_gpu.json"
