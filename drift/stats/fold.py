"""The fixed-order fold that turns per-rollout sums into per-cluster sufficient statistics, for both engines.

DuckDB gives one row per cell, rollout and bin (:func:`drift.stats.binsql.rollout_sql`); :func:`fold_rollouts`
adds them up per cell, cluster and bin, the rollouts one after another in rollout-key order (``np.bincount`` adds
in input order), whatever order the rows came in: from one query over every part or from Ray tasks over shards of
parts, the statistics are bit-identical. Cells are numbered in ``(lvl, dims)`` order (nulls last) and the clusters
of a cell in cluster-key order, the numbering DuckDB's ``dense_rank`` gave before, so cluster ``k`` is the same
prompt in every engine and a bootstrap seed draws the same resamples.

Floating-point sums are the columns ``s`` (values), ``q`` (squares), ``x`` and ``w`` (slot centres and their
squares); the counts ``n`` (values), ``r`` (rollouts with a value in the bin) and ``f`` (rollouts whose first bin
with a value it is; summed over bins: the cluster's rollouts) are integers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from drift.errors import DatasetError

__all__ = ["FLOAT_SUMS", "fold_rollouts"]

FLOAT_SUMS = ("s", "q", "x", "w")


def _codes(column: Any) -> tuple[np.ndarray, pa.Array]:
    """``(codes, dictionary)``: int64 codes of a column's values (nulls get -1) and the distinct values."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    enc = pc.dictionary_encode(arr)
    codes = enc.indices.to_numpy(zero_copy_only=False)
    if enc.indices.null_count:
        codes = np.where(np.asarray(enc.indices.is_null()), -1, codes)
    return codes.astype(np.int64), enc.dictionary


def _ranks(column: Any) -> np.ndarray:
    """The rank of each value among the column's distinct values in sorted (byte) order; nulls rank last."""
    codes, values = _codes(column)
    rank = np.empty(len(values) + 1, dtype=np.int64)
    rank[np.asarray(pc.array_sort_indices(values, null_placement="at_end"))] = np.arange(len(values))
    rank[-1] = len(values)  # code -1 (null)
    return rank[codes]


def _null_last_key(values: Sequence[Any]) -> tuple[Any, ...]:
    """Sort key of one cell's ``(lvl, dims...)`` values: ascending, nulls (and NaN) last, as DuckDB orders them."""
    out: list[Any] = []
    for v in values:
        missing = v is None or (isinstance(v, float) and math.isnan(v))
        out += [missing, 0 if missing else v]
    return tuple(out)


def _cells(table: pa.Table, keys: Sequence[str]) -> np.ndarray:
    """The cell number of each row: its ``keys`` values ranked like DuckDB's ``ORDER BY`` (ascending, nulls last)."""
    combo = np.zeros(table.num_rows, dtype=np.int64)
    for name in keys:
        c = _codes(table.column(name))[0] + 1  # nulls (-1) become 0
        combo = combo * (int(c.max(initial=0)) + 1) + c
        if combo.size and int(combo.max()) > 2 ** 31:
            combo = np.unique(combo, return_inverse=True)[1].astype(np.int64)
    uniq, first, inverse = np.unique(combo, return_index=True, return_inverse=True)
    values = table.select(list(keys)).take(pa.array(first)).to_pylist()
    ordered = sorted(range(len(uniq)), key=lambda j: _null_last_key([values[j][k] for k in keys]))
    number = np.empty(len(uniq), dtype=np.int64)
    number[ordered] = np.arange(len(uniq))
    return number[inverse.ravel()]


