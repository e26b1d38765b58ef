"""`drift schedule recommend`: evidence order, decisions, the fitted blend, outputs."""

from __future__ import annotations

import json

import numpy as np
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
    assert "no position trend" in " ".join(rec.rationale)


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
