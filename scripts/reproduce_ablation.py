"""Reproduce the paper's schedule ablation, with negative controls, at small scale on an oracle world.

    python -m scripts.reproduce_ablation --pilot --out runs/pilot-oracle               # pilot: uniform, 4 seeds
    python -m scripts.reproduce_ablation --steps-from runs/pilot-oracle --out runs/ablation-oracle
    python -m scripts.reproduce_ablation --pilot --world data/plan --out runs/pilot-plan
    python -m scripts.reproduce_ablation --world data/plan --steps-from runs/pilot-plan --out runs/ablation-plan
    python -m scripts.reproduce_ablation --steps 2 --seeds 1 --out /tmp/abl            # smoke run (a minute)
    python -m scripts.reproduce_ablation --out runs/ablation --analyze-only            # re-analyse, re-write
    python -m scripts.ablation_verdicts docs/ablation/oracle docs/ablation/plan        # verdicts side by side

Trains the same student from the same seeds with uniform, prefix-30 mask, suffix-30 mask, IW-OPD (gamma 0.5),
linear decay, the schedule `drift schedule recommend` derives from the untrained student's data (trained only when its
spec differs from the others'), and the fitted position curve; each position schedule's shuffled control
(`<name>_shuffled`: its weights permuted per rollout) and `uniform_fixed_adv` (A_t replaced by its batch mean). The
sampled loss runs for --seeds x --steps (steps from the pilot's measured plateau with --steps-from); --losses
sampled,full_kl adds the shorter full-KL check. Writes results.md, results.csv, claims.csv, metrics.parquet and
figures/ into --out; a pilot writes pilot.json (seconds per run-step, the plateau and the steps it implies).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from drift.config import add_config_arguments, config_from_namespace
from drift.train.ablation import AblationConfig, budget_plan, run_ablation


def main(argv: list[str] | None = None) -> int:
    """Run the ablation (or its pilot), write its report and print ``results.md``; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, AblationConfig)
    cfg = config_from_namespace(AblationConfig, parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not cfg.analyze_only:
        planned, pilot = (cfg.as_pilot(), None) if cfg.pilot else cfg.with_pilot_steps()
        print("\n".join(["planned grid (before removing aliases):", *budget_plan(planned, pilot=pilot)["text"]]),
              flush=True)
    result = run_ablation(cfg)
    # imported once the runs are on disk (metrics.parquet), so a report that cannot be built loses no training:
    # fix it and re-write it with --analyze-only
    from drift.report.ablation import write_ablation_report

    write_ablation_report(result)
    print((result.out / "results.md").read_text())
    if result.pilot is not None and cfg.pilot:
        p = result.pilot
        print(json.dumps({k: p[k] for k in ("seconds_per_run_step", "cpu_seconds_per_run_step", "plateau_step",
                                            "reached", "ablation_steps", "rule")}, indent=2))
    print(f"\nwrote {result.out}/results.md, results.csv, claims.csv and figures/ in {result.wall_s / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
