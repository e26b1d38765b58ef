"""Scale benchmark of drift.stats: bin_metric with 1000 rollout-bootstrap resamples on N token rows.

Writes a synthetic drift dataset of N rows (parquet parts, via drift.synthetic) into a temp folder, then measures,
each in a fresh subprocess so peak memory is its own:

- ``bin_metric``: 20 relative bins of one metric with 1000 cluster-bootstrap resamples (drift.stats.bin_metric);
- ``duckdb_mean``: the baseline, a plain DuckDB GROUP BY mean per bin over the same files (no intervals);
- ``pandas``: read the two columns into pandas and groupby (only up to --pandas-max-rows rows).

It prints wall time, peak RSS and the ratio to the DuckDB baseline.

    python -m benchmarks.bench_stats --rows 200000           # a quick CPU check (seconds)
    python -m benchmarks.bench_stats --rows 10000000         # the routine scale
    python -m benchmarks.bench_stats --rows 100000000 --pandas-max-rows 0   # must fit in a few GB
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

MEAN_LENGTH = 1100  # responses of 200..2000 tokens


def _frames(rows: int, rows_per_part: int, seed: int) -> Iterator[object]:
    from drift.synthetic import synthetic_tokens

    n_rollouts = max(1, rows // MEAN_LENGTH)
    per_part = max(1, rows_per_part // MEAN_LENGTH)
    for i, start in enumerate(range(0, n_rollouts, per_part)):
        yield synthetic_tokens("exponential", {"a": 1.0, "tau": 0.2, "c": 0.3}, n_rollouts=min(per_part,
                               n_rollouts - start), length_range=(200, 2000), seed=seed + i, metric="kl_reverse",
                               rollout_offset=start, realistic=False)


def _child(task: str, path: str, args: argparse.Namespace) -> dict[str, float]:
    t0 = time.perf_counter()
    if task == "bin_metric":
        from drift.stats import BinSpec, bin_metric

        table = bin_metric(path, "kl_reverse", BinSpec(by="rel", bins=args.bins, quantiles=args.quantiles),
                           n_boot=args.n_boot, memory_limit=args.memory_limit, threads=args.threads)
        n = int(table["n_tokens"].sum())
    elif task == "duckdb_mean":
        import duckdb

        from drift.store import open_dataset

        cfg = {"memory_limit": args.memory_limit, "preserve_insertion_order": False}
        if args.threads:
            cfg["threads"] = args.threads
        con = open_dataset(path).duckdb(duckdb.connect(config=cfg))
        B = args.bins
        rows = con.sql(f"SELECT least(CAST(floor(rel_position * {B}) AS BIGINT), {B - 1}) AS b, avg(kl_reverse), "
                       "count(*) FROM tokens GROUP BY b").fetchall()
        n = int(sum(r[2] for r in rows))
    elif task == "pandas":
        import numpy as np
        import pandas as pd

        from drift.store import open_dataset

        df = pd.read_parquet(open_dataset(path).files("tokens"), columns=["rel_position", "kl_reverse"])
        b = np.minimum(np.floor(df["rel_position"].to_numpy() * args.bins), args.bins - 1)
        n = int(df.groupby(b)["kl_reverse"].agg(["mean", "size"])["size"].sum())
    else:
        raise ValueError(task)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "peak_rss_mb": _peak_rss_mb(), "n_tokens": n}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process: VmHWM (reset by exec, unlike ru_maxrss, which a child can inherit
    from the parent that forked it), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _run_child(task: str, path: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchmarks.bench_stats", "--child", task, "--path", str(path), "--bins",
           str(args.bins), "--n-boot", str(args.n_boot), "--memory-limit", args.memory_limit, "--quantiles",
           args.quantiles] + (["--threads", str(args.threads)] if args.threads else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{task} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000, help="token rows to generate (default 10M)")
    p.add_argument("--rows-per-part", type=int, default=2_000_000, help="rows per parquet part")
    p.add_argument("--bins", type=int, default=20, help="relative position bins")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--quantiles", default="auto", help="bin quantiles: auto, exact, approx, none")
    p.add_argument("--memory-limit", default="4GB", help="DuckDB memory limit")
    p.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    p.add_argument("--pandas-max-rows", type=int, default=20_000_000, help="skip the pandas baseline above this")
    p.add_argument("--dir", default=None, help="where to write the dataset (default: a temp folder, removed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.path, args)))
        return 0

    from drift.synthetic import write_synthetic_dataset

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="drift-bench-"))
    path = base / "ds"
    try:
        t0 = time.perf_counter()
        ds = write_synthetic_dataset(path, _frames(args.rows, args.rows_per_part, args.seed), if_exists="overwrite")
        gen = time.perf_counter() - t0
        size_gb = sum(os.path.getsize(f) for f in ds.files("tokens")) / 1e9
        print(f"dataset: {ds.manifest['n_tokens']:,} token rows, {ds.manifest['n_rollouts']:,} rollouts, "
              f"{len(ds.files('tokens'))} parts, {size_gb:.2f} GB of token parquet, written in {gen:.1f} s")
        tasks = ["duckdb_mean", "bin_metric"] + (["pandas"] if args.rows <= args.pandas_max_rows else [])
        results = {t: _run_child(t, path, args) for t in tasks}
        ref = results["duckdb_mean"]
        print(f"\n{'task':<12} {'rows':>13} {'wall s':>8} {'peak RSS MB':>12} {'wall x':>7} {'RSS x':>6}")
        for t, r in results.items():
            print(f"{t:<12} {r['n_tokens']:>13,} {r['wall_s']:>8.1f} {r['peak_rss_mb']:>12.0f} "
                  f"{r['wall_s'] / ref['wall_s']:>7.1f} {r['peak_rss_mb'] / ref['peak_rss_mb']:>6.1f}")
        print(f"\nbin_metric: {args.bins} rel bins, {args.n_boot} rollout-bootstrap resamples, quantiles="
              f"{args.quantiles}; DuckDB memory_limit={args.memory_limit}, threads={args.threads or 'all'}; "
              f"{os.cpu_count()} CPUs")
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
