"""plot_bins draws one line per hue value, including the pooled (NA) step."""

from __future__ import annotations

import pandas as pd

from drift.stats import BinSpec, bin_metric, plot_bins
from drift.synthetic import synthetic_tokens


def test_plot_bins_by_step_includes_the_pooled_row():
    df = pd.concat([synthetic_tokens("linear", {"a": 1, "b": -0.5}, n_rollouts=20, step=s, seed=s) for s in (0, 10)])
    table = bin_metric(df, ["kl_reverse"], BinSpec(by="rel", bins=5), n_boot=20)
    ax = plot_bins(table, "kl_reverse", hue="step")
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["step=all", "step=0", "step=10"]
    assert ax.get_lines()[0].get_linestyle() == "--"
