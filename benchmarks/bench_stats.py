"""Whole-process benchmark of ``drift fit`` against a pandas baseline, on N token rows (default 10M).

The dataset (drift.synthetic: responses of 200..800 tokens, 500 on average, so 20k rollouts for 10M rows; 4 samples
per prompt, so 5k prompt clusters; parquet parts of ~1M rows) is generated once in a subprocess and cached under
``--cache`` (default ``/tmp/drift-bench-stats``). Then ``--repeats`` rounds of, in this order (so that no task runs
twice in a row):

- ``pandas baseline``: the baseline of issue 12 as a whole process: read ``prompt_id, rel_position, kl_reverse``
  with pandas, group per prompt x bin into sums and counts, 1000 bootstrap resamples of those rows with numpy
  (``rng.integers`` per resample), 2.5/97.5 percentiles;
- ``drift fit``: ``python -m drift fit DATASET --metric kl_reverse --by rel --bins 20`` with its default fits and
  direction test and 1000 resamples, the whole process (interpreter start, imports, writing the outputs);
- ``drift fit --engine ray`` (with ``--ray``): the same on a local Ray (its start-up included).

Wall time is measured around each subprocess, peak RSS is the child's own ``ru_maxrss`` (``os.wait4``; for
``--engine ray`` the driver's only: Ray's workers are other processes). The table gives the best and the median
wall time and the largest peak RSS, with ratios to pandas measured in the same run (the machine may be shared:
only ratios within a run mean anything).

    python -m benchmarks.bench_stats                          # 10M rows (the routine scale)
    python -m benchmarks.bench_stats --rows 100000000 --no-pandas --repeats 1    # memory at 100M rows
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEAN_LENGTH = 500  # responses of 200..800 tokens
ROWS_PER_PART = 1_000_000
SAMPLES_PER_PROMPT = 4


def _generate(path: Path, rows: int, seed: int) -> None:
    """Write the synthetic dataset (in this process: run it as a child so the parent stays small)."""
    from drift.synthetic import synthetic_tokens, write_synthetic_dataset

    n_rollouts = max(SAMPLES_PER_PROMPT, rows // MEAN_LENGTH)
    per_part = max(SAMPLES_PER_PROMPT, ROWS_PER_PART // MEAN_LENGTH)

    def frames():  # type: ignore[no-untyped-def]
        for i, start in enumerate(range(0, n_rollouts, per_part)):
            yield synthetic_tokens("exponential", {"a": 1.0, "tau": 0.2, "c": 0.3},
                                   n_rollouts=min(per_part, n_rollouts - start), length_range=(200, 800),
                                   seed=seed + i, metric="kl_reverse", rollout_offset=start, realistic=False,
                                   samples_per_prompt=SAMPLES_PER_PROMPT)

    write_synthetic_dataset(path, frames(), if_exists="overwrite")


def _pandas_baseline(path: str, bins: int, n_boot: int) -> None:
    """The baseline of issue 12 (in this process): pandas groupby sums and counts, numpy bootstrap, percentiles."""
    import numpy as np
    import pandas as pd

    from drift.store import open_dataset

    df = pd.read_parquet(open_dataset(path).files("tokens"), columns=["prompt_id", "rel_position", "kl_reverse"])
    df["bin"] = np.minimum(np.floor(df["rel_position"].to_numpy() * bins), bins - 1).astype(np.int64)
    g = df.groupby(["prompt_id", "bin"], sort=True)["kl_reverse"].agg(["sum", "count"])
    sums = g["sum"].unstack(fill_value=0.0).to_numpy()
    counts = g["count"].unstack(fill_value=0).to_numpy().astype(np.float64)
    rng = np.random.default_rng(0)
    K = len(sums)
    reps = np.empty((n_boot, sums.shape[1]))
    for b in range(n_boot):
        idx = rng.integers(0, K, size=K)
        reps[b] = sums[idx].sum(axis=0) / counts[idx].sum(axis=0)
    mean = sums.sum(axis=0) / counts.sum(axis=0)
    lo, hi = np.percentile(reps, [2.5, 97.5], axis=0)
    print(json.dumps({"bins": len(mean), "clusters": K, "mean0": float(mean[0]), "lo0": float(lo[0]),
                      "hi0": float(hi[0])}))


def _run(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of one subprocess: its own ``ru_maxrss``, read by ``os.wait4``."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read().decode()[-3000:]}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000, help="token rows (default 10M)")
    p.add_argument("--bins", type=int, default=20, help="relative position bins")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--repeats", type=int, default=3, help="rounds (best of, order alternating)")
    p.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "drift-bench-stats"),
                   help="where the generated dataset is kept between runs")
    p.add_argument("--no-pandas", action="store_true", help="skip the pandas baseline (e.g. at 100M rows)")
    p.add_argument("--ray", action="store_true", help="also time drift fit --engine ray (local Ray)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child == "generate":
        _generate(Path(args.path), args.rows, args.seed)
        return 0
    if args.child == "pandas":
        _pandas_baseline(args.path, args.bins, args.n_boot)
        return 0

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    path = Path(args.cache) / f"ds-{args.rows}-s{args.seed}"
    me = [sys.executable, "-m", "benchmarks.bench_stats", "--rows", str(args.rows), "--bins", str(args.bins),
          "--n-boot", str(args.n_boot), "--seed", str(args.seed), "--path", str(path)]
    if not (path / "manifest.json").exists():
        t0 = time.perf_counter()
        subprocess.run([*me, "--child", "generate"], check=True, env=env)
        print(f"generated {path} in {time.perf_counter() - t0:.0f} s")
    from drift.store import open_dataset

    ds = open_dataset(path)
    size_gb = sum(os.path.getsize(f) for f in ds.files("tokens")) / 1e9
    print(f"dataset: {ds.manifest['n_tokens']:,} token rows, {ds.manifest['n_rollouts']:,} rollouts, "
          f"{len(ds.files('tokens'))} parts, {size_gb:.2f} GB of token parquet")
    out = Path(tempfile.mkdtemp(prefix="drift-bench-fit-"))
    fit = [sys.executable, "-m", "drift", "fit", str(path), "--metric", "kl_reverse", "--by", "rel", "--bins",
           str(args.bins), "--n-boot", str(args.n_boot), "--if-exists", "overwrite"]
    tasks: dict[str, list[str]] = {}
    if not args.no_pandas:
        tasks["pandas baseline"] = [*me, "--child", "pandas"]
    tasks["drift fit"] = [*fit, "--out", str(out / "duckdb")]
    if args.ray:
        tasks["drift fit --engine ray"] = [*fit, "--out", str(out / "ray"), "--engine", "ray"]
    results: dict[str, list[dict[str, float]]] = {t: [] for t in tasks}
    try:
        for r in range(args.repeats):
            # the same order every round: no task runs twice in a row (a process started right after another run
            # of itself finds the memory it freed and ran up to 2x faster: pandas did, 2.1 s vs 3.5-4 s)
            for name in tasks:
                res = _run(tasks[name], env)
                results[name].append(res)
                print(f"  round {r + 1}: {name:<24} {res['wall_s']:6.2f} s {res['peak_rss_mb']:7.0f} MB", flush=True)
        if args.ray:  # the two engines wrote their bins: they must be identical
            import pandas as pd

            a, b = (pd.read_parquet(out / e / "bins.parquet") for e in ("duckdb", "ray"))
            print("engine ray bins identical to duckdb:", a.equals(b))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    best = {t: min(x["wall_s"] for x in v) for t, v in results.items()}
    median = {t: statistics.median(x["wall_s"] for x in v) for t, v in results.items()}
    rss = {t: max(x["peak_rss_mb"] for x in v) for t, v in results.items()}
    ref = "pandas baseline" if "pandas baseline" in tasks else None
    print(f"\n| task | wall s, best of {args.repeats} | wall s, median | peak RSS MB (max) | best vs pandas | "
          "median vs pandas | RSS vs pandas |")
    print("|---|---|---|---|---|---|---|")
    for t in tasks:
        ratios = (f"{best[t] / best[ref]:.2f}x | {median[t] / median[ref]:.2f}x | {rss[t] / rss[ref]:.2f}x" if ref
                  else "- | - | -")
        print(f"| {t} | {best[t]:.2f} | {median[t]:.2f} | {rss[t]:.0f} | {ratios} |")
    print(f"\n{ds.manifest['n_tokens']:,} rows, {args.bins} rel bins, {args.n_boot} resamples; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
