"""Reproduce the paper's schedule ablation at small scale on the oracle world.

    python -m scripts.reproduce_ablation --out runs/ablation                 # full: 7 schedules x 3 seeds x 2 losses
    python -m scripts.reproduce_ablation --steps 2 --seeds 1 --out /tmp/abl  # smoke run (seconds)
    python -m scripts.reproduce_ablation --losses sampled --workers 2 --out runs/ablation-sampled

Trains the same student from the same seeds with uniform, prefix-30 mask, suffix-30 mask, IW-OPD (gamma 0.5),
linear decay, the schedule `drift schedule recommend` derives from the untrained student's data, and the fitted
position curve; writes results.md, results.csv, claims.csv, metrics.parquet and figures/ into --out.
"""

from __future__ import annotations

import argparse
import sys

from drift.config import add_config_arguments, config_from_namespace
from drift.train.ablation import AblationConfig, run_ablation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, AblationConfig)
    cfg = config_from_namespace(AblationConfig, parser.parse_args(argv))
    result = run_ablation(cfg)
    print((result.out / "results.md").read_text())
    print(f"\nwrote {result.out}/results.md, results.csv, claims.csv and figures/ in {result.wall_s / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
