"""The ablation's analysis against hand computations, its verdict rules on synthetic metrics, and the smoke run."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sstats

from drift.errors import ConfigError
from drift.train.ablation import (
    ALL_SCHEDULES,
    BASE_SCHEDULES,
    CONTROLS,
    AblationConfig,
    advantage_of,
    budget_plan,
    claims,
    dedupe_specs,
    mde,
    mean_ci,
    per_run,
    summarize,
    verdict_above,
    verdict_below,
    verdict_within,
    world_values_for,
)
from drift.train.pilot import plateau_scan, steps_for_plateau
from drift.train.verdicts import NO_VERDICT


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


def _curves(name: str, seeds: int, acc: Callable[[int, int], float], k3: Callable[[int, int], float],
            steps: int = 100, eval_every: int = 10, loss: str = "sampled") -> pd.DataFrame:
    """A fake log of ``seeds`` runs: accuracy acc(step, seed) every ``eval_every`` steps, k3(step, seed) at 1..steps."""
    rows = [{"loss": loss, "schedule": name, "seed": seed, "step": step,
             "eval/accuracy": acc(step, seed) if step % eval_every == 0 else math.nan,
             "kl/k3_mean": k3(step, seed) if step > 0 else math.nan}
            for seed in range(seeds) for step in range(steps + 1)]
    return pd.DataFrame(rows)


def _claim(table: pd.DataFrame, prefix: str) -> pd.Series:
    hits = table[table["claim"].str.startswith(prefix)]
    assert len(hits) == 1, f"expected one claim starting {prefix!r}, got {list(hits['claim'])}"
    return hits.iloc[0]


CFG = AblationConfig(out="unused", steps=4, seeds=3, target_accuracy=0.5, early_frac=0.5, losses=("sampled",),
                     schedules=("uniform", "prefix30", "suffix30", "iw_opd"))
CFG100 = AblationConfig(out="unused", steps=100, seeds=5, losses=("sampled",), schedules=("uniform",))


# ------------------------------------------------------------------------------------------- statistics
def test_run_statistics_by_hand():
    m = _metrics({"uniform": [[0.1, 0.5, 0.7]]})
    r = per_run(m, CFG).iloc[0]
    assert r.final_accuracy == 0.7 and r.last_accuracy == 0.7  # tail = steps >= 3.2: the eval at step 4 only
    assert r.steps_to_target == 2 and r.early_accuracy == 0.5
    assert r.aulc == pytest.approx(((0.1 + 0.5) / 2 * 2 + (0.5 + 0.7) / 2 * 2) / 4)
    assert r.kl_first == pytest.approx(0.9) and r.kl_plateau == pytest.approx(0.6)  # steps >= 3.2: step 4 only
    assert r.kl_reduction_pct == pytest.approx(100 * (1 - 0.6 / 0.9))
    assert math.isnan(r.acc_tail_slope) and math.isnan(r.kl_tail_slope)  # one tail point: no slope


def test_tail_slopes_and_tail_mean_by_hand():
    m = _curves("uniform", 1, acc=lambda s, _: 0.5 + 0.001 * s, k3=lambda s, _: 1.0 - 0.002 * s)
    r = per_run(m, CFG100).iloc[0]
    assert r.final_accuracy == pytest.approx(np.mean([0.58, 0.59, 0.60]))  # evals at 80, 90, 100
    assert r.acc_tail_slope == pytest.approx(0.1)  # per 100 steps
    tail = 1.0 - 0.002 * np.arange(80, 101)
    assert r.kl_plateau == pytest.approx(tail.mean()) and r.kl_tail_slope == pytest.approx(-0.2)
    assert r.kl_tail_slope_rel == pytest.approx(-0.2 / tail.mean())


def test_mde_formula():
    for n in (2, 3, 5, 6):
        expected = (sstats.t.ppf(0.975, n - 1) + sstats.t.ppf(0.80, n - 1)) * 0.3 / math.sqrt(n)
        assert mde(0.3, n) == pytest.approx(expected)
    assert mde(1.0, 3) == pytest.approx((4.302652729911275 + 1.0606601717798212) / math.sqrt(3))
    assert mde(1.0, 6) < mde(1.0, 5) < mde(1.0, 3)
    assert math.isnan(mde(1.0, 1))
    r = mean_ci([0.1, 0.1, 0.12])
    assert r["mde"] == pytest.approx(mde(float(np.std([0.1, 0.1, 0.12], ddof=1)), 3))


@pytest.mark.parametrize(("lo", "hi", "above0", "below0", "within"), [
    (0.1, 0.2, "holds", "contradicted", "holds"),
    (-0.2, -0.1, "contradicted", "holds", "holds"),
    (-0.1, 0.1, "inconclusive", "inconclusive", "holds"),
    (0.4, 0.6, "holds", "contradicted", "contradicted"),
    (-0.6, -0.4, "contradicted", "holds", "contradicted"),
    (0.2, 0.4, "holds", "contradicted", "inconclusive"),
    (-0.4, 0.4, "inconclusive", "inconclusive", "inconclusive"),
])
def test_verdict_rules(lo, hi, above0, below0, within):
    r = {"ci_low": lo, "ci_high": hi}
    assert verdict_above(r, 0.0) == above0
    assert verdict_below(r, 0.0) == below0
    assert verdict_within(r, -0.3, 0.3) == within
    nan = {"ci_low": math.nan, "ci_high": math.nan}
    assert verdict_above(nan, 0.0) == verdict_below(nan, 0.0) == verdict_within(nan, -1, 1) == NO_VERDICT


# ------------------------------------------------------------------------------------------- paired claims
def test_paired_claims_and_verdicts():
    m = _metrics({
        "uniform": [[0.1, 0.5, 0.7], [0.1, 0.4, 0.6], [0.2, 0.5, 0.7]],
        "prefix30": [[0.1, 0.5, 0.7], [0.1, 0.45, 0.6], [0.2, 0.5, 0.72]],
        "suffix30": [[0.1, 0.2, 0.3], [0.1, 0.25, 0.3], [0.2, 0.2, 0.35]],
        "iw_opd": [[0.1, 0.6, 0.7], [0.1, 0.5, 0.6], [0.2, 0.62, 0.7]],
    })
    table = claims(m, CFG).set_index("claim")
    assert table.loc["suffix-30 clearly lower", "verdict"] == "holds"
    assert table.loc["suffix-30 below prefix-30", "verdict"] == "holds"
    assert table.loc["prefix-30 ≈ all tokens", "verdict"] == "holds"
    iw = table.loc["IW-OPD faster early"]
    d = np.array([0.1, 0.1, 0.12])
    half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2)
    assert iw["value"] == pytest.approx(d.mean()) and iw["ci_low"] == pytest.approx(d.mean() - half)
    assert iw["mde"] == pytest.approx((4.302652729911275 + 1.0606601717798212) * d.std(ddof=1) / np.sqrt(3))
    assert iw["verdict"] == "holds" and iw["n_seeds"] == 3
    assert table.loc["IW-OPD ends at least as well", "verdict"] == "holds"
    assert table["rule"].str.len().min() > 10  # every claim prints its rule
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
    assert (table[table["claim"] == "suffix-30 clearly lower"]["verdict"] == NO_VERDICT).all()


# ------------------------------------------------------------------------------------------- uniform's tail
NOISE = np.random.default_rng(0).normal(size=(5, 101))


@pytest.mark.parametrize(("acc", "verdict"), [
    (lambda s, k: min(0.8, 0.3 + 0.01 * s) + 0.002 * NOISE[k, s], "holds"),  # flat from step 50
    (lambda s, k: 0.2 + 0.005 * s + 0.002 * NOISE[k, s], "contradicted"),  # still rising 0.5 / 100 steps
    (lambda s, k: 0.7 + 0.0003 * s + 0.05 * NOISE[k, s], "inconclusive"),  # too noisy to tell
])
def test_accuracy_plateau_verdict(acc, verdict):
    m = _curves("uniform", 5, acc=acc, k3=lambda s, k: 0.5)
    assert _claim(claims(m, CFG100), "uniform has plateaued")["verdict"] == verdict


@pytest.mark.parametrize(("k3", "verdict"), [
    (lambda s, k: 0.3 + 0.2 * math.exp(-s / 10) + 0.001 * NOISE[k, s], "holds"),  # flat at 0.3 in the tail
    (lambda s, k: 1.0 - 0.006 * s + 0.001 * NOISE[k, s], "contradicted"),  # still falling fast
    (lambda s, k: 0.3 + 0.2 * NOISE[k, s], "inconclusive"),  # too noisy to tell
])
def test_gap_persists_is_a_tail_test(k3, verdict):
    m = _curves("uniform", 5, acc=lambda s, k: 0.5, k3=k3)
    row = _claim(claims(m, CFG100), "the gap persists")
    assert row["verdict"] == verdict
    assert "level" in row["measure"] and math.isfinite(row["mde"])


@pytest.mark.parametrize(("reduction", "spread", "verdict"), [
    (0.30, 0.01, "holds"),  # 30% ± small: inside [20, 40]
    (0.85, 0.02, "contradicted"),  # far above 40%
    (0.10, 0.01, "contradicted"),  # below 20%
    (0.40, 0.05, "inconclusive"),  # straddles 40%
])
def test_kl_reduction_verdict(reduction, spread, verdict):
    offsets = np.linspace(-spread, spread, 5)
    m = _curves("uniform", 5, acc=lambda s, k: 0.5,
                k3=lambda s, k: 1.0 if s == 1 else 1.0 - reduction - offsets[k])
    row = _claim(claims(m, CFG100), "KL falls only partly")
    assert row["value"] == pytest.approx(100 * reduction, abs=1e-6)
    assert row["verdict"] == verdict


# ------------------------------------------------------------------------------------------- grid design
def test_identical_schedules_run_once():
    specs = {**BASE_SCHEDULES, "recommended": {**BASE_SCHEDULES["iw_opd"], "version": 1, "epsilon": 1e-8},
             "fitted": {"kind": "linear", "gamma": 0.25}}
    assert dedupe_specs(specs) == {"recommended": "iw_opd"}
    assert dedupe_specs({**specs, "fitted": {"kind": "uniform"}}) == {"recommended": "iw_opd", "fitted": "uniform"}
    shuffled = {"iw_opd_shuffled": {"kind": "shuffled", "base": BASE_SCHEDULES["iw_opd"]},
                "recommended_shuffled": {"kind": "shuffled", "base": specs["recommended"], "seed": 0},
                "uniform_fixed_adv": {"kind": "uniform"}}
    # a control of an alias is an alias of the control; the fixed-advantage arm is not uniform (other loss)
    assert dedupe_specs({**specs, **shuffled}) == {"recommended": "iw_opd", "recommended_shuffled": "iw_opd_shuffled"}
    # shuffling constant weights changes nothing: a shuffled uniform recommendation is uniform
    assert dedupe_specs({"uniform": {"kind": "uniform"}, "recommended": {"kind": "uniform"},
                         "recommended_shuffled": {"kind": "shuffled", "base": {"kind": "uniform"}}}) == {
        "recommended": "uniform", "recommended_shuffled": "uniform"}
    cfg = AblationConfig(out="unused")
    aliases = {"recommended": "iw_opd", "recommended_shuffled": "iw_opd_shuffled"}
    plan = budget_plan(cfg, aliases)
    (sampled,) = plan["rows"]  # the full-KL check is off by default
    assert "recommended" not in sampled["schedules"] and len(sampled["schedules"]) == 12
    assert plan["run_steps"] == 12 * cfg.seeds * cfg.steps
    assert plan["text"][-1].startswith("total") and "budget 35 min" in plan["text"][-1]
    with_kl = budget_plan(AblationConfig(out="unused", losses=("sampled", "full_kl")), aliases)
    assert with_kl["rows"][1]["loss"] == "full_kl" and with_kl["rows"][1]["steps"] == cfg.steps // 2


def test_controls_sit_next_to_their_schedules_and_need_them():
    assert ALL_SCHEDULES[:4] == ("uniform", "uniform_fixed_adv", "prefix30", "prefix30_shuffled")
    for control, base in CONTROLS.items():
        assert ALL_SCHEDULES.index(control) > ALL_SCHEDULES.index(base)
    assert advantage_of("uniform_fixed_adv") == "batch_mean" and advantage_of("prefix30_shuffled") == "token"
    with pytest.raises(ConfigError, match=r"prefix30_shuffled \(needs prefix30\)"):
        AblationConfig(out="unused", schedules=("uniform", "prefix30_shuffled"))
    with pytest.raises(ConfigError, match="no advantage to fix"):
        AblationConfig(out="unused", losses=("sampled", "full_kl"), full_kl_schedules=("uniform", "uniform_fixed_adv"))
    with pytest.raises(ConfigError, match="exclude each other"):
        AblationConfig(out="unused", pilot=True, steps_from="runs/p")
    pilot = AblationConfig(out="unused", pilot_seeds=3).as_pilot()
    assert pilot.schedules == ("uniform",) and pilot.seeds == 3 and pilot.drift_schedules == ()


def test_control_claims_and_verdicts():
    base = [[0.1, 0.5, 0.7], [0.1, 0.4, 0.6], [0.2, 0.5, 0.7]]
    m = _metrics({
        "uniform": base,
        "uniform_fixed_adv": [[0.1, 0.5, 0.71], [0.1, 0.41, 0.6], [0.2, 0.5, 0.69]],  # ≈ uniform
        "prefix30": [[0.1, 0.5, 0.7], [0.1, 0.45, 0.6], [0.2, 0.5, 0.72]],
        "prefix30_shuffled": [[0.1, 0.3, 0.4], [0.1, 0.3, 0.45], [0.2, 0.35, 0.4]],  # clearly below: prefix works
        "linear": base,
        "linear_shuffled": [[0.1, 0.5, 0.72], [0.1, 0.38, 0.6], [0.2, 0.52, 0.7]],  # straddles 0
        "suffix30": [[0.1, 0.2, 0.3], [0.1, 0.25, 0.3], [0.2, 0.2, 0.35]],
        "suffix30_shuffled": [[0.1, 0.4, 0.5], [0.1, 0.45, 0.55], [0.2, 0.4, 0.5]],  # shuffled beats suffix
    })
    cfg = AblationConfig(out="unused", steps=4, seeds=3, target_accuracy=0.5, early_frac=0.5,
                         schedules=("uniform", "uniform_fixed_adv", "prefix30", "prefix30_shuffled", "suffix30",
                                    "suffix30_shuffled", "linear", "linear_shuffled"))
    table = claims(m, cfg).set_index("claim")
    assert table.loc["prefix30 beats its shuffled control", "verdict"] == "holds"
    assert table.loc["linear beats its shuffled control", "verdict"] == "inconclusive"
    assert table.loc["suffix30 beats its shuffled control", "verdict"] == "contradicted"
    row = table.loc["fixed negative advantage ≈ teacher advantage"]
    assert row["verdict"] == "holds" and "±0.05" in row["rule"]
    runs = per_run(m, cfg).set_index(["schedule", "seed"])["aulc"]
    d = np.array([runs["prefix30", k] - runs["prefix30_shuffled", k] for k in range(3)])
    r = table.loc["prefix30 beats its shuffled control"]
    assert r["value"] == pytest.approx(d.mean()) and r["n_seeds"] == 3
    assert r["ci_low"] == pytest.approx(d.mean() - 4.302652729911275 * d.std(ddof=1) / np.sqrt(3))
    assert "iw_opd beats its shuffled control" not in table.index  # neither ran: no claim
    s = summarize(m, cfg)
    assert list(s["schedule"])[:4] == ["uniform", "uniform_fixed_adv", "prefix30", "prefix30_shuffled"]


# ------------------------------------------------------------------------------------------- pilot and world
def _pilot_metrics(acc: Callable[[int, int], float], seeds: int = 4, steps: int = 240) -> pd.DataFrame:
    return _curves("uniform", seeds, acc=acc, k3=lambda s, k: 0.5, steps=steps)


NOISE4 = np.random.default_rng(1).normal(size=(4, 241))


def test_plateau_scan_finds_a_planted_plateau():
    # rises 0.4 -> 0.8 until step 100, flat after, noise sd 0.02 (seed levels differ by 0.05)
    m = _pilot_metrics(lambda s, k: min(0.8, 0.4 + 0.004 * s) + 0.05 * k + 0.02 * NOISE4[k, s])
    scan = plateau_scan(m, window=80)
    hit = scan[scan["ci_high"] < 0.1]
    assert 80 <= int(hit["from_step"].iloc[0]) <= 110  # the knee, give or take the window's reach
    assert scan["to_step"].max() <= 240 and (scan["to_step"] - scan["from_step"] == 80).all()
    assert scan.set_index("from_step").loc[0, "ci_low"] > 0.1  # from step 0 the curve rises clearly
    # a curve still rising at the end has no plateau
    rising = plateau_scan(_pilot_metrics(lambda s, k: 0.2 + 0.002 * s + 0.02 * NOISE4[k, s]), window=80)
    assert (rising["ci_high"] >= 0.1).all()
    assert steps_for_plateau(100, tail_frac=0.2, eval_every=10) == 130  # 125 rounded up to an evaluation
    assert steps_for_plateau(120, tail_frac=0.2, eval_every=10) == 150


def test_plateau_scan_interval_is_calibrated():
    # flat truth (slope 0), seed-level offsets: the 95% interval covers 0 in about 95% of replications
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        noise = rng.normal(size=(4, 81))
        m = _pilot_metrics(lambda s, k, noise=noise: 0.7 + 0.1 * k + 0.03 * noise[k, s], steps=80)
        (row,) = plateau_scan(m, window=80).to_dict(orient="records")  # one window: [0, 80]
        covered += row["ci_low"] <= 0 <= row["ci_high"]
    assert 0.92 <= covered / 400 <= 0.98


def test_pilot_summary_of_an_interrupted_pilot_and_a_borrowed_plateau(tmp_path):
    import json

    from drift.train.pilot import pilot_summary

    pilot, prev = tmp_path / "pilot", tmp_path / "prev"
    (pilot / "parts").mkdir(parents=True)
    (prev / "parts").mkdir(parents=True)
    (pilot / "config.json").write_text(json.dumps({"config": {"workers": 2, "eval_every": 10, "world": "data/oracle"}}))
    for k in range(2):  # two finished runs of 240 steps, 60 s wall and 50 s CPU each; no timing.json
        run = _pilot_metrics(lambda s, k: 0.5 + 0.01 * NOISE4[k, s], seeds=1).assign(seed=k, wall_s=60.0, cpu_s=50.0)
        run.to_parquet(pilot / "parts" / f"sampled-uniform-seed{k}.parquet")
    m = _pilot_metrics(lambda s, k: min(0.8, 0.4 + 0.004 * s) + 0.02 * NOISE4[k, s])
    m.to_parquet(prev / "parts" / "sampled-uniform.parquet")
    p = pilot_summary(pilot, tolerance=0.1, tail_frac=0.2, window=80, plateau_from=prev)
    assert p["run_steps"] == 480 and p["wall_s"] == 60.0 and p["wall_measured_as"] == "finished runs / workers"
    assert p["seconds_per_run_step"] == pytest.approx(60 / 480) and p["cpu_seconds_per_run_step"] == pytest.approx(
        100 / 480)
    assert p["plateau_from"] == str(prev) and p["plateau_seeds"] == 4 and p["reached"]
    assert p["ablation_steps"] == steps_for_plateau(p["plateau_step"], tail_frac=0.2, eval_every=10)
    own = pilot_summary(pilot, tolerance=0.1, tail_frac=0.2, window=80)  # flat from the start: plateau at 0
    assert own["plateau_step"] == 0 and own["plateau_from"] == str(pilot)
    plan = budget_plan(AblationConfig(out="unused", steps=100, seeds=4, schedules=("uniform",)), pilot=p)
    assert plan["estimate_s"] == pytest.approx(400 * 60 / 480)
    assert plan["quiet_estimate_s"] == pytest.approx(400 * (100 / 480) / 2)


def test_world_folder_values_and_missing_files(tmp_path):
    v = world_values_for("data/oracle")
    assert v["prompts"].endswith("train.jsonl") and v["heldout_prompts"].endswith("heldout.jsonl")
    assert v["world"].endswith("world.json") and v["tokenizer"].endswith("tokenizer")
    with pytest.raises(ConfigError, match="missing file"):
        world_values_for(str(tmp_path / "nowhere"))


def test_alias_rows_reuse_the_runs():
    m = _metrics({"uniform": [[0.1, 0.5, 0.7]] * 2, "iw_opd": [[0.1, 0.6, 0.7], [0.1, 0.5, 0.6]]})
    cfg = AblationConfig(out="unused", steps=4, seeds=2, losses=("sampled",),
                         schedules=("uniform", "iw_opd", "recommended"))
    s = summarize(m, cfg, {"recommended": "iw_opd"}).set_index("schedule")
    assert list(s.index) == ["uniform", "iw_opd", "recommended"]
    assert s.loc["recommended", "runs_of"] == "iw_opd"
    assert s.loc["recommended", "aulc_mean"] == s.loc["iw_opd", "aulc_mean"]


def test_full_kl_check_is_shorter():
    cfg = AblationConfig(out="unused", steps=200, seeds=6)
    assert cfg.steps_for("sampled") == 200 and cfg.steps_for("full_kl") == 100
    assert cfg.seeds_for("sampled") == 6 and cfg.seeds_for("full_kl") == 3
    assert cfg.schedules_for("full_kl") == ("uniform", "prefix30", "suffix30", "iw_opd")
    assert AblationConfig(out="unused", steps=2, seeds=1).steps_for("full_kl") == 1
    assert AblationConfig(out="unused", seeds=2).seeds_for("full_kl") == 2


def test_the_ablation_does_not_import_its_report():
    code = "import sys, drift.train.ablation; print(any(m.startswith('drift.report') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ------------------------------------------------------------------------------------------- smoke run
@pytest.mark.integration
@pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")
def test_two_step_smoke_run(tmp_path):
    from scripts.ablation_verdicts import main as verdicts
    from scripts.reproduce_ablation import main

    out = tmp_path / "abl"
    small = ["--seeds", "1", "--workers", "1", "--eval-prompts", "8", "--eval-samples", "1", "--collect-prompts", "4",
             "--recommend-prompts", "16", "--eval-every", "1"]
    pilot = tmp_path / "pilot"
    assert main(["--pilot", "--pilot-seeds", "2", "--steps", "4", "--out", str(pilot), *small]) == 0
    assert (pilot / "pilot.json").exists()
    assert main(["--steps-from", str(pilot), "--out", str(out), *small]) == 0
    results = pd.read_csv(out / "results.csv")
    assert set(results["schedule"]) == set(ALL_SCHEDULES) and set(results["loss"]) == {"sampled"}
    assert int(results["steps"].max()) == pd.read_json(pilot / "pilot.json", typ="series")["ablation_steps"]
    metrics = pd.read_parquet(out / "metrics.parquet")
    ran = set(metrics["schedule"])
    aliased = set(results[results["runs_of"] != results["schedule"]]["schedule"])
    assert not ran & aliased  # an alias is never trained
    assert {"uniform_fixed_adv", "prefix30_shuffled"} <= ran
    assert (metrics.groupby("schedule")["cpu_s"].first() > 0).all()
    text = (out / "results.md").read_text()
    assert "# Schedule ablation on the oracle world" in text and "Steps from a measured plateau" in text
    assert "↳ prefix30_shuffled (control)" in text and "prefix30 beats its shuffled control" in text
    assert "figures/controls_sampled.png" in text and "## Budget" in text
    table = pd.read_csv(out / "claims.csv")
    assert {"world", "mde", "rule", "verdict"} <= set(table.columns) and set(table["world"]) == {"oracle"}
    for name in ("learning_curves_sampled.png", "controls_sampled.png", "kl_over_training_sampled.png",
                 "kl_by_position.png", "weight_shape.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    assert verdicts([str(out), str(pilot), "--out", str(tmp_path / "README.md")]) == 0
    readme = (tmp_path / "README.md").read_text()
    assert "| loss | claim | oracle |" in readme and "prefix30 beats its shuffled control" in readme
