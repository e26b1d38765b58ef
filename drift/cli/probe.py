"""``drift probe``: the continuation probe (paper §3.1) and its reliability AUROCs (§9 items 2 and 12).

Thin layer: flags -> :class:`~drift.probe.config.ProbeConfig` -> :func:`~drift.probe.run.run_probe` (writes
``OUT/continuations/``, ``OUT/accuracy.parquet``, ``OUT/auroc.json``, ``OUT/config.json``) -> print a summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from drift.cli import HELP
from drift.cli.groups import add_grouped_arguments
from drift.config import add_config_arguments, config_from_namespace
from drift.probe.config import ProbeConfig, parse_ratios

DESCRIPTION = """\
Cut each student rollout of a drift dataset at prefix ratios, let the teacher and the student each sample k
continuations from the kept prefix, verify them with the task's verifier, and measure how teacher and student
continuation accuracy change with the prefix ratio (the paper's strongest diagnostic: the teacher's accuracy from
student prefixes fell from 44.8% at 0% to 19.1% at 100%).

Cut: keep = floor(ratio * T') response tokens, T' = the response length without its final EOS (ratio 0 = the bare
prompt, 1 = the whole response minus EOS). The teacher continues from its own prompt (privileged, if the dataset
has one) + the kept prefix, the student from its prompt + the same prefix; prefix + continuation is verified.
Budget: max(1, N - keep) new tokens (N = the dataset's max_new_tokens; --budget full gives N).

Outputs (in --out, default DATASET/probe):
  continuations/part-*.parquet  one row per (rollout, ratio, model, continuation): ids, finished, success, the
                                cut's keep / budget, and the token metrics at the cut (rel_position, cum_abs_gap,
                                prefix_logratio, teacher_entropy, topk_overlap, kl_reverse)
  accuracy.parquet              ratio, model (teacher | student | gap), accuracy, ci_low, ci_high, n_rollouts,
                                n_clusters, n_continuations, cluster; cluster-bootstrap intervals (--cluster
                                prompt by default), the gap bootstrapped jointly
  auroc.json                    AUROC [interval] of each reliability predictor, oriented a priori so that higher
                                = better supervision (-t/T, -C_t/C_T, -C_t, +S_t, +S_t/C_T, -H_T, +top-k overlap,
                                -KL), a reversed one reported as a finding; the paired comparison of IW-OPD's
                                -C_t/C_T with -t/T (same prompt / pooled); the direction of teacher accuracy with
                                the ratio; cluster, n_clusters (below --min-clusters: insufficient)
  config.json                   the resolved settings (models, sampling, verifier) so the probe can be repeated
"""

EPILOG = """\
examples:
  drift probe runs/x --ratios 0,0.1,...,1.0 --continuations 4 --out runs/x/probe
  drift probe runs/toy --ratios 0,0.5,1 --continuations 2 --max-rollouts 64
  drift probe runs/x --teacher PATH_OF_ANOTHER_TEACHER --verifier numeric --out runs/x/probe_t2

Models, tokenizer, world, verifier, sampling and max_new_tokens default to what the dataset was collected with
(its config.json). An interrupted probe continues with --if-exists resume.
"""

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("output", ("out", "if_exists", "part_size")),
    ("probe", ("continuations", "max_new_tokens", "budget", "temperature", "top_p", "seed", "max_rollouts",
               "gen_batch_size")),
    ("models and verifier (default: the dataset's)", ("student", "teacher", "tokenizer", "world", "prompts",
                                                      "verifier", "teacher_system_prompt", "chat_template")),
    ("uncertainty", ("n_boot", "ci", "cluster", "min_clusters")),
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``probe`` subcommand."""
    parser = subparsers.add_parser(
        "probe", help=HELP["probe"],
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    help_of = {f.name: f.metadata["help"] for f in dataclasses.fields(ProbeConfig)}
    parser.add_argument("dataset", metavar="DATASET", help=help_of["dataset"])
    parser.add_argument("--ratios", dest="ratios", type=parse_ratios, default=argparse.SUPPRESS,
                        metavar="R,R,...", help=help_of["ratios"])
    names = {f.name for f in dataclasses.fields(ProbeConfig)}
    add_grouped_arguments(parser, ProbeConfig, _GROUPS, skip=("dataset", "ratios", "scoring"))
    unused = {"chunk_size", "max_batch_tokens", "topk", "score_temperature", "self_check"}  # scoring-only knobs
    add_config_arguments(parser, ProbeConfig, exclude=(names - {"scoring"}) | unused)
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Run ``drift probe`` from parsed flags; returns the exit code."""
    from drift.probe.run import run_probe
    from drift.runtime.distributed import is_main

    cfg = config_from_namespace(ProbeConfig, args, dataset=args.dataset)
    t0 = time.perf_counter()
    run = run_probe(cfg)
    wall = time.perf_counter() - t0
    if not is_main():  # under torchrun every rank returns the dataset; rank 0 alone prints the summary
        return 0
    m = run.dataset.manifest
    print(f"wrote {m.get('n_continuations', 0)} continuations in {len(m.get('parts', []))} part(s) to "
          f"{run.dataset.root} ({wall:.1f} s)\n")
    print(run.analysis.summary())
    print(f"\nwrote {run.dataset.root / 'accuracy.parquet'}, {run.dataset.root / 'auroc.json'}, "
          f"{run.dataset.root / 'config.json'}")
    return 0
