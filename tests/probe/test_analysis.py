"""Probe analysis against naive computations: accuracy by ratio, the gap, AUROC (pairwise count, rank-sum),
the rollout bootstrap (a naive resampling loop, seeding), the direction verdict and the written outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from drift.probe import analyze, auroc, auroc_bootstrap


def _pairwise_auc(scores, labels) -> float:
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    pos, neg = s[y == 1], s[y == 0]
    wins = sum(float(p > n) + 0.5 * float(p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _ranksum_auc(scores, labels) -> float:
    y = np.asarray(labels, int)
    ranks = rankdata(scores)  # mid-ranks for ties
    n1, n0 = y.sum(), (1 - y).sum()
    return (ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def _synthetic(rng, R=40, ratios=(0.0, 0.25, 0.5, 0.75, 1.0), k=3, slope=-0.6, missing=0.05) -> pd.DataFrame:
    """Probe rows with known structure: teacher success falls with the ratio, student flat; ties in predictors."""
    rows = []
    for r in range(R):
        skill = rng.normal(0, 0.5)
        T = int(rng.integers(5, 30))
        for ratio in ratios:
            keep = int(np.floor(ratio * T + 1e-9))
            c = float(rng.gamma(2.0, 1.0) * keep)
            ent = float(np.round(rng.random(), 1))  # coarse: many ties
            for model in ("teacher", "student"):
                p = 1 / (1 + np.exp(-(1.0 + skill + slope * 4 * ratio))) if model == "teacher" else 0.3
                for j in range(k):
                    s = float(rng.random() < p)
                    rows.append({"run_id": "run", "prompt_id": f"q{r // 2}", "sample_id": r % 2, "ratio": ratio,
                                 "model": model, "continuation": j,
                                 "success": None if rng.random() < missing else s,
                                 "rel_position": keep / (T + 1), "cum_abs_gap": c, "prefix_logratio": -0.8 * c,
                                 "teacher_entropy": ent, "topk_overlap": 1 - ent,
                                 "kl_reverse": np.nan if ratio == 1.0 and r % 3 == 0 else ent / 2})
    return pd.DataFrame(rows)


def test_auroc_equals_pairwise_count_and_rank_sum(rng):
    for _ in range(5):
        n = int(rng.integers(5, 60))
        s = np.round(rng.normal(size=n), 1)  # ties
        y = (rng.random(n) < 0.4).astype(int)
        y[0], y[1] = 0, 1
        a = auroc(s, y)
        assert a == pytest.approx(_pairwise_auc(s, y), abs=1e-12)
        assert a == pytest.approx(_ranksum_auc(s, y), abs=1e-12)
    assert auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0 and auroc([1, 2, 3, 4], [1, 1, 0, 0]) == 0.0
    assert auroc([1, 1, 1], [0, 1, 0]) == 0.5
    assert np.isnan(auroc([1, 2], [1, 1]))  # one class only


def test_auroc_weights_and_soft_labels_equal_replicated_rows(rng):
    s = np.round(rng.normal(size=20), 1)
    y = (rng.random(20) < 0.5).astype(float)
    w = rng.integers(0, 4, size=20)
    expanded = auroc(np.repeat(s, w), np.repeat(y, w))
    assert auroc(s, y, w) == pytest.approx(expanded, abs=1e-12)
    # a soft label 0.5 counts half positive, half negative: as if every row were doubled and split
    assert auroc([0, 1, 2], [0.0, 0.5, 1.0]) == pytest.approx(auroc([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1]))


def test_auroc_bootstrap_equals_a_naive_resampling_loop(rng):
    R, n_boot = 12, 60
    rollout = np.repeat(np.arange(R), 5)
    s = np.round(rng.normal(size=len(rollout)) + 0.3 * rollout, 1)
    y = (rng.random(len(rollout)) < 0.5).astype(float)
    est, lo, hi = auroc_bootstrap(s, y, rollout, R, n_boot, seed=3)
    assert est == pytest.approx(auroc(s, y))
    g = np.random.default_rng(3)
    reps = []
    for _ in range(n_boot):
        idx = g.integers(0, R, size=R)
        sel = np.concatenate([np.flatnonzero(rollout == i) for i in idx])
        reps.append(auroc(s[sel], y[sel]))
    want_lo, want_hi = np.nanquantile(reps, [0.025, 0.975])
    assert (lo, hi) == pytest.approx((want_lo, want_hi), abs=1e-12)
    assert lo <= est <= hi
    assert auroc_bootstrap(s, y, rollout, R, n_boot, seed=3) == (est, lo, hi)  # seeded
    assert auroc_bootstrap(s, y, rollout, R, n_boot, seed=4)[1:] != (lo, hi)
    assert np.isnan(auroc_bootstrap(s, y, rollout, R, 0)[1])


def test_accuracy_gap_and_direction_against_naive(rng):
    df = _synthetic(rng)
    a = analyze(df, n_boot=300, seed=1)
    acc = a.accuracy
    assert list(acc.columns) == ["ratio", "model", "accuracy", "ci_low", "ci_high", "n_rollouts", "n_continuations"]
    assert len(acc) == 5 * 3
    naive = df.dropna(subset=["success"]).groupby(["ratio", "model"]).success.agg(["mean", "size"])
    for _, row in acc[acc.model != "gap"].iterrows():
        assert row.accuracy == pytest.approx(naive.loc[(row.ratio, row.model), "mean"])
        assert row.n_continuations == naive.loc[(row.ratio, row.model), "size"]
        assert row.ci_low <= row.accuracy <= row.ci_high and row.n_rollouts == 40
    piv = acc.pivot(index="ratio", columns="model", values="accuracy")
    np.testing.assert_allclose(piv["gap"], piv["teacher"] - piv["student"])
    gap = acc[acc.model == "gap"]
    assert (gap.ci_low <= gap.accuracy).all() and (gap.accuracy <= gap.ci_high).all()
    assert a.direction.verdict == "falls" and a.direction.rho < -0.8
    assert a.teacher_sentence == "teacher accuracy falls with the prefix ratio"
    assert a.gap_change["estimate"] == pytest.approx(piv["gap"].iloc[0] - piv["gap"].iloc[-1])
    # seeded: same seed, same intervals
    b = analyze(df, n_boot=300, seed=1)
    pd.testing.assert_frame_equal(a.accuracy, b.accuracy)
    c = analyze(df, n_boot=300, seed=2)
    assert not np.allclose(a.accuracy.ci_low, c.accuracy.ci_low)


def test_flat_teacher_is_reported_flat(rng):
    a = analyze(_synthetic(rng, slope=0.0, R=30), n_boot=300, seed=0)
    assert a.direction.verdict == "flat" and "is flat" in a.teacher_sentence


def test_predictor_aurocs_against_brute_force(rng):
    df = _synthetic(rng, R=20)
    a = analyze(df, n_boot=200, seed=0)
    t = df[(df.model == "teacher") & df.success.notna()]
    for name, (col, sign) in {"rel_position": ("rel_position", 1), "neg_cum_abs_gap": ("cum_abs_gap", -1),
                              "neg_prefix_logratio": ("prefix_logratio", -1),
                              "teacher_entropy": ("teacher_entropy", 1), "topk_overlap": ("topk_overlap", 1),
                              "kl_reverse": ("kl_reverse", 1)}.items():
        sub = t[t[col].notna()]
        res = a.aurocs[name]
        assert res["n"] == len(sub) and res["n_pos"] == sub.success.sum()
        assert res["auroc"] == pytest.approx(_pairwise_auc(sign * sub[col].to_numpy(), sub.success), abs=1e-12)
        assert res["ci_low"] <= res["auroc"] <= res["ci_high"]
    # success falls with the ratio here, so position predicts failure: the external-teacher direction
    assert a.aurocs["rel_position"]["ci_high"] < 0.5 and "falls with position" in a.reliability_sentence
    # -S_t = 0.8 C_t here: the two scores are exact opposites
    assert a.aurocs["neg_prefix_logratio"]["auroc"] == pytest.approx(1 - a.aurocs["neg_cum_abs_gap"]["auroc"])


def test_write_and_summary(rng, tmp_path):
    a = analyze(_synthetic(rng, R=10, ratios=(0.0, 0.5, 1.0)), n_boot=100, seed=0)
    acc_path, js_path = a.write(tmp_path / "out")
    back = pd.read_parquet(acc_path)
    pd.testing.assert_frame_equal(back, a.accuracy)
    js = json.loads(js_path.read_text())
    assert set(js["predictors"]) == {"rel_position", "neg_cum_abs_gap", "neg_prefix_logratio", "teacher_entropy",
                                     "topk_overlap", "kl_reverse"}
    assert {"auroc", "ci_low", "ci_high", "n", "orientation"} <= set(js["predictors"]["rel_position"])
    assert js["direction"]["verdict"] in ("falls", "rises", "flat") and "rho" in js["direction"]
    assert js["teacher_accuracy"].startswith("teacher accuracy ") and js["bootstrap"]["unit"] == "rollout"
    text = a.summary()
    assert "ratio" in text and "teacher" in text and "rel_position" in text and "-C_t" in text
    assert len([ln for ln in text.splitlines() if ln.strip().startswith(("0.00", "0.50", "1.00"))]) == 3


def test_no_bootstrap_gives_point_estimates_only(rng):
    a = analyze(_synthetic(rng, R=8), n_boot=0)
    assert a.accuracy.accuracy.notna().all() and a.accuracy.ci_low.isna().all()
    assert np.isnan(a.aurocs["rel_position"]["ci_low"]) and np.isfinite(a.aurocs["rel_position"]["auroc"])
