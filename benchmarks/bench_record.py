"""Benchmark: the overhead of drift.record.Recorder per 1M logged tokens, against the floor of any recorder.

    python -m benchmarks.bench_record                           # 500 sequences x 2000 tokens, padded batches
    python -m benchmarks.bench_record --layout ragged           # lists of 1-D tensors instead
    python -m benchmarks.bench_record --profile                 # cProfile of the recorder's run (top 25)

A trainer's batches are made up front (random token ids, random log-probs <= 0, in torch tensors): ``--seqs``
sequences of ``--length`` response tokens after ``--prompt-length`` prompt tokens, ``--samples`` per prompt (GRPO-like
groups), logged in batches of ``--batch`` sequences, ``--batches-per-step`` batches per training step. In the same
run, best of ``--repeats``, each into a fresh folder:

- ``pyarrow``: the **floor**: the same raw inputs (token ids, student and teacher log-probs of the valid tokens,
  taken from the tensors with one mask index each) buffered per step and written with ``pyarrow.parquet`` directly
  (zstd like drift, one file per step), no derived columns, no rollouts table, no manifest;
- ``plain``: the same with parquet's dictionary encoding off (``use_dictionary=False``): the strictest floor;
- ``drift``: ``Recorder.log`` per batch and ``close()`` (every derived column, the rollouts table, prompt keys,
  atomic fsync'ed parts and the manifest).

It prints seconds per 1M logged tokens for each and the ratios to ``pyarrow`` and ``plain`` (a recorder that dropped
a batch fails the run).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def make_batches(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The trainer's batches: padded (B, L) tensors with a (B, L) mask (right padding) or ragged lists."""
    import torch

    gen = torch.Generator().manual_seed(args.seed)
    n_prompts = max(1, args.seqs // args.samples)
    prompts = torch.randint(3, 150_000, (n_prompts, args.prompt_length), generator=gen)
    batches = []
    for b, start in enumerate(range(0, args.seqs, args.batch)):
        n = min(args.batch, args.seqs - start)
        seq = torch.arange(start, start + n)
        L = args.length
        lengths = torch.full((n,), L) if not args.variable else torch.randint(L // 2, L + 1, (n,), generator=gen)
        mask = torch.arange(L).unsqueeze(0) < lengths.unsqueeze(1)
        ids = torch.randint(3, 150_000, (n, L), generator=gen)
        student = -torch.rand(n, L, generator=gen) * 3
        teacher = student - torch.rand(n, L, generator=gen)
        batch = {"step": b // args.batches_per_step, "prompt_ids": prompts[seq // args.samples],
                 "response_ids": ids, "student": student, "teacher": teacher, "mask": mask,
                 "prompt_id": [f"p{int(i)}" for i in seq // args.samples]}
        if args.layout == "ragged":
            batch["response_ids"] = [ids[i, :k] for i, k in enumerate(lengths.tolist())]
            batch["student"] = [student[i, :k] for i, k in enumerate(lengths.tolist())]
            batch["teacher"] = [teacher[i, :k] for i, k in enumerate(lengths.tolist())]
            batch["prompt_ids"] = list(batch["prompt_ids"])
            batch["mask"] = None
        batches.append(batch)
    return batches


def run_pyarrow(batches: list[dict[str, Any]], out: Path, **options: Any) -> int:
    """The floor: raw ids + the two log-prob columns of the valid tokens, one zstd parquet file per step."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True)
    pending: list[pa.Table] = []
    step = None
    n = 0

    def write() -> None:
        if pending:
            pq.write_table(pa.concat_tables(pending), out / f"step-{step:06d}.parquet", compression="zstd",
                           **options)
            pending.clear()

    for b in batches:
        if b["step"] != step:
            write()
            step = b["step"]
        if b["mask"] is not None:
            m = b["mask"].detach().cpu().numpy()
            cols = {"token_id": b["response_ids"].detach().cpu().numpy()[m].astype(np.int32),
                    "student_logprob": b["student"].detach().float().cpu().numpy()[m],
                    "teacher_logprob": b["teacher"].detach().float().cpu().numpy()[m]}
        else:
            cols = {"token_id": np.concatenate([x.numpy() for x in b["response_ids"]]).astype(np.int32),
                    "student_logprob": np.concatenate([x.float().numpy() for x in b["student"]]),
                    "teacher_logprob": np.concatenate([x.float().numpy() for x in b["teacher"]])}
        pending.append(pa.table(cols))
        n += len(cols["token_id"])
    write()
    return n


def run_drift(batches: list[dict[str, Any]], out: Path) -> int:
    """The recorder, as a trainer calls it."""
    from drift.record import Recorder

    rec = Recorder(out, run_id="bench")
    for b in batches:
        rec.log(b["step"], b["prompt_ids"], b["response_ids"], b["student"], b["teacher"], mask=b["mask"],
                prompt_id=b["prompt_id"])
    rec.close()
    if rec.n_dropped_batches:
        raise RuntimeError(f"the recorder dropped {rec.n_dropped_batches} batch(es): {rec.errors}")
    return rec.n_tokens


def run_pyarrow_plain(batches: list[dict[str, Any]], out: Path) -> int:
    """The same without parquet's dictionary encoding (which high-entropy floats never profit from)."""
    return run_pyarrow(batches, out, use_dictionary=False)


VARIANTS = {"pyarrow": run_pyarrow, "plain": run_pyarrow_plain, "drift": run_drift}


def measure(batches: list[dict[str, Any]], repeats: int, base: Path) -> dict[str, tuple[float, int]]:
    """Best wall time and token count of each variant (alternating, so both see the same machine load)."""
    best = {name: (float("inf"), 0) for name in VARIANTS}
    for r in range(repeats):
        for name, fn in VARIANTS.items():
            out = base / f"{name}-{r}"
            t0 = time.perf_counter()
            n = fn(batches, out)
            dt = time.perf_counter() - t0
            best[name] = (min(best[name][0], dt), n)
            shutil.rmtree(out, ignore_errors=True)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seqs", type=int, default=500, help="sequences in all")
    p.add_argument("--length", type=int, default=2000, help="response tokens per sequence")
    p.add_argument("--variable", action="store_true", help="lengths uniform in [length/2, length] (right padding)")
    p.add_argument("--prompt-length", type=int, default=256)
    p.add_argument("--samples", type=int, default=5, help="sequences per prompt")
    p.add_argument("--batch", type=int, default=50, help="sequences per log() call")
    p.add_argument("--batches-per-step", type=int, default=2)
    p.add_argument("--layout", choices=("padded", "ragged"), default="padded")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--profile", action="store_true", help="print a cProfile of one recorder run")
    p.add_argument("--dir", default=None, help="where to write (default: a temp folder, removed)")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    batches = make_batches(args)
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="drift-bench-record-"))
    try:
        run_drift(batches[:2], base / "warmup")  # imports, first-call costs
        shutil.rmtree(base / "warmup")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            run_drift(batches, base / "profile")
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            shutil.rmtree(base / "profile")
        best = measure(batches, args.repeats, base)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    n = best["drift"][1]
    steps = len({b["step"] for b in batches})
    print(f"{n:,} tokens ({args.seqs} sequences x {args.length}{' (variable)' if args.variable else ''} tokens, "
          f"prompts of {args.prompt_length}), {len(batches)} {args.layout} batches of {args.batch}, {steps} steps; "
          f"best of {args.repeats}; {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")
    print(f"{'variant':<8} {'wall s':>8} {'s / 1M tokens':>14} {'x pyarrow':>10} {'x plain':>8}")
    ref = best["pyarrow"][0] / best["pyarrow"][1] * 1e6
    plain = best["plain"][0] / best["plain"][1] * 1e6
    for name, (dt, k) in best.items():
        per = dt / k * 1e6
        print(f"{name:<8} {dt:>8.3f} {per:>14.3f} {per / ref:>10.2f} {per / plain:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
