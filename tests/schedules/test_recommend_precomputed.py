"""`recommend(..., precomputed=...)`: evidence the caller already holds is used as is, never computed again."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import drift.probe.analysis
import drift.stats
from drift.probe.analysis import analyze, load_analysis
from drift.schedules.recommend import Precomputed, RecommendConfig, recommend
from drift.stats import BinSpec, aggregate_bins, direction_test, fit_bins
from tests.schedules.test_recommend import _scenario


def _forbid(monkeypatch, *names: str) -> None:
    for name in names:
        module = drift.probe.analysis if name == "analyze" else drift.stats

        def boom(*a, _name=name, **k):
            raise AssertionError(f"{_name} was called although its result was given")

        monkeypatch.setattr(module, name, boom)


def test_oracle_evidence_is_not_recomputed_and_gives_the_same_decision(tmp_path, monkeypatch):
    ds = _scenario(tmp_path / "d", "onset", n_prompts=24)
    cfg = RecommendConfig(dataset=str(ds.root), n_boot=100)
    fresh = recommend(ds.root, cfg)
    metric = "oracle_teacher_correct"
    rb = aggregate_bins(ds.root, [metric], BinSpec(by="rel", bins=cfg.bins, step="pool"))
    pre = Precomputed(bins=rb.table(n_boot=cfg.n_boot, seed=cfg.seed),
                      direction=direction_test(rb, metric, n=cfg.n_boot, seed=cfg.seed),
                      selection=fit_bins(rb, metric, n_boot=cfg.n_boot, seed=cfg.seed), n_clusters=24)
    _forbid(monkeypatch, "aggregate_bins", "fit_bins", "direction_test")
    rec = recommend(ds.root, cfg, precomputed=pre)
    assert rec.evidence == "oracle" and rec.choice == fresh.choice and rec.verdict == fresh.verdict
    assert rec.direction == fresh.direction and rec.quality == fresh.quality
    # the same fit (to optimizer round-off: DuckDB's sums need not add in the same order twice)
    assert rec.fit["model"] == fresh.fit["model"]
    assert rec.fit["params"] == pytest.approx(fresh.fit["params"], rel=1e-6)
    assert rec.n_clusters == 24


def _continuations(n_prompts: int = 20, per: int = 3, seed: int = 0) -> pd.DataFrame:
    """Probe rows whose teacher success falls with the prefix ratio (and with the rollout's own drift)."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        for s in range(per):
            onset = rng.uniform(0.2, 0.8)
            for r in (0.0, 0.25, 0.5, 0.75, 1.0):
                c = 0.1 * r + (2.0 * (r - onset) if r > onset else 0.0)
                for model, base in (("teacher", 0.9 - 0.6 * (r > onset)), ("student", 0.3)):
                    rows.append({"run_id": "x", "step": 0, "prompt_id": f"p{p}", "sample_id": s, "ratio": r,
                                 "model": model, "success": float(rng.random() < base), "rel_position": r,
                                 "cum_abs_gap": c, "prefix_logratio": -c})
    return pd.DataFrame(rows)


def test_a_reloaded_probe_analysis_equals_what_was_written(tmp_path):
    a = analyze(_continuations(), n_boot=80, seed=3)
    a.write(tmp_path / "probe")
    b = load_analysis(tmp_path / "probe")
    pd.testing.assert_frame_equal(a.accuracy, b.accuracy)
    assert b.data is None and b.ratios == a.ratios and b.n_clusters == a.n_clusters == 20
    assert (b.cluster, b.min_clusters, b.n_boot, b.seed, b.n_rollouts) == (a.cluster, a.min_clusters, 80, 3, 60)
    assert b.direction.verdict == a.direction.verdict and b.direction.rho == pytest.approx(a.direction.rho)
    for k, v in a.aurocs.items():
        for f in ("auroc", "ci_low", "ci_high"):
            assert (math.isnan(v[f]) and math.isnan(b.aurocs[k][f])) or b.aurocs[k][f] == pytest.approx(v[f])
    assert b.summary() == a.summary()
    with pytest.raises(FileNotFoundError, match="drift probe"):
        load_analysis(tmp_path)


def test_recommend_uses_the_stored_probe_signals(tmp_path, monkeypatch):
    a = analyze(_continuations(), n_boot=80, seed=3)
    a.write(tmp_path / "probe")
    loaded = load_analysis(tmp_path / "probe")
    ds = _scenario(tmp_path / "d", "position", n_prompts=12)
    _forbid(monkeypatch, "analyze")
    cfg = RecommendConfig(dataset=str(ds.root), probe=str(tmp_path / "probe"), n_boot=80, seed=3)
    rec = recommend(ds.root, cfg, precomputed=Precomputed(analysis=loaded))
    assert rec.evidence == "probe" and rec.verdict == loaded.direction.verdict == "falls"
    assert rec.signals["iw_opd"]["auroc"] == loaded.aurocs["neg_cum_abs_gap_frac"]["auroc"]
    assert rec.signals["position"]["ci_low"] == loaded.aurocs["neg_rel_position"]["ci_low"]
    stored = loaded.comparisons["iw_opd_vs_position"]["same_prompt"]["difference"]
    assert rec.signals["comparison"]["same_prompt"]["difference"] == stored
    with pytest.raises(ValueError, match="cluster"):
        recommend(ds.root, RecommendConfig(dataset=str(ds.root), cluster="rollout"),
                  precomputed=Precomputed(analysis=loaded))
