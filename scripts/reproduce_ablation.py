"""Reproduce the paper's schedule ablation at small scale on the oracle world.

    python -m scripts.reproduce_ablation --out runs/ablation                 # full: ~35-45 min on 2 cores
    python -m scripts.reproduce_ablation --steps 2 --seeds 1 --out /tmp/abl  # smoke run (seconds)
    python -m scripts.reproduce_ablation --losses sampled --workers 2 --out runs/ablation-sampled
    python -m scripts.reproduce_ablation --out runs/ablation --analyze-only  # re-analyse, re-write the report

Trains the same student from the same seeds with uniform, prefix-30 mask, suffix-30 mask, IW-OPD (gamma 0.5),
linear decay, the schedule `drift schedule recommend` derives from the untrained student's data (trained only when its
spec differs from the others'), and the fitted position curve: the sampled loss for --seeds x --steps, then a
shorter full-KL check; writes results.md, results.csv, claims.csv, metrics.parquet and figures/ into --out.
"""

from __future__ import annotations

import argparse
import logging
import sys

from drift.config import add_config_arguments, config_from_namespace
from drift.train.ablation import AblationConfig, budget_plan, run_ablation


def main(argv: list[str] | None = None) -> int:
    """Run the ablation, write its report and print ``results.md``; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, AblationConfig)
    cfg = config_from_namespace(AblationConfig, parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not cfg.analyze_only:
        print("\n".join(["planned grid (before removing aliases):", *budget_plan(cfg)["text"]]), flush=True)
    result = run_ablation(cfg)
    # imported once the runs are on disk (metrics.parquet), so a report that cannot be built loses no training:
    # fix it and re-write it with --analyze-only
    from drift.report.ablation import write_ablation_report

    write_ablation_report(result)
    print((result.out / "results.md").read_text())
    print(f"\nwrote {result.out}/results.md, results.csv, claims.csv and figures/ in {result.wall_s / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
