"""The onset detector: CUSUM against a naive loop, calibration, and recovery of planted change points in a noisy
synthetic world (a teacher often unsure on clean tokens, so the naive first-non-top rule fires early)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from drift.errors import DatasetError, SchemaError
from drift.onset.detect import calibrate, cusum, detect_onsets, first_nontop, padded, token_signal
from drift.onset.synthetic import noisy_onset_tokens


def naive_cusum(x_T: np.ndarray, k: float, h: float) -> tuple[int, int, float]:
    """Page's CUSUM by the textbook loop: (onset, alarm, score), -1 for no alarm."""
    stat, last_zero, best = 0.0, -1, 0.0
    for t, x in enumerate(x_T):
        if np.isfinite(x):
            stat = max(0.0, stat + x - k)
        if stat > h:
            return last_zero + 1, t, stat
        if stat == 0.0:
            last_zero = t
        best = max(best, stat)
    return -1, -1, best


def _ci(k: int, n: int) -> str:
    ci = binomtest(k, n).proportion_ci(0.95)
    return f"{k}/{n} = {k / max(n, 1):.3f} [95% CI {ci.low:.3f}, {ci.high:.3f}]"


def test_cusum_equals_the_textbook_loop(rng):
    x = rng.exponential(1.0, size=(300, 40)) + np.where(rng.random((300, 40)) < 0.05, 4.0, 0.0)
    x[rng.random(x.shape) < 0.1] = np.nan  # skipped tokens
    for k, h in ((1.0, 3.0), (1.5, 0.5), (0.5, 8.0)):
        res = cusum(x, k, h)
        for r in range(len(x)):
            onset, alarm, score = naive_cusum(x[r], k, h)
            assert (res.onset[r], res.alarm[r]) == (onset, alarm), (r, k, h)
            assert res.score[r] == pytest.approx(score, abs=1e-9)
        assert (res.onset <= res.alarm).all() and ((res.onset >= 0) == (res.alarm >= 0)).all()


def test_a_spike_fires_at_once_and_a_shift_is_dated_back():
    spike = np.array([[0.0, 0.01, 0.0, 9.0, 0.0, 0.0]])
    res = cusum(spike, 1.0, 4.0)
    assert (res.onset[0], res.alarm[0]) == (3, 3) and res.score[0] == pytest.approx(8.0)
    shift = np.array([[0.2] * 10 + [2.5] * 10])  # +1.5 per token from position 10: crosses 4 at 12
    res = cusum(shift, 1.0, 4.0)
    assert (res.onset[0], res.alarm[0]) == (10, 12)
    flat = np.array([[0.5] * 30])
    res = cusum(flat, 1.0, 4.0)
    assert res.onset[0] == -1 and res.score[0] == 0.0


def test_signals_and_missing_columns():
    tokens = pd.DataFrame({"teacher_logprob": [-0.5, np.nan, -3.0], "teacher_rank": [0, 2, -1],
                           "teacher_entropy": [0.5, 1.0, 1.0], "loss_mask": [True, True, False]})
    np.testing.assert_allclose(token_signal(tokens), [0.5, np.nan, np.nan])  # masked -> skipped
    np.testing.assert_allclose(token_signal(tokens, "rank"), [0.0, np.log(3), np.nan])
    np.testing.assert_allclose(token_signal(tokens, "excess"), [0.0, np.nan, np.nan])
    with pytest.raises(SchemaError, match="teacher_entropy"):
        token_signal(tokens.drop(columns="teacher_entropy"), "excess")


def test_calibration_floors_win_for_a_near_certain_teacher(rng):
    x = rng.exponential(1e-3, size=(200, 30))
    x[:100, 12] = 9.0  # half the rollouts make one big error at 12
    cal, res = calibrate(x, np.full(200, 30))
    assert (cal.k, cal.h, cal.k_source, cal.h_source) == (1.0, 4.0, "floor", "floor") and cal.converged
    assert (res.onset[:100] == 12).all() and (res.onset[100:] == -1).all()
    fixed, _ = calibrate(x, np.full(200, 30), k=2.0, h=3.0)
    assert (fixed.k, fixed.h, fixed.k_source, fixed.h_source, fixed.rounds) == (2.0, 3.0, "fixed", "fixed", 1)


def test_repeated_token_rows_are_refused():
    tokens, _ = noisy_onset_tokens(5, seed=1)
    with pytest.raises(DatasetError, match="repeated"):
        detect_onsets(pd.concat([tokens, tokens.iloc[:3]]))


def test_padded_places_tokens_by_position():
    m = padded(np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1]), np.array([0, 2, 1]), 2)
    np.testing.assert_array_equal(np.isnan(m), [[False, True, False], [True, False, True]])


def _rates(onsets: pd.DataFrame, truth: pd.DataFrame, tol: int) -> tuple[int, int, int, int]:
    merged = onsets.merge(truth, on=["run_id", "step", "prompt_id", "sample_id"], validate="1:1")
    on = merged["onset_position"].fillna(-1).to_numpy(np.int64)
    tau = merged["tau"].to_numpy(np.int64)
    change = tau >= 0
    hits = int(((on[change] >= 0) & (np.abs(on[change] - tau[change]) <= tol)).sum())
    nulls = int((on[~change] < 0).sum())
    return hits, int(change.sum()), nulls, int((~change).sum())


def test_noisy_world_planted_change_points_within_two_tokens():
    tokens, truth = noisy_onset_tokens(800, seed=11)
    onsets, cal = detect_onsets(tokens)
    hits, n_change, nulls, n_clean = _rates(onsets, truth, tol=2)
    naive = first_nontop(tokens, onsets)
    naive_frame = onsets.assign(onset_position=pd.array(np.where(naive >= 0, naive, 0), dtype="Int32"))
    naive_frame.loc[naive < 0, "onset_position"] = pd.NA
    n_hits, _, n_nulls, _ = _rates(naive_frame, truth, tol=2)
    print(f"\nnoisy world, calibration {cal.to_dict()}")
    print(f"  CUSUM onset within 2 tokens of tau: {_ci(hits, n_change)}")
    print(f"  CUSUM null on rollouts without change: {_ci(nulls, n_clean)} (false alarms {n_clean - nulls})")
    print(f"  naive first-non-top within 2 tokens of tau: {_ci(n_hits, n_change)}; null on clean: "
          f"{_ci(n_nulls, n_clean)}")
    assert hits / n_change >= 0.80
    assert nulls / n_clean >= 0.85
    assert n_hits / n_change < 0.2  # the naive rule fires early: this world is noisy as intended
    assert cal.k_source == "quantile" and cal.k > 1.0  # the teacher's doubt moved k above its floor


def test_noisy_world_rank_signal_also_finds_the_change(rng):
    tokens, truth = noisy_onset_tokens(400, seed=12)
    onsets, cal = detect_onsets(tokens, signal="rank")
    hits, n_change, nulls, n_clean = _rates(onsets, truth, tol=2)
    print(f"\nrank signal: within 2 {_ci(hits, n_change)}, null {_ci(nulls, n_clean)}; k={cal.k:.3g} h={cal.h:.3g}")
    assert hits / n_change >= 0.7 and nulls / n_clean >= 0.7