def _column(table: pa.Table, name: str, *, floating: bool) -> np.ndarray:
    col = table.column(name)
    if floating:
        # a SQL NULL (no value in the group) adds nothing; a NaN value propagates (its bin sum then reads 0)
        return pc.fill_null(col, 0.0).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return pc.fill_null(col, 0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def _runs(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted by ``keys``: ``(group index of each row, first row of each group)``."""
    n = len(keys[0])
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return np.cumsum(change) - 1, np.flatnonzero(change)


def _sum_ints(v: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(v, starts) if len(starts) else np.zeros(0, dtype=np.int64)


def fold_rollouts(table: pa.Table, dims: Sequence[str], n_metrics: int, *, source: str = "") -> pa.Table:
    """Per cell, cluster and bin: the rollouts' sums added one after another in rollout-key order.

    Args:
        table: rows of :func:`drift.stats.binsql.rollout_sql` (``lvl``, ``dims``, ``bin``, ``ck``, ``rk`` and per
            metric ``n, s, q, x, w``) in any order, e.g. the union of several Ray tasks' rows.
        dims: the plan's dimension columns; n_metrics: M.
        source: the dataset, named in errors.

    Returns:
        Rows ``cell, lvl, dims..., rid, bin`` and per metric ``n, s, q, x, w, r, f``, sorted by cell, rid and bin.

    Raises:
        DatasetError: one rollout has two rows for a cell and bin (its tokens came from two Ray tasks' shards).
    """
    keys = ["lvl", *dims]
    cell = _cells(table, keys)
    ck = _ranks(table.column("ck"))
    rk = _ranks(table.column("rk"))
    bins = table.column("bin").to_numpy(zero_copy_only=False).astype(np.int64)
    order = np.lexsort((rk, bins, ck, cell))
    c_o, k_o, b_o, r_o = cell[order], ck[order], bins[order], rk[order]
    if len(order) > 1:
        dup = (c_o[1:] == c_o[:-1]) & (k_o[1:] == k_o[:-1]) & (b_o[1:] == b_o[:-1]) & (r_o[1:] == r_o[:-1])
        if dup.any():
            raise DatasetError(f"{source or 'the dataset'}: {int(dup.sum())} rollout x bin row(s) came from two "
                               "shards (a rollout's tokens must live in one part, as drift's writers make them); "
                               "bin it with --engine duckdb")
    g, starts = _runs(c_o, k_o, b_o)
    G = len(starts)
    head = order[starts]
    # rid: the clusters of each cell numbered in key order
    new_cluster = np.ones(G, dtype=bool)
    new_cell = np.ones(G, dtype=bool)
    new_cell[1:] = c_o[starts][1:] != c_o[starts][:-1]
    new_cluster[1:] = new_cell[1:] | (k_o[starts][1:] != k_o[starts][:-1])
    cluster_index = np.cumsum(new_cluster) - 1
    rid = cluster_index - cluster_index[np.flatnonzero(new_cell)][np.cumsum(new_cell) - 1]
    out = pa.table({"cell": pa.array(c_o[starts])})
    for name in keys:
        out = out.append_column(name, table.column(name).take(pa.array(head)))
    out = out.append_column("rid", pa.array(rid))
    out = out.append_column("bin", pa.array(b_o[starts]))
    first_order = np.lexsort((bins, rk, cell))  # a rollout's bins in order, per cell: the first with a value
    for i in range(n_metrics):
        n_rows = _column(table, f"n{i}", floating=False)
        n = n_rows[order]
        cols = {f"n{i}": _sum_ints(n, starts)}
        for c in FLOAT_SUMS:  # np.bincount adds each group's values in row order: the rollouts in key order
            v = _column(table, f"{c}{i}", floating=True)[order]
            cols[f"{c}{i}"] = np.bincount(g, weights=v, minlength=G).astype(np.float64, copy=False)
        cols[f"r{i}"] = _sum_ints((n > 0).astype(np.int64), starts)
        rows = first_order[n_rows[first_order] > 0]
        _, firsts = _runs(cell[rows], rk[rows])
        flag = np.zeros(table.num_rows, dtype=np.int64)
        flag[rows[firsts]] = 1
        cols[f"f{i}"] = _sum_ints(flag[order], starts)
        for name, values in cols.items():
            out = out.append_column(name, pa.array(values))
    return out
