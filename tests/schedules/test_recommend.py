"""`drift schedule recommend`: evidence order, decisions, the fitted blend, outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from drift.errors import DatasetExistsError
from drift.schedules.recommend import RecommendConfig, recommend, recommend_from_config
from drift.synthetic import synthetic_tokens, write_synthetic_dataset


def _oracle_dataset(path, quality: dict, seed: int = 0):
    """A synthetic dataset whose oracle label is Bernoulli(quality curve(t/T))."""
    df = synthetic_tokens(quality["family"], quality["params"], n_rollouts=160, length_range=(20, 60),
                          rollout_sd=0.0, token_sd=0.0, seed=seed, metric="q")
    rng = np.random.default_rng(seed)
    df["oracle_teacher_correct"] = rng.random(len(df)) < np.clip(df.pop("q").to_numpy(), 0, 1)
    return write_synthetic_dataset(path, df)


def test_without_evidence_it_recommends_iw_opd_and_says_why(tmp_path):
    ds = write_synthetic_dataset(tmp_path / "d", synthetic_tokens("linear", {"a": 1.0, "b": 0.0}, n_rollouts=20))
    rec = recommend(ds.root)
    assert rec.evidence == "none" and rec.schedule.kind == "iw_opd"
    assert "no continuation probe and no oracle labels" in rec.rationale[0]


def test_falling_quality_fitted_blend_matches_the_curve(tmp_path):
    ds = _oracle_dataset(tmp_path / "d", {"family": "exponential", "params": {"a": 0.9, "tau": 0.3, "c": 0.05}})
    rec = recommend(ds.root, RecommendConfig(dataset=str(ds.root), signal="position", n_boot=200))
    assert rec.evidence == "oracle" and rec.direction["verdict"] == "falls" and rec.choice == "fitted"
    # w(x) = 1 + gamma q(x) / max q, clipped to [1, 1 + gamma], q being the selected fitted curve
    from drift.curves import evaluate_curve

    fit = rec.fit
    x = (np.arange(50) + 0.5) / 50
    q = evaluate_curve(fit["model"], x, fit["params"])
    peak = rec.schedule.source["quality_peak"]
    want = np.clip(1 + 0.5 * q / peak, 1.0, 1.5)
    got = np.asarray(rec.schedule.weights(np.full((1, 50), -1.0)))[0]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert (np.diff(got) <= 1e-12).all() and got[0] > 1.3
    assert rec.half_point is not None and 0.05 < rec.half_point < 0.6
    deciles = rec.decile_weights
    assert len(deciles) == 10 and deciles[0] > deciles[-1]


def test_flat_quality_keeps_uniform(tmp_path):
    ds = _oracle_dataset(tmp_path / "d", {"family": "linear", "params": {"a": 0.7, "b": 0.0}})
    rec = recommend(ds.root, RecommendConfig(dataset=str(ds.root), n_boot=200))
    assert rec.direction["verdict"] == "flat" and rec.schedule.kind == "uniform"
    assert "equivalence test says quality is flat" in " ".join(rec.rationale)


def test_rising_quality_is_reported_and_followed(tmp_path):
    ds = _oracle_dataset(tmp_path / "d", {"family": "linear", "params": {"a": 0.2, "b": 0.7}})
    rec = recommend(ds.root, RecommendConfig(dataset=str(ds.root), signal="position", n_boot=200))
    assert rec.direction["verdict"] == "rises"
    assert "RISES" in " ".join(rec.rationale)
    w = np.asarray(rec.schedule.weights(np.full((1, 40), -1.0)))[0]
    assert w[-1] > w[0]


def test_outputs_spec_and_rationale_and_refuses_to_overwrite(tmp_path):
    ds = _oracle_dataset(tmp_path / "d", {"family": "exponential", "params": {"a": 0.9, "tau": 0.3, "c": 0.05}})
    cfg = RecommendConfig(dataset=str(ds.root), out=str(tmp_path / "s.json"), n_boot=100)
    rec, out, sidecar = recommend_from_config(cfg)
    from drift.schedules import load

    assert load(out) == rec.schedule
    side = json.loads(sidecar.read_text())
    assert side["config"]["dataset"] == str(ds.root) and side["recommendation"]["rationale"]
    with pytest.raises(DatasetExistsError, match="--force"):
        recommend_from_config(cfg)


@pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")
def test_cli_recommend_on_the_oracle_world_with_a_probe(tmp_path, capsys):
    from drift.cli import main

    data = tmp_path / "toy"
    assert main(["collect", "--preset", "toy", "--out", str(data), "--max-prompts", "16", "--progress", "false"]) == 0
    assert main(["probe", str(data), "--ratios", "0,0.5,1", "--continuations", "2", "--out", str(data / "probe"),
                 "--progress", "false"]) == 0
    capsys.readouterr()
    assert main(["schedule", "recommend", str(data), "--out", str(tmp_path / "rec.json"), "--n-boot", "200"]) == 0
    text = capsys.readouterr().out
    assert "evidence: probe" in text and "teacher continuation accuracy" in text and "decision:" in text
    assert "verl:" in text and (tmp_path / "rec.recommendation.json").exists()


def test_rationale_survives_a_fit_without_intervals():
    from drift.schedules.recommend import _num

    assert _num(None) == "n/a" and _num(float("nan")) == "n/a" and _num(0.5) == "0.5"


def test_weights_accept_read_only_arrays():
    import warnings

    from drift.schedules import load

    adv = np.full((2, 5), -1.0)
    adv.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = load({"kind": "linear", "gamma": 0.5}).weights(adv)
    assert w.shape == (2, 5)


# ------------------------------------------------------------------------------------------ the right comparison
def _scenario(path, kind: str, n_prompts: int = 40, per: int = 4, seed: int = 0):
    """Oracle-labelled tokens with a known quality mechanism (|A| and the label drawn here, C_t, S_t recomputed).

    ``position``: quality 0.9 - 0.5 t/T - 0.4 d_p depends on position only, while the prompt difficulty d_p
    scales |A| (hard prompts accumulate C_t and fail everywhere: raw C_t looks great between prompts).
    ``onset``: each rollout drifts off at its own onset u_r; after it |A| is large and quality low (C_t/C_T tracks
    the onset, t/T does not).
    """
    df = synthetic_tokens("linear", {"a": 0.0, "b": 0.0}, n_rollouts=n_prompts * per, samples_per_prompt=per,
                          length_range=(30, 60), rollout_sd=0.0, token_sd=0.0, seed=seed, metric="q")
    df.pop("q")
    rng = np.random.default_rng(seed + 1)
    r = pd.factorize(df["prompt_id"] + "/" + df["sample_id"].astype(str))[0]
    p = pd.factorize(df["prompt_id"])[0]
    x = df["rel_position"].to_numpy(float)
    if kind == "position":
        d = rng.random(p.max() + 1)
        absA = (0.2 + 3.0 * d[p]) * rng.exponential(1.0, len(df))
        q = 0.95 - 0.4 * x - 0.6 * d[p]
    else:
        onset = rng.uniform(0.15, 0.85, r.max() + 1)
        after = x >= onset[r]
        absA = np.where(after, 2.0, 0.1) * rng.exponential(1.0, len(df))
        q = np.where(after, 0.3, 0.9)
    A = -absA
    g = pd.Series(absA).groupby(r)
    C = g.cumsum().to_numpy() - absA
    total = g.transform("sum").to_numpy()
    df["advantage"] = A.astype(np.float32)
    df["k1"] = (-A).astype(np.float32)
    df["cum_abs_gap"] = C
    df["cum_abs_gap_frac"] = C / total
    df["prefix_logratio"] = pd.Series(A).groupby(r).cumsum().to_numpy() - A
    df["oracle_teacher_correct"] = rng.random(len(df)) < np.clip(q, 0, 1)
    return write_synthetic_dataset(path, df)


def test_position_only_quality_with_difficulty_scaled_gap_does_not_choose_iw_opd(tmp_path):
    ds = _scenario(tmp_path / "d", "position")
    rec = recommend(ds.root, RecommendConfig(dataset=str(ds.root), n_boot=300))
    s = rec.signals
    # the trap is there: raw -C_t ranks prompts by difficulty and beats position pooled ...
    assert s["cumulative_raw"]["auroc"] > s["position"]["auroc"] + 0.03
    # ... but IW-OPD's own C_t/C_T does not beat position where prompt difficulty cancels
    assert s["comparison"]["decision_uses"] == "same-prompt"
    assert s["comparison"]["same_prompt"]["difference"]["ci_low"] < 0
    text = " ".join(rec.rationale)
    assert not rec.choice.startswith("iw_opd") or "inconclusive" in text
    assert rec.cluster == "prompt" and rec.n_clusters == 40


def test_per_rollout_onset_chooses_iw_opd_by_the_paired_interval(tmp_path):
    ds = _scenario(tmp_path / "d", "onset")
    rec = recommend(ds.root, RecommendConfig(dataset=str(ds.root), n_boot=300))
    cmp = rec.signals["comparison"]
    assert cmp["same_prompt"]["difference"]["ci_low"] > 0 and cmp["pooled"]["difference"]["ci_low"] > 0
    assert rec.choice == "iw_opd" and rec.schedule.kind == "iw_opd"
    text = " ".join(rec.rationale)
    assert "same-prompt interval of the difference lies above 0" in text
    # within one rollout C_t/C_T orders cuts like t/T: that AUROC is (nearly) a tie by construction
    wr = cmp["within_rollout"]
    assert abs(wr["candidate"] - wr["reference"]) < 0.05


@pytest.mark.parametrize("n_prompts", [1, 3])
def test_too_few_prompts_give_insufficient_and_no_fitted_schedule(tmp_path, n_prompts):
    ds = _oracle_dataset_prompts(tmp_path / "d", n_prompts)
    for signal in ("auto", "position"):
        rec = recommend(ds.root, RecommendConfig(dataset=str(ds.root), n_boot=100, signal=signal))
        assert rec.verdict == "insufficient" and rec.direction["verdict"] == "insufficient"
        assert rec.n_clusters == n_prompts and rec.schedule.kind != "fitted" and rec.fit is None
        assert "insufficient evidence" in " ".join(rec.rationale) and rec.choice.startswith("iw_opd (default")
    # rollouts are not independent clusters here: with --cluster rollout the same data is not insufficient
    rec = recommend(ds.root, RecommendConfig(dataset=str(ds.root), n_boot=100, cluster="rollout", min_clusters=3))
    assert rec.verdict != "insufficient" and rec.cluster == "rollout" and rec.n_clusters == 160


def _oracle_dataset_prompts(path, n_prompts: int):
    """160 rollouts of only ``n_prompts`` prompts, quality falling steeply with position."""
    df = synthetic_tokens("exponential", {"a": 0.9, "tau": 0.3, "c": 0.05}, n_rollouts=160,
                          samples_per_prompt=160 // n_prompts + (160 % n_prompts > 0), length_range=(20, 60),
                          rollout_sd=0.0, token_sd=0.0, seed=0, metric="q")
    rng = np.random.default_rng(0)
    df["oracle_teacher_correct"] = rng.random(len(df)) < np.clip(df.pop("q").to_numpy(), 0, 1)
    return write_synthetic_dataset(path, df)


def test_a_power_law_winner_gives_a_working_schedule(tmp_path, monkeypatch):
    import drift.stats

    real = drift.stats.fit_bins
    monkeypatch.setattr(drift.stats, "fit_bins", lambda *a, **k: real(*a, **{**k, "models": ["power"]}))
    ds = _oracle_dataset(tmp_path / "d", {"family": "power", "params": {"a": 0.05, "b": 0.6, "c": 0.4}})
    rec = recommend(ds.root, RecommendConfig(dataset=str(ds.root), signal="position", n_boot=100))
    assert rec.fit["model"] == "power" and rec.choice == "fitted"
    w = np.asarray(rec.schedule.weights(np.full((2, 40), -1.0)))
    assert np.isfinite(w).all() and (w >= 1.0).all() and (w <= 1.5 + 1e-12).all() and w[0, 0] >= w[0, -1]
