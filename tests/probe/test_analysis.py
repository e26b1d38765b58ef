"""Probe analysis against naive computations: accuracy by ratio, the gap, AUROC (pairwise count, rank-sum),
the rollout bootstrap (a naive resampling loop, seeding), the direction verdict and the written outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from drift.probe import PREDICTORS, analyze, auroc, auroc_bootstrap
from drift.probe.analysis import compare_scores


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
    df = _synthetic(rng, R=40, slope=-1.0)
    a = analyze(df, n_boot=300, seed=1)
    acc = a.accuracy
    assert list(acc.columns) == ["ratio", "model", "accuracy", "ci_low", "ci_high", "n_rollouts", "n_clusters",
                                 "n_continuations", "cluster"]
    assert (acc.cluster == "prompt").all() and a.n_clusters == 20 and a.n_rollouts == 40
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


def test_flat_teacher_is_reported_flat_only_by_the_equivalence_test(rng):
    a = analyze(_synthetic(rng, slope=0.0, R=400, missing=0.0), n_boot=300, seed=0)
    assert a.direction.verdict == "flat" and "is flat" in a.teacher_sentence
    # too little data to show flatness: inconclusive, never "flat" by default
    b = analyze(_synthetic(rng, slope=0.0, R=24), n_boot=300, seed=0)
    assert b.direction.verdict in ("inconclusive", "flat") and b.direction.verdict not in ("rises", "falls")


def test_predictor_aurocs_against_brute_force(rng):
    df = _synthetic(rng, R=20)
    a = analyze(df, n_boot=200, seed=0)
    t = df[(df.model == "teacher") & df.success.notna()]
    for name, (col, sign) in {"neg_rel_position": ("rel_position", -1), "neg_cum_abs_gap": ("cum_abs_gap", -1),
                              "prefix_logratio": ("prefix_logratio", 1),
                              "neg_teacher_entropy": ("teacher_entropy", -1), "topk_overlap": ("topk_overlap", 1),
                              "neg_kl_reverse": ("kl_reverse", -1)}.items():
        sub = t[t[col].notna()]
        res = a.aurocs[name]
        assert res["n"] == len(sub) and res["n_pos"] == sub.success.sum()
        assert res["auroc"] == pytest.approx(_pairwise_auc(sign * sub[col].to_numpy(), sub.success), abs=1e-12)
        assert res["ci_low"] <= res["auroc"] <= res["ci_high"]
    # success falls with the ratio here: the declared -t/T (IW-OPD's premise) agrees, the external-teacher direction
    assert a.aurocs["neg_rel_position"]["ci_low"] > 0.5 and a.aurocs["neg_rel_position"]["reading"] == "agrees"
    assert "falls with position" in a.reliability_sentence
    # S_t = -0.8 C_t here: +S_t and -C_t rank the cuts alike
    assert a.aurocs["prefix_logratio"]["auroc"] == pytest.approx(a.aurocs["neg_cum_abs_gap"]["auroc"])


def test_write_and_summary(rng, tmp_path):
    a = analyze(_synthetic(rng, R=10, ratios=(0.0, 0.5, 1.0)), n_boot=100, seed=0)
    acc_path, js_path = a.write(tmp_path / "out")
    back = pd.read_parquet(acc_path)
    pd.testing.assert_frame_equal(back, a.accuracy)
    js = json.loads(js_path.read_text())
    assert set(js["predictors"]) == set(PREDICTORS)
    assert {"auroc", "ci_low", "ci_high", "n", "orientation", "score", "n_clusters"} <= set(
        js["predictors"]["neg_rel_position"])
    # 10 rollouts of 5 prompts: fewer clusters than --min-clusters 10, so no verdict
    assert js["cluster"] == "prompt" and js["n_clusters"] == 5 and js["insufficient"]
    assert js["direction"]["verdict"] == "insufficient" and "rho" in js["direction"]
    assert js["teacher_accuracy"].startswith("teacher accuracy ") and js["bootstrap"]["unit"] == "prompt"
    assert set(js["comparisons"]["iw_opd_vs_position"]) >= {"same_prompt", "pooled", "within_rollout"}
    text = a.summary()
    assert "ratio" in text and "teacher" in text and "-t/T" in text and "-C_t/C_T" in text
    assert "INSUFFICIENT" in text
    assert len([ln for ln in text.splitlines() if ln.strip().startswith(("0.00", "0.50", "1.00"))]) == 3


def test_no_bootstrap_gives_point_estimates_only(rng):
    a = analyze(_synthetic(rng, R=8), n_boot=0)
    assert a.accuracy.accuracy.notna().all() and a.accuracy.ci_low.isna().all()
    assert np.isnan(a.aurocs["neg_rel_position"]["ci_low"]) and np.isfinite(a.aurocs["neg_rel_position"]["auroc"])


def test_orientation_is_declared_and_a_reversed_predictor_is_printed_flipped(rng):
    df = _synthetic(rng, R=40)
    judged = df.success.fillna(0).to_numpy()
    df["teacher_entropy"] = judged + 0.1 * rng.random(len(df))  # high entropy = success: against the declared -H_T
    a = analyze(df, n_boot=200, seed=0)
    h = a.aurocs["neg_teacher_entropy"]
    assert h["score"] == "-H_T" and h["auroc"] < 0.05 and h["reading"] == "reversed" and "+H_T" in h["finding"]
    for entry in a.aurocs.values():  # every AUROC below 0.5 states its flip
        assert entry["auroc"] >= 0.5 or entry["reading"] != "agrees"
    text = a.summary()
    line = next(ln for ln in text.splitlines() if "H_T" in ln)
    assert line.strip().startswith("+H_T ") and float(line.split()[1]) > 0.95
    assert "flipped" in line and "REVERSED" in line
    import re

    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("AUROC of reliability predictors"))
    for ln in lines[start + 1:]:
        if ln.startswith("  ") and "minus" not in ln:
            first = re.search(r" (\d\.\d{3})", ln)
            assert first is None or float(first.group(1)) >= 0.5 or "flipped" in ln, ln


def test_prompt_clusters_widen_intervals_when_prompts_share_difficulty(rng):
    df = _synthetic(rng, R=40)
    # make the two rollouts of a prompt identical in outcome: the effective sample is the prompts
    first = df[df.sample_id == 0].copy()
    dup = first.copy()
    dup["sample_id"] = 1
    df = pd.concat([first, dup], ignore_index=True)
    by_prompt = analyze(df, n_boot=400, seed=0)
    by_rollout = analyze(df, n_boot=400, seed=0, cluster="rollout")
    assert by_prompt.n_clusters == 20 and by_rollout.n_clusters == 40 and by_rollout.cluster == "rollout"
    t = lambda a: a.accuracy[a.accuracy.model == "teacher"]  # noqa: E731
    width = lambda a: (t(a).ci_high - t(a).ci_low).mean()  # noqa: E731
    assert width(by_prompt) > 1.2 * width(by_rollout)
    assert analyze(df, n_boot=50, min_clusters=21).direction.verdict == "insufficient"


def test_compare_scores_same_prompt_pairs_against_brute_force(rng):
    n = 60
    prompt = rng.integers(0, 5, n)
    rollout = prompt * 3 + rng.integers(0, 3, n)
    y = (rng.random(n) < 0.5).astype(float)
    a, b = np.round(rng.normal(size=n), 1), np.round(rng.normal(size=n), 1)
    out = compare_scores(a, b, y, prompt=prompt, rollout=rollout, n_boot=50, seed=0)

    def brute(s):
        w = m = 0.0
        for i in range(n):
            for j in range(n):
                if y[i] == 1 and y[j] == 0 and prompt[i] == prompt[j] and rollout[i] != rollout[j]:
                    m += 1
                    w += float(s[i] > s[j]) + 0.5 * float(s[i] == s[j])
        return w / m

    sp = out["same_prompt"]
    assert sp["candidate"]["estimate"] == pytest.approx(brute(a)) and sp["reference"]["estimate"] == pytest.approx(
        brute(b))
    assert sp["difference"]["estimate"] == pytest.approx(brute(a) - brute(b))
    assert out["pooled"]["candidate"]["estimate"] == pytest.approx(auroc(a, y))
    assert out["pooled"]["difference"]["ci_low"] <= out["pooled"]["difference"]["estimate"]
