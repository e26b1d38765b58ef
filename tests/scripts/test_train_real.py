"""``python -m scripts.train_real`` end to end on a tiny from-config model (slow tier), and its statistics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from drift.errors import ConfigError, DatasetExistsError
from scripts.make_real_prompts import RealPromptsConfig, write
from scripts.train_real import TrainRealConfig, analyze, findings, main
from tests.helpers import make_tiny_model, make_tiny_tokenizer


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A tiny student folder (its tokenizer saved beside it) and a small prompt set from the real generator."""
    root = tmp_path_factory.mktemp("train_real")
    model = root / "tiny"
    make_tiny_model(0).save_pretrained(model)
    make_tiny_tokenizer().save_pretrained(model)
    write(RealPromptsConfig(out=str(root / "prompts"), train=12, heldout=6))
    return root, model


def _args(root, model, out, docs, *extra):
    return ["--out", str(out), "--docs", str(docs), "--model", str(model),
            "--train-prompts", str(root / "prompts" / "train.jsonl"),
            "--heldout-prompts", str(root / "prompts" / "heldout.jsonl"), "--steps", "2", "--eval-every", "1",
            "--eval-prompts", "4", "--eval-samples", "2", "--prompts-per-step", "2", "--samples-per-prompt", "2",
            "--max-new-tokens", "4", "--recommend-prompts", "4", "--recommend-samples", "2", "--probe-rollouts", "4",
            "--n-boot", "100", "--lr", "1e-3", *extra]


@pytest.mark.slow  # about 30 s on one contended core: model IO, collect, probe, train, bootstrap
def test_train_real_tiny_end_to_end(tiny_setup, tmp_path, capsys):
    root, model = tiny_setup
    out, docs = tmp_path / "out", tmp_path / "docs"
    assert main(_args(root, model, out, docs)) == 0
    text = capsys.readouterr().out
    # 4 prompts are too few clusters for a probe-based choice: recommend returns its default, IW-OPD, an alias
    aliases = json.loads((out / "schedules" / "aliases.json").read_text())
    assert aliases == {"recommended": "iw_opd"}
    assert "recommended has the same spec as iw_opd: not trained again" in text
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["iw_opd-seed0", "uniform-seed0"]
    assert not any((out / "runs").glob("*/checkpoints"))  # deleted once the datasets exist
    # step 0 is collected once per seed and shared
    assert (out / "runs" / "uniform-seed0" / "drift" / "step-000000").exists()
    assert not (out / "runs" / "iw_opd-seed0" / "drift" / "step-000000").exists()
    rewards = pd.read_parquet(out / "heldout_rewards.parquet")
    assert set(rewards["schedule"]) == {"uniform", "iw_opd", "recommended"}
    assert rewards.groupby("schedule").size().tolist() == [3 * 4 * 2] * 3  # steps 0..2 x 4 prompts x 2 samples
    for name in ("results.md", "results.csv", "curves.csv", "heldout_curves.png", "config.json"):
        assert (docs / name).exists(), name
    table = pd.read_csv(docs / "results.csv")
    assert list(table["schedule"]) == ["uniform", "iw_opd", "recommended"]
    md = (docs / "results.md").read_text()
    assert "## What it shows" in md and "| uniform | 2 |" in md and "recommended` has the same spec as `iw_opd`" in md
    cfg = json.loads((docs / "config.json").read_text())
    assert cfg["schedules"]["iw_opd"] == {"kind": "iw_opd", "gamma": 0.5, "use_abs": True, "denominator": "code"}
    # never overwrites silently; --analyze-only rewrites docs from OUT without training
    with pytest.raises(DatasetExistsError, match="exists"):
        main(_args(root, model, out, docs))
    (docs / "results.md").unlink()
    assert main(_args(root, model, out, docs, "--analyze-only")) == 0
    assert (docs / "results.md").read_text().split("Wall time")[0] == md.split("Wall time")[0]


def _planted(effect: float, n_prompts: int, rng: np.random.Generator) -> pd.DataFrame:
    """Held-out rewards where 'iw_opd' gains ``effect`` over uniform at every step after 0 (Bernoulli rewards)."""
    rows = []
    base = rng.uniform(0.2, 0.6, n_prompts)
    for name, gain in (("uniform", 0.0), ("iw_opd", effect)):
        for step in (0, 5, 10):
            p = np.clip(base + 0.1 * step / 10 + (gain if step else 0.0), 0, 1)
            for k in range(n_prompts):
                for s in range(4):
                    rows.append({"schedule": name, "seed": 0, "step": step, "prompt_id": f"p{k}", "sample_id": s,
                                 "reward": float(rng.random() < p[k])})
    return pd.DataFrame(rows)


def test_analysis_finds_a_planted_gain_and_none_where_none(rng):
    cfg = TrainRealConfig(steps=10, eval_every=5, n_boot=500)
    curves, table, extra = analyze(_planted(0.25, 200, rng), cfg)
    iw = table.set_index("schedule").loc["iw_opd"]
    assert iw["final_diff_ci_low"] > 0 and iw["aulc_diff_ci_low"] > 0
    assert iw["final_diff_ci_low"] < 0.25 < iw["final_diff_ci_high"]
    # AULC of a curve that gains 0.25 at steps 5 and 10 of [0, 10]: 0.25 * (0.5 * 0.5 + 0.5) = 0.1875
    assert iw["aulc_diff_ci_low"] < 0.1875 < iw["aulc_diff_ci_high"]
    assert extra["uniform_gain"]["ci_low"] > 0 and extra["n_prompts"] == 200
    assert len(curves) == 6 and (curves["ci_low"] <= curves["reward"]).all()
    assert any("higher AULC than uniform" in s for s in findings(table, extra, {}))
    _, table0, extra0 = analyze(_planted(0.0, 60, rng), cfg)
    text = findings(table0, extra0, {})
    assert text[-1].startswith("No schedule differs from uniform at this budget; MDE")
    mde = table0.set_index("schedule").loc["iw_opd", "aulc_diff_mde"]
    assert 0 < mde < 0.5


def test_bad_config_reports_every_problem():
    with pytest.raises(ConfigError, match=r"(?s)steps.*unknown schedules \['prefix30'\].*uniform"):
        TrainRealConfig(steps=0, schedules=("prefix30",))
