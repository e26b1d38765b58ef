"""``drift fit``: metrics by position bin with cluster-bootstrap intervals, decay fits and direction tests.

Thin layer: flags -> :class:`~drift.stats.pipeline.FitConfig` -> :func:`~drift.stats.pipeline.run_fit` -> write
``OUT/bins.parquet``, ``OUT/fits.json``, ``OUT/config.json`` and print a short summary.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from drift.cli import HELP
from drift.cli.groups import add_grouped_arguments
from drift.config import config_from_namespace
from drift.stats.pipeline import FitConfig, check_output, run_fit

DESCRIPTION = """\
Bin per-token metrics of a drift dataset by position in the response, attach cluster-bootstrap confidence
intervals, fit decay curves (exponential, power, logistic, linear, hinge) and compare them by AIC, and test whether
each metric rises, falls, stays flat or cannot be told along the response. drift measures the direction; it never
assumes it, and never claims more than the sample allows.

How it works: every token gets a position bin (relative t/T by default). A bin's value is the mean over all its
tokens, pooled across rollouts. Tokens of one rollout are correlated, and rollouts of one prompt share its
difficulty, so intervals resample whole prompts (--cluster prompt, the default: all rollouts of a prompt together;
--cluster rollout to resample whole rollouts) with replacement, --n-boot times. Curves are fitted to the bin means
with the bootstrap covariance as errors. The direction is Spearman's rho of bin mean vs position, tested against
its null distribution under the data's own error structure (rises / falls when p < 1 - --ci); "flat" needs the
interval of (last - first quintile mean) within +-(--flat-margin x |overall mean|), otherwise "inconclusive".
With fewer than --min-clusters clusters (default 10) a cell is "insufficient" and no model is selected.

Outputs (in --out):
  bins.parquet  one row per metric x cell x bin: metric, by, group, bin, bin_left, bin_right, mean, ci_low,
                ci_high, n_tokens, n_rollouts, then n_clusters, cluster, step, stratum, x, se, sd and quantiles
  fits.json     per metric: every model's params, stderr, ci_low, ci_high, aic, bic, converged; the selected
                model (lowest AIC among converged fits, none below --min-clusters); the direction test with
                n_clusters; per-cell fits under "cells"
  config.json   the resolved flags (cluster, min_clusters, flat_margin...), so the run can be repeated
"""

EPILOG = """\
examples:
  drift fit runs/x --metric kl_reverse --out runs/x/fit
  drift fit runs/x --metric cum_abs_gap_frac --metric kl_reverse --by rel --bins 20 --out runs/x/fit
  drift fit runs/x --metric k3 --by abs_log --bins 30 --strata quantiles:3 --out runs/x/fit_abs
  drift fit runs/x --metric teacher_top1 --group-by finished --models logistic,linear --out runs/x/fit_top1
  drift fit runs/x --metric kl_reverse --group-by teacher_entropy_zone,finished --zones 3 --out runs/x/fit_zones
  drift onset runs/x --out runs/x/onset
  drift fit runs/x --metric kl_reverse --by onset --onsets runs/x/onset/onsets.parquet --onset-window 32 \
      --width 4 --out runs/x/fit_onset

Cells: --strata splits rollouts by response length (a late position exists only in long rollouts, so length
confounds position; quantile strata whose edges collapse, e.g. at a length cap, are merged),
--group-by splits by a column's values, --step each keeps scoring steps apart. The pooled cell (all strata and
groups) is always reported too and is the one at the top level of fits.json.

Token classes (--group-by, combine with columns): teacher_entropy_zone (quantile zone of teacher_entropy: --zones
Z, default 3 = low/mid/high; the cuts are exact quantiles of the binned tokens, recorded in config.json and
printed), low_student_logprob (student_logprob < ln(--low-prob), default p = 0.1: the student found its own
token unlikely), teacher_mass_zone (zones of teacher_mass_student_topk, the teacher's mass on the student's
top-k; full-vocabulary scoring of current drift writes it). A class splits tokens; clusters stay prompts.

--by onset: tokens binned by offset t - onset (tokens) from their rollout's divergence onset (onsets.parquet of
`drift onset`, joined on run_id, step, prompt_id, sample_id) in bins of --width (default 4) over
[-W, +W) (--onset-window W, default 32). Rollouts with a null onset (never leave) are excluded and counted;
a rollout missing from the file is an error. No curve fits on this axis: bins with intervals, the direction
test across the window, and the contrast after minus before the onset with a cluster-bootstrap interval.
"""

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("output", ("out", "if_exists")),
    ("binning", ("by", "bins", "width", "max_position", "strata", "group_by", "step", "steps", "margins",
                 "quantiles")),
    ("token classes (--group-by)", ("zones", "low_prob")),
    ("onset axis (--by onset)", ("onsets", "onset_window")),
    ("uncertainty", ("cluster", "min_clusters", "n_boot", "ci", "seed")),
    ("fitting", ("models", "errors", "fit_x", "direction", "flat_margin")),
    ("resources", ("memory_limit", "threads", "engine")),
)


def _metric_list(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``fit`` subcommand."""
    parser = subparsers.add_parser(
        "fit", help=HELP["fit"],
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    help_of = {f.name: f.metadata["help"] for f in dataclasses.fields(FitConfig)}
    parser.add_argument("dataset", metavar="DATASET", help=help_of["dataset"])
    parser.add_argument("--metric", dest="metric", action="append", type=_metric_list, required=True,
                        metavar="M", help=help_of["metric"] + " (numeric token columns, e.g. kl_reverse, k3, "
                        "cum_abs_gap_frac, teacher_top1)")
    add_grouped_arguments(parser, FitConfig, _GROUPS, skip=("dataset", "metric"))
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``drift fit`` from parsed flags; returns the exit code."""
    metrics = tuple(m for chunk in args.metric for m in chunk)
    cfg = config_from_namespace(FitConfig, args, dataset=args.dataset, metric=metrics)
    check_output(cfg.out, cfg.if_exists)  # fail before the work, not after
    run = run_fit(cfg)
    out = run.write()
    print(run.summary())
    print(f"wrote {out / 'bins.parquet'}, {out / 'fits.json'}, {out / 'config.json'}")
    return 0
