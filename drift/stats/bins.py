"""Metrics by position bin, with cluster-bootstrap intervals, computed in DuckDB at any scale.

**Bins.** A token at 0-based position ``t`` of a response of ``T`` tokens falls in

- ``by="rel"``: relative bin ``min(floor(rel_position * B), B - 1)`` with ``rel_position = t / T``; edges ``k / B``;
- ``by="abs"``: absolute bin ``floor(t / width)``, edges ``k * width`` (``width = ceil(max_position / B)`` unless
  given); tokens at ``t >= max_position`` are left out;
- ``by="abs_log"``: log-spaced absolute bins, edges ``unique(round(geomspace(1, M + 1, B + 1))) - 1`` with
  ``M = max_position`` (narrow early, wide late; rounding may merge the first few, so there can be fewer than B).
- ``by="onset"``: the offset ``d = t - onset`` of a token from its rollout's divergence onset (``onsets.parquet`` of
  ``drift onset``, joined on the rollout key), in fixed-width bins ``floor((d + W) / width)`` over the window
  ``[-W, +W)`` (``onset_window`` W, default 32; ``width`` default 4; W a multiple of it, so 0 is an edge: a bin
  lies wholly before or wholly after the onset). Rollouts whose onset is null (they never leave) and tokens outside
  the window are left out (:mod:`drift.stats.onset_axis`).

Edges (``bin_left``, ``bin_right``) are in position units: fractions of the response for ``rel``, tokens otherwise,
left-closed and right-open. ``x`` is the mean *slot centre* of the bin's tokens, ``(t + 0.5) / T`` for ``rel``,
``t + 0.5`` for ``abs`` and ``d + 0.5`` for ``onset``: the abscissa decay fits use (never 0, so power laws are
defined; there are no curve fits on the onset axis).

**Cells.** Bins are computed within cells: per ``step`` (``step="each"``) or pooled (``step="pool"``), per
response-length stratum (a late position only exists in long rollouts, so length confounds position; strata make
that visible) and per value of any grouping column (``finished``, ``reward``...) or derived token class
(``teacher_entropy_zone``, ``low_student_logprob``, ``teacher_mass_zone``: :mod:`drift.stats.classes`). With
``margins=True`` the table also holds the pooled cells (``stratum="all"``, ``group="all"``) next to the split ones.
Quantile strata (``"quantiles:k"``) whose edges collapse (many equal lengths, e.g. a length cap) are merged, and
so is a degenerate sliver between collapsed edges (a quantile stratum under half its share of clusters and under
``min_clusters``).

**Clusters.** The resampling unit is ``cluster`` (:data:`drift.schema.CLUSTER_UNITS`): ``"prompt"`` (default) puts
all rollouts of a prompt in one cluster (they share its difficulty; one prompt seen at several steps is one cluster
of a step-pooled cell), ``"rollout"`` makes each rollout its own (valid with one sample per prompt). The key comes
from :func:`drift.schema.cluster_key_columns`: ``prompt_key``, or ``(run_id, prompt_id)`` in older datasets.

**Estimand.** ``mean`` is the mean over all tokens in the bin pooled across rollouts: a ratio of sums,
``sum_k s_kb / sum_k n_kb`` over clusters k, so a long rollout weighs more than a short one. Its interval is a
cluster bootstrap (:mod:`drift.stats.bootstrap`) from per-cluster-per-bin sums and counts (sums and counts of a
cluster's rollouts add up: DuckDB sums per rollout and bin, :mod:`drift.stats.fold` adds those per cluster in a
fixed order, so the numbers are bit-identical whatever the threads, and with ``engine="ray"``), by default the
expanded percentile interval with K = the bin's ``n_clusters``; memory scales with rollouts x bins, never with
tokens. ``q10``..``q90`` are
token quantiles of the bin (exact, or DuckDB's t-digest ``approx_quantile`` above ``EXACT_QUANTILE_MAX_ROWS``
rows with ``quantiles="auto"``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from drift.config import Checks
from drift.errors import ConfigError, DatasetError
from drift.schema import CLUSTER_UNITS, ROLLOUT_KEY
from drift.stats.binsql import (
    EXACT_QUANTILE_MAX_ROWS,
    QUANTILES,
    Plan,
    fetch_arrow,
    plan_bins,
    quantile_sql,
    rollout_sql,
    shard_parts,
)
from drift.stats.bootstrap import INTERVAL_METHODS, expanded_percentile_interval, percentile_interval, ratio_replicates
from drift.stats.classes import (
    DEFAULT_LOW_PROB,
    DEFAULT_ZONES,
    MAX_ZONES,
    TOKEN_CLASSES,
    ResolvedClass,
    resolve_classes,
)
from drift.stats.fold import fold_rollouts
from drift.stats.reader import TokenSource, is_dataframe, open_tokens

if TYPE_CHECKING:  # pandas is imported where a table is built: `import drift.stats` and the CLI stay light
    import pandas as pd

    from drift.stats.onset_axis import OnsetInfo

__all__ = [
    "BIN_COLUMNS",
    "ENGINES",
    "EXACT_QUANTILE_MAX_ROWS",
    "MAX_BINS",
    "QUANTILES",
    "BinSpec",
    "Cell",
    "RolloutBins",
    "aggregate_bins",
    "bin_metric",
    "cell_rows",
    "pooled_cell",
    "pooled_rows",
    "pooled_step",
]

log = logging.getLogger(__name__)

MAX_BINS = 200  # relative and log bins
BY: tuple[str, ...] = ("rel", "abs", "abs_log", "onset")  # position axes (see the module docstring)
DEFAULT_ONSET_WINDOW = 32  # by="onset": offsets in [-W, +W) tokens
DEFAULT_ONSET_WIDTH = 4
MAX_ABS_BINS = 1_000  # fixed-width absolute bins (memory: rollouts x bins x 16 bytes per metric and cell)
ENGINES: tuple[str, ...] = ("duckdb", "ray")  # in-process DuckDB (default), or Ray tasks (drift.stats.ray_engine)
QUANTILE_COLUMNS = tuple(f"q{round(q * 100)}" for q in QUANTILES)

DEFAULT_MIN_CLUSTERS = 10

# The tidy table: the first eleven columns are the documented contract of bins.parquet, the rest add detail
# (n_clusters: clusters with a token in the bin; cluster: the resampling unit of the intervals).
BIN_COLUMNS: tuple[str, ...] = (
    "metric", "by", "group", "bin", "bin_left", "bin_right", "mean", "ci_low", "ci_high", "n_tokens", "n_rollouts",
    "n_clusters", "cluster", "step", "stratum", "x", "se", "sd", *QUANTILE_COLUMNS,
)


def _parse_strata(value: Any) -> tuple[int, ...] | str | None:
    if value is None or value == "" or value == ():
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("quantiles:"):
            return text
        return tuple(int(float(v)) for v in text.split(",") if v.strip())
    return tuple(int(v) for v in value)


@dataclass(frozen=True)
class BinSpec:
    """How to bin tokens by position (see the module docstring for the exact rules).

    Attributes:
        by: ``"rel"`` (t/T), ``"abs"`` (tokens, fixed width), ``"abs_log"`` (tokens, log-spaced) or ``"onset"``
            (offset from the rollout's divergence onset, fixed width; needs ``onsets``).
        bins: number of bins B (rel, abs_log: 1..200; abs: used when ``width`` is None; not used by onset).
        width: bin width in tokens (``by="abs"``; ``by="onset"``: default 4).
        max_position: absolute bins cover positions ``0 .. max_position - 1`` (default: longest response).
        strata: response-length strata: cut points (``(256, 512)`` gives ``T<256``, ``256<=T<512``, ``T>=512``), the
            same as a comma string, or ``"quantiles:k"`` for k strata of equal rollout counts; None for no strata.
        group_by: token columns or derived token classes (:data:`drift.stats.classes.TOKEN_CLASSES`) to split by
            (e.g. ``("finished",)``, ``("teacher_entropy_zone", "finished")``); each value combination is a cell.
        step: ``"each"`` (cells per scoring step) or ``"pool"`` (all steps together).
        steps: keep only these steps (None: all).
        margins: also compute the pooled cells (``stratum="all"``, ``group="all"``, all steps).
        quantiles: ``"exact"``, ``"approx"`` (t-digest), ``"none"`` or ``"auto"`` (exact up to 20M rows).
        cluster: resampling unit, ``"prompt"`` (default) or ``"rollout"`` (see the module docstring).
        min_clusters: the minimum for a verdict (default 10); a degenerate quantile stratum under it and under half
            its share of clusters is merged into a neighbour.
        zones: quantile zones Z of the zone classes (2..10, default 3: low / mid / high).
        low_prob: p of ``low_student_logprob`` (``student_logprob < ln p``; default 0.1).
        onsets: ``by="onset"``: the ``onsets.parquet`` of ``drift onset`` (or its folder).
        onset_window: ``by="onset"``: W, offsets in ``[-W, +W)`` tokens (default 32; a multiple of ``width``).
    """

    by: Literal["rel", "abs", "abs_log", "onset"] = "rel"
    bins: int = 20
    width: int | None = None
    max_position: int | None = None
    strata: tuple[int, ...] | str | None = None
    group_by: tuple[str, ...] = ()
    step: Literal["each", "pool"] = "each"
    steps: tuple[int, ...] | None = None
    margins: bool = True
    quantiles: Literal["auto", "exact", "approx", "none"] = "auto"
    cluster: Literal["prompt", "rollout"] = "prompt"
    min_clusters: int = DEFAULT_MIN_CLUSTERS
    zones: int = DEFAULT_ZONES
    low_prob: float = DEFAULT_LOW_PROB
    onsets: str | None = None
    onset_window: int = DEFAULT_ONSET_WINDOW

    def __post_init__(self) -> None:
        c = Checks("BinSpec")
        try:
            object.__setattr__(self, "strata", _parse_strata(self.strata))
        except (TypeError, ValueError):
            c.check(False, f"strata must be cut points like '256,512' or 'quantiles:k', got {self.strata!r}")
            object.__setattr__(self, "strata", None)
        if isinstance(self.group_by, str):
            object.__setattr__(self, "group_by", tuple(g for g in self.group_by.split(",") if g))
        else:
            object.__setattr__(self, "group_by", tuple(self.group_by))
        if self.steps is not None:
            object.__setattr__(self, "steps", tuple(int(s) for s in self.steps) or None)
        c.choice("by", self.by, BY)
        c.choice("step", self.step, ("each", "pool"))
        c.choice("quantiles", self.quantiles, ("auto", "exact", "approx", "none"))
        c.choice("cluster", self.cluster, CLUSTER_UNITS)
        c.check(isinstance(self.min_clusters, int) and self.min_clusters >= 1,
                f"min_clusters must be an integer >= 1, got {self.min_clusters!r}")
        if self.by in ("rel", "abs_log") or self.width is None:
            c.in_range("bins", self.bins, 1, MAX_BINS)
        c.check(self.width is None or self.by in ("abs", "onset"),
                f"width is only used with by='abs' or 'onset' (got by={self.by!r}, width={self.width}); drop it or "
                "use abs")
        c.positive("width", self.width, allow_none=True)
        c.positive("max_position", self.max_position, allow_none=True)
        c.check(self.max_position is None or self.by in ("abs", "abs_log"),
                "max_position applies to absolute bins; relative bins always cover the whole response and onset "
                "bins the window [-onset_window, +onset_window)")
        if self.by == "onset":
            c.check(bool(self.onsets), "by='onset' needs onsets: the onsets.parquet written by `drift onset DATASET "
                    "--out OUT` (pass --onsets OUT/onsets.parquet)")
            w = self.width or DEFAULT_ONSET_WIDTH
            ok = isinstance(self.onset_window, int) and self.onset_window >= 1 and w >= 1
            c.check(ok and self.onset_window % w == 0 and 2 * self.onset_window // w <= MAX_ABS_BINS,
                    f"onset_window must be a positive multiple of the width ({w}) with at most {MAX_ABS_BINS} bins, "
                    f"got {self.onset_window!r} (0 must be a bin edge: a bin lies before or after the onset)")
        else:
            c.check(not self.onsets, f"onsets is only used with by='onset' (got by={self.by!r}); drop --onsets or "
                    "pass --by onset")
        c.check(isinstance(self.zones, int) and 2 <= self.zones <= MAX_ZONES,
                f"zones must be an integer in 2..{MAX_ZONES}, got {self.zones!r}")
        c.check(isinstance(self.low_prob, (int, float)) and 0 < self.low_prob < 1,
                f"low_prob must be in (0, 1) (the student probability below which a token is unlikely), got "
                f"{self.low_prob!r}")
        if isinstance(self.strata, str):
            k = self.strata.split(":", 1)[1]
            c.check(k.isdigit() and 2 <= int(k) <= 20, f"strata 'quantiles:k' needs k in 2..20, got {self.strata!r}")
        elif self.strata is not None:
            c.check(len(self.strata) > 0 and all(v > 0 for v in self.strata)
                    and list(self.strata) == sorted(set(self.strata)),
                    f"strata cut points must be increasing positive lengths, got {self.strata!r}")
        c.check("step" not in self.group_by, "group_by must not contain 'step'; use step='each' for per-step cells")
        c.check(len(set(self.group_by)) == len(self.group_by), f"group_by has duplicates: {self.group_by}")
        c.raise_if_any()

    def edges(self, max_position: int | None = None) -> np.ndarray:
        """Bin edges in position units (fractions for ``rel``, tokens otherwise, offsets from the onset for
        ``onset``); ``len(edges) = n_bins + 1``."""
        if self.by == "rel":
            return np.arange(self.bins + 1) / self.bins
        if self.by == "onset":
            W, w = int(self.onset_window), int(self.width or DEFAULT_ONSET_WIDTH)
            return np.arange(-W, W + 1, w).astype(float)
        M = int(self.max_position or max_position or 0)
        if M < 1:
            raise ValueError("absolute bins need max_position (or data to take it from)")
        if self.by == "abs":
            w = int(self.width) if self.width else math.ceil(M / self.bins)
            n = math.ceil(M / w)
            if n > MAX_ABS_BINS:
                raise ConfigError("BinSpec", [f"{n} absolute bins of width {w} exceed {MAX_ABS_BINS}; "
                                              "use a larger width or a smaller max_position"])
            return np.minimum(np.arange(n + 1) * w, M).astype(float)
        return (np.unique(np.round(np.geomspace(1, M + 1, self.bins + 1)).astype(np.int64)) - 1).astype(float)


@dataclass(frozen=True)
class Cell:
    """One cell of a binned table: a step (None = pooled), a length stratum and a group (``"all"`` = pooled)."""

    step: int | None
    stratum: str
    group: str

    @property
    def label(self) -> str:
        step = "all" if self.step is None else str(self.step)
        return f"step={step} stratum={self.stratum} group={self.group}"


def pooled_step(steps: Iterable[Any]) -> int | None:
    """The pooled step among ``steps``: the step-pooled one (None or a missing value) when present, else the
    earliest (a dataset of one step has only that step). Raises ValueError for no steps."""
    values = [None if _isna(v) else int(v) for v in steps]
    if not values:
        raise ValueError("no steps to choose the pooled one from")
    return None if None in values else min(values)  # type: ignore[type-var]


def _isna(v: Any) -> bool:
    """None, NaN or a pandas missing value (pandas is only consulted when loaded: only it makes pd.NA)."""
    if v is None:
        return True
    pd = sys.modules.get("pandas")
    if pd is not None:
        return bool(pd.isna(v))
    return isinstance(v, float) and math.isnan(v)


def _table_cells(table: pd.DataFrame) -> list[Cell]:
    """The distinct cells of a bins table (missing ``step``/``stratum``/``group`` columns read as pooled)."""
    import pandas as pd

    n = len(table)
    step = table["step"] if "step" in table else pd.Series([None] * n, index=table.index, dtype=object)
    stratum = table["stratum"] if "stratum" in table else pd.Series(["all"] * n, index=table.index)
    group = table["group"] if "group" in table else pd.Series(["all"] * n, index=table.index)
    keys = dict.fromkeys(zip(step.tolist(), stratum.astype(str).tolist(), group.astype(str).tolist(), strict=True))
    return [Cell(None if _isna(v) else int(v), st, g) for v, st, g in keys]


def pooled_cell(data: RolloutBins | pd.DataFrame | Iterable[Cell], *, stratum: str = "all",
                group: str = "all") -> Cell:
    """The pooled ("headline") cell: the one summary every report, fit and recommendation shows.

    Among the cells with this ``stratum`` and ``group`` (default ``"all"``: every length and every group pooled), the
    step-pooled one (step None) when it exists, else the earliest step (a dataset of one step, or a table binned
    per step). This is the only place that choice is made: :attr:`RolloutBins.headline`, ``RolloutBins.cell(step=
    "auto")``, :func:`drift.stats.fit_bins` on a table, :func:`drift.stats.plot_bins`, ``drift report`` and
    ``drift schedule recommend`` all call it.

    Args:
        data: a :class:`RolloutBins`, a bins table (:meth:`RolloutBins.table`, ``bins.parquet``; restrict it to one
            metric first when metrics may cover different cells) or the cells themselves.
        stratum, group: the cell's length stratum and group.

    Raises:
        KeyError: no cell has this stratum and group (the message lists the cells).
    """
    if isinstance(data, RolloutBins):
        cells = list(data.cells)
    elif is_dataframe(data):
        cells = _table_cells(data)
    else:
        cells = list(data)
    matches = [c for c in cells if c.stratum == stratum and c.group == group]
    if not matches:
        listing = "\n  ".join(c.label for c in cells) or "(none)"
        raise KeyError(f"no cell with stratum={stratum!r} group={group!r}; cells are:\n  {listing}")
    step = pooled_step(c.step for c in matches)
    return next(c for c in matches if c.step == step)


def cell_rows(table: pd.DataFrame, cell: Cell, metric: str | None = None) -> pd.DataFrame:
    """The rows of ``cell`` (of ``metric``, when given) in a bins table, sorted by bin."""
    d = table if metric is None else table[table["metric"] == metric]
    keep = np.ones(len(d), dtype=bool)
    if "step" in d:
        keep &= d["step"].isna().to_numpy() if cell.step is None else (d["step"] == cell.step).fillna(False).to_numpy()
    for column, value in (("stratum", cell.stratum), ("group", cell.group)):
        if column in d:
            keep &= (d[column].astype(str) == value).to_numpy()
    d = d[keep]
    return d.sort_values("bin") if "bin" in d else d


def pooled_rows(table: pd.DataFrame, metric: str, *, stratum: str = "all", group: str = "all") -> pd.DataFrame:
    """The rows of ``metric``'s :func:`pooled_cell` in a bins table, sorted by bin.

    Raises:
        ValueError: ``metric`` is not in the table (the message lists the metrics it has).
    """
    d = table[table["metric"] == metric]
    if d.empty:
        raise ValueError(f"metric {metric!r} is not in the table; it has {sorted(table['metric'].unique())}")
    return cell_rows(d, pooled_cell(d, stratum=stratum, group=group))


@dataclass(frozen=True)
class _CellStats:
    """Sufficient statistics of one cell; M metrics, K clusters of the cell (the R axis of the arrays), B bins."""

    counts: np.ndarray  # M x K x B token counts (non-null metric values), summed over the cluster's rollouts
    sums: np.ndarray  # M x K x B sums of the metric
    sumsq: np.ndarray  # M x B sums of squares (token sd)
    xsum: np.ndarray  # M x B sums of slot centres (x)
    xsq: np.ndarray  # M x B sums of squared slot centres: the spread of x within a bin (bin-averaged fits)
    quant: np.ndarray  # M x B x Q token quantiles (NaN when not computed)
    rollouts: np.ndarray  # M x K x B rollouts of the cluster with a (non-null) token in the bin
    rollouts_any: np.ndarray  # M x K rollouts of the cluster with any token

    def n_clusters(self, i: int) -> int:
        """Clusters with at least one token of metric ``i`` in the cell."""
        return int((self.counts[i].sum(axis=1) > 0).sum())

    def n_rollouts(self, i: int) -> int:
        """Rollouts with at least one token of metric ``i`` in the cell."""
        return int(self.rollouts_any[i].sum())


@dataclass(frozen=True)
class RolloutBins:
    """Per-cluster, per-bin sufficient statistics of some metrics: the input of every interval, fit and test.

    Made by :func:`aggregate_bins`; :meth:`table` turns it into the tidy DataFrame. Arrays are indexed
    ``[metric, cluster, bin]`` (a cluster is a prompt or a rollout: ``spec.cluster``); ``edges`` are the bin edges
    in position units (see the module docstring). The name is historical: rows were rollouts before clusters.
    ``classes``: the derived token classes of ``spec.group_by`` with their cut points (:mod:`drift.stats.classes`);
    ``onset``: with ``by="onset"``, the rollouts the onset bins rest on and those excluded (null onset).
    """

    spec: BinSpec
    metrics: tuple[str, ...]
    edges: np.ndarray
    cells: tuple[Cell, ...]
    stats: dict[Cell, _CellStats] = field(repr=False)
    strata_labels: tuple[str, ...] = ()
    source: str = ""
    n_tokens: int = 0
    quantile_method: str = "none"
    classes: tuple[ResolvedClass, ...] = ()
    onset: OnsetInfo | None = None
    _cache: dict[Any, np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    _pending: list[Callable[[], None]] = field(default_factory=list, repr=False, compare=False)

    def wait_quantiles(self) -> None:
        """Wait for bin quantiles still computed in the background (``aggregate_bins(background_quantiles=True)``)
        and fill them in; a no-op otherwise. :meth:`table` calls it."""
        while self._pending:
            self._pending[0]()
            self._pending.pop(0)

    @property
    def n_bins(self) -> int:
        return len(self.edges) - 1

    @property
    def cluster(self) -> str:
        """The resampling unit of every interval computed from these statistics (``prompt`` or ``rollout``)."""
        return self.spec.cluster

    def n_clusters(self, metric: str, cell: Cell | None = None) -> int:
        """Clusters of ``cell`` (default: the headline) with at least one token of ``metric``."""
        return self.stats[cell or self.headline].n_clusters(self.metric_index(metric))

    def n_rollouts(self, metric: str, cell: Cell | None = None) -> int:
        """Rollouts of ``cell`` (default: the headline) with at least one token of ``metric``."""
        return self.stats[cell or self.headline].n_rollouts(self.metric_index(metric))

    @property
    def headline(self) -> Cell:
        """The most pooled cell (:func:`pooled_cell`: all strata, all groups, the pooled or earliest step): the one
        summary fit; without pooled margins (``margins=False`` with strata or groups), the first cell."""
        try:
            return pooled_cell(self.cells)
        except KeyError:
            return self.cells[0]

    def cell(self, step: int | Literal["auto"] | None = "auto", stratum: str = "all", group: str = "all") -> Cell:
        """Look a cell up; ``step="auto"`` takes the pooled step (:func:`pooled_cell`). Raises KeyError listing the
        cells."""
        if step == "auto":
            return pooled_cell(self.cells, stratum=stratum, group=group)
        matches = [c for c in self.cells if c.stratum == stratum and c.group == group and c.step == step]
        if not matches:
            listing = "\n  ".join(c.label for c in self.cells)
            raise KeyError(f"no cell step={step} stratum={stratum!r} group={group!r}; cells are:\n  {listing}")
        return matches[0]

    def metric_index(self, metric: str) -> int:
        """Position of ``metric`` in :attr:`metrics` (KeyError listing the binned metrics otherwise)."""
        if metric not in self.metrics:
            raise KeyError(f"metric {metric!r} was not binned; binned metrics: {list(self.metrics)}")
        return self.metrics.index(metric)

    def sufficient(self, metric: str, cell: Cell | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(bins, sums_K_B, counts_K_B)`` of ``metric`` in ``cell`` (rows: clusters), bins that have tokens only."""
        cell = cell or self.headline
        st = self.stats[cell]
        i = self.metric_index(metric)
        present = np.flatnonzero(st.counts[i].sum(axis=0) > 0)
        return present, st.sums[i][:, present], st.counts[i][:, present]

    def replicates(self, cell: Cell, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
        """Bootstrap replicates of every metric's bin means in ``cell``: ``reps[b, metric, bin]`` (cached).

        All metrics of a cell share the resampled clusters. The generator is seeded with
        ``SeedSequence([seed, crc32(cell.label)])`` so cells get independent, reproducible draws.
        """
        key = (cell, int(n_boot), int(seed))
        if key not in self._cache:
            st = self.stats[cell]
            M, R, B = st.sums.shape
            sums = st.sums.transpose(1, 0, 2).reshape(R, M * B)
            counts = st.counts.transpose(1, 0, 2).reshape(R, M * B)
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(cell.label.encode())]))
            reps = ratio_replicates(sums, counts, int(n_boot), rng).reshape(int(n_boot), M, B)
            reps.setflags(write=False)
            self._cache[key] = reps
        return self._cache[key]

    def table(self, n_boot: int = 1000, ci: float = 0.95, seed: int = 0, *,
              interval: str = "expanded") -> pd.DataFrame:
        """The tidy table: one row per metric x cell x non-empty bin, columns :data:`BIN_COLUMNS`.

        ``interval``: ``"expanded"`` (default: percentile interval widened for few clusters, K = the bin's
        ``n_clusters``; see :mod:`drift.stats.bootstrap`) or ``"percentile"``.
        """
        if not 0.0 < ci < 1.0:
            raise ValueError(f"ci must be in (0, 1), got {ci}")
        if interval not in INTERVAL_METHODS:
            raise ValueError(f"interval must be one of {INTERVAL_METHODS}, got {interval!r}")
        import pandas as pd

        self.wait_quantiles()
        frames = []
        left, right = self.edges[:-1], self.edges[1:]
        stratum_order = {s: i for i, s in enumerate(("all", *self.strata_labels))}
        for cell in sorted(self.cells, key=lambda c: (c.step is not None, c.step or 0,
                                                      stratum_order.get(c.stratum, 99), c.group != "all", c.group)):
            st = self.stats[cell]
            reps = self.replicates(cell, n_boot, seed) if n_boot > 0 else None
            for i, metric in enumerate(self.metrics):
                n_B = st.counts[i].sum(axis=0)
                keep = n_B > 0
                with np.errstate(invalid="ignore", divide="ignore"):
                    mean = st.sums[i].sum(axis=0) / n_B
                    sd = np.sqrt(np.maximum(st.sumsq[i] / n_B - mean ** 2, 0.0))
                    x = st.xsum[i] / n_B
                k_B = (st.counts[i] > 0).sum(axis=0)
                if reps is not None:
                    if interval == "expanded":
                        lo, hi = expanded_percentile_interval(reps[:, i, :], np.maximum(k_B, 1), ci)
                    else:
                        lo, hi = percentile_interval(reps[:, i, :], ci)
                    se = _nanstd(reps[:, i, :]) if n_boot > 1 else np.full(len(mean), np.nan)
                else:
                    lo = hi = se = np.full(len(mean), np.nan)
                row = {
                    "metric": metric, "by": self.spec.by, "group": cell.group,
                    "bin": np.flatnonzero(keep), "bin_left": left[keep], "bin_right": right[keep],
                    "mean": mean[keep], "ci_low": lo[keep], "ci_high": hi[keep],
                    "n_tokens": n_B[keep].astype(np.int64),
                    "n_rollouts": st.rollouts[i].sum(axis=0)[keep].astype(np.int64),
                    "n_clusters": k_B[keep].astype(np.int64), "cluster": self.spec.cluster,
                    "step": cell.step, "stratum": cell.stratum, "x": x[keep], "se": se[keep], "sd": sd[keep],
                }
                for j, name in enumerate(QUANTILE_COLUMNS):
                    row[name] = st.quant[i, keep, j]
                frames.append(pd.DataFrame(row))
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(BIN_COLUMNS))
        out["step"] = out["step"].astype("Int64")
        out["bin"] = out["bin"].astype(np.int64)
        order = {m: i for i, m in enumerate(self.metrics)}
        out = out.sort_values("metric", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
        return out[list(BIN_COLUMNS)]


def _nanstd(a: np.ndarray) -> np.ndarray:
    ok = ~np.isnan(a)
    n = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ok, a, 0.0).sum(axis=0) / n
        var = np.where(ok, (a - mean) ** 2, 0.0).sum(axis=0) / (n - 1)
    return np.where(n > 1, np.sqrt(var), np.nan)


