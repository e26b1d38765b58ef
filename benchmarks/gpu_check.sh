#!/usr/bin/env bash
# One prepared GPU check for the device tool: no package installs (the machine's torch/transformers are used),
# about 5 minutes on an H200, hard limits summing to under 8 (BUDGET_S + 60 s of tests + TRAIN_S).
#   1. the CUDA path of the scorer: float32 parity with the CPU reference, bfloat16 sanity (tests/collect/test_gpu.py);
#   2. the tiled scorer (benchmarks/bench_scoring.py) in bfloat16, SmolLM2-shaped random-weight models, at
#      T = 4096 ... 32768 against the time floor (both models' forward passes with full logits) and the memory floor
#      (both bare bodies), for two tile shapes (positions x vocabulary ids, paired CHUNKS / VOCAB_CHUNKS):
#        4096 x 16384  the CUDA default here. The CPU defaults (1024 x 2048) cut T = 32768 and V = 49152 into
#                      32 x 24 = 768 tiles per model, each a few dozen kernel launches: ~20k launches (~0.1 s) on top
#                      of a 0.3 s forward floor. 4096 x 16384 makes 8 x 3 = 24 tiles whose head GEMMs
#                      (4096 x 576 @ 576 x 16384) fill the tensor cores; a float32 tile is 256 MiB, so the head
#                      phase holds about 1 GiB: under 1 % of an H200, and far below the forward floor's full logits
#                      (2 x T x 49152 x 2 bytes: 0.8 GB at 4096, 6.4 GB at 32768);
#        1024 x 4096   the memory-lean shape (64 MiB tiles), to show the time/memory trade against the body floor;
#   3. TRAIN=1: one OPD step of drift against the minimal reference loop on CUDA (benchmarks/bench_train.py, float32).
# Ends with one compact table (drift time / forward time, drift memory / bodies memory per tile shape).
# Knobs: LENGTHS, CHUNKS, VOCAB_CHUNKS, REPEATS, VARIANTS, DEVICE, DTYPE, PYTHON, OUT, BUDGET_S, TRAIN, TRAIN_S.
# Smoke test without a GPU (tiny lengths on the CPU; step 1 is skipped there):
#   DEVICE=cpu DTYPE=float32 LENGTHS=64 CHUNKS=32 VOCAB_CHUNKS=8192 REPEATS=1 TRAIN=0 bash benchmarks/gpu_check.sh
set -uo pipefail
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
OUT=${OUT:-/tmp}
JSON="$OUT/bench_gpu.json"
CHUNKS=${CHUNKS:-4096,1024}
VOCAB_CHUNKS=${VOCAB_CHUNKS:-16384,4096}

"$PY" - "$DEVICE" <<'EOF'
import sys, torch, transformers
line = f"torch {torch.__version__}, transformers {transformers.__version__}"
if sys.argv[1].startswith("cuda"):
    p = torch.cuda.get_device_properties(0)
    line += f", {p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
print(line)
EOF

if [[ $DEVICE == cuda* ]]; then
    timeout 60 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/collect/test_gpu.py 2>&1 | tail -3
fi

tiles=(--chunk-size "$CHUNKS")
if "$PY" -m benchmarks.bench_scoring --help 2>/dev/null | grep -q -- "--vocab-chunk"; then
    tiles+=(--vocab-chunk "$VOCAB_CHUNKS")
else
    echo "note: bench_scoring has no --vocab-chunk; drift runs with score_items' default vocabulary tile" >&2
fi
timeout "${BUDGET_S:-330}" "$PY" -m benchmarks.bench_scoring --device "$DEVICE" --dtype "$DTYPE" --random-weights \
    --repeats "${REPEATS:-3}" --lengths "${LENGTHS:-4096,8192,16384,32768}" "${tiles[@]}" \
    --variants "${VARIANTS:-forward,bodies,drift}" --json "$JSON" > "$OUT/bench_gpu_tables.md"
status=$?
[[ $status -ne 0 ]] && echo "bench_scoring exited with $status (124 = over BUDGET_S; rows so far are above)" >&2

if [[ ${TRAIN:-1} == 1 ]]; then
    timeout "${TRAIN_S:-90}" "$PY" -m benchmarks.bench_train --device "$DEVICE" --dtype float32 --warmup 2 \
        --rounds 10 --variants reference,drift,drift-iw 2>/dev/null | tail -9
fi

[[ -f $JSON ]] && "$PY" - "$JSON" <<'EOF'
"""The compact table: floors, then drift's time and memory and their ratios for each tile shape."""
import json, math, sys

rows = json.load(open(sys.argv[1]))
lengths = sorted({r["T"] for r in rows})
tiles = sorted({(r.get("chunk"), r.get("vocab_chunk")) for r in rows if r["variant"] == "drift"},
               key=lambda t: -(t[0] or 0))
by = {(r["T"], r["variant"], r.get("chunk"), r.get("vocab_chunk")): r for r in rows}
dev = next((r["device"] for r in rows if r.get("device")), "?")
dt = next((r["dtype"] for r in rows if r.get("dtype")), "?")
nan = {"seconds": math.nan, "peak_mb": math.nan}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and b == b and a == a else "n/a"


head = "| T | forward s | bodies s | forward MB | bodies MB |"
for c, v in tiles:
    head += f" drift {c}x{v or 'default'} s | MB | time/forward | memory/bodies |"
print(f"\n{dev}, {dt}; time = best of the repeats, MB = peak above the loaded weights")
print(head)
print("|" + "---|" * (head.count("|") - 1))
for t in lengths:
    f = by.get((t, "forward", None, None), nan)
    b = by.get((t, "bodies", None, None), nan)
    line = f"| {t} | {f['seconds']:.3f} | {b['seconds']:.3f} | {f['peak_mb']:.0f} | {b['peak_mb']:.0f} |"
    for c, v in tiles:
        d = by.get((t, "drift", c, v), nan)
        line += (f" {d['seconds']:.3f} | {d['peak_mb']:.0f} | {ratio(d['seconds'], f['seconds'])} |"
                 f" {ratio(d['peak_mb'], b['peak_mb'])} |")
    print(line)
EOF
exit 0
