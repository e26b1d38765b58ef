"""The ablation's analysis against hand computations, and the 2-step smoke run of the script."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from drift.train.ablation import AblationConfig, claims, per_run, summarize


def _metrics(acc_by_schedule: dict[str, list[list[float]]], steps: int = 4) -> pd.DataFrame:
    """A fake metrics log: eval accuracy at steps 0, 2, 4 per (schedule, seed); k3 on every training step."""
    rows = []
    for name, seeds in acc_by_schedule.items():
        for seed, acc in enumerate(seeds):
            for step in range(steps + 1):
                row = {"loss": "sampled", "schedule": name, "seed": seed, "step": step,
                       "eval/accuracy": acc[step // 2] if step % 2 == 0 else math.nan,
                       "eval/greedy_accuracy": math.nan, "eval/kl_mean": math.nan,
                       "kl/k3_mean": 1.0 - 0.1 * step if step > 0 else math.nan}
                rows.append(row)
    return pd.DataFrame(rows)


CFG = AblationConfig(out="unused", steps=4, seeds=3, target_accuracy=0.5, early_frac=0.5, losses=("sampled",),
                     schedules=("uniform", "prefix30", "suffix30", "iw_opd"))


def test_run_statistics_by_hand():
    m = _metrics({"uniform": [[0.1, 0.5, 0.7]]})
    r = per_run(m, CFG).iloc[0]
    assert r.final_accuracy == 0.7 and r.steps_to_target == 2 and r.early_accuracy == 0.5
    assert r.aulc == pytest.approx(((0.1 + 0.5) / 2 * 2 + (0.5 + 0.7) / 2 * 2) / 4)
    assert r.kl_first == pytest.approx(0.9) and r.kl_plateau == pytest.approx(0.6)  # steps > 3.2: step 4 only
    assert r.kl_reduction_pct == pytest.approx(100 * (1 - 0.6 / 0.9))


def test_paired_claims_and_verdicts():
    m = _metrics({
        "uniform": [[0.1, 0.5, 0.7], [0.1, 0.4, 0.6], [0.2, 0.5, 0.7]],
        "prefix30": [[0.1, 0.5, 0.7], [0.1, 0.45, 0.6], [0.2, 0.5, 0.72]],
        "suffix30": [[0.1, 0.2, 0.3], [0.1, 0.25, 0.3], [0.2, 0.2, 0.35]],
        "iw_opd": [[0.1, 0.6, 0.7], [0.1, 0.5, 0.6], [0.2, 0.62, 0.7]],
    })
    table = claims(m, CFG).set_index("claim")
    assert table.loc["suffix-30 clearly lower", "verdict"] == "holds"
    assert table.loc["prefix-30 ≈ all tokens", "verdict"] == "holds"
    iw = table.loc["IW-OPD faster early"]
    d = np.array([0.1, 0.1, 0.12])
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert iw["value"] == pytest.approx(d.mean()) and iw["ci_low"] == pytest.approx(d.mean() - half)
    assert iw["verdict"] == "holds"
    assert table.loc["IW-OPD ends at least as well", "verdict"] == "holds"
    s = summarize(m, CFG).set_index("schedule")
    assert s.loc["uniform", "reached_target"] == "3/3"
    assert s.loc["uniform", "final_accuracy_mean"] == pytest.approx(np.mean([0.7, 0.6, 0.7]))


def test_inconclusive_and_contradicted_verdicts():
    m = _metrics({
        "uniform": [[0.1, 0.5, 0.7], [0.1, 0.4, 0.6], [0.2, 0.5, 0.7]],
        "suffix30": [[0.1, 0.6, 0.8], [0.1, 0.5, 0.7], [0.2, 0.6, 0.8]],  # higher, not lower: contradicted
        "iw_opd": [[0.1, 0.6, 0.7], [0.1, 0.3, 0.6], [0.2, 0.5, 0.7]],  # +0.1, -0.1, 0: straddles 0
    })
    table = claims(m, CFG).set_index("claim")
    assert table.loc["suffix-30 clearly lower", "verdict"] == "contradicted"
    assert table.loc["IW-OPD faster early", "verdict"] == "inconclusive"


def test_one_seed_gives_no_verdict():
    m = _metrics({"uniform": [[0.1, 0.5, 0.7]], "suffix30": [[0.1, 0.2, 0.3]]})
    table = claims(m, CFG)
    assert (table[table["claim"] == "suffix-30 clearly lower"]["verdict"] == "n/a (needs >= 2 seeds)").all()


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")
def test_two_step_smoke_run(tmp_path):
    from scripts.reproduce_ablation import main

    out = tmp_path / "abl"
    assert main(["--steps", "2", "--seeds", "1", "--out", str(out), "--workers", "1", "--eval-prompts", "8",
                 "--eval-samples", "1", "--collect-prompts", "4", "--recommend-prompts", "16"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert set(results["schedule"]) == {"uniform", "prefix30", "suffix30", "iw_opd", "linear", "recommended",
                                        "fitted"}
    assert set(results["loss"]) == {"sampled", "full_kl"}
    text = (out / "results.md").read_text()
    assert "The paper's claims" in text and "figures/learning_curves_sampled.png" in text
    for name in ("learning_curves_sampled.png", "kl_over_training_sampled.png", "kl_by_position.png",
                 "weight_shape.png"):
        assert (out / "figures" / name).stat().st_size > 1000
