"""Calibration of drift's statistics by simulation: bin-interval coverage, direction-test false calls, small n.

Thin driver over :func:`drift.synthetic.clustered_bin_stats` (the generator) and :mod:`drift.stats` (the methods under
test), working from sufficient statistics directly so each cell of >= 400 seeded replicates takes seconds::

    .venv/bin/python scripts/calibrate_stats.py                 # 400 replicates per cell (the table in docs)
    .venv/bin/python scripts/calibrate_stats.py --reps 100      # quicker

Cells (each replicate is a fresh seeded dataset):

- coverage: fraction of nominal-95% bin-mean intervals that cover the true bin mean, for intra-prompt correlation
  {0 (iid), 0.5} x {1, 4} rollouts per prompt; ``prompt`` = the cluster bootstrap of ``drift fit`` (prompts resampled,
  expanded percentile), ``rollout-pct`` = the old method (rollouts resampled, percentile interval).
- false calls: fraction of "rises"/"falls" verdicts on a metric whose true bin means are flat, with iid, AR(0.9) and
  zero-drift random-walk token noise, at nominal 5%; ``bootstrap`` = :func:`drift.stats.direction_from_stats`,
  ``old permutation`` = the removed bin-mean permutation test (re-implemented here for comparison only).
- small n: with fewer clusters than ``--min-clusters`` the verdict on a strong trend is ``insufficient``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from drift.stats.bootstrap import cluster_bootstrap_ratio
from drift.stats.direction import direction_from_stats, spearman_rows
from drift.synthetic import clustered_bin_stats

__all__ = ["coverage_cell", "false_call_cell", "insufficient_cell", "main", "old_permutation_calls"]

TREND = {"family": "linear", "params": {"a": 1.0, "b": 0.5}}
FLAT = {"family": "linear", "params": {"a": 1.0, "b": 0.0}}


def coverage_cell(icc: float, rollouts_per_prompt: int, *, reps: int = 400, n_prompts: int = 30, n_bins: int = 10,
                  n_boot: int = 400, seed0: int = 0) -> dict[str, float]:
    """Coverage of nominal-95% bin intervals: prompt clusters (expanded) and the old rollout percentile interval."""
    hit = {"prompt": 0, "rollout-pct": 0}
    total = 0
    for i in range(reps):
        d = clustered_bin_stats(n_prompts, rollouts_per_prompt, n_bins, icc=icc, seed=seed0 + i, **TREND)
        new = cluster_bootstrap_ratio(d["sums"], d["counts"], n_boot, seed=i, interval="expanded")
        old = cluster_bootstrap_ratio(d["rollout_sums"], d["rollout_counts"], n_boot, seed=i, interval="percentile")
        truth = d["truth"]
        hit["prompt"] += int(np.sum((new.ci_low <= truth) & (truth <= new.ci_high)))
        hit["rollout-pct"] += int(np.sum((old.ci_low <= truth) & (truth <= old.ci_high)))
        total += n_bins
    return {k: v / total for k, v in hit.items()}


def old_permutation_calls(mean_B: np.ndarray, *, n: int, alpha: float, rng: np.random.Generator) -> bool:
    """The removed test: shuffle bin means across positions; a direction is called when ``p < alpha``."""
    x = np.arange(len(mean_B), dtype=float)
    rho = float(spearman_rows(x, mean_B[None, :])[0])
    perms = np.argsort(rng.random((n, len(mean_B))), axis=1)
    null = spearman_rows(x, mean_B[perms])
    p = (1 + np.sum(np.abs(null) >= abs(rho) - 1e-12)) / (n + 1)
    return bool(p < alpha)


def false_call_cell(noise: str, *, reps: int = 400, n_prompts: int = 30, rollouts_per_prompt: int = 4,
                    n_bins: int = 20, n_boot: int = 400, alpha: float = 0.05, seed0: int = 10_000,
                    old: bool = True) -> dict[str, float]:
    """Verdict rates of the direction test on a flat metric with ``noise`` token noise (see the module docs)."""
    counts: dict[str, int] = {"rises": 0, "falls": 0, "flat": 0, "inconclusive": 0, "insufficient": 0}
    old_calls = 0
    rng = np.random.default_rng(seed0)
    for i in range(reps):
        d = clustered_bin_stats(n_prompts, rollouts_per_prompt, n_bins, noise=noise, icc=0.5, seed=seed0 + i,
                                **FLAT)
        res = direction_from_stats(d["sums"], d["counts"], n=n_boot, seed=i, alpha=alpha)
        counts[res.verdict] += 1
        if old:
            old_calls += old_permutation_calls(d["sums"].sum(0) / d["counts"].sum(0), n=n_boot, alpha=alpha, rng=rng)
    out = {k: v / reps for k, v in counts.items()}
    out["false_calls"] = out["rises"] + out["falls"]
    if old:
        out["old_permutation"] = old_calls / reps
    return out


def insufficient_cell(n_prompts: int, *, reps: int = 400, min_clusters: int = 10, n_bins: int = 20,
                      n_boot: int = 200, seed0: int = 50_000) -> float:
    """Fraction of ``insufficient`` verdicts on a strong trend with ``n_prompts`` clusters."""
    hits = 0
    for i in range(reps):
        d = clustered_bin_stats(n_prompts, 4, n_bins, seed=seed0 + i, family="linear", params={"a": 1.0, "b": 2.0})
        res = direction_from_stats(d["sums"], d["counts"], n=n_boot, seed=i, min_clusters=min_clusters)
        hits += res.verdict == "insufficient"
    return hits / reps


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    return fn(), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Run every cell and print the calibration table (Markdown)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=400, help="seeded replicates per cell (default 400)")
    ap.add_argument("--n-boot", type=int, default=400, help="bootstrap resamples per replicate (default 400)")
    args = ap.parse_args(argv)
    R, nb = args.reps, args.n_boot
    print(f"# drift statistics calibration ({R} seeded replicates per cell, {nb} bootstrap resamples each)\n")
    print("## Bin-mean interval coverage (nominal 0.95, target >= 0.90); 10 relative bins, linear truth\n")
    print("| intra-prompt corr. | rollouts/prompt | prompts | prompt clusters, expanded (new) | "
          "rollouts, percentile (old) | s |")
    print("|---|---|---|---|---|---|")
    for icc, m, k in ((0.0, 1, 30), (0.0, 4, 30), (0.5, 1, 30), (0.5, 4, 30), (0.5, 4, 10)):
        cov, s = _timed(lambda icc=icc, m=m, k=k: coverage_cell(icc, m, reps=R, n_prompts=k, n_boot=nb))
        print(f"| {icc:.1f} | {m} | {k} | {cov['prompt']:.3f} | {cov['rollout-pct']:.3f} | {s:.1f} |")
    print("\n## Direction test on a flat metric (nominal 5%, target false calls <= 0.08); 30 prompts x 4 rollouts, "
          "intra-prompt corr. 0.5, 20 bins\n")
    print("| token noise | false calls (new) | flat | inconclusive | old permutation false calls | s |")
    print("|---|---|---|---|---|---|")
    for noise, label in (("iid", "iid"), ("ar", "AR(0.9)"), ("walk", "zero-drift random walk")):
        r, s = _timed(lambda noise=noise: false_call_cell(noise, reps=R, n_boot=nb))
        print(f"| {label} | {r['false_calls']:.3f} | {r['flat']:.3f} | {r['inconclusive']:.3f} | "
              f"{r['old_permutation']:.3f} | {s:.1f} |")
    print("\n## Below --min-clusters (10): strong trend, 4 rollouts per prompt\n")
    print("| prompts | insufficient | s |")
    print("|---|---|---|")
    for k in (1, 3, 9):
        frac, s = _timed(lambda k=k: insufficient_cell(k, reps=R))
        print(f"| {k} | {frac:.3f} | {s:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
