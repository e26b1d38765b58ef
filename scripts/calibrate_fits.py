"""Slope-coverage calibration of drift's curve fits under clustered, correlated noise (issue 9, item 4).

    python -m scripts.calibrate_fits                      # R in {10, 20, 80}, 400 replicates per cell (about 1 min)
    python -m scripts.calibrate_fits --reps 100 --clusters 10,40

Simulates R clusters x 20 bins (per-cluster level + AR(1) noise across bins + token noise; drift.synthetic_fits),
bootstraps the clusters like `drift fit`, fits a line, and prints how often the nominal 95% interval of the slope
covers the true slope under the legacy rule (full covariance, Hartlap factor from the bootstrap draws) and the new
rule (drift.stats.fit with n_clusters: full covariance only when R >= 2 x bins, else diagonal errors with sandwich
intervals; t quantiles from R). Then the '16 rollouts, 20 bins' model-selection case.
"""

from __future__ import annotations

import argparse
import sys
import time

from drift.synthetic_fits import coverage_table, hinge_case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", default="10,20,80", help="values of R, comma separated")
    parser.add_argument("--reps", type=int, default=400, help="seeded replicates per cell")
    parser.add_argument("--bins", type=int, default=20)
    parser.add_argument("--n-boot", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hinge-datasets", type=int, default=40, help="datasets of the 16-rollout case (0: skip)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    clusters = tuple(int(v) for v in args.clusters.split(",") if v.strip())
    rows = coverage_table(clusters, args.reps, bins=args.bins, n_boot=args.n_boot, seed=args.seed)
    print(f"slope coverage, nominal 95%, {args.bins} bins, {args.reps} replicates per cell, {args.n_boot} bootstrap "
          "draws (target >= 0.90)\n")
    print("| R | errors (new) | coverage legacy | coverage new (MC se) | mean width legacy | mean width new |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['R']} | {r['errors_new']} | {r['coverage_legacy']:.3f} | {r['coverage_new']:.3f} "
              f"({r['mc_se']:.3f}) | {r['width_legacy']:.3f} | {r['width_new']:.3f} |")
    if args.hinge_datasets:
        h = hinge_case(args.hinge_datasets, bins=args.bins, n_boot=args.n_boot)
        print(f"\n16 clusters, {args.bins} bins, true line, {args.hinge_datasets} datasets: AIC(linear) - AIC(best)\n")
        print("| rule | errors | median | max | share > 10 |")
        print("|---|---|---:|---:|---:|")
        for rule, v in h.items():
            print(f"| {rule} | {v['errors']} | {v['median_delta']:.1f} | {v['max_delta']:.1f} | "
                  f"{v['frac_over_10']:.2f} |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
