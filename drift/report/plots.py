"""The report's figures: what a drift dataset, its fits, its probe and its schedule look like.

Every function here takes ``ax=None`` (default: the current axes), draws one picture on it and returns the axes. None
creates a figure, shows or saves anything, so the same functions fill a notebook cell, a grid of subplots or the
HTML report of ``drift report`` (whose :class:`~drift.report.render.FigureStore` is the one place figures are
saved). Computation lives elsewhere: these functions receive finished tables, and the pooled cell they draw is
:func:`drift.stats.bins.pooled_rows`'s.

=================================  ===============================================================================
function                           draws                                                   from
=================================  ===============================================================================
:func:`plot_metric_by_position`    bin means with the rollout-bootstrap band, one line     ``RolloutBins.table()``
                                   per response-length stratum (length confounds position)
:func:`plot_directions`            Spearman rho of each metric with position and its       ``DirectionResult`` rows
                                   interval, coloured by verdict (rises / falls / flat /
                                   inconclusive / insufficient)
:func:`plot_fitted_curves`         bin means and every converged curve family (the          bins + ``fits.json``
                                   selected one thick)
:func:`plot_prefix_loglik`         LLs_t, LLt_t (the two models' prefix log-likelihoods)   token rows of a few
                                   and S_t = LLt_t - LLs_t along sample rollouts           rollouts
:func:`plot_cumulative_gap`        C_t = sum_{k<t} |A_k| (or C_t / C_T) along rollouts     token rows
:func:`plot_continuation_gap`      teacher / student continuation accuracy by prefix       probe ``accuracy``
                                   ratio with bands, and their gap
:func:`plot_aurocs`                AUROC of each reliability predictor with its interval   probe ``aurocs``
:func:`plot_metric_by_step`        a metric by relative position, one line per training    bins with ``step``
                                   step (viridis: early dark, late light)
:func:`plot_metric_vs_step`        a metric's mean against the training step, with band    one bin per step
:func:`plot_schedule_shape`        a schedule's weight along a synthetic constant-|A|      a ``Schedule``
                                   rollout (:mod:`drift.schedules.preview`)
=================================  ===============================================================================

Example::

    import matplotlib.pyplot as plt
    from drift.stats import BinSpec, aggregate_bins
    from drift.report.plots import plot_metric_by_position

    table = aggregate_bins("runs/x", ["kl_reverse"], BinSpec(by="rel", strata="quantiles:3")).table(n_boot=200)
    fig, ax = plt.subplots()
    plot_metric_by_position(table, "kl_reverse", ax=ax)
    fig.savefig("kl.png")          # only scripts and the report's FigureStore save
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from drift.schema import ROLLOUT_KEY
from drift.stats.bins import cell_rows, pooled_cell, pooled_rows

__all__ = [
    "PREDICTOR_LABELS",
    "plot_aurocs",
    "plot_continuation_gap",
    "plot_cumulative_gap",
    "plot_directions",
    "plot_fitted_curves",
    "plot_metric_by_position",
    "plot_metric_by_step",
    "plot_metric_vs_step",
    "plot_prefix_loglik",
    "plot_schedule_shape",
]

PREDICTOR_LABELS = {"rel_position": "t/T", "neg_cum_abs_gap": "−C_t", "neg_prefix_logratio": "−S_t",
                    "teacher_entropy": "teacher entropy", "topk_overlap": "top-k overlap", "kl_reverse": "KL(S‖T)"}
"""Short axis labels of predictors given without their ``score`` (the probe's AUROCs carry it, e.g. ``-t/T``)."""
_VERDICT_COLOR = {"rises": "tab:red", "falls": "tab:blue", "flat": "0.55", "inconclusive": "tab:orange",
                  "insufficient": "0.8"}
_XLABEL = {"rel": "relative position t/T", "abs": "position t (tokens)", "abs_log": "position t (tokens)"}


def _ax(ax: Any) -> Any:
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    return ax


def _centres(d: pd.DataFrame) -> np.ndarray:
    return ((d["bin_left"] + d["bin_right"]) / 2).to_numpy(float)


def _band(ax: Any, x: np.ndarray, lo: Any, hi: Any, color: Any, alpha: float = 0.2) -> None:
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    if np.isfinite(lo).any() and np.isfinite(hi).any():
        ax.fill_between(x, lo, hi, color=color, alpha=alpha, lw=0)


def _rollouts(tokens: pd.DataFrame) -> list[tuple[Any, pd.DataFrame]]:
    key = [k for k in ROLLOUT_KEY if k in tokens.columns]
    if not key:
        return [("rollout", tokens.sort_values("position"))]
    return [(k, g.sort_values("position")) for k, g in tokens.groupby(key, sort=False, dropna=False)]


# ----------------------------------------------------------------------------------------------- positions
def plot_metric_by_position(table: pd.DataFrame, metric: str, *, ax: Any = None, strata: bool = True,
                            band: bool = True) -> Any:
    """Mean of ``metric`` per position bin with its rollout-bootstrap band, one line per length stratum.

    Args:
        table: a bins table (:meth:`drift.stats.RolloutBins.table`, ``bins.parquet``), relative or absolute bins.
        metric: the metric to draw.
        strata: when the table has response-length strata, draw each (and the pooled curve dashed); a late position
            exists only in long rollouts, so a pooled curve mixes position with length.
        band: shade ``ci_low``..``ci_high``.
    """
    from drift.stats.plots import plot_bins

    ax = _ax(ax)
    d = table[table["metric"] == metric]
    if d.empty:
        raise ValueError(f"metric {metric!r} is not in the table; it has {sorted(table['metric'].unique())}")
    labels = [s for s in dict.fromkeys(d["stratum"]) if s != "all"] if "stratum" in d else []
    if strata and labels:
        pooled = pooled_rows(table, metric)
        colors = _cmap_colors("viridis", len(labels))
        for label, color in zip(labels, colors, strict=True):
            part = cell_rows(d, pooled_cell(d, stratum=label))  # each stratum's own pooled step
            x = _centres(part)
            ax.plot(x, part["mean"].to_numpy(float), marker="o", ms=2.5, color=color, label=str(label))
            if band:
                _band(ax, x, part["ci_low"], part["ci_high"], color, 0.15)
        x = _centres(pooled)
        ax.plot(x, pooled["mean"].to_numpy(float), "k--", lw=1.5, label="all lengths")
        if band:
            _band(ax, x, pooled["ci_low"], pooled["ci_high"], "k", 0.1)
        by = str(pooled["by"].iloc[0])
        ax.set(xlabel=_XLABEL.get(by, "position"), ylabel=f"mean {metric}")
        ax.legend(fontsize="x-small", title="response length", title_fontsize="x-small")
    else:
        plot_bins(table, metric, ax=ax, band=band)
    return ax


def _cmap_colors(name: str, n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return [cmap(v) for v in (np.linspace(0.1, 0.85, n) if n > 1 else [0.3])]


def plot_directions(directions: pd.DataFrame, *, ax: Any = None) -> Any:
    """Spearman rho of each metric (or cell) with position, with its interval; colour = verdict.

    Args:
        directions: one row per test with columns ``label``, ``rho``, ``ci_low``, ``ci_high``, ``verdict``
            (e.g. ``DirectionResult.to_dict()`` rows plus a label).
    """
    ax = _ax(ax)
    d = directions.reset_index(drop=True)
    y = np.arange(len(d))[::-1]
    for yi, (_, row) in zip(y, d.iterrows(), strict=True):
        color = _VERDICT_COLOR.get(str(row["verdict"]), "0.3")
        rho, lo, hi = (float(row[k]) if row[k] is not None else np.nan for k in ("rho", "ci_low", "ci_high"))
        if np.isfinite(lo) and np.isfinite(hi):
            ax.plot([lo, hi], [yi, yi], color=color, lw=2.5, alpha=0.6, solid_capstyle="round")
        ax.plot([rho], [yi], "o", color=color, ms=6)
    ax.axvline(0.0, color="0.3", lw=0.8, ls=":")
    ax.set_yticks(y, [str(v) for v in d["label"]], fontsize="small")
    ax.set(xlim=(-1.05, 1.05), xlabel="Spearman rho of bin mean with position (interval)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=c, label=v) for v, c in _VERDICT_COLOR.items()]
    ax.legend(handles=handles, fontsize="x-small", loc="lower right")
    return ax


def plot_fitted_curves(points: pd.DataFrame | None, models: Mapping[str, Mapping[str, Any]], *,
                       selected: str | None = None, ax: Any = None, x_range: tuple[float, float] | None = None,
                       n_points: int = 200) -> Any:
    """Data points with their intervals and every converged curve family (the selected one drawn thick).

    Args:
        points: the fitted data: columns ``x`` (or ``bin_left``/``bin_right``), ``mean``, ``ci_low``, ``ci_high``;
            None draws the curves alone.
        models: ``{name: {"params": {...}, "converged": bool, "aic": float}}`` as in ``fits.json`` (or
            ``ModelSelection.to_dict()["models"]``).
        selected: the family to emphasise (default: the lowest AIC among converged ones).
        x_range: the abscissa range of the curves (default: the points' range, else [0, 1]).
    """
    from drift.stats.models import get_model

    ax = _ax(ax)
    ok = {n: m for n, m in models.items() if m.get("converged") and m.get("params")}
    if selected is None and ok:
        selected = min(ok, key=lambda n: float(ok[n].get("aic", np.inf)))
    if points is not None and len(points):
        x = points["x"].to_numpy(float) if "x" in points else _centres(points)
        y = points["mean"].to_numpy(float)
        err = np.vstack([y - points["ci_low"].to_numpy(float), points["ci_high"].to_numpy(float) - y])
        ax.errorbar(x, y, yerr=np.where(np.isfinite(err), np.maximum(err, 0), 0), fmt="o", ms=3, color="0.25",
                    ecolor="0.65", lw=1, label="bin means (95% interval)", zorder=3)
        lo, hi = x_range or (float(np.nanmin(x)), float(np.nanmax(x)))
    else:
        lo, hi = x_range or (0.0, 1.0)
    grid = np.linspace(lo, hi, n_points)
    for name, m in ok.items():
        best = name == selected
        aic = m.get("aic")
        label = f"{name}" + (f" (AIC {float(aic):.1f})" if aic is not None else "") + (" — selected" if best else "")
        ax.plot(grid, get_model(name).evaluate(grid, dict(m["params"])), lw=2.6 if best else 1.0,
                alpha=1.0 if best else 0.7, ls="-" if best else "--", label=label, zorder=4 if best else 2)
    ax.legend(fontsize="x-small")
    return ax


# ------------------------------------------------------------------------------------------- trajectories
def plot_prefix_loglik(tokens: pd.DataFrame, *, ax: Any = None, show: Sequence[str] = ("student", "teacher", "S_t"),
                       alpha: float = 0.9) -> Any:
    """Prefix log-likelihoods along rollouts: LLs_t = sum_{k<t} log pi_S(y_k), LLt_t (teacher) and S_t = LLt - LLs.

    The student sampled the tokens, so its own prefix probability decays smoothly; an external teacher's falls faster
    once early choices leave the region it would produce, and S_t (the prefix log-ratio) then falls almost
    monotonically (paper §3.5).

    Args:
        tokens: token rows of one or a few rollouts with ``position``, ``student_prefix_logprob``,
            ``teacher_prefix_logprob`` and ``prefix_logratio`` (and the rollout key columns).
        show: which curves: ``student``, ``teacher``, ``S_t``.
    """
    ax = _ax(ax)
    spec = {"student": ("student_prefix_logprob", "tab:blue", "LLs_t (student)"),
            "teacher": ("teacher_prefix_logprob", "tab:red", "LLt_t (teacher)"),
            "S_t": ("prefix_logratio", "k", "S_t = LLt_t − LLs_t")}
    for i, (_, g) in enumerate(_rollouts(tokens)):
        for what in show:
            column, color, label = spec[what]
            ax.plot(g["position"].to_numpy(), g[column].to_numpy(float), color=color, alpha=alpha, lw=1.3,
                    ls="-" if what != "S_t" else "--", label=label if i == 0 else None)
    ax.axhline(0.0, color="0.7", lw=0.6)
    ax.set(xlabel="position t (tokens)", ylabel="prefix log-likelihood (nats)")
    ax.legend(fontsize="x-small")
    return ax


def plot_cumulative_gap(tokens: pd.DataFrame, *, ax: Any = None, relative: bool = False) -> Any:
    """Cumulative gap C_t = sum_{k<t} |A_k| along each rollout (IW-OPD's per-rollout signal), one line each.

    Args:
        tokens: token rows with ``position``, ``cum_abs_gap`` (or ``rel_position``, ``cum_abs_gap_frac`` when
            ``relative``) and the rollout key columns.
        relative: draw C_t / C_T against t/T instead, the normalized form IW-OPD's weight uses
            (w = 1 + gamma (1 - C_t / C_T)); the diagonal is a constant |A|.
    """
    ax = _ax(ax)
    x_col, y_col = ("rel_position", "cum_abs_gap_frac") if relative else ("position", "cum_abs_gap")
    groups = _rollouts(tokens)
    colors = _cmap_colors("tab10" if len(groups) <= 10 else "viridis", len(groups))
    for (key, g), color in zip(groups, colors, strict=True):
        label = f"{key[2]}/{key[3]} (T={len(g)})" if isinstance(key, tuple) and len(key) == 4 else None
        ax.plot(g[x_col].to_numpy(float), g[y_col].to_numpy(float), color=color, lw=1.3, label=label)
    if relative:
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":", label="constant |A|")
        ax.set(xlabel="relative position t/T", ylabel="C_t / C_T", xlim=(0, 1), ylim=(0, 1.02))
    else:
        ax.set(xlabel="position t (tokens)", ylabel="C_t = Σ_{k<t} |A_k| (nats)")
    ax.legend(fontsize="x-small")
    return ax


# -------------------------------------------------------------------------------------------------- probe
def plot_continuation_gap(accuracy: pd.DataFrame, *, ax: Any = None, gap: bool = True) -> Any:
    """Teacher and student continuation accuracy by prefix ratio with rollout-bootstrap bands, and their gap.

    The paper's Fig. 1b: the teacher, continuing from longer student prefixes, succeeds less and less while the
    student stays flat, so the gap (how much the teacher's supervision is worth) shrinks along the response.

    Args:
        accuracy: the probe's ``accuracy.parquet`` rows: ``ratio``, ``model`` (teacher, student, gap), ``accuracy``,
            ``ci_low``, ``ci_high``.
        gap: also draw the gap (dashed grey).
    """
    ax = _ax(ax)
    style = {"teacher": ("tab:red", "-", "teacher continues"), "student": ("tab:blue", "-", "student continues"),
             "gap": ("0.35", "--", "gap (teacher − student)")}
    for model in ("teacher", "student", "gap") if gap else ("teacher", "student"):
        d = accuracy[accuracy["model"] == model].sort_values("ratio")
        if d.empty:
            continue
        color, ls, label = style[model]
        x = d["ratio"].to_numpy(float)
        ax.plot(x, d["accuracy"].to_numpy(float), color=color, ls=ls, marker="o", ms=3, label=label)
        _band(ax, x, d["ci_low"], d["ci_high"], color, 0.15)
    ax.axhline(0.0, color="0.7", lw=0.6)
    ax.set(xlabel="prefix ratio (share of the student's response kept)", ylabel="continuation accuracy")
    ax.legend(fontsize="x-small")
    return ax


def plot_aurocs(aurocs: Mapping[str, Mapping[str, Any]] | pd.DataFrame, *, ax: Any = None) -> Any:
    """AUROC of each reliability predictor against teacher continuation success, with its interval.

    Bars start at 0.5 (chance): right of it, a larger score goes with success; left, a smaller one.

    Args:
        aurocs: ``{name: {"auroc", "ci_low", "ci_high"}}`` (``ProbeAnalysis.aurocs``) or a frame with those
            columns indexed by name; an optional ``score`` (e.g. ``-t/T``) labels the row.
    """
    ax = _ax(ax)
    d = pd.DataFrame(aurocs).T if isinstance(aurocs, Mapping) else aurocs
    labels = [str(v) if isinstance(v, str) and v else PREDICTOR_LABELS.get(str(n), str(n))
              for n, v in zip(d.index, d["score"] if "score" in d else [None] * len(d), strict=True)]
    d = d.astype({c: float for c in ("auroc", "ci_low", "ci_high")})
    y = np.arange(len(d))[::-1]
    est = d["auroc"].to_numpy(float)
    err = np.vstack([est - d["ci_low"].to_numpy(float), d["ci_high"].to_numpy(float) - est])
    colors = ["tab:green" if v >= 0.5 else "tab:purple" for v in np.nan_to_num(est, nan=0.5)]
    ax.barh(y, np.nan_to_num(est - 0.5), left=0.5, color=colors, alpha=0.7, height=0.6)
    ax.errorbar(est, y, xerr=np.where(np.isfinite(err), np.maximum(err, 0), 0), fmt="none", ecolor="k", lw=1,
                capsize=3)
    ax.axvline(0.5, color="0.3", lw=0.8)
    ax.set_yticks(y, labels, fontsize="small")
    ax.set(xlim=(0.0, 1.0), xlabel="AUROC vs teacher continuation success (0.5 = chance)")
    return ax


# ----------------------------------------------------------------------------------------------- training
def plot_metric_by_step(table: pd.DataFrame, metric: str, *, ax: Any = None, band: bool = True) -> Any:
    """``metric`` by position, one line per training step (early dark, late light), from a bins table with steps.

    Args:
        table: a bins table computed with ``BinSpec(step="each")``; pooled-step rows (step missing) and strata
            other than ``all`` are ignored.
    """
    ax = _ax(ax)
    d = table[(table["metric"] == metric) & table["step"].notna()]
    for column in ("stratum", "group"):
        if column in d:
            d = d[d[column] == "all"]
    if d.empty:
        raise ValueError(f"no per-step rows of {metric!r}; bin with BinSpec(step='each')")
    steps = sorted(int(s) for s in d["step"].unique())
    for step, color in zip(steps, _cmap_colors("viridis", len(steps)), strict=True):
        part = d[d["step"] == step].sort_values("bin")
        x = _centres(part)
        ax.plot(x, part["mean"].to_numpy(float), marker="o", ms=2.5, color=color, label=f"step {step}")
        if band:
            _band(ax, x, part["ci_low"], part["ci_high"], color, 0.12)
    ax.set(xlabel=_XLABEL.get(str(d["by"].iloc[0]), "position"), ylabel=f"mean {metric}")
    ax.legend(fontsize="x-small", ncol=2 if len(steps) > 5 else 1)
    return ax


def plot_metric_vs_step(table: pd.DataFrame, *, ax: Any = None, metric: str | None = None,
                        label: str | None = None) -> Any:
    """A metric's mean against the training step with its interval band.

    Args:
        table: one row per step with ``step``, ``mean``, ``ci_low``, ``ci_high`` (e.g. a bins table of one bin per
            step; with a ``metric`` column, pass ``metric=`` to pick one).
    """
    ax = _ax(ax)
    d = table if metric is None or "metric" not in table else table[table["metric"] == metric]
    for column in ("stratum", "group"):
        if column in d:
            d = d[d[column] == "all"]
    d = d[d["step"].notna()].sort_values("step")
    x = d["step"].to_numpy(float)
    (line,) = ax.plot(x, d["mean"].to_numpy(float), marker="o", ms=4, label=label or metric)
    _band(ax, x, d["ci_low"], d["ci_high"], line.get_color(), 0.2)
    ax.set(xlabel="training step", ylabel=f"mean {metric}" if metric else "mean")
    if label or metric:
        ax.legend(fontsize="x-small")
    return ax


# ----------------------------------------------------------------------------------------------- schedules
def plot_schedule_shape(schedule: Any, *, ax: Any = None, length: int = 100, label: str | None = None,
                        step: int | None = None, total_steps: int | None = None, **line_kws: Any) -> Any:
    """A schedule's weight by relative position on a synthetic rollout of ``length`` tokens with |A| = 1.

    Position-only schedules show their exact shape; IW-OPD, whose weight follows each rollout's own cumulative |A|,
    shows its shape for a constant |A| (a line from 1 + gamma down to about 1). Uses
    :func:`drift.schedules.preview.weight_profile`.

    Args:
        schedule: a :class:`~drift.schedules.Schedule` (or a spec :func:`drift.schedules.load` accepts).
        length: tokens of the synthetic rollout; step, total_steps: for annealed schedules.
    """
    from drift.schedules import load
    from drift.schedules.preview import weight_profile

    ax = _ax(ax)
    s = load(schedule)
    w = weight_profile(s, length=length, step=step, total_steps=total_steps)
    x = (np.arange(length) + 0.5) / length
    line_kws.setdefault("lw", 2)
    ax.plot(x, w, label=label or s.describe(), **line_kws)
    ax.set(xlabel="relative position t/T", ylabel="token weight w", xlim=(0, 1))
    ax.legend(fontsize="x-small")
    return ax
