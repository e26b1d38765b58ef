"""Plots of training runs. Each takes ``ax=None``, draws, and returns the axes; none saves.

Inputs are tidy metrics tables with columns ``schedule``, ``seed``, ``step`` and the trainer's namespaced metric keys
(``eval/accuracy``, ``kl/k3_mean``, ``kl/k3_q25``, ...). Drift-by-position profiles of the ablation are drawn by
:func:`drift.report.ablation.plot_position_profiles`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["plot_kl_band", "plot_learning_curves"]


def _ax(ax: Any) -> Any:
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    return ax


def plot_learning_curves(metrics: pd.DataFrame, metric: str = "eval/accuracy", *, ax: Any = None,
                         schedules: Sequence[str] | None = None, band: str = "sd") -> Any:
    """Mean of ``metric`` over seeds against the step, one line per schedule, with a ±1 sd band across seeds."""
    ax = _ax(ax)
    data = metrics.dropna(subset=[metric])
    for name in schedules or list(dict.fromkeys(data["schedule"])):
        g = data[data["schedule"] == name].groupby("step")[metric]
        mean, sd = g.mean(), g.std(ddof=1).fillna(0.0)
        (line,) = ax.plot(mean.index, mean.to_numpy(), marker="o", ms=3, label=name)
        if band == "sd" and data[data["schedule"] == name]["seed"].nunique() > 1:
            ax.fill_between(mean.index, (mean - sd).to_numpy(), (mean + sd).to_numpy(), color=line.get_color(),
                            alpha=0.15, lw=0)
    ax.set(xlabel="training step", ylabel=metric)
    ax.legend(fontsize="small")
    return ax


def plot_kl_band(metrics: pd.DataFrame, *, schedules: Sequence[str] = ("uniform",), ax: Any = None,
                 mean: str = "kl/k3_mean", low: str = "kl/k3_q25", high: str = "kl/k3_q75") -> Any:
    """Token-mean KL over training with its interquartile band (token quartiles, averaged over seeds)."""
    ax = _ax(ax)
    data = metrics.dropna(subset=[mean])
    for name in schedules:
        g = data[data["schedule"] == name].groupby("step")
        m = g[mean].mean()
        (line,) = ax.plot(m.index, m.to_numpy(), label=f"{name}: token-mean k3")
        if low in data and high in data:
            ax.fill_between(m.index, g[low].mean().to_numpy(), g[high].mean().to_numpy(), color=line.get_color(),
                            alpha=0.2, lw=0, label=f"{name}: token IQR")
    ax.set(xlabel="training step", ylabel="k3 on the training batch", ylim=(0, None))
    ax.legend(fontsize="small")
    return ax
