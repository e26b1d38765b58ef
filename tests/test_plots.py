"""drift.report.plots: each function draws on the axes it is given, returns them, never creates or saves a figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from drift.report import plots
from drift.schedules import load
from drift.stats import BinSpec, aggregate_bins
from drift.synthetic import synthetic_tokens


@pytest.fixture(scope="module")
def tokens() -> pd.DataFrame:
    a = synthetic_tokens("exponential", {"a": 1.0, "tau": 0.3, "c": 0.2}, n_rollouts=24, length_range=(10, 30), seed=1)
    b = synthetic_tokens("exponential", {"a": 0.5, "tau": 0.3, "c": 0.1}, n_rollouts=24, length_range=(10, 30), seed=2,
                         step=10)
    return pd.concat([a, b], ignore_index=True)


@pytest.fixture(scope="module")
def rel_table(tokens) -> pd.DataFrame:
    spec = BinSpec(by="rel", bins=5, strata="quantiles:2", step="pool")
    return aggregate_bins(tokens, ["kl_reverse"], spec).table(n_boot=50, seed=0)


@pytest.fixture
def ax():
    fig, ax = plt.subplots()
    yield ax
    plt.close(fig)


def _drew(ax) -> bool:
    return bool(ax.lines or ax.collections or ax.patches)


def test_metric_by_position_with_and_without_strata(rel_table, ax):
    assert plots.plot_metric_by_position(rel_table, "kl_reverse", ax=ax) is ax
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "all lengths" in labels and len(labels) == 3  # two strata + pooled
    assert len(ax.collections) == 3  # one band each
    fig, ax2 = plt.subplots()
    assert plots.plot_metric_by_position(rel_table, "kl_reverse", ax=ax2, strata=False) is ax2
    assert len(ax2.lines) == 1
    plt.close(fig)
    with pytest.raises(ValueError, match="not in the table"):
        plots.plot_metric_by_position(rel_table, "k3", ax=ax)


def test_absolute_bins(tokens, ax):
    table = aggregate_bins(tokens, ["k3"], BinSpec(by="abs", bins=6, step="pool")).table(n_boot=20)
    assert plots.plot_metric_by_position(table, "k3", ax=ax) is ax
    assert ax.get_xlabel() == "position t (tokens)"


def test_directions_forest(ax):
    df = pd.DataFrame({"label": ["a", "b", "c"], "rho": [0.9, -0.8, 0.1], "ci_low": [0.7, -0.95, -0.3],
                       "ci_high": [1.0, -0.6, 0.5], "verdict": ["rises", "falls", "flat"]})
    assert plots.plot_directions(df, ax=ax) is ax
    pos = dict(zip([t.get_text() for t in ax.get_yticklabels()], ax.get_yticks(), strict=True))
    assert pos["a"] > pos["b"] > pos["c"]  # first row on top
    assert len(ax.lines) >= 6


def test_fitted_curves_selected_is_thick(rel_table, ax):
    points = rel_table[(rel_table.metric == "kl_reverse") & (rel_table.stratum == "all")]
    models = {"linear": {"params": {"a": 1.0, "b": -0.5}, "converged": True, "aic": 3.0},
              "exponential": {"params": {"a": 1.0, "tau": 0.3, "c": 0.2}, "converged": True, "aic": 1.0},
              "power": {"params": {}, "converged": False, "aic": None}}
    assert plots.plot_fitted_curves(points, models, ax=ax) is ax
    widths = {line.get_label().split(" ")[0]: line.get_linewidth() for line in ax.lines}
    assert widths["exponential"] > widths["linear"] and "power" not in widths
    fig, ax2 = plt.subplots()
    plots.plot_fitted_curves(None, models, selected="linear", ax=ax2)
    assert np.allclose(ax2.lines[0].get_xdata()[[0, -1]], [0, 1])
    plt.close(fig)


def test_trajectories(tokens, ax):
    few = tokens[tokens.prompt_id.isin(tokens.prompt_id.unique()[:1]) & (tokens.step == 0)]
    assert plots.plot_prefix_loglik(few, ax=ax) is ax
    n_rollouts = few.groupby(["prompt_id", "sample_id"]).ngroups
    assert len(ax.lines) == 3 * n_rollouts + 1  # three curves per rollout and the zero line
    fig, (a1, a2) = plt.subplots(1, 2)
    assert plots.plot_cumulative_gap(few, ax=a1) is a1
    assert plots.plot_cumulative_gap(few, ax=a2, relative=True) is a2
    assert len(a1.lines) == n_rollouts and len(a2.lines) == n_rollouts + 1  # + the diagonal
    assert a2.get_xlim() == (0.0, 1.0)
    plt.close(fig)


def test_probe_plots(ax):
    ratios = [0.0, 0.5, 1.0]
    rows = [{"ratio": r, "model": m, "accuracy": v, "ci_low": v - 0.1, "ci_high": v + 0.1}
            for r, t, s in zip(ratios, [0.9, 0.6, 0.3], [0.2, 0.2, 0.25], strict=True)
            for m, v in (("teacher", t), ("student", s), ("gap", t - s))]
    assert plots.plot_continuation_gap(pd.DataFrame(rows), ax=ax) is ax
    assert len(ax.lines) == 4 and len(ax.collections) == 3
    fig, ax2 = plt.subplots()
    aurocs = {"rel_position": {"auroc": 0.3, "ci_low": 0.25, "ci_high": 0.35},
              "neg_cum_abs_gap": {"auroc": 0.7, "ci_low": 0.6, "ci_high": 0.8},
              "kl_reverse": {"auroc": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}}
    assert plots.plot_aurocs(aurocs, ax=ax2) is ax2
    pos = dict(zip([t.get_text() for t in ax2.get_yticklabels()], ax2.get_yticks(), strict=True))
    assert len(ax2.patches) == 3 and max(pos, key=pos.get) == "t/T"
    plt.close(fig)


def test_training_plots(tokens, ax):
    prof = aggregate_bins(tokens, ["kl_reverse"], BinSpec(bins=4, step="each", margins=False)).table(n_boot=20)
    assert plots.plot_metric_by_step(prof, "kl_reverse", ax=ax) is ax
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["step 0", "step 10"]
    means = aggregate_bins(tokens, ["kl_reverse"], BinSpec(bins=1, step="each", margins=False)).table(n_boot=20)
    fig, ax2 = plt.subplots()
    assert plots.plot_metric_vs_step(means, metric="kl_reverse", ax=ax2) is ax2
    assert list(ax2.lines[0].get_xdata()) == [0.0, 10.0]
    assert ax2.lines[0].get_ydata()[1] < ax2.lines[0].get_ydata()[0]  # step 10 was made with half the amplitude
    plt.close(fig)


def test_schedule_shape(ax):
    assert plots.plot_schedule_shape(load({"kind": "linear", "gamma": 0.5}), ax=ax) is ax
    w = ax.lines[0].get_ydata()
    assert w[0] == pytest.approx(1.5, abs=0.01) and w[-1] == pytest.approx(1.0, abs=0.01)
    plots.plot_schedule_shape({"kind": "uniform"}, ax=ax, label="OPD", ls="--")
    assert np.all(ax.lines[1].get_ydata() == 1.0) and ax.lines[1].get_label() == "OPD"


def test_default_axes_are_current_axes_and_no_figure_is_created(rel_table):
    fig, ax = plt.subplots()
    n = len(plt.get_fignums())
    assert plots.plot_metric_by_position(rel_table, "kl_reverse") is ax
    assert len(plt.get_fignums()) == n
    plt.close(fig)


def test_figures_are_saved_in_one_place():
    """Only the report's FigureStore (drift/report/render.py) saves figures; plot functions never do."""
    from pathlib import Path

    import drift.report

    root = Path(drift.report.__file__).parent
    mine = ("plots.py", "build.py", "sections.py", "stages.py", "render.py")  # the ablation report has its own rules
    savers = sorted(n for n in mine if "savefig(" in (root / n).read_text().replace('savefig("kl.png")', ""))
    assert savers == ["render.py"]
