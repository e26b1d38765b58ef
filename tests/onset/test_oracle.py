"""The onset detector on the oracle world (data/oracle): sampled student rollouts, oracle columns used only to
check. First student error = first position with ``oracle_student_correct == False``. Required: the onset within
one token of it for >= 90% of erring rollouts, and null for >= 90% of clean ones (the slow test, 512 rollouts);
the fast test runs 64 rollouts with looser bounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from drift.cli import main
from drift.onset import OnsetConfig, read_onsets, run_onset
from drift.schema import ROLLOUT_KEY
from drift.store import open_dataset


def _collect(out: Path, max_prompts: int | None) -> Path:
    """``drift collect --preset toy`` (in this process: the test session has torch loaded already)."""
    argv = ["collect", "--preset", "toy", "--out", str(out), "--progress", "false"]
    if max_prompts is not None:
        argv += ["--max-prompts", str(max_prompts)]
    assert main(argv) == 0
    return out


def _first_errors(dataset: Path, keys: pd.DataFrame) -> np.ndarray:
    """The oracle's first student error per rollout (-1: clean), in the order of ``keys``: for checking only."""
    con = open_dataset(dataset).duckdb()
    key = ", ".join(ROLLOUT_KEY)
    first = con.execute(f"SELECT {key}, min(CASE WHEN NOT oracle_student_correct THEN position END) AS first_error "
                        f"FROM tokens GROUP BY {key}").df()
    con.close()
    merged = keys[list(ROLLOUT_KEY)].merge(first, on=list(ROLLOUT_KEY), how="left", validate="1:1")
    return merged["first_error"].fillna(-1).to_numpy(np.int64)


def _rates(tmp_path: Path, max_prompts: int | None) -> tuple[int, int, int, int]:
    ds = _collect(tmp_path / "toy", max_prompts)
    run = run_onset(OnsetConfig(dataset=str(ds), out=str(tmp_path / "onset")))
    onsets = read_onsets(tmp_path / "onset")
    first = _first_errors(ds, onsets)
    on = onsets["onset_position"].fillna(-1).to_numpy(np.int64)
    err = first >= 0
    hits = int(((on[err] >= 0) & (np.abs(on[err] - first[err]) <= 1)).sum())
    nulls = int((on[~err] < 0).sum())
    n_err, n_clean = int(err.sum()), int((~err).sum())
    exact = int((on[err] == first[err]).sum())
    for name, k, n in (("onset within 1 token of the first error", hits, n_err), ("onset exactly at it", exact, n_err),
                       ("null on clean rollouts", nulls, n_clean)):
        ci = binomtest(k, n).proportion_ci(0.95) if n else None
        print(f"\noracle world ({len(onsets)} rollouts): {name}: {k}/{n}"
              + (f" = {k / n:.3f} [95% CI {ci.low:.3f}, {ci.high:.3f}]" if ci else ""))
    print(run.report())
    return hits, n_err, nulls, n_clean


def test_oracle_world_small_sample(tmp_path):
    hits, n_err, nulls, n_clean = _rates(tmp_path, max_prompts=16)  # 64 rollouts
    assert n_err >= 20 and hits / n_err >= 0.8
    assert n_clean == 0 or nulls / n_clean >= 0.75


@pytest.mark.slow
def test_oracle_world_rates(tmp_path):
    hits, n_err, nulls, n_clean = _rates(tmp_path, max_prompts=None)  # 128 held-out prompts x 4 = 512 rollouts
    assert n_err >= 200 and n_clean >= 40
    assert hits / n_err >= 0.90
    assert nulls / n_clean >= 0.90
