"""``drift onset``: where each rollout leaves the teacher's support (a CUSUM change point, no oracle needed).

Thin layer: flags -> :class:`~drift.onset.config.OnsetConfig` -> :func:`~drift.onset.run.run_onset` (writes
``OUT/onsets.parquet``, ``OUT/summary.json``, ``OUT/config.json``) -> print a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from drift.cli import HELP
from drift.cli.groups import add_grouped_arguments
from drift.config import config_from_namespace
from drift.onset.config import OnsetConfig

DESCRIPTION = """\
For every rollout of a drift dataset, find the first response position where it leaves the teacher's support,
from the teacher's scores alone (no oracle columns). Each token gets a surprise x_t (--signal surprisal:
-teacher_logprob, any support with a teacher; rank: log(1 + teacher_rank); excess: surprisal - teacher_entropy),
and a one-sided CUSUM runs along the response:

  S_t = max(0, S_{t-1} + x_t - k),  alarm at the first t with S_t > h,
  onset = the start of the excursion that crossed (1 + the last t' before the alarm with S_t' = 0).

A single very surprising token fires at once (the first wrong token under a near-certain teacher); a sustained
shift accumulates and is dated back to where it began. k and h are calibrated from the dataset's in-support tokens
(those before each onset, iterated): k = max(--k-min, the --k-quantile of their signal), h = max(--h-min, the
1 - --alpha quantile of the largest statistic of simulated null rollouts); --k / --h fix them instead.

Outputs (in --out, default DATASET/onset):
  onsets.parquet  one row per rollout: run_id, step, prompt_id, sample_id, response_len, onset_position (null:
                  never leaves), onset_score (S at the alarm, else the largest S reached), alarm_position
  summary.json    counts, method, parameters, calibration (k, h, their source, rounds, reference quantiles, null
                  alarm rate) and, where the dataset has teacher_rank, the naive first-non-top rule for comparison
  config.json     the resolved flags
"""

EPILOG = """\
examples:
  drift onset runs/toy --out runs/toy/onset
  drift onset runs/x --signal rank --out runs/x/onset_rank
  drift onset runs/x --k 2 --h 4 --out runs/x/onset_fixed --if-exists overwrite

Method, calibration and measured rates: docs/onset.md.
"""

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("output", ("out", "if_exists")),
    ("detector", ("signal", "k", "h")),
    ("calibration", ("k_quantile", "k_min", "h_min", "alpha", "robust_z", "n_null", "rounds", "seed")),
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``onset`` subcommand."""
    parser = subparsers.add_parser(
        "onset", help=HELP["onset"],
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    help_of = {f.name: f.metadata["help"] for f in dataclasses.fields(OnsetConfig)}
    parser.add_argument("dataset", metavar="DATASET", help=help_of["dataset"])
    add_grouped_arguments(parser, OnsetConfig, _GROUPS, skip=("dataset",))
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``drift onset`` from parsed flags; returns the exit code."""
    from drift.onset.run import run_onset

    cfg = config_from_namespace(OnsetConfig, args, dataset=args.dataset)
    run = run_onset(cfg)
    print(run.report())
    print(f"\nwrote {run.out / 'onsets.parquet'}, {run.out / 'summary.json'}, {run.out / 'config.json'}")
    return 0
