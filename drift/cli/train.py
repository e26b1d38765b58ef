"""``drift train``: on-policy distillation of a student towards a frozen teacher with a token-weight schedule."""

from __future__ import annotations

import argparse
import math

from drift.cli import HELP
from drift.config import add_config_arguments, config_from_namespace
from drift.train.config import TrainConfig

DESCRIPTION = """\
Train a student on its own rollouts against a frozen teacher (on-policy distillation). Each step samples
prompts_per_step x samples_per_prompt rollouts from the current student, scores them with both models, weights
the per-token advantage A_t = log pi_T(y_t) - log pi_S(y_t) with the schedule (both held constant) and
minimizes -sum w*A*log pi_S(y_t) / #tokens (--loss full_kl: sum w*KL(pi_S||pi_T) / #tokens).

Writes OUT/metrics.jsonl (one row per step, '/'-namespaced keys; OUT/metrics.parquet at the end),
OUT/config.json, OUT/schedule.json, OUT/checkpoints/step-XXXXXX/ and, at --collect-at steps, a drift dataset
of held-out rollouts in OUT/drift/step-XXXXXX/ labelled with that step.

Steps are 1-based: step k makes the k-th update and gives the schedule step=k, total_steps=--steps.
Evaluations, checkpoints and drift data labelled s describe the student after s updates (0 = initial).

examples:
  drift train --preset toy --steps 100 --out runs/train-opd                 # oracle world, plain OPD
  drift schedule make iw_opd --gamma 0.5 --out schedule.json
  drift train --preset toy --schedule schedule.json --steps 300 --seed 0 --out runs/train-iw
  drift train --preset toy --steps 2 --eval-prompts 8 --collect-at final --out /tmp/smoke   # smoke run
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help=HELP["train"],
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, TrainConfig)
    p.set_defaults(func=run)


def _fmt(value: float) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    from drift.errors import ConfigError
    from drift.train.config import train_preset_values
    from drift.train.loop import train_from_config

    given = vars(args)
    if given.get("preset"):
        args = argparse.Namespace(**{**train_preset_values(given["preset"]), **given})
    if not getattr(args, "out", ""):
        raise ConfigError("drift train", ["out is required: pass --out FOLDER"])
    cfg = config_from_namespace(TrainConfig, args)
    result = train_from_config(cfg, apply_preset=False)  # the preset was merged under the flags above
    df = result.metrics
    per_step = df["time/step"].dropna()
    print(f"trained {cfg.steps} step(s) in {result.wall_s:.1f} s ({per_step.mean():.3f} s/step) -> {result.out}")
    evals = df.dropna(subset=["eval/kl_mean"])
    print("held-out evaluation (student after s updates):")
    print(f"  {'step':>6}  {'kl_mean':>8}  {'k3_mean':>8}  {'accuracy':>8}  {'greedy':>8}")
    for _, r in evals.iterrows():
        print(f"  {int(r['step']):>6}  {_fmt(r['eval/kl_mean']):>8}  {_fmt(r['eval/k3_mean']):>8}  "
              f"{_fmt(r['eval/accuracy']):>8}  {_fmt(r['eval/greedy_accuracy']):>8}")
    for step, path in sorted(result.drift.items()):
        print(f"drift dataset at step {step}: {path}")
    return 0
