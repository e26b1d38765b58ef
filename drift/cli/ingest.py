"""``drift import``: turn a training framework's per-token logs into a drift dataset (module name: ``import`` is a
Python keyword)."""

from __future__ import annotations

import argparse
import time

from drift.cli import HELP
from drift.config import add_config_arguments, config_from_namespace
from drift.ingest.config import IMPORT_SOURCES, ImportConfig

DESCRIPTION = """\
Import the per-token logs a training framework already wrote into an ordinary drift dataset (rollouts/ + tokens/
parquet, manifest, config), keeping what the format really holds: parquet metadata `support` says full, topk or
sampled, and columns the format cannot give are absent (the analyses that need them say which command adds them).

sources:
  slime        --dump-details DIR: train_data/{rollout_id}.pt (student, sampler and teacher log-probs)
  nemo-rl      log_dir/train_data_step{N}.jsonl (teacher = prev_logprobs + advantages only with
               --advantages distillation)
  completions  TRL / verl / ms-swift text dumps (--format), re-tokenized and re-scored with --student/--teacher
  vllm         a vLLM teacher's prompt_logprobs merged into --rollouts DATASET (top-k support)
  tokens       drift's generic jsonl/parquet: prompt_ids, response_ids, student_logprobs, teacher_logprobs

examples:
  drift import slime runs/slime_dump --out runs/slime
  drift import nemo-rl logs/exp1 --advantages distillation --out runs/nemo
  drift import completions outputs/grpo --format trl --student S --teacher T --out runs/trl
  drift import vllm teacher_scores.jsonl --rollouts runs/x --out runs/x-vllm
  drift import tokens my_logs.jsonl --student S --out runs/mine     # --student: re-score a sample to check

.pt dumps load with torch.load(weights_only=True); --allow-pickle executes code stored in the file.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help=HELP["import"],
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", choices=IMPORT_SOURCES, help="the source format")
    p.add_argument("path", help="the dump folder, a file, or the trainer's output_dir")
    add_config_arguments(p, ImportConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from drift.ingest import import_from_config

    cfg = config_from_namespace(ImportConfig, args)
    t0 = time.perf_counter()
    ds = import_from_config(cfg)
    m = ds.manifest
    meta = ds.metadata
    support = meta.get("support", "full")
    print(f"imported {m['n_rollouts']} rollouts, {m['n_tokens']} tokens from {cfg.source} {cfg.path} into {ds.root} "
          f"(support={support}, {time.perf_counter() - t0:.1f} s)")
    checks = m.get("checks") or {}
    for side in ("student", "teacher"):
        c = checks.get(side)
        if c and c.get("verdict") == "ok":
            print(f"  check: imported {side} log-probs match --{side} (median |diff| {c['median_abs_diff']:.3g} "
                  f"nats over {c['n_tokens']} tokens; shifted by one: {c['shift_-1']:.3g} / {c['shift_+1']:.3g})")
    sign = checks.get("sign") or {}
    if sign.get("verdict") in ("ok", "swapped?"):
        print(f"  sign: mean k1 = {sign['mean_k1']:+.4f} nats/token (s.e. {sign['se']:.2g}, {sign['n_prompts']} "
              f"prompts): {sign['verdict']}")
    for line in meta.get("missing_analyses") or []:
        print(f"  not in this dataset: {line}")
    return 0