# ------------------------------------------------------------------------------------------------ assembly


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NA"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _cell_of(plan: Plan, lvl: int, dims: dict[str, Any]) -> Cell:
    # GROUPING() sets bit i (from the left, most significant first) when dims[i] is aggregated away.
    names = plan.dims
    grouped = {d: ((lvl >> (len(names) - 1 - i)) & 1) == 0 for i, d in enumerate(names)}
    step = (int(dims["d_step"]) if grouped["d_step"] else None) if plan.step_dim else plan.step_value
    stratum = plan.strata_labels[int(dims["d_stratum"])] if plan.strata_cuts and grouped["d_stratum"] else "all"
    group = "all"
    if plan.spec.group_by and grouped.get("d_g0", False):
        group = ",".join(f"{g}={_fmt(dims[f'd_g{j}'])}" for j, g in enumerate(plan.spec.group_by))
    return Cell(step, stratum, group)


def aggregate_bins(source: Any, metrics: str | Sequence[str], spec: BinSpec | None = None, *,
                   memory_limit: str = "4GB", threads: int | None = None, engine: str = "duckdb",
                   ray_tasks: int | None = None, background_quantiles: bool = False) -> RolloutBins:
    """Per-cluster, per-bin sufficient statistics of ``metrics``, computed in DuckDB.

    The tokens are scanned once for the sums (per rollout and bin, by one single-threaded query per thread over a
    shard of the parts, then added up per cluster key in a fixed order: :mod:`drift.stats.fold`) and once for the
    bin quantiles, after a first pass for what the binning needs (distinct steps, unless the parquet statistics
    tell, max position or length quantiles); memory is that of the result, about rollouts x bins x 100 bytes per
    cell, plus DuckDB's hash tables (bounded by ``memory_limit``, spilling beyond it). ``spec.cluster`` picks the
    cluster (prompt by default).

    Args:
        source: a dataset folder, :class:`~drift.store.DriftDataset`, DataFrame, arrow Table or
            :class:`~drift.stats.reader.TokenSource`.
        metrics: one or more numeric token columns (bools become 0/1, so their mean is a rate).
        spec: the binning (default ``BinSpec()``: 20 relative bins, cells per step).
        memory_limit, threads: DuckDB resources (with ``engine="ray"``: of each task; threads default to 1 there).
        engine: ``"duckdb"`` (default: in this process) or ``"ray"`` (the parts of a dataset folder aggregated by
            Ray tasks and merged here, bit-identical to ``"duckdb"``: :mod:`drift.stats.ray_engine`).
        ray_tasks: with ``engine="ray"``, how many tasks share the parts (default: one per part, at most 4 per CPU
            of the cluster).
        background_quantiles: scan for the bin quantiles in a worker thread and return at once; they are filled in
            by :meth:`RolloutBins.wait_quantiles` (:meth:`RolloutBins.table` calls it). ``drift fit`` overlaps that
            scan with its fits this way. The numbers are the same.

    Raises:
        SchemaError: listing every missing or ill-typed column (and the numeric columns, for an unknown metric).
        DatasetError: if no token rows are left to bin.
        ConfigError: an unknown engine, or ``engine="ray"`` without Ray installed or without a dataset folder.
    """
    spec = spec or BinSpec()
    metrics = (metrics,) if isinstance(metrics, str) else tuple(dict.fromkeys(metrics))
    if not metrics:
        raise ValueError("pass at least one metric column to bin")
    if engine not in ENGINES:
        raise ConfigError("aggregate_bins", [f"engine must be one of {', '.join(ENGINES)}, got {engine!r}"])
    plain = [g for g in spec.group_by if g not in TOKEN_CLASSES]  # derived classes are checked by their pass
    required = [*ROLLOUT_KEY, "position", "response_len", *(["rel_position"] if spec.by == "rel" else []), *plain]
    src = open_tokens(source, required, metrics=metrics, memory_limit=memory_limit, threads=threads)
    src, plan, classes, onset = _first_pass(src, metrics, spec)
    if engine == "ray":
        from drift.stats.ray_engine import aggregate_ray

        plan, table, qtable = aggregate_ray(src, metrics, spec, tasks=ray_tasks, plan=plan)
        return _assemble(plan, src, table, qtable, classes=classes, onset=onset)
    con = src.connect()
    try:
        rows, sharded = _rollout_rows(src, con, plan)
        qtable: Any = None
        if plan.quantile_method != "none" and rows.num_rows:
            qtable = (_quantiles_in_background(src, plan) if background_quantiles else
                      fetch_arrow(con, quantile_sql(plan)))
        try:
            table = fold_rollouts(rows, plan.dims, len(metrics), source=src.name)
        except DatasetError:
            if not sharded:
                raise
            # a rollout with tokens in parts of two shards: one query over every part instead (same numbers)
            table = fold_rollouts(fetch_arrow(con, rollout_sql(plan)), plan.dims, len(metrics), source=src.name)
    finally:
        con.close()
    return _assemble(plan, src, table, qtable, classes=classes, onset=onset)


