"""Plots of binned metrics: bin means with their rollout-bootstrap band. Take ``ax``, return it, never save."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from drift.stats.bins import _isna, pooled_step

if TYPE_CHECKING:  # pandas is imported where a table is built: `import drift.stats` and the CLI stay light
    import pandas as pd

__all__ = ["plot_bins"]

_XLABEL = {"rel": "relative position t/T", "abs": "position t (tokens)", "abs_log": "position t (tokens)",
           "onset": "offset t - onset (tokens)"}


def _pick(df: pd.DataFrame, column: str, value: Any) -> pd.DataFrame:
    if column == "step":
        if value == "auto":  # the pooled step (drift.stats.bins.pooled_step), whatever the other columns hold
            value = pooled_step(df["step"]) if len(df) else None
        return df[df["step"].isna()] if value is None else df[df["step"] == value]
    return df[df[column] == value]


def plot_bins(df: pd.DataFrame, metric: str, *, ax: Any = None, hue: Literal["stratum", "step", "group"] | None = None,
              step: int | Literal["auto"] | None = "auto", stratum: str = "all", group: str = "all",
              x: Literal["centre", "mean"] = "centre", band: bool = True, **line_kws: Any) -> Any:
    """Mean of ``metric`` per position bin with its confidence band, from a :func:`~drift.stats.bin_metric` table.

    Args:
        df: the bins table.
        metric: which metric.
        ax: axes to draw on (default: current axes).
        hue: draw one line per stratum, step or group (the other two stay fixed by their arguments).
        step, stratum, group: the cell to draw (``step="auto"``: the pooled step when several exist).
        x: abscissa: the bin ``"centre"`` or the ``"mean"`` slot centre of its tokens.
        band: shade ``ci_low``..``ci_high``.
        **line_kws: passed to ``ax.plot``.
    """
    import matplotlib.pyplot as plt

    ax = ax if ax is not None else plt.gca()
    d = df[df["metric"] == metric]
    if d.empty:
        raise ValueError(f"metric {metric!r} is not in the table; it has {sorted(df['metric'].unique())}")
    for column, value in (("step", step), ("stratum", stratum), ("group", group)):
        if column != hue:
            d = _pick(d, column, value)
    if d.empty:
        raise ValueError(f"no rows for step={step} stratum={stratum!r} group={group!r}")
    # pooled rows carry a missing step (NA) or the label "all"; both are drawn dashed and labelled "all"
    keys = ["all" if _isna(k) else k for k in dict.fromkeys(d[hue].tolist())] if hue else [None]
    for key in dict.fromkeys(keys):
        if key is None:
            part = d
        elif key == "all":
            part = d[d[hue].isna() | (d[hue].astype(str) == "all")]
        else:
            part = d[d[hue] == key]
        part = part.sort_values("bin")
        xs = ((part["bin_left"] + part["bin_right"]) / 2 if x == "centre" else part["x"]).to_numpy(float)
        kws = dict(line_kws)
        if key is not None:
            kws.setdefault("label", f"{hue}={key}")
            if key == "all":
                kws.setdefault("ls", "--")
        (line,) = ax.plot(xs, part["mean"].to_numpy(float), marker="o", ms=3, **kws)
        if band and np.isfinite(part["ci_low"].to_numpy(float)).any():
            ax.fill_between(xs, part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float),
                            color=line.get_color(), alpha=0.2, lw=0)
    by = str(d["by"].iloc[0])
    ax.set(xlabel=_XLABEL.get(by, "position"), ylabel=f"mean {metric}")
    if by == "abs_log":
        ax.set_xscale("symlog", linthresh=1.0)
    if by == "onset":
        ax.axvline(0.0, color="grey", lw=0.8, ls=":")  # the onset: left of it before, right of it after
    if hue:
        ax.legend(fontsize="small")
    return ax
