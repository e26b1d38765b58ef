"""``drift collect``: sample student rollouts, score every token with student and teacher, write parquet."""

from __future__ import annotations

import argparse
import sys
import time

from drift.cli import HELP
from drift.collect.config import CollectConfig
from drift.config import add_config_arguments, config_from_namespace

DESCRIPTION = """\
Sample rollouts from a student, score every response token with the student and a frozen teacher in teacher
forcing, and write one parquet row per token (log-probs, KL estimators, full-vocab KL, entropies, agreement,
prefix sums) to OUT/tokens/, one row per rollout to OUT/rollouts/, plus OUT/manifest.json and OUT/config.json.

examples:
  drift collect --preset toy --out runs/toy            # the offline oracle world, no other arguments
  drift collect --student PATH --teacher PATH --prompts prompts.jsonl --out runs/x \\
        --samples-per-prompt 4 --max-new-tokens 512 --temperature 1.0 --seed 0
  drift collect --student smollm2 --teacher smollm2 --teacher-system-prompt "You are a pirate." \\
        --prompts data/real/prompts.jsonl --out runs/ctx   # context distillation (privileged teacher)

Open the result with pandas (pd.read_parquet("runs/x/tokens")), pyarrow or DuckDB
(SELECT * FROM 'runs/x/tokens/*.parquet'). An interrupted run continues with --if-exists resume.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collect", help=HELP["collect"],
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, CollectConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from drift.collect.pipeline import collect_from_config
    from drift.collect.summary import decile_table
    from drift.presets import preset_values
    from drift.runtime.distributed import is_main

    given = vars(args)
    if given.get("preset"):
        merged = {**preset_values(given["preset"]), **given}
        args = argparse.Namespace(**merged)
    cfg = config_from_namespace(CollectConfig, args)
    t0 = time.perf_counter()
    ds = collect_from_config(cfg)
    wall = time.perf_counter() - t0
    if not is_main():  # under torchrun every rank returns the dataset; rank 0 alone prints the summary
        return 0
    m = ds.manifest
    print(f"wrote {m['n_rollouts']} rollouts, {m['n_tokens']} tokens in {len(m['parts'])} part(s) to "
          f"{ds.root} ({wall:.1f} s)")
    print_rendered_example(ds.config)
    if "self_check" in m:
        sc = m["self_check"]
        print(f"alignment self-check passed: self-scoring max KL {sc['self_max_kl']:.2g}; one-token teacher "
              f"shift detected (mean |A| {sc['shifted_mean_abs_advantage']:.3g})")
    with_reward = ds.duckdb().execute("SELECT avg(reward), count(reward) FROM rollouts").fetchone()
    if with_reward and with_reward[1]:
        print(f"mean verifier reward: {with_reward[0]:.3f} over {with_reward[1]} rollouts")
    print("\nmain metrics by relative position (token means):")
    table = decile_table(ds)
    with_pd_opts(lambda: print(table.to_string(float_format=lambda v: f"{v:.3f}")))
    return 0


def print_rendered_example(config: dict) -> None:
    """Show what each model saw for the first rollout (also recorded in config.json as rendered_example)."""
    ex = config.get("rendered_example") or {}
    if not ex:
        return
    print(f"\nprompt {ex.get('prompt_id')!r} as the student saw it:\n  {ex.get('student')!r}")
    if ex.get("privileged"):
        print(f"as the teacher saw it (privileged):\n  {ex.get('teacher')!r}")
    else:
        print("the teacher saw the same prompt")


def with_pd_opts(fn) -> None:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20):
        fn()
    sys.stdout.flush()