def _first_pass(src: TokenSource, metrics: tuple[str, ...],
                spec: BinSpec) -> tuple[TokenSource, Plan, tuple[ResolvedClass, ...], OnsetInfo | None]:
    """What every query needs, on this process (both engines): the onsets join (checked, its exclusions counted),
    the plan (:func:`~drift.stats.binsql.plan_bins`) and the cut points of the token classes, which become literal
    SQL of derived columns of the returned source (:mod:`drift.stats.classes`), the same in every Ray task."""
    onset: OnsetInfo | None = None
    con = src.connect()
    try:
        if spec.by == "onset":
            from drift.stats.onset_axis import check_onsets, onsets_file

            dataset = str(src.dataset.root) if src.dataset is not None else "DATASET"
            path = onsets_file(str(spec.onsets), dataset)
            onset = check_onsets(src, con, path, steps=spec.steps, window=spec.onset_window,
                                 width=int(spec.edges()[1] - spec.edges()[0]))
            con.close()
            src = open_tokens(src, joins=[(path, ("onset_position",))])
            con = src.connect()
        plan = plan_bins(src, con, metrics, spec)
        classes = resolve_classes(src, con, spec.group_by, plan.where, zones=spec.zones, low_prob=spec.low_prob)
    finally:
        con.close()
    if classes:
        src = open_tokens(src, derived={c.name: c.sql for c in classes})
    return src, plan, classes, onset


