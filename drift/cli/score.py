"""``drift score``: score rollouts that already exist with a (new) student and a teacher."""

from __future__ import annotations

import argparse
import time

from drift.cli import HELP
from drift.collect.config import ScoreConfig
from drift.config import add_config_arguments, config_from_namespace

DESCRIPTION = """\
Score existing rollouts without sampling: a drift dataset's rollouts (e.g. to re-score them with a later student
checkpoint, labelled --step), or a jsonl of responses produced elsewhere (prompt + response text, or prompt_ids +
response_ids). Writes the same OUT/tokens/ + OUT/rollouts/ layout as `drift collect`.

examples:
  drift score --rollouts runs/x --student ckpt/step-200 --teacher PATH --step 200 --out runs/x-200
  drift score --rollouts responses.jsonl --student PATH --teacher PATH --out runs/ext
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help=HELP["score"],
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, ScoreConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from drift.collect.pipeline import score_from_config
    from drift.runtime.distributed import is_main

    cfg = config_from_namespace(ScoreConfig, args)
    t0 = time.perf_counter()
    ds = score_from_config(cfg)
    if not is_main():  # under torchrun every rank returns the dataset; rank 0 alone prints the summary
        return 0
    m = ds.manifest
    print(f"scored {m['n_rollouts']} rollouts, {m['n_tokens']} tokens at step {cfg.step} into {ds.root} "
          f"({time.perf_counter() - t0:.1f} s)")
    from drift.cli.collect import print_rendered_example

    print_rendered_example(ds.config)
    return 0
