"""``drift report``: one self-contained HTML report of a drift dataset (plus Markdown and figure files).

Thin layer: flags -> :class:`~drift.report.config.ReportConfig` -> :func:`~drift.report.build.build_report` -> print
the findings and where the files are.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from drift.cli import HELP
from drift.cli.groups import add_grouped_arguments
from drift.config import config_from_namespace

DESCRIPTION = """\
Write everything drift measured about one dataset as a single HTML page that opens in any browser, offline
(figures embedded, no server, no network), with a Markdown summary and every figure as PNG/SVG beside it.

It works on a bare `drift collect` dataset: bins with rollout-bootstrap intervals, direction tests, curve fits
and a recommended schedule are computed here. Sections are added when other stages' outputs exist:
  DATASET/fit/        `drift fit`: its fits.json is shown instead of fitting again
  DATASET/probe/      `drift probe`: continuation accuracy by prefix ratio, the gap, predictor AUROCs
  DATASET/schedule.json   `drift schedule recommend --out DATASET/schedule.json`: shown with its rationale
  several steps       a dataset with several `step` values, or --train RUNDIR: drift over training
  DATASET/onset/onsets.parquet   `drift onset` (or --onsets PATH): the token view marks each rollout's onset

Sections: run metadata; metrics by relative and absolute position with response-length strata; direction tests;
fitted curves with the model-selection table; prefix log-likelihood and cumulative-gap trajectories of sample
rollouts; a token view (a few rollouts drawn token by token, coloured by A_t, kl_reverse or k3, the onset marked,
the teacher's preferred token on hover); continuation probe; drift over training; recommended schedule (shape,
rationale, verl/TRL/tinker exports). A section whose inputs are missing says which command produces them.

Outputs: FILE.html, FILE.md and FILE_files/ (PNG and SVG of every figure, and the schedule.json shown).
"""

EPILOG = """\
examples:
  drift report runs/toy                                   # writes runs/toy/report.html (+ .md, report_files/)
  drift report runs/toy --out reports/toy.html --n-boot 200
  drift report runs/x --probe runs/x/probe_t2 --metrics kl_reverse,k3,cum_abs_gap_frac --bins 40
  drift report runs/train-iw                             # a `drift train` run: its last drift/step-* dataset,
                                                         # with drift over all collected steps
  drift report runs/x --train runs/train-iw --schedule iw.json
  drift report runs/x --onsets runs/x/onset/onsets.parquet --token-rollouts 6

Typical pipeline on the oracle world (python -m scripts.demo runs all of it):
  drift collect --preset toy --out runs/toy
  drift probe runs/toy --ratios 0,0.2,...,1 --continuations 2
  drift fit runs/toy --metric kl_reverse,cum_abs_gap_frac --out runs/toy/fit
  drift schedule recommend runs/toy --out runs/toy/schedule.json
  drift report runs/toy
"""

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("output", ("out", "title", "svg", "dpi")),
    ("inputs (found next to DATASET when not given)", ("probe", "fit", "train", "schedule", "onsets")),
    ("statistics", ("metrics", "bins", "strata", "n_boot", "seed", "sample_rollouts", "token_rollouts", "gamma",
                    "clip_band")),
    ("behaviour", ("strict",)),
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand."""
    from drift.report.config import ReportConfig

    parser = subparsers.add_parser(
        "report", help=HELP["report"],
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    help_of = {f.name: f.metadata["help"] for f in dataclasses.fields(ReportConfig)}
    parser.add_argument("dataset", metavar="DATASET", help=help_of["dataset"])
    add_grouped_arguments(parser, ReportConfig, _GROUPS, skip=("dataset",))
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``drift report`` from parsed flags; returns the exit code (1 when a section failed)."""
    from drift.report.build import build_report
    from drift.report.config import ReportConfig

    cfg = config_from_namespace(ReportConfig, args, dataset=args.dataset)
    result = build_report(cfg.dataset, cfg)
    print(result.summary())
    print(f"\nopen it: file://{result.html.resolve()}")
    return 1 if result.errors else 0