def _rollout_rows(src: TokenSource, con: Any, plan: Plan) -> tuple[Any, bool]:
    """``(rows of rollout_sql, sharded)``: one query, or, for a dataset of several parts and several threads, one
    single-threaded query per contiguous shard of parts, run in parallel threads. The rows are the same (a rollout's
    tokens lie in one part) and the fold makes their order irrelevant; shards cost less CPU than one multi-threaded
    query, whose threads share, partition and merge one hash table (the Ray engine's tasks are such shards)."""
    threads = int(src.threads or os.cpu_count() or 1)
    shards = shard_parts(len(src.files), threads) if src.dataset is not None and threads > 1 else []
    if len(shards) < 2:
        return fetch_arrow(con, rollout_sql(plan)), False
    single = dataclasses.replace(src, threads=1)

    def scan(parts: list[int]) -> Any:
        c = single.connect(parts)
        try:
            return fetch_arrow(c, rollout_sql(plan))
        finally:
            c.close()

    with ThreadPoolExecutor(max_workers=len(shards), thread_name_prefix="drift-shard") as pool:
        tables = list(pool.map(scan, shards))
    import pyarrow as pa

    return pa.concat_tables(tables), True


def _assemble(plan: Plan, src: TokenSource, table: Any, qtable: Any, *, classes: tuple[ResolvedClass, ...] = (),
              onset: OnsetInfo | None = None) -> RolloutBins:
    M, B = len(plan.metrics), len(plan.edges) - 1
    if table.num_rows == 0 and onset is not None:
        raise DatasetError(f"{src.name}: no token falls in the onset window: {onset.describe()}")
    if table.num_rows == 0:
        raise DatasetError(plan.no_rows_message if plan.no_rows_message and plan.spec.by == "rel" else
                           f"{src.name}: no token rows fall in any bin (check max_position and the step filter)")
    cell_ids = table.column("cell").to_numpy()
    starts = np.flatnonzero(np.r_[True, cell_ids[1:] != cell_ids[:-1]])
    ends = np.r_[starts[1:], len(cell_ids)]
    lvl = table.column("lvl").to_numpy()
    dim_values = {d: table.column(d).take(starts).to_pylist() for d in plan.dims}
    rid = table.column("rid").to_numpy()
    bins = table.column("bin").to_numpy().astype(np.int64)
    cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names
            if name[0] in "nsqxwrf" and name[1:].isdigit()}
    stats: dict[Cell, _CellStats] = {}
    keys: dict[tuple[Any, ...], Cell] = {}
    n_tokens = 0
    pooled_level = (1 << len(plan.dims)) - 1  # GROUPING() of the level that aggregates every dimension away
    for c, (a, b) in enumerate(zip(starts, ends, strict=True)):
        dims = {d: dim_values[d][c] for d in plan.dims}
        cell = _cell_of(plan, int(lvl[a]), dims)
        keys[(int(lvl[a]), *(dims[d] for d in plan.dims))] = cell
        R = int(rid[b - 1]) + 1
        counts = np.zeros((M, R, B))
        sums = np.zeros((M, R, B))
        sumsq = np.zeros((M, B))
        xsum = np.zeros((M, B))
        xsq = np.zeros((M, B))
        rolls = np.zeros((M, R, B))
        firsts = np.zeros((M, R, B))
        r_, b_ = rid[a:b], bins[a:b]
        for i in range(M):
            n = np.nan_to_num(cols[f"n{i}"][a:b].astype(np.float64))
            counts[i, r_, b_] = n
            sums[i, r_, b_] = np.nan_to_num(cols[f"s{i}"][a:b].astype(np.float64))
            np.add.at(sumsq[i], b_, np.nan_to_num(cols[f"q{i}"][a:b].astype(np.float64)))
            np.add.at(xsum[i], b_, np.nan_to_num(cols[f"x{i}"][a:b].astype(np.float64)))
            np.add.at(xsq[i], b_, np.nan_to_num(cols[f"w{i}"][a:b].astype(np.float64)))
            rolls[i, r_, b_] = np.nan_to_num(cols[f"r{i}"][a:b].astype(np.float64))
            firsts[i, r_, b_] = np.nan_to_num(cols[f"f{i}"][a:b].astype(np.float64))
        # Tokens binned: the fully pooled level holds all of them; without margins the cells partition them.
        tot = int(counts.sum(axis=(1, 2)).max())
        if not plan.spec.margins:
            n_tokens += tot
        elif int(lvl[a]) == pooled_level:
            n_tokens = tot
        stats[cell] = _CellStats(counts, sums, sumsq, xsum, xsq, np.full((M, B, len(QUANTILES)), np.nan),
                                 rolls, firsts.sum(axis=2))
    pending: list[Callable[[], None]] = []
    if isinstance(qtable, Future):  # the quantile scan still runs: filled in by RolloutBins.wait_quantiles()
        pending.append(lambda: _fill_quantiles(plan, stats, keys, qtable.result()))
    elif qtable is not None:
        _fill_quantiles(plan, stats, keys, qtable)
    cells = tuple(stats)
    for st in stats.values():
        for arr in (st.counts, st.sums, st.sumsq, st.xsum, st.xsq, st.rollouts, st.rollouts_any):
            arr.setflags(write=False)
        if not pending:
            st.quant.setflags(write=False)
    edges = np.asarray(plan.edges, dtype=float)
    edges.setflags(write=False)
    return RolloutBins(spec=plan.spec, metrics=plan.metrics, edges=edges, cells=cells, stats=stats,
                       strata_labels=plan.strata_labels, source=src.name, n_tokens=n_tokens,
                       quantile_method=plan.quantile_method, classes=classes, onset=onset, _pending=pending)


