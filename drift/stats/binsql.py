"""The SQL of :mod:`drift.stats.bins`: the plan of a binning, and the queries both engines run in DuckDB.

**Sums in a fixed order.** :func:`rollout_sql` gives one row per cell, rollout and bin: DuckDB adds the tokens of
a rollout in a bin, which lie in one part, in file order (one thread scans a row group; tokens straddling two row
groups give two partial sums, and ``a + b == b + a``). :mod:`drift.stats.fold` adds those rows up per cluster in
rollout-key order. So every floating-point sum is a fold in an order fixed by the data, not by threads, hash tables
or which parts a task read: the same parts give bit-identical statistics in one process
(:func:`drift.stats.bins.aggregate_bins`) or spread over Ray tasks (:mod:`drift.stats.ray_engine`). (Before, the
rollouts of a cluster were added in hash-table order, which moved the last bit of ``x`` and ``sd`` between runs.)

**Not sums.** The distinct steps, the maximum position of absolute bins and the cut points of quantile strata
come from a first pass (:func:`plan_bins`; the steps from the parquet statistics when every row group agrees);
the per-bin token quantiles from :func:`quantile_sql` over all rows (exact ``quantile_cont``, or DuckDB's t-digest
``approx_quantile`` above :data:`EXACT_QUANTILE_MAX_ROWS` rows with ``quantiles="auto"``).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from drift.errors import DatasetError
from drift.schema import ROLLOUT_KEY, cluster_key_columns
from drift.stats.reader import TokenSource, quote_ident

if TYPE_CHECKING:
    from drift.stats.bins import BinSpec

__all__ = ["EXACT_QUANTILE_MAX_ROWS", "QUANTILES", "Plan", "fetch_arrow", "plan_bins", "quantile_sql", "rollout_sql",
           "shard_parts"]

log = logging.getLogger(__name__)

EXACT_QUANTILE_MAX_ROWS = 20_000_000
QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class Plan:
    """Everything the queries need, fixed by the first pass (picklable: the Ray engine ships it to its tasks)."""

    spec: BinSpec
    metrics: tuple[str, ...]
    edges: np.ndarray
    where: str
    step_dim: bool
    step_value: int | None  # the step label of cells when step is not a dimension
    strata_cuts: tuple[int, ...]
    strata_labels: tuple[str, ...]
    quantile_method: str
    extra_key: tuple[str, ...] = ()  # per-rollout columns the cluster key needs beyond ROLLOUT_KEY (prompt_key)
    cluster_expr: str = ""  # SQL of the cluster key over the per-rollout rows
    no_rows_message: str = ""  # raised when the steps came from parquet statistics and no row passes the filter
    null_free: tuple[bool, ...] = ()  # per metric: known to hold no null (the filtered sums need no filter)
    constants: tuple[tuple[str, str], ...] = ()  # rollout-key columns with one value: (name, SQL text literal)

    @property
    def key_columns(self) -> list[str]:
        """The rollout-key columns the per-rollout rows are grouped by (constant ones need no grouping)."""
        fixed = dict(self.constants)
        return [quote_ident(k) for k in (*ROLLOUT_KEY, *self.extra_key) if k not in fixed]

    @property
    def dims(self) -> list[str]:
        d = ["d_step"] if self.step_dim else []
        d += ["d_stratum"] if self.strata_cuts else []
        return d + [f"d_g{j}" for j in range(len(self.spec.group_by))]

    @property
    def levels(self) -> list[tuple[str, ...]]:
        """Grouping sets: the full split, plus the per-step and overall margins."""
        full = tuple(self.dims)
        levels = [full]
        if self.spec.margins:
            levels += [("d_step",)] if self.step_dim else []
            levels += [()]
        return list(dict.fromkeys(levels))


def _bin_expr(plan: Plan) -> tuple[str, str]:
    spec, B = plan.spec, len(plan.edges) - 1
    if spec.by == "rel":
        return (f"least(greatest(CAST(floor(CAST(rel_position AS DOUBLE) * {B}) AS BIGINT), 0), {B - 1})",
                "(CAST(position AS DOUBLE) + 0.5) / response_len")
    if spec.by == "onset":  # offset d = t - onset from the joined onsets file, window [-W, W) (BinSpec checks W % w)
        W, w = int(-plan.edges[0]), int(plan.edges[1] - plan.edges[0])
        d = "(CAST(position AS BIGINT) - CAST(onset_position AS BIGINT))"
        return f"({d} + {W}) // {w}", f"CAST({d} AS DOUBLE) + 0.5"
    M = int(plan.edges[-1])
    if spec.by == "abs":
        w = int(plan.edges[1] - plan.edges[0])
        return f"CAST(position AS BIGINT) // {w}", "CAST(position AS DOUBLE) + 0.5"
    # Log bins: a constant lookup list, position -> bin (exact integer edges, no float boundary issues).
    lut = np.searchsorted(plan.edges, np.arange(M), side="right") - 1
    literal = "[" + ",".join(str(int(v)) for v in lut) + "]"
    return f"({literal})[CAST(position AS BIGINT) + 1]", "CAST(position AS DOUBLE) + 0.5"


def _cluster_expr(unit: str, columns: Sequence[str],
                  constants: dict[str, str] | None = None) -> tuple[tuple[str, ...], str]:
    """``(extra per-rollout columns, SQL of one VARCHAR cluster key)`` for ``unit`` given the table's columns.

    The key columns come from :func:`drift.schema.cluster_key_columns`; a null ``prompt_key`` (rows written before
    it existed, mixed with newer ones) falls back to the ``(run_id, prompt_id)`` key of older datasets. Columns in
    ``constants`` (one value in the whole dataset) are written as that value's text literal.
    """
    fixed = constants or {}

    def text(c: str) -> str:
        return fixed.get(c) or f"CAST({quote_ident(c)} AS VARCHAR)"

    def joined(cols: Sequence[str]) -> str:
        return "concat_ws(chr(31), " + ", ".join(text(c) for c in cols) + ")"

    cols = cluster_key_columns(unit, columns)
    extra = tuple(c for c in cols if c not in ROLLOUT_KEY)
    if unit == "prompt" and cols == ("prompt_key",):
        fallback = cluster_key_columns("prompt", ())
        return extra, f"coalesce(CAST(prompt_key AS VARCHAR), 'fallback' || chr(31) || {joined(fallback)})"
    return extra, joined(cols)


def _binned_cte(plan: Plan, *, keys: bool = True) -> str:
    bin_expr, x_expr = _bin_expr(plan)
    cols = list(plan.key_columns) if keys else []
    cols += [f"{bin_expr} AS bin", f"{x_expr} AS xc"]
    cols += [f"CAST({quote_ident(m)} AS DOUBLE) AS m{i}" for i, m in enumerate(plan.metrics)]
    if plan.step_dim:
        cols.append("step AS d_step")
    if plan.strata_cuts:
        expr = " + ".join(f"CAST(response_len >= {c} AS INTEGER)" for c in plan.strata_cuts)
        cols.append(f"({expr}) AS d_stratum")
    cols += [f"{quote_ident(g)} AS d_g{j}" for j, g in enumerate(plan.spec.group_by)]
    return f"binned AS (SELECT {', '.join(cols)} FROM tokens WHERE {plan.where})"


def _grouping(plan: Plan, extra: Sequence[str]) -> tuple[str, str]:
    dims = plan.dims
    lvl = f"GROUPING({', '.join(dims)})" if dims else "0"
    sets = ", ".join("(" + ", ".join([*level, *extra]) + ")" for level in plan.levels)
    return lvl, sets


def rollout_sql(plan: Plan) -> str:
    """One row per cell (``lvl`` and dimensions), rollout and bin, over the ``tokens`` view: no window, no sort.

    Columns: ``lvl, dims..., bin``, ``ck`` (the cluster key), ``rk`` (the rollout key as one string) and per metric
    ``n`` (non-null values) and the sums ``s`` (values), ``q`` (squares), ``x`` / ``w`` (slot centres and their
    squares, over non-null values). DuckDB adds a rollout's tokens in a bin in file order; everything above is
    :func:`drift.stats.fold.fold_rollouts`. A metric without nulls (parquet statistics) skips the filters.
    """
    keys = plan.key_columns
    lvl, sets = _grouping(plan, ["bin", *keys])
    dim_sel = "".join(f"{d}, " for d in plan.dims)
    aggs, outs = [], []
    if any(plan.null_free):
        aggs.append("count(*) AS n_all, sum(xc) AS x_all, sum(xc * xc) AS w_all")
    for i in range(len(plan.metrics)):
        if plan.null_free[i]:  # the same numbers as the filtered sums below, without the filters
            aggs.append(f"sum(m{i}) AS s{i}, sum(m{i} * m{i}) AS q{i}")
            outs.append(f"n_all AS n{i}, s{i}, q{i}, x_all AS x{i}, w_all AS w{i}")
        else:
            aggs.append(f"count(m{i}) AS n{i}, sum(m{i}) AS s{i}, sum(m{i} * m{i}) AS q{i}, "
                        f"sum(xc) FILTER (WHERE m{i} IS NOT NULL) AS x{i}, "
                        f"sum(xc * xc) FILTER (WHERE m{i} IS NOT NULL) AS w{i}")
            outs.append(f"n{i}, s{i}, q{i}, x{i}, w{i}")
    fixed = dict(plan.constants)
    rk = "concat_ws(chr(31), " + ", ".join(fixed.get(k) or f"coalesce(CAST({quote_ident(k)} AS VARCHAR), chr(30))"
                                          for k in (*ROLLOUT_KEY, *plan.extra_key)) + ")"
    return (f"WITH {_binned_cte(plan)}, agg AS (SELECT {lvl} AS lvl, {dim_sel}bin, {', '.join(keys)}, "
            f"{', '.join(aggs)} FROM binned GROUP BY GROUPING SETS ({sets})) "
            f"SELECT lvl, {dim_sel}bin, {plan.cluster_expr} AS ck, {rk} AS rk, {', '.join(outs)} FROM agg")


def quantile_sql(plan: Plan) -> str:
    """Per cell and bin, the token quantiles :data:`QUANTILES` of each metric (``qq{i}``: a list)."""
    lvl, sets = _grouping(plan, ["bin"])
    fn = "quantile_cont" if plan.quantile_method == "exact" else "approx_quantile"
    qs = "[" + ", ".join(str(q) for q in QUANTILES) + "]"
    dim_sel = "".join(f"{d}, " for d in plan.dims)
    aggs = ", ".join(f"{fn}(m{i}, {qs}) AS qq{i}" for i in range(len(plan.metrics)))
    return (f"WITH {_binned_cte(plan, keys=False)} SELECT {lvl} AS lvl, {dim_sel}bin, {aggs} FROM binned "
            f"GROUP BY GROUPING SETS ({sets})")


def shard_parts(n_parts: int, n_shards: int) -> list[list[int]]:
    """Split part indices ``0..n_parts-1`` into ``n_shards`` contiguous, nearly equal shards (none empty)."""
    k = max(1, min(int(n_shards), int(n_parts)))
    return [s.tolist() for s in np.array_split(np.arange(int(n_parts)), k) if len(s)]


def fetch_arrow(con: Any, sql: str) -> Any:
    """The result of ``sql`` as an arrow Table."""
    rel = con.sql(sql)
    fetch = getattr(rel, "to_arrow_table", None) or rel.arrow  # DuckDB >= 1.4 / older
    return fetch()


def strata_labels(cuts: Sequence[int]) -> tuple[str, ...]:
    """``T<a``, ``a<=T<b``, ..., ``T>=z`` for the cut points ``a < b < ... < z``."""
    if not cuts:
        return ()
    labels = [f"T<{cuts[0]}"]
    labels += [f"{a}<=T<{b}" for a, b in itertools.pairwise(cuts)]
    return (*labels, f"T>={cuts[-1]}")


def _row_group_stats(src: TokenSource, columns: Sequence[str]) -> dict[str, list[Any]]:
    """Per column, the parquet statistics of every row group of a dataset's parts (each footer read once); a
    column is left out when any row group lacks them (or for in-memory and derived columns)."""
    derived = dict(src.derived)
    wanted = [c for c in dict.fromkeys(columns) if c in src.schema.names and c not in derived]
    if src.dataset is None or not src.files or not wanted:
        return {}
    import pyarrow.parquet as pq

    out: dict[str, list[Any]] = {c: [] for c in wanted}
    try:
        for path in src.files:
            meta = pq.ParquetFile(path).metadata
            names = meta.schema.to_arrow_schema().names
            for c in list(out):
                j = names.index(c) if c in names else -1
                stats = ([meta.row_group(g).column(j).statistics for g in range(meta.num_row_groups)] if j >= 0
                         else [None])
                if any(st is None or not st.has_min_max or not st.has_null_count for st in stats):
                    del out[c]
                else:
                    out[c].extend(stats)
    except (OSError, ValueError):
        return {}
    return {c: v for c, v in out.items() if v}


def _constant(stats: list[Any] | None, arrow_type: Any) -> str | None:
    """The text of a column's one value (as ``CAST(... AS VARCHAR)`` prints it) when every row group holds that
    value and no null, for integer and string columns; else None. (A writer that truncates string statistics
    rounds the maximum up, so equal bounds still mean one value.)"""
    import pyarrow as pa

    if not stats or not (pa.types.is_integer(arrow_type) or pa.types.is_string(arrow_type)
                         or pa.types.is_large_string(arrow_type)):
        return None
    values = {st.min for st in stats} | {st.max for st in stats}
    if len(values) != 1 or any(st.null_count for st in stats):
        return None
    v = values.pop()
    return str(int(v)) if pa.types.is_integer(arrow_type) else str(v)


def _proven(stats: dict[str, list[Any]], term: str) -> bool:
    """True when the parquet statistics show a filter term holds on every row (so the query can drop it)."""
    column, test = {"position >= 0": ("position", lambda st: st.min >= 0),
                    "response_len > 0": ("response_len", lambda st: st.min > 0),
                    "rel_position IS NOT NULL": ("rel_position", lambda st: True)}.get(term, ("", None))
    got = stats.get(column)
    return bool(got) and test is not None and all(st.null_count == 0 and test(st) for st in got)


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _where(terms: Sequence[str]) -> str:
    return " AND ".join(terms) or "TRUE"


def plan_bins(src: TokenSource, con: Any, metrics: tuple[str, ...], spec: BinSpec) -> Plan:
    """The first pass: filters, steps, edges, strata cut points and the quantile method of this binning."""
    stats = _row_group_stats(src, ["step", "position", "response_len", "rel_position", *ROLLOUT_KEY, *metrics])
    where = [t for t in ("position >= 0", "response_len > 0", *(["rel_position IS NOT NULL"] if spec.by == "rel"
                                                                else [])) if not _proven(stats, t)]
    if spec.steps is not None:
        where.append(f"step IN ({', '.join(str(s) for s in spec.steps)})")
    base_where = _where(where)
    types = {f.name: f.type for f in src.schema}
    constants = tuple((k, _sql_text(v)) for k in ROLLOUT_KEY
                      if (v := _constant(stats.get(k), types.get(k))) is not None)
    extra_key, cluster_expr = _cluster_expr(spec.cluster, src.columns, dict(constants))
    what = f" at steps {list(spec.steps)}" if spec.steps is not None else ""
    no_rows = f"{src.name} has no token rows{what}; check the dataset path and --steps."
    one = _constant(stats.get("step"), types.get("step"))
    if one is not None:  # no scan: every row is at this step (an empty filter result is caught after the query)
        steps = [int(one)] if spec.steps is None or int(one) in spec.steps else []
    else:
        steps = [int(r[0]) for r in con.sql(f"SELECT DISTINCT step FROM tokens WHERE {base_where} ORDER BY 1")
                 .fetchall()]
    if not steps:
        raise DatasetError(no_rows)
    edges = spec.edges() if spec.by in ("rel", "onset") else None
    if spec.by == "onset":
        W = int(spec.onset_window)
        d = "(CAST(position AS BIGINT) - CAST(onset_position AS BIGINT))"
        where += ["onset_position IS NOT NULL", f"{d} >= {-W}", f"{d} < {W}"]
    elif spec.by != "rel":
        M = spec.max_position
        if M is None:
            top = con.sql(f"SELECT max(position) FROM tokens WHERE {base_where}").fetchall()[0][0]
            if top is None:
                raise DatasetError(no_rows)
            M = int(top) + 1
        edges = spec.edges(M)
        where.append(f"position < {int(edges[-1])}")
    cuts: tuple[int, ...] = ()
    if isinstance(spec.strata, str):
        k = int(spec.strata.split(":", 1)[1])
        probs = ", ".join(str(j / k) for j in range(1, k))
        row = con.sql(f"SELECT quantile_cont(response_len, [{probs}]), min(response_len), max(response_len) "
                      f"FROM tokens WHERE {base_where} AND position = 0").fetchall()[0]
        lo, hi = row[1], row[2]
        raw = [round(v) for v in (row[0] or [])]
        cuts = tuple(sorted({v for v in raw if lo is not None and lo < v <= hi}))  # collapsed edges merge here
        if len(cuts) < k - 1:
            log.warning("response-length quantiles gave %d strata instead of %d (many equal lengths, e.g. a "
                        "length cap): equal edges merged", len(cuts) + 1, k)
        cuts = _merge_small_strata(con, base_where, cuts, cluster_expr, spec.min_clusters, k)
    elif spec.strata is not None:
        cuts = tuple(spec.strata)  # the user's cut points are kept; a small stratum's verdict is "insufficient"
    step_dim = spec.step == "each" and len(steps) > 1
    step_value = steps[0] if len(steps) == 1 else None
    qm = spec.quantiles
    if qm == "auto":
        qm = "exact" if src.n_rows <= EXACT_QUANTILE_MAX_ROWS else "approx"
    null_free = tuple((src.table.column(m).null_count == 0) if src.table is not None and m in src.table.column_names
                      else bool(stats.get(m)) and all(st.null_count == 0 for st in stats[m]) for m in metrics)
    return Plan(spec, metrics, edges, _where(where), step_dim, step_value, cuts, strata_labels(cuts), qm,
                extra_key, cluster_expr, no_rows, null_free, constants)


def _merge_small_strata(con: Any, where: str, cuts: tuple[int, ...], cluster_expr: str,
                        min_clusters: int, k: int) -> tuple[int, ...]:
    """Drop degenerate quantile cut points: merge strata far below their share of the clusters.

    A stratum is degenerate when it holds fewer than ``min(min_clusters, ceil(K_total / (2 k)))`` clusters, i.e.
    under half of the ``K_total / k`` that k quantile strata should each hold *and* under the minimum for a verdict
    (a length cap makes them: quantile edges collapse onto the cap and leave a sliver between). The smallest such
    stratum is merged into its smaller neighbour, one cut at a time. Strata that are merely small (a small dataset)
    are kept; their verdicts are ``insufficient``.
    """
    cuts = list(cuts)
    total = int(con.sql(f"SELECT count(DISTINCT {cluster_expr}) FROM tokens WHERE {where} AND position = 0")
                .fetchall()[0][0])
    threshold = min(int(min_clusters), math.ceil(total / (2 * max(k, 1))))
    while cuts:
        expr = " + ".join(f"CAST(response_len >= {c} AS INTEGER)" for c in cuts)
        rows = dict(con.sql(f"SELECT {expr} AS s, count(DISTINCT {cluster_expr}) FROM tokens "
                            f"WHERE {where} AND position = 0 GROUP BY 1").fetchall())
        sizes = [int(rows.get(j, 0)) for j in range(len(cuts) + 1)]
        j = int(np.argmin(sizes))
        if sizes[j] >= threshold:
            break
        if j == 0:
            drop = 0
        elif j == len(sizes) - 1:
            drop = len(cuts) - 1
        else:
            drop = j - 1 if sizes[j - 1] <= sizes[j + 1] else j
        log.warning("length stratum %d of %d has %d clusters (< %d: under half its quantile share and under "
                    "min_clusters %d): merged with its neighbour", j + 1, len(sizes), sizes[j], threshold,
                    min_clusters)
        del cuts[drop]
    return tuple(cuts)
