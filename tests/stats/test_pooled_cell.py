"""The pooled-cell choice, made in one place (drift.stats.bins.pooled_cell) for RolloutBins and bins tables alike."""

from __future__ import annotations

import pandas as pd
import pytest

from drift.stats import BinSpec, aggregate_bins, fit_bins
from drift.stats.bins import Cell, cell_rows, pooled_cell, pooled_rows, pooled_step
from drift.synthetic import synthetic_tokens


@pytest.fixture(scope="module")
def two_steps() -> pd.DataFrame:
    a = synthetic_tokens("linear", {"a": 1.0, "b": -0.5}, n_rollouts=24, length_range=(10, 30), seed=1)
    b = synthetic_tokens("linear", {"a": 0.5, "b": -0.2}, n_rollouts=24, length_range=(10, 30), seed=2, step=10)
    return pd.concat([a, b], ignore_index=True)


def test_pooled_step_prefers_the_pooled_then_the_earliest():
    assert pooled_step([0, None, 10]) is None
    assert pooled_step(pd.Series([10, pd.NA, 0], dtype="Int64")) is None
    assert pooled_step([10, 0]) == 0
    with pytest.raises(ValueError, match="no steps"):
        pooled_step([])


@pytest.mark.parametrize("step", ["each", "pool"])
def test_same_choice_on_rollout_bins_and_on_their_table(two_steps, step):
    rb = aggregate_bins(two_steps, ["kl_reverse"], BinSpec(bins=4, strata="quantiles:2", step=step))
    table = rb.table(n_boot=20)
    head = pooled_cell(rb)
    assert head == rb.headline == rb.cell() == pooled_cell(table) == pooled_cell(rb.cells)
    assert head.stratum == "all" and head.group == "all" and head.step is None  # step-pooled margins exist
    label = rb.strata_labels[0]
    assert pooled_cell(rb, stratum=label) == rb.cell(stratum=label) == pooled_cell(table, stratum=label)
    rows = pooled_rows(table, "kl_reverse")
    assert rows["step"].isna().all() and (rows["stratum"] == "all").all() and rows["bin"].is_monotonic_increasing
    assert len(cell_rows(table, head, "kl_reverse")) == len(rows) == 4


def test_without_a_pooled_step_the_earliest_is_the_headline(two_steps):
    rb = aggregate_bins(two_steps, ["kl_reverse"], BinSpec(bins=4, step="each", margins=False))
    table = rb.table(n_boot=20)
    assert pooled_cell(rb) == pooled_cell(table) == rb.headline == Cell(0, "all", "all")
    assert (pooled_rows(table, "kl_reverse")["step"] == 0).all()
    # fit_bins on the table fits the same cell as on the RolloutBins
    a = fit_bins(table, "kl_reverse", errors="n_rollouts", models=["linear"])
    b = fit_bins(rb, "kl_reverse", errors="n_rollouts", models=["linear"])
    assert a.results["linear"].params["a"] == pytest.approx(b.results["linear"].params["a"], rel=1e-6)


def test_errors_name_what_is_there(two_steps):
    table = aggregate_bins(two_steps, ["kl_reverse"], BinSpec(bins=4, step="pool")).table(n_boot=0)
    with pytest.raises(KeyError, match="stratum='T<5'"):
        pooled_cell(table, stratum="T<5")
    with pytest.raises(ValueError, match="not in the table"):
        pooled_rows(table, "k3")
    # a table without step / stratum / group columns is one pooled cell
    assert pooled_cell(table.drop(columns=["step", "stratum", "group"])) == Cell(None, "all", "all")