def _fill_quantiles(plan: Plan, stats: dict[Cell, _CellStats], keys: dict[tuple[Any, ...], Cell],
                    qtable: Any) -> None:
    """Write the rows of :func:`~drift.stats.binsql.quantile_sql` into the cells' ``quant`` arrays (then read-only)."""
    M = len(plan.metrics)
    q_lvl = qtable.column("lvl").to_numpy()
    q_dims = {d: qtable.column(d).to_pylist() for d in plan.dims}
    q_bin = qtable.column("bin").to_numpy()
    q_vals = [qtable.column(f"qq{i}").to_pylist() for i in range(M)]
    for r in range(qtable.num_rows):
        cell = keys.get((int(q_lvl[r]), *(q_dims[d][r] for d in plan.dims)))
        if cell is None:
            continue
        for i in range(M):
            if q_vals[i][r] is not None:
                stats[cell].quant[i, int(q_bin[r])] = np.asarray(q_vals[i][r], dtype=np.float64)
    for st in stats.values():
        st.quant.setflags(write=False)


def _quantiles_in_background(src: TokenSource, plan: Plan) -> Future:
    """Run the quantile scan on its own DuckDB connection in a worker thread (DuckDB releases the GIL)."""
    # half the threads: the main thread keeps a core for the fits (and the scan holds fewer partial states)
    threads = max(1, (src.threads or os.cpu_count() or 2) // 2)

    def scan() -> Any:
        con = dataclasses.replace(src, threads=threads).connect()
        try:
            return fetch_arrow(con, quantile_sql(plan))
        finally:
            con.close()

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drift-quantiles")
    future = pool.submit(scan)
    pool.shutdown(wait=False)
    return future


def bin_metric(source: Any, metrics: str | Iterable[str], spec: BinSpec | None = None, *, n_boot: int = 1000,
               ci: float = 0.95, seed: int = 0, memory_limit: str = "4GB", threads: int | None = None,
               **spec_kwargs: Any) -> pd.DataFrame:
    """Tidy table of ``metrics`` by position bin with cluster-bootstrap intervals.

    ``mean`` is the mean over all tokens of the bin pooled across rollouts (ratio of sums ``sum s / sum n``);
    ``ci_low``/``ci_high`` are expanded percentile intervals from ``n_boot`` resamples of *clusters* (prompts by
    default, ``spec.cluster``) with replacement (seeded); ``n_rollouts`` and ``n_clusters`` count the rollouts and
    clusters with a token in the bin. Columns: :data:`BIN_COLUMNS`.

    Example:
        >>> bin_metric("runs/x", "kl_reverse", by="rel", bins=20)          # doctest: +SKIP
        >>> bin_metric(df, ["k3", "cum_abs_gap_frac"], BinSpec(by="abs_log", strata="quantiles:3"))  # doctest: +SKIP

    Args:
        source: dataset folder, DriftDataset, DataFrame, arrow Table or TokenSource.
        metrics: column name(s).
        spec: a :class:`BinSpec`; or pass its fields as keyword arguments (``by="abs", width=64``).
        n_boot, ci, seed: bootstrap resamples, interval level, seed.
        memory_limit, threads: DuckDB resources.
    """
    if spec is not None and spec_kwargs:
        raise TypeError("pass either spec= or BinSpec fields as keywords, not both")
    spec = spec or BinSpec(**spec_kwargs)
    return aggregate_bins(source, metrics if isinstance(metrics, str) else tuple(metrics), spec,
                          memory_limit=memory_limit, threads=threads).table(n_boot=n_boot, ci=ci, seed=seed)
