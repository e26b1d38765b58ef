"""``drift fit --engine ray``: the per-cluster sums of a dataset's parts computed by Ray tasks, merged exactly.

The statistics behind every bin mean, interval, fit and direction test are sums per cluster and bin, and sums add.
So the parts of a dataset are split into contiguous shards; each Ray task runs the in-process engine's query
(:func:`drift.stats.binsql.rollout_sql`) over its shard with its own DuckDB: one row per rollout and bin, the
scan of every token done in the tasks. The driver adds those rows up per cluster in rollout-key order and numbers
the clusters in sorted key order (:func:`drift.stats.fold.fold_rollouts`), exactly what the in-process engine does
with the rows of its own shards (one per thread), so counts, sums, means, bootstrap intervals (same clusters, same
resampling seeds), fits and direction tests are **bit-identical** to ``--engine duckdb``. The driver holds
rollouts x bins rows (about 100 bytes each: 40 MB for 10M tokens of 20k rollouts at 20 bins), never tokens.

What is not a sum is computed once, not merged:

- the plan (distinct steps, the maximum position of absolute bins, cut points of ``quantiles:k`` strata): a first
  pass on the driver, the same :func:`~drift.stats.binsql.plan_bins` as in-process (it reads ``step``,
  ``position`` and ``response_len`` only, and nothing at all for the steps when the parquet statistics tell);
- the quantile cut points of derived token classes (``--group-by teacher_entropy_zone``: :mod:`drift.stats.classes`)
  and the check of a ``--by onset`` file: the same first pass on the driver; the cuts travel to every task as
  literals in the SQL of the source's derived columns, and the onsets file as a join of its view, so every shard
  assigns the same zones and offsets;
- the per-bin token quantiles ``q10..q90``: one Ray task runs :func:`~drift.stats.binsql.quantile_sql` over every
  part, concurrently with the shards: exact and identical to in-process with ``quantiles="exact"`` (the default up
  to 20M rows), DuckDB's t-digest (approximate, in both engines) with ``"approx"``; ``quantiles="none"`` skips it.

A rollout's tokens must live in one part (every drift writer makes them so); the driver checks that no rollout
and bin comes back from two tasks and raises :class:`~drift.errors.DatasetError` otherwise.

Running on a cluster: ``ray.init()`` connects to ``RAY_ADDRESS`` when it is set (``RAY_ADDRESS=ray://head:10001``
or ``auto``) and starts a local Ray otherwise; drift calls it only when Ray is not initialized yet, and shuts down
only a Ray it started. Workers need ``drift-opd`` installed and the dataset at the same path (a shared filesystem).
Each task reserves ``threads`` CPUs (default 1) and gives its DuckDB that many threads and ``memory_limit``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import pyarrow as pa

from drift.errors import ConfigError
from drift.stats.binsql import Plan, fetch_arrow, plan_bins, quantile_sql, rollout_sql, shard_parts
from drift.stats.fold import fold_rollouts
from drift.stats.reader import TokenSource

__all__ = ["TASKS_PER_CPU", "aggregate_ray", "shard_parts"]

log = logging.getLogger(__name__)

TASKS_PER_CPU = 4  # default tasks: one per part, at most this many per CPU of the cluster


def _shard(src: TokenSource, plan: Plan, parts: list[int]) -> pa.Table:
    """One task: the rollout x bin rows of ``parts``."""
    con = src.connect(parts)
    try:
        return fetch_arrow(con, rollout_sql(plan))
    finally:
        con.close()


def _quantiles(src: TokenSource, plan: Plan) -> pa.Table:
    """One task: the per-bin token quantiles over every part (not a sum: computed once, not merged)."""
    con = src.connect()
    try:
        return fetch_arrow(con, quantile_sql(plan))
    finally:
        con.close()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("engine ray", ["--engine ray needs Ray: pip install 'drift-opd[ray]' (or "
                                         "pip install 'ray>=2.9'), or use the default --engine duckdb"]) from None
    return ray


def aggregate_ray(src: TokenSource, metrics: tuple[str, ...], spec: Any, *, tasks: int | None = None,
                  plan: Plan | None = None) -> tuple[Plan, pa.Table, pa.Table | None]:
    """``(plan, merged rows, quantile rows)`` of ``src`` computed by Ray tasks (see the module docstring).

    Args:
        src: an opened dataset folder (:func:`~drift.stats.reader.open_tokens`); in-memory tables are refused.
        metrics: the metric columns; spec: the :class:`~drift.stats.bins.BinSpec`.
        tasks: how many tasks share the parts (default: one per part, at most :data:`TASKS_PER_CPU` per CPU).
        plan: the first pass, when the caller made it (:func:`drift.stats.bins.aggregate_bins` does, with the
            token classes' cut points already in ``src``'s derived columns); default: made here.

    Raises:
        ConfigError: Ray is not installed, or ``src`` is not a dataset folder.
        DatasetError: no rows to bin, or a rollout's tokens came back from two tasks (from the fold).
    """
    if src.dataset is None or not src.files:
        raise ConfigError("engine ray", [f"--engine ray reads the parquet parts of a dataset folder; {src.name} is "
                                         "in memory: use engine='duckdb' (the default) for DataFrames and tables"])
    if tasks is not None and int(tasks) < 1:
        raise ConfigError("engine ray", [f"ray tasks must be >= 1, got {tasks}"])
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        if os.environ.get("RAY_ADDRESS"):
            ray.init()  # connects to the cluster RAY_ADDRESS names
        else:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
    try:
        if plan is None:
            con = src.connect()
            try:
                plan = plan_bins(src, con, metrics, spec)  # the first pass, on the driver
            finally:
                con.close()
        threads = int(src.threads or 1)
        task_src = dataclasses.replace(src, threads=threads)
        n_cpu = int(ray.cluster_resources().get("CPU", 1))
        shards = shard_parts(len(src.files), tasks or TASKS_PER_CPU * max(1, n_cpu // threads))
        shard_task = ray.remote(num_cpus=threads)(_shard)
        src_ref = ray.put(task_src)
        refs = [shard_task.remote(src_ref, plan, parts) for parts in shards]
        q_ref = (ray.remote(num_cpus=threads)(_quantiles).remote(src_ref, plan)
                 if plan.quantile_method != "none" else None)
        log.info("engine ray: %d part(s) in %d task(s) of %d thread(s) each", len(src.files), len(shards), threads)
        results = ray.get(refs)
        qtable = ray.get(q_ref) if q_ref is not None else None
    finally:
        if started:
            ray.shutdown()
    rows = pa.concat_tables(results, promote_options="default")
    table = fold_rollouts(rows, plan.dims, len(plan.metrics), source=src.name)
    return plan, table, qtable if table.num_rows else None
