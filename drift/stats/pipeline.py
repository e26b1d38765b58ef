"""The ``drift fit`` stage as a library: bins with intervals, curve fits and direction tests for each metric.

:class:`FitConfig` is the stage's one frozen config (CLI flags map 1:1 onto it); :func:`run_fit` does the work and
returns a :class:`FitRun`, whose :meth:`FitRun.write` produces::

    OUT/bins.parquet   one row per metric x cell x bin (columns drift.stats.bins.BIN_COLUMNS, with n_clusters
                       and the cluster unit)
    OUT/fits.json      {metric: {"models": {name: {...}}, "selected": name or None, "selection_note": ...,
                                 "direction": {...}, "cell": {...}, "cluster": "prompt", "n_clusters": K,
                                 "n_rollouts": R, "cells": [...]}}   (the top level is the pooled cell)
    OUT/config.json    the resolved FitConfig (cluster, min_clusters, flat_margin included)

Honest at small n: a cell with fewer than ``min_clusters`` clusters gets the direction verdict ``insufficient`` and
no selected model (``"selected": null`` with ``selection_note`` saying why); every fit is still listed.

:func:`fit_bins` is the notebook entry point: fit families to one metric's bins with errors taken from the
cluster bootstrap.

``engine="ray"`` (``--engine ray``) computes the per-cluster sums with Ray tasks over shards of the dataset's parts
(:mod:`drift.stats.ray_engine`); every output is bit-identical to the default in-process DuckDB engine.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from drift.config import Checks, opt, save_config
from drift.errors import ConfigError, DatasetExistsError
from drift.schema import CLUSTER_UNITS
from drift.stats.bins import (
    BY,
    DEFAULT_MIN_CLUSTERS,
    DEFAULT_ONSET_WIDTH,
    DEFAULT_ONSET_WINDOW,
    ENGINES,
    MAX_BINS,
    BinSpec,
    Cell,
    RolloutBins,
    aggregate_bins,
    cell_rows,
    pooled_cell,
)
from drift.stats.classes import DEFAULT_LOW_PROB, DEFAULT_ZONES, TOKEN_CLASSES
from drift.stats.direction import (
    DEFAULT_FLAT_MARGIN,
    RHO_INTERVAL,
    DirectionResult,
    check_direction_method,
    direction_test,
)
from drift.stats.fit import FrozenDict, ModelSelection, fit_all
from drift.stats.models import MODELS, DecayModel
from drift.stats.onset_axis import OnsetContrast, onset_contrast
from drift.stats.reader import _MEMORY_RE, is_dataframe

if TYPE_CHECKING:  # pandas is imported where a table is built: `import drift.stats` and the CLI stay light
    import pandas as pd

__all__ = ["OUTPUT_FILES", "CellFit", "FitConfig", "FitRun", "check_output", "fit_bins", "run_fit"]

log = logging.getLogger(__name__)

OUTPUT_FILES = ("bins.parquet", "fits.json", "config.json")
NO_ONSET_FITS = ("no curve fits on the onset offset axis (--by onset): the decay families are functions of the "
                 "position from the response start; see onset_contrast (after minus before the onset) and direction")
Errors = Literal["cov", "se", "n_rollouts", "n_tokens", "none"]


def _cell_arrays(data: RolloutBins, metric: str, cell: Cell, x: str) -> dict[str, np.ndarray]:
    st = data.stats[cell]
    i = data.metric_index(metric)
    bins, sums, counts = data.sufficient(metric, cell)
    n_B = counts.sum(axis=0)
    edges = data.edges
    x_mean = st.xsum[i][bins] / n_B
    x_var = np.maximum(st.xsq[i][bins] / n_B - x_mean ** 2, 0.0)
    xs = x_mean if x == "mean" else (edges[bins] + edges[bins + 1]) / 2
    return {"bins": bins, "x": xs, "x_var": x_var if x == "mean" else None, "y": sums.sum(axis=0) / n_B,
            "n_tokens": n_B, "n_rollouts": st.rollouts[i][:, bins].sum(axis=0).astype(float),
            "n_clusters": (counts > 0).sum(axis=0).astype(float)}


def _floored(v: np.ndarray) -> np.ndarray:
    pos = v[np.isfinite(v) & (v > 0)]
    return np.maximum(v, 1e-2 * float(np.median(pos))) if len(pos) else v


def fit_bins(data: RolloutBins | pd.DataFrame, metric: str, *, models: Sequence[str | DecayModel] | None = None,
             step: int | Literal["auto"] | None = "auto", stratum: str = "all", group: str = "all",
             errors: Errors = "cov", x: Literal["mean", "centre"] = "mean", n_boot: int = 1000, seed: int = 0,
             ci: float = 0.95, min_clusters: int = DEFAULT_MIN_CLUSTERS) -> ModelSelection:
    """Fit curve families to one metric's bin means in one cell and compare them by AIC.

    Args:
        data: a :class:`RolloutBins` (any ``errors``) or a bins table (``errors`` in se, n_rollouts, n_tokens, none).
        metric: the metric; step, stratum, group: the cell (default: the pooled one).
        models: families to fit (default: all five).
        errors: ``"cov"`` (default): full covariance of the bootstrap replicates of the bin means (bins share
            clusters, so their errors are correlated); ``"se"``: bootstrap standard errors only; ``"n_rollouts"`` /
            ``"n_tokens"``: weights proportional to the counts; ``"none"``: unweighted. Bootstrap errors (cov,
            se) are taken as the actual errors (``absolute_sigma=True``: inflated by the reduced chi-square only
            when the curve misfits); with counts or none the scale is estimated from the residuals (see
            :mod:`drift.stats.fit`).
        x: ``"mean"`` (default): the mean slot centre of the bin's tokens, fitting the curve averaged over the bin; or
            the bin's ``"centre"``, fitting the curve at that point.
        n_boot, seed: bootstrap used for ``cov``/``se`` (same as the table's, so intervals and fits agree).
        ci: level of the parameter intervals.
        min_clusters: with a RolloutBins, the cell's cluster count K is passed to :func:`fit_all` as
            ``n_clusters`` (it ties the covariance rule, its corrections and the intervals to K) with this minimum
            for a selection.
    """
    if is_dataframe(data):
        if errors == "cov":
            raise ValueError("a bins table holds no bootstrap replicates; use errors='se' (its se column), "
                             "'n_rollouts' or 'n_tokens', or pass the RolloutBins from aggregate_bins")
        d = data[data["metric"] == metric]
        try:
            cell = pooled_cell(d, stratum=stratum, group=group) if step == "auto" else Cell(step, stratum, group)
        except KeyError:
            cell = Cell(None, stratum, group)  # no such cell: the empty selection below says so
        df = cell_rows(d, cell)
        if df.empty:
            raise ValueError(f"no rows for metric={metric!r} step={step} stratum={stratum!r} group={group!r}")
        arr = {"x": df["x"].to_numpy(float) if x == "mean" else ((df["bin_left"] + df["bin_right"]) / 2).to_numpy(),
               "y": df["mean"].to_numpy(float), "n_tokens": df["n_tokens"].to_numpy(float),
               "n_rollouts": df["n_rollouts"].to_numpy(float), "se": df["se"].to_numpy(float)}
        kw: dict[str, Any] = {}
        if errors == "se":
            kw["sigma"] = _floored(arr["se"])
    else:
        cell = data.cell(step, stratum, group)
        arr = _cell_arrays(data, metric, cell, x)
        kw = {"x_var": arr["x_var"]}
        # fit_all ties the full-vs-diagonal choice, the R/(R-1) and Hartlap corrections and the t intervals to the
        # number of independent clusters K (drift.stats.fit); the raw bootstrap covariance is passed as is.
        kw["n_clusters"] = data.n_clusters(metric, cell)
        kw["min_clusters"] = int(min_clusters)
        if errors in ("cov", "se"):
            reps = data.replicates(cell, n_boot, seed)[:, data.metric_index(metric), :][:, arr["bins"]]
            reps = reps[np.all(np.isfinite(reps), axis=1)]
            if len(reps) < max(10, n_boot // 2):
                log.warning("%s: only %d complete bootstrap replicates; falling back to n_rollouts weights",
                            metric, len(reps))
                errors = "n_rollouts"
            elif not np.any(reps.std(axis=0) > 0):
                log.warning("%s: bin means do not vary between bootstrap resamples; using n_rollouts weights",
                            metric)
                errors = "n_rollouts"
            elif errors == "cov":
                kw["cov"] = np.atleast_2d(np.cov(reps, rowvar=False))
            else:
                kw["sigma"] = _floored(reps.std(axis=0, ddof=1))
    if errors in ("cov", "se"):
        kw["absolute_sigma"] = True  # bootstrap errors are the actual sampling errors of the bin means
    if errors in ("n_rollouts", "n_tokens"):
        kw["weights"] = arr[errors]
    return fit_all(arr["x"], arr["y"], models, ci=ci, nan_policy="omit", **kw)


@dataclass(frozen=True)
class FitConfig:
    """Configuration of ``drift fit``: which metrics, how to bin them, how to fit them, where to write."""

    dataset: str = opt("", "drift dataset folder (the OUT of `drift collect`/`drift score`)", cli=False)
    metric: tuple[str, ...] = opt((), "token column to bin and fit; repeat the flag for several", cli=False)
    out: str = opt("", "output folder for bins.parquet, fits.json and config.json (required)")
    by: str = opt("rel", "position axis: rel = t/T, abs = tokens in fixed-width bins, abs_log = log-spaced tokens, "
                  "onset = offset t - onset from the rollout's divergence onset (needs --onsets; bins, intervals, "
                  "the direction test and a before-vs-after contrast, no curve fits)", choices=BY)
    bins: int = opt(20, f"number of position bins (1..{MAX_BINS}; with --by abs, used when --width is not given)")
    width: int | None = opt(None, "bin width in tokens (--by abs; --by onset: default "
                            f"{DEFAULT_ONSET_WIDTH}, a divisor of --onset-window)")
    max_position: int | None = opt(None, "absolute bins cover positions below this (default: longest response)")
    strata: str = opt("", "response-length strata: cut points '256,512' or 'quantiles:3' (default: none)")
    group_by: tuple[str, ...] = opt((), "token columns or derived token classes to split by, comma separated (e.g. "
                                    "finished, reward; classes: " + ", ".join(TOKEN_CLASSES) + ")")
    zones: int = opt(DEFAULT_ZONES, "quantile zones of teacher_entropy_zone / teacher_mass_zone (cuts: exact "
                     "dataset quantiles, recorded in config.json; 3 = low/mid/high)")
    low_prob: float = opt(DEFAULT_LOW_PROB, "low_student_logprob: the student's probability of its sampled token is "
                          "below this (student_logprob < ln p)")
    onsets: str = opt("", "--by onset: the onsets.parquet of `drift onset DATASET --out OUT`")
    onset_window: int = opt(DEFAULT_ONSET_WINDOW, "--by onset: offsets in [-W, +W) tokens around the onset")
    step: str = opt("each", "each = separate cells per scoring step; pool = all steps together",
                    choices=("each", "pool"))
    steps: tuple[int, ...] = opt((), "keep only these steps, comma separated (default: all)")
    margins: bool = opt(True, "also report the pooled cells (stratum=all, group=all, all steps)")
    quantiles: str = opt("auto", "per-bin token quantiles: exact, approx (t-digest), none, auto (exact <= 20M rows)",
                         choices=("auto", "exact", "approx", "none"))
    n_boot: int = opt(1000, "cluster bootstrap resamples for intervals, fit errors and the direction test")
    ci: float = opt(0.95, "interval level for bins and fitted parameters")
    seed: int = opt(0, "bootstrap seed (same seed, same intervals)")
    models: tuple[str, ...] = opt(tuple(MODELS), "curve families to fit and compare by AIC, comma separated "
                                  f"(default: {','.join(MODELS)})")
    errors: str = opt("cov", "fit errors: cov (bootstrap covariance of bin means), se, n_rollouts, n_tokens, none",
                      choices=("cov", "se", "n_rollouts", "n_tokens", "none"))
    fit_x: str = opt("mean", "fit abscissa: mean slot centre of the bin's tokens, or the bin centre",
                     choices=("mean", "centre"))
    direction: str = opt("bootstrap", "direction test: bootstrap (null-centred cluster bootstrap of Spearman rho; "
                         "the bin-mean permutation test was removed)")
    cluster: str = opt("prompt", "resampling unit: prompt = all rollouts of a prompt together (one prompt at "
                       "several steps is one cluster when steps are pooled); rollout = each rollout alone (only "
                       "valid with one sample per prompt)", choices=CLUSTER_UNITS)
    min_clusters: int = opt(DEFAULT_MIN_CLUSTERS, "below this many clusters a cell's direction is 'insufficient' "
                            "and no model is selected")
    flat_margin: float = opt(DEFAULT_FLAT_MARGIN, "'flat' needs the interval of (last - first quintile mean) "
                             "within +-this fraction of |overall mean|; otherwise a non-significant trend is "
                             "'inconclusive'")
    memory_limit: str = opt("4GB", "DuckDB memory limit (spills to a temp folder beyond it)")
    threads: int | None = opt(None, "DuckDB threads (default: one per core; with --engine ray, per task, default 1)")
    engine: str = opt("duckdb", "where the sums are computed: duckdb = in this process (default); ray = Ray tasks over "
                      "shards of the dataset's parts, merged exactly (bit-identical results; connects to "
                      "RAY_ADDRESS when set, else starts a local Ray; needs pip install 'drift-opd[ray]')",
                      choices=ENGINES)
    if_exists: str = opt("fail", "when OUT already holds fit outputs: fail or overwrite", choices=("fail", "overwrite"))

    def __post_init__(self) -> None:
        for name in ("metric", "group_by", "steps", "models"):
            v = getattr(self, name)
            if isinstance(v, str):
                v = tuple(s.strip() for s in v.split(",") if s.strip())
            object.__setattr__(self, name, tuple(v))
        c = Checks("FitConfig")
        c.check(bool(self.dataset), "dataset is required: the folder written by `drift collect`/`drift score`")
        c.check(len(self.metric) > 0, "at least one --metric is required (e.g. --metric kl_reverse)")
        c.check(bool(self.out), "--out is required: the folder for bins.parquet, fits.json and config.json")
        c.check(len(self.models) > 0, "--models must name at least one family")
        for m in self.models:
            c.check(m in MODELS, f"unknown model {m!r} in --models; choose from {', '.join(MODELS)}")
        c.check(self.n_boot >= 0, f"n_boot must be >= 0, got {self.n_boot}")
        c.check(self.n_boot >= 50 or self.errors not in ("cov", "se"),
                f"--errors {self.errors} needs --n-boot >= 50 (got {self.n_boot}); or use --errors n_rollouts")
        c.in_range("ci", self.ci, 0.5, 0.999)
        try:
            check_direction_method(self.direction)
        except ConfigError as exc:
            c.problems.extend(exc.problems)
        c.check(isinstance(self.min_clusters, int) and self.min_clusters >= 1,
                f"min_clusters must be an integer >= 1, got {self.min_clusters!r}")
        c.check(self.flat_margin >= 0, f"flat_margin must be >= 0 (a fraction of |overall mean|), got "
                f"{self.flat_margin}")
        c.check(bool(_MEMORY_RE.match(self.memory_limit)),
                f"memory_limit must look like 4GB, got {self.memory_limit!r}")
        c.positive("threads", self.threads, allow_none=True)
        for name, choices in (("by", BY), ("step", ("each", "pool")),
                              ("errors", ("cov", "se", "n_rollouts", "n_tokens", "none")),
                              ("fit_x", ("mean", "centre")), ("cluster", CLUSTER_UNITS),
                              ("quantiles", ("auto", "exact", "approx", "none")), ("if_exists", ("fail", "overwrite")),
                              ("engine", ENGINES)):
            c.choice(name, getattr(self, name), choices)
        try:
            self.bin_spec()  # BinSpec checks the binning fields; report its problems with ours, all at once
        except ConfigError as exc:
            c.problems.extend(exc.problems)
        c.raise_if_any()

    def bin_spec(self) -> BinSpec:
        """The :class:`BinSpec` these flags describe."""
        return BinSpec(by=self.by, bins=self.bins, width=self.width, max_position=self.max_position,  # type: ignore[arg-type]
                       strata=self.strata or None, group_by=self.group_by, step=self.step,  # type: ignore[arg-type]
                       steps=self.steps or None, margins=self.margins, quantiles=self.quantiles,  # type: ignore[arg-type]
                       cluster=self.cluster, min_clusters=self.min_clusters,  # type: ignore[arg-type]
                       zones=self.zones, low_prob=self.low_prob, onsets=self.onsets or None,
                       onset_window=self.onset_window)


def check_output(out: str | os.PathLike[str], if_exists: str = "fail") -> Path:
    """Raise DatasetExistsError if ``out`` already holds fit outputs and ``if_exists`` is not ``overwrite``."""
    root = Path(out)
    existing = [f for f in OUTPUT_FILES if (root / f).exists()]
    if existing and if_exists != "overwrite":
        raise DatasetExistsError(f"{root} already holds {', '.join(existing)}. Pass --if-exists overwrite to "
                                 "replace them, or choose another --out.")
    return root


@dataclass(frozen=True)
class CellFit:
    """Fits and direction of one metric in one cell.

    ``selected`` is the family the fits' selection picked, or None when the cell has fewer than ``min_clusters``
    clusters (``selection_note`` says so) or nothing converged.
    """

    metric: str
    cell: Cell
    selection: ModelSelection
    direction: DirectionResult
    n_bins: int
    n_rollouts: int
    n_tokens: int
    n_clusters: int = 0
    cluster: str = "prompt"
    selection_note: str | None = None
    contrast: OnsetContrast | None = None  # --by onset: after minus before the onset (drift.stats.onset_axis)

    @property
    def selected(self) -> str | None:
        """The selected family, or None (see ``selection_note``)."""
        return None if self.selection_note else self.selection.best_name

    def to_dict(self) -> dict[str, Any]:
        sel = self.selection.to_dict()
        sel["selected"] = self.selected
        note = self.selection_note or sel.get("reason")  # ours (min_clusters) or the fits' own (e.g. unidentified)
        return {"step": self.cell.step, "stratum": self.cell.stratum, "group": self.cell.group,
                **sel, "selection_note": note, "direction": self.direction.to_dict(),
                "n_bins": self.n_bins, "n_rollouts": self.n_rollouts, "n_clusters": self.n_clusters,
                "cluster": self.cluster, "n_tokens": self.n_tokens,
                **({"onset_contrast": self.contrast.to_dict()} if self.contrast is not None else {})}


@dataclass(frozen=True)
class FitRun:
    """Everything ``drift fit`` computed: the bins table, per-cell fits, and the aggregated statistics."""

    config: FitConfig
    bins: pd.DataFrame = field(repr=False)
    fits: dict[str, tuple[CellFit, ...]] = field(repr=False)
    rollout_bins: RolloutBins = field(repr=False)

    def headline(self, metric: str) -> CellFit:
        """The pooled cell's fit of ``metric``."""
        head = self.rollout_bins.headline
        return next(f for f in self.fits[metric] if f.cell == head)

    def fits_json(self) -> dict[str, Any]:
        """The content of fits.json (plain JSON types)."""
        out: dict[str, Any] = {}
        for metric, cells in self.fits.items():
            head = self.headline(metric).to_dict()
            entry = {"models": head.pop("models"), "selected": head.pop("selected"), "criterion": head.pop("criterion"),
                     "selection_note": head.pop("selection_note"), "direction": head.pop("direction"),
                     "cell": {k: head[k] for k in ("step", "stratum", "group")},
                     **{k: head[k] for k in ("n_bins", "n_rollouts", "n_clusters", "cluster", "n_tokens")},
                     "min_clusters": self.config.min_clusters, "bin_interval": "expanded percentile",
                     "rho_interval": RHO_INTERVAL}
            if "onset_contrast" in head:
                entry["onset_contrast"] = head.pop("onset_contrast")
            rb = self.rollout_bins
            if rb.onset is not None:
                entry["onset"] = rb.onset.to_dict()
            if rb.classes:
                entry["token_classes"] = [c.to_dict() for c in rb.classes]
            if len(cells) > 1:
                entry["cells"] = [c.to_dict() for c in cells]
            out[metric] = entry
        return out

    def write(self, out: str | os.PathLike[str] | None = None, *, if_exists: str | None = None) -> Path:
        """Write bins.parquet, fits.json and config.json into ``out`` (default: the config's), atomically."""
        root = check_output(out or self.config.out, if_exists or self.config.if_exists)
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / ".bins.parquet.tmp"
        self.bins.to_parquet(tmp, index=False)
        os.replace(tmp, root / "bins.parquet")
        tmp = root / ".fits.json.tmp"
        tmp.write_text(json.dumps(self.fits_json(), indent=2, allow_nan=False) + "\n")
        os.replace(tmp, root / "fits.json")
        rb = self.rollout_bins
        save_config(self.config, root / "config.json", source=rb.source, n_tokens=rb.n_tokens,
                    edges=[float(e) for e in rb.edges], strata=list(rb.strata_labels), cluster=rb.cluster,
                    bin_interval="expanded percentile", rho_interval=RHO_INTERVAL,
                    quantile_method=rb.quantile_method, outputs=list(OUTPUT_FILES),
                    token_classes=[c.to_dict() for c in rb.classes],
                    onset=rb.onset.to_dict() if rb.onset is not None else None)
        return root

    def summary(self) -> str:
        """A short readable summary per metric: selected model, parameters with intervals, direction."""
        lines = []
        level = f"{round(self.config.ci * 100)}%"
        rb = self.rollout_bins
        lines += [f"token class {c.describe()}" for c in rb.classes]
        if rb.onset is not None:
            lines.append(rb.onset.describe())
        for metric in self.fits:
            f = self.headline(metric)
            lines.append(f"{metric}  [{self.config.by}, {f.n_bins} bins, {f.n_clusters:,} {f.cluster} clusters, "
                         f"{f.n_rollouts:,} rollouts, {f.n_tokens:,} tokens; {f.cell.label}]")
            lines.append(f"  direction: {f.direction.report()}")
            if f.contrast is not None:
                lines.append(f"  onset contrast: {f.contrast.report()}")
            name = f.selected
            note = f.selection_note or getattr(f.selection, "reason", None)
            if note and name is None:
                lines.append(f"  not selected: {note}")
            elif name is None and not f.selection.results:
                lines.append("  no curve fits: " + (f.selection_note or "no models"))
            elif name is None:
                lines.append("  no model converged: " + "; ".join(
                    f"{n}: {r.message}" for n, r in f.selection.results.items()))
            else:
                r = f.selection.results[name]
                table = f.selection.table()
                others = table.loc[table.index != name, "delta_aic"]
                gap = f", next {others.index[0]} at dAIC {others.iloc[0]:.1f}" if len(others) and \
                    math.isfinite(others.iloc[0]) else ""
                lines.append(f"  selected: {name}  y = {r.model.formula}  (AIC {r.aic:.1f}{gap})")
                for p in r.model.param_names:
                    lines.append(f"    {p:>4} = {r.params[p]:.4g}  {level} CI [{r.ci_low[p]:.4g}, {r.ci_high[p]:.4g}]")
            if len(self.fits[metric]) > 1:
                lines.append(f"  ({len(self.fits[metric])} cells in fits.json; per-cell bins in bins.parquet)")
        return "\n".join(lines)


def _prefetch_imports() -> None:
    """Import what the bootstrap and the fits need in a worker thread, while DuckDB scans (it releases the GIL)."""
    import threading

    def work() -> None:
        import pandas  # noqa: F401
        from scipy import linalg, optimize, special  # noqa: F401

    threading.Thread(target=work, name="drift-imports").start()


def run_fit(cfg: FitConfig) -> FitRun:
    """Bin every metric (one DuckDB pass), bootstrap, fit every family per cell and test the direction.

    The bin quantiles are scanned in a background thread while the cells are fitted (the bins table, built last,
    waits for them); the bootstrap replicates are drawn once per cell and shared by the table, the fits and the
    direction tests.
    """
    _prefetch_imports()
    rb = aggregate_bins(cfg.dataset, cfg.metric, cfg.bin_spec(), memory_limit=cfg.memory_limit, threads=cfg.threads,
                        engine=cfg.engine, background_quantiles=True)
    errors: Errors = cfg.errors if cfg.n_boot > 0 else "n_rollouts"  # type: ignore[assignment]
    onset = cfg.by == "onset"
    fits: dict[str, tuple[CellFit, ...]] = {}
    for metric in cfg.metric:
        cells = []
        for cell in sorted(rb.cells, key=lambda c: (c != rb.headline, c.step is not None, c.step or 0,
                                                    c.stratum, c.group)):
            arr = _cell_arrays(rb, metric, cell, cfg.fit_x)
            if len(arr["bins"]) == 0:
                continue
            contrast = None
            if onset:  # no curve families on an offset axis: the contrast before vs after the onset instead
                selection = ModelSelection(FrozenDict({}), n_clusters=rb.n_clusters(metric, cell),
                                           min_clusters=cfg.min_clusters)
                contrast = onset_contrast(rb, metric, cell, n=max(cfg.n_boot, 200), seed=cfg.seed,
                                          alpha=1 - cfg.ci, min_clusters=cfg.min_clusters)
            else:
                selection = fit_bins(rb, metric, models=cfg.models, step=cell.step, stratum=cell.stratum,
                                     group=cell.group, errors=errors, x=cfg.fit_x,  # type: ignore[arg-type]
                                     n_boot=cfg.n_boot, seed=cfg.seed, ci=cfg.ci, min_clusters=cfg.min_clusters)
            direction = direction_test(rb, metric, method=cfg.direction,
                                       n=max(cfg.n_boot, 200), seed=cfg.seed, alpha=1 - cfg.ci, step=cell.step,
                                       stratum=cell.stratum, group=cell.group, min_clusters=cfg.min_clusters,
                                       flat_margin=cfg.flat_margin)
            st = rb.stats[cell]
            i = rb.metrics.index(metric)
            k = st.n_clusters(i)
            note = (f"{k} {rb.cluster} cluster(s) < --min-clusters {cfg.min_clusters}: no model is selected "
                    "(the fits are listed, but too few independent units to choose a shape)"
                    if k < cfg.min_clusters else None)
            if onset:
                note = NO_ONSET_FITS
            cells.append(CellFit(metric, cell, selection, direction, n_bins=len(arr["bins"]),
                                 n_rollouts=st.n_rollouts(i), n_tokens=int(st.counts[i].sum()), n_clusters=k,
                                 cluster=rb.cluster, selection_note=note, contrast=contrast))
        fits[metric] = tuple(cells)
    table = rb.table(n_boot=cfg.n_boot, ci=cfg.ci, seed=cfg.seed)
    return FitRun(cfg, table, fits, rb)
