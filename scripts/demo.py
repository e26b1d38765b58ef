"""The whole drift pipeline on the oracle world, offline, in a few minutes on a laptop CPU; prints where the report is.

    python -m scripts.demo --out runs/demo                        # collect -> probe -> fit -> recommend -> report
    python -m scripts.demo --out /tmp/demo --max-rollouts 32 --continuations 1 --n-boot 200   # smoke run (~30 s)

Steps, all through library calls (the same ones the CLI makes):

1. collect: ``drift collect --preset toy``: the shipped student samples 4 responses to each of 128 held-out
   translate-copy prompts; student and teacher score every token (the dataset is ``OUT`` itself).
2. probe: ``drift probe OUT --ratios 0,0.2,...,1 --continuations 2 --max-rollouts 128``: teacher and student
   continue from student prefixes of 32 prompts (4 rollouts each: enough prompt clusters, >= --min-clusters 10,
   for real verdicts; a coarser ratio grid and half the continuations of a full probe keep the demo short).
3. fit: ``drift fit OUT --metric ... --out OUT/fit``: bins, rollout-bootstrap intervals, curve families, direction.
4. recommend: ``drift schedule recommend OUT --out OUT/schedule.json``: a schedule from the probe evidence.
5. report: ``drift report OUT``: ``OUT/report.html`` (self-contained), ``OUT/report.md``, ``OUT/report_files/``.

Every step overwrites its own outputs in ``OUT`` (and nothing else), so the demo can be rerun into the same folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIT_METRICS = ("kl_reverse", "k3", "cum_abs_gap_frac", "teacher_top1", "oracle_teacher_correct")


def _step(i: int, n: int, what: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    print(f"\n[{i}/{n}] {what}", flush=True)
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    print(f"[{i}/{n}] done in {wall:.1f} s", flush=True)
    return out, wall


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder: the dataset, probe/, fit/, schedule.json and "
                   "report.html (default: runs/demo)")
    p.add_argument("--ratios", default="0,0.2,...,1", help="probe prefix ratios (default: 0 to 1 by 0.2)")
    p.add_argument("--continuations", type=int, default=2, help="probe continuations per model and cut (default: 2)")
    p.add_argument("--max-rollouts", type=int, default=128, help="rollouts probed (default: 128 of 512 = 32 prompts; "
                   "fewer than 40 rollouts = 10 prompts give 'insufficient')")
    p.add_argument("--n-boot", type=int, default=1000, help="rollout-bootstrap resamples (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and bootstrap (default: 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the preset's 1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from drift.collect.config import CollectConfig
    from drift.collect.pipeline import collect_from_config
    from drift.collect.summary import decile_table
    from drift.config import config_from_namespace
    from drift.presets import preset_values
    from drift.probe.config import ProbeConfig, parse_ratios
    from drift.probe.run import run_probe
    from drift.report import ReportConfig, build_report
    from drift.schedules.recommend import RecommendConfig, recommend_from_config
    from drift.stats import FitConfig, run_fit

    out = Path(args.out)
    progress = not args.no_progress
    threads = {"num_threads": args.threads} if args.threads else {}
    n = 5
    t_all = time.perf_counter()
    times: dict[str, float] = {}
    print(f"drift demo: the oracle world (data/oracle), everything written to {out}/")

    ccfg = config_from_namespace(CollectConfig, argparse.Namespace(
        **{**preset_values("toy"), **threads}, preset="toy", out=str(out), seed=args.seed, if_exists="overwrite",
        progress=progress))
    ds, times["collect"] = _step(1, n, "collect: student samples, student and teacher score every token",
                                 lambda: collect_from_config(ccfg))
    print(f"      {ds.manifest['n_rollouts']} rollouts, {ds.manifest['n_tokens']} tokens; main metrics by relative "
          "position (token means):")
    table = decile_table(ds).to_string(float_format=lambda v: f"{v:.3f}")
    print("\n".join("      " + line for line in table.splitlines()))

    pcfg = config_from_namespace(ProbeConfig, argparse.Namespace(
        **threads), dataset=str(out), ratios=parse_ratios(args.ratios), continuations=args.continuations,
        max_rollouts=args.max_rollouts, n_boot=args.n_boot, seed=args.seed, if_exists="overwrite", progress=progress)
    probe, times["probe"] = _step(2, n, f"probe: teacher and student continue from student prefixes (ratios "
                                  f"{args.ratios}, {args.continuations} continuations, {args.max_rollouts} rollouts)",
                                  lambda: run_probe(pcfg))
    print("      " + probe.analysis.teacher_sentence + "; " + probe.analysis.reliability_sentence)

    fcfg = FitConfig(dataset=str(out), metric=FIT_METRICS, out=str(out / "fit"), n_boot=args.n_boot, seed=args.seed,
                     if_exists="overwrite")
    fit, times["fit"] = _step(3, n, "fit: position bins, bootstrap intervals, curve families, direction tests",
                              lambda: run_fit(fcfg))
    fit.write()
    for metric in FIT_METRICS:
        head = fit.headline(metric)
        print(f"      {metric:<24} {head.direction.verdict:<6} best curve: {head.selection.best_name}")

    rcfg = RecommendConfig(dataset=str(out), out=str(out / "schedule.json"), n_boot=args.n_boot, seed=args.seed,
                           force=True)
    (rec, spec, _), times["recommend"] = _step(4, n, "recommend: a token-weight schedule from the probe evidence",
                                               lambda: recommend_from_config(rcfg))
    print(f"      {rec.schedule.describe()}  ({rec.choice}; evidence: {rec.evidence}) -> {spec}")

    report, times["report"] = _step(5, n, "report: one self-contained HTML page with every section",
                                    lambda: build_report(out, ReportConfig(dataset=str(out), n_boot=args.n_boot,
                                                                           seed=args.seed)))
    for sec in report.sections:
        if sec.error:
            print(f"      section {sec.id} FAILED: {sec.error}")
    wall = time.perf_counter() - t_all
    print("\n" + "  ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"  (total {wall:.0f} s)")
    print(f"\nreport:   {report.html.resolve()}\n          open file://{report.html.resolve()} in a browser")
    print(f"summary:  {report.markdown.resolve()}\nfigures:  {report.figures_dir.resolve()}/")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
