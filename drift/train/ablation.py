"""The paper's schedule ablation at small scale, on the oracle world: same student, same seeds, same steps.

Schedules: uniform (plain OPD), prefix-30 mask, suffix-30 mask, IW-OPD (gamma 0.5), linear decay (gamma 0.5), the
schedule ``drift schedule recommend`` derives from the *untrained* student's data, and the fitted position curve
(``recommend --signal position``, for comparison when the recommendation is IW-OPD). Each runs for every seed with
the sampled-token loss, and again with the full-vocabulary reverse-KL loss when ``losses`` includes ``full_kl``.

Reported per (loss, schedule), over seeds (mean ± sd): final held-out accuracy, steps to reach a target accuracy,
area under the learning curve (AULC, accuracy averaged over training, in [0, 1]), early accuracy, and the KL plateau.
Paper claims are checked with *paired* seed differences against uniform (same seeds, so the same prompts and
initial student) and a t interval (95%); with one seed there is no interval and no verdict.

Drift over training comes from the collector run at three steps of one seed of uniform and IW-OPD: KL by relative
position at the first and last step, the cumulative gap, and the IW weight shape against 1 + gamma (1 - t/T).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sstats

from drift.config import Checks, opt, save_config
from drift.errors import DatasetExistsError

__all__ = ["BASE_SCHEDULES", "AblationConfig", "AblationResult", "claims", "run_ablation", "summarize"]

log = logging.getLogger(__name__)

BASE_SCHEDULES: dict[str, dict[str, Any]] = {
    "uniform": {"kind": "uniform"},
    "prefix30": {"kind": "prefix_mask", "frac": 0.3},
    "suffix30": {"kind": "suffix_mask", "frac": 0.3},
    "iw_opd": {"kind": "iw_opd", "gamma": 0.5, "use_abs": True, "denominator": "code"},
    "linear": {"kind": "linear", "gamma": 0.5},
}
DERIVED = ("recommended", "fitted")
ALL_SCHEDULES = (*BASE_SCHEDULES, *DERIVED)


@dataclass(frozen=True)
class AblationConfig:
    """``python -m scripts.reproduce_ablation``: the schedule ablation on the oracle world."""

    out: str = opt("runs/ablation", "output folder (results.md, results.csv, metrics.parquet, figures/, ...)")
    steps: int = opt(80, "optimizer updates per run")
    seeds: int = opt(3, "seeds per schedule (0..N-1; paired across schedules)")
    lr: float = opt(1e-4, "AdamW learning rate (same for every run)")
    prompts_per_step: int = opt(8, "training prompts per step")
    samples_per_prompt: int = opt(4, "rollouts per prompt per step")
    eval_every: int = opt(10, "held-out evaluation interval (steps)")
    eval_prompts: int = opt(64, "held-out prompts per evaluation")
    eval_samples: int = opt(2, "sampled rollouts per evaluation prompt")
    target_accuracy: float = opt(0.6, "held-out accuracy whose first crossing gives 'steps to target'")
    losses: tuple[str, ...] = opt(("sampled", "full_kl"), "losses: sampled (the paper's) and/or full_kl")
    schedules: tuple[str, ...] = opt(ALL_SCHEDULES, "schedules to run: " + ", ".join(ALL_SCHEDULES))
    drift_schedules: tuple[str, ...] = opt(("uniform", "iw_opd"), "schedules whose first seed also collects drift "
                                           "data at the first, middle and last step")
    collect_prompts: int = opt(64, "held-out prompts per drift collection")
    collect_samples: int = opt(2, "rollouts per prompt per drift collection")
    recommend_prompts: int = opt(128, "training prompts of the untrained-student dataset behind 'recommended'")
    gamma: float = opt(0.5, "gamma of the IW-OPD weight-shape reference 1 + gamma (1 - t/T)")
    early_frac: float = opt(0.25, "'early' = the evaluation step nearest this fraction of training")
    tolerance: float = opt(0.05, "'prefix-30 ≈ all' holds when the AULC difference's interval stays above -this")
    workers: int = opt(2, "runs in parallel (one CPU thread each)")
    analyze_only: bool = opt(False, "re-analyse an existing OUT (metrics.parquet, schedules/, runs/) without training")
    if_exists: str = opt("fail", "when OUT exists: fail or overwrite", choices=("fail", "overwrite"))

    def __post_init__(self) -> None:
        c = Checks("AblationConfig")
        c.check(bool(self.out), "out is required")
        for name in ("steps", "seeds", "prompts_per_step", "samples_per_prompt", "eval_every", "eval_prompts",
                     "eval_samples", "collect_prompts", "collect_samples", "recommend_prompts", "workers"):
            c.positive(name, getattr(self, name))
        c.in_range("target_accuracy", self.target_accuracy, 0.0, 1.0)
        c.in_range("early_frac", self.early_frac, 0.0, 1.0)
        c.check(set(self.losses) <= {"sampled", "full_kl"} and bool(self.losses),
                f"losses must be a non-empty subset of sampled, full_kl; got {list(self.losses)}")
        bad = [s for s in self.schedules if s not in ALL_SCHEDULES]
        c.check(not bad, f"unknown schedules {bad}; choose from {list(ALL_SCHEDULES)}")
        c.check("uniform" in self.schedules, "schedules must include uniform (the baseline of every comparison)")
        c.raise_if_any()


@dataclass(frozen=True)
class AblationResult:
    """Everything the ablation wrote, in memory."""

    metrics: pd.DataFrame
    summary: pd.DataFrame
    claims: pd.DataFrame
    profiles: pd.DataFrame
    out: Path
    wall_s: float


# ------------------------------------------------------------------------------------------- schedules
def prepare_schedules(cfg: AblationConfig, out: Path) -> dict[str, dict[str, Any]]:
    """The base specs plus 'recommended' and 'fitted', derived from a dataset of the untrained student."""
    from drift.collect.config import CollectConfig, ScoringOptions
    from drift.collect.pipeline import collect_from_config
    from drift.presets import preset_values
    from drift.schedules.recommend import RecommendConfig, recommend_from_config

    specs = {k: v for k, v in BASE_SCHEDULES.items() if k in cfg.schedules}
    folder = out / "schedules"
    folder.mkdir(parents=True, exist_ok=True)
    if any(s in cfg.schedules for s in DERIVED):
        toy = preset_values("toy")
        data = out / "untrained"
        collect_from_config(CollectConfig(
            out=str(data), student=toy["student"], teacher=toy["teacher"],
            prompts=toy["prompts"].replace("heldout.jsonl", "train.jsonl"), world=toy["world"],
            samples_per_prompt=4, max_prompts=cfg.recommend_prompts, max_new_tokens=toy["max_new_tokens"], seed=0,
            if_exists="overwrite", scoring=ScoringOptions(progress=False, num_threads=1)))
        for name, signal in (("recommended", "auto"), ("fitted", "position")):
            if name in cfg.schedules:
                rec, _, _ = recommend_from_config(RecommendConfig(
                    dataset=str(data), out=str(folder / f"{name}.json"), signal=signal, force=True))
                specs[name] = rec.schedule.to_dict()
                (folder / f"{name}.rationale.txt").write_text(rec.report() + "\n")
    for name, spec in specs.items():
        (folder / f"{name}.json").write_text(json.dumps(spec, indent=2) + "\n")
    return specs


# ------------------------------------------------------------------------------------------- training grid
_SETUP: dict[str, Any] = {}


def _train_config(cfg: AblationConfig, loss: str, collect: bool, out: str) -> Any:
    from drift.collect.config import ScoringOptions
    from drift.train.config import TrainConfig

    steps = cfg.steps
    return TrainConfig(
        preset="toy", out=out, steps=steps, lr=cfg.lr, loss=loss, prompts_per_step=cfg.prompts_per_step,
        samples_per_prompt=cfg.samples_per_prompt, eval_every=cfg.eval_every, eval_prompts=cfg.eval_prompts,
        eval_samples=cfg.eval_samples,
        collect_at=tuple(str(s) for s in sorted({0, steps // 2, steps})) if collect else (),
        collect_prompts=cfg.collect_prompts, collect_samples=cfg.collect_samples, save_every=0,
        if_exists="overwrite", scoring=ScoringOptions(progress=False, num_threads=1))


def _job(job: dict[str, Any]) -> pd.DataFrame:
    """One (loss, schedule, seed) run, in a worker process (models loaded once per process)."""
    import torch

    from drift.train.loop import load_setup, run_training

    torch.set_num_threads(1)
    cfg: AblationConfig = job["cfg"]
    tcfg = _train_config(cfg, job["loss"], job["collect"], job["out"])
    if "setup" not in _SETUP:
        _SETUP["setup"] = load_setup(tcfg)
    t0 = time.perf_counter()
    df = run_training(job["spec"], job["seed"], tcfg, setup=_SETUP["setup"])
    df = df.assign(loss=job["loss"], schedule=job["schedule"], seed=job["seed"], wall_s=time.perf_counter() - t0)
    return df


def run_grid(cfg: AblationConfig, specs: dict[str, dict[str, Any]], out: Path) -> pd.DataFrame:
    """Run every (loss, schedule, seed) in ``cfg.workers`` processes; return all metrics rows."""
    from tqdm.auto import tqdm

    jobs = []
    for loss in cfg.losses:
        for name in cfg.schedules:
            for seed in range(cfg.seeds):
                collect = loss == cfg.losses[0] and seed == 0 and name in cfg.drift_schedules
                jobs.append({"cfg": cfg, "loss": loss, "schedule": name, "seed": seed, "spec": specs[name],
                             "collect": collect, "out": str(out / "runs" / f"{loss}-{name}-seed{seed}")
                             if collect else ""})
    frames = []
    bar = tqdm(total=len(jobs), desc="ablation", unit="run")
    if cfg.workers == 1:
        for job in jobs:
            frames.append(_job(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=get_context("spawn")) as pool:
            for df in pool.map(_job, jobs):
                frames.append(df)
                bar.update()
    bar.close()
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------- analysis
def _eval_rows(g: pd.DataFrame) -> pd.DataFrame:
    return g.dropna(subset=["eval/accuracy"]).sort_values("step")


def _run_stats(g: pd.DataFrame, cfg: AblationConfig) -> dict[str, float]:
    ev = _eval_rows(g)
    steps, acc = ev["step"].to_numpy(float), ev["eval/accuracy"].to_numpy(float)
    reached = steps[acc >= cfg.target_accuracy]
    early_step = steps[np.argmin(np.abs(steps - cfg.early_frac * cfg.steps))] if len(steps) else math.nan
    train = g.dropna(subset=["kl/k3_mean"]).sort_values("step")
    tail = train[train["step"] > cfg.steps * 0.8] if len(train) else train
    first_kl = float(train["kl/k3_mean"].iloc[0]) if len(train) else math.nan
    plateau = float(tail["kl/k3_mean"].mean()) if len(tail) else math.nan
    return {
        "final_accuracy": float(acc[-1]) if len(acc) else math.nan,
        "final_greedy_accuracy": float(ev["eval/greedy_accuracy"].iloc[-1]) if "eval/greedy_accuracy" in ev
        and len(ev) else math.nan,
        "steps_to_target": float(reached[0]) if len(reached) else math.nan,
        "aulc": float(np.trapezoid(acc, steps) / (steps[-1] - steps[0])) if len(steps) > 1 else math.nan,
        "early_accuracy": float(acc[steps == early_step][0]) if len(steps) else math.nan,
        "final_eval_kl": float(ev["eval/kl_mean"].iloc[-1]) if "eval/kl_mean" in ev and len(ev) else math.nan,
        "kl_first": first_kl,
        "kl_plateau": plateau,
        "kl_reduction_pct": 100.0 * (1.0 - plateau / first_kl) if first_kl else math.nan,
    }


def per_run(metrics: pd.DataFrame, cfg: AblationConfig) -> pd.DataFrame:
    """One row per (loss, schedule, seed) with the run statistics of :func:`_run_stats`."""
    rows = [{"loss": loss, "schedule": name, "seed": seed, **_run_stats(g, cfg)}
            for (loss, name, seed), g in metrics.groupby(["loss", "schedule", "seed"], sort=False)]
    return pd.DataFrame(rows)


def summarize(metrics: pd.DataFrame, cfg: AblationConfig) -> pd.DataFrame:
    """One row per (loss, schedule): mean and sd over seeds of each run statistic, and seeds reaching target."""
    runs = per_run(metrics, cfg)
    out = []
    for (loss, name), g in runs.groupby(["loss", "schedule"], sort=False):
        row: dict[str, Any] = {"loss": loss, "schedule": name, "seeds": len(g)}
        for col in ("final_accuracy", "final_greedy_accuracy", "aulc", "early_accuracy", "steps_to_target",
                    "final_eval_kl", "kl_plateau", "kl_reduction_pct"):
            vals = g[col].dropna()
            row[f"{col}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{col}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        row["reached_target"] = f"{int(g['steps_to_target'].notna().sum())}/{len(g)}"
        out.append(row)
    return pd.DataFrame(out)


def _mean_ci(values: pd.Series) -> dict[str, float]:
    """Mean with a 95% t interval (NaN interval with fewer than two values)."""
    v = values.dropna()
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    if n < 2:
        return {"diff": mean, "ci_low": math.nan, "ci_high": math.nan, "n": n}
    half = float(sstats.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return {"diff": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def _paired(runs: pd.DataFrame, loss: str, a: str, b: str, col: str) -> dict[str, float]:
    """Mean paired difference a - b over seeds with a 95% t interval (NaN with one seed)."""
    x = runs[(runs["loss"] == loss) & (runs["schedule"] == a)].set_index("seed")[col]
    y = runs[(runs["loss"] == loss) & (runs["schedule"] == b)].set_index("seed")[col]
    return _mean_ci(x - y)


def claims(metrics: pd.DataFrame, cfg: AblationConfig, profiles: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's claims, each with the measured number, its 95% interval and a verdict."""
    runs = per_run(metrics, cfg)
    rows = []

    def add(claim: str, measure: str, r: dict[str, float], verdict: str, loss: str) -> None:
        rows.append({"loss": loss, "claim": claim, "measure": measure, "value": r["diff"], "ci_low": r["ci_low"],
                     "ci_high": r["ci_high"], "n_seeds": r["n"], "verdict": verdict})

    def test(r: dict[str, float], holds: Any, contradicted: Any) -> str:
        """holds / contradicted when the interval says so, inconclusive when it straddles the boundary."""
        if math.isnan(r["ci_low"]):
            return "n/a (needs >= 2 seeds)"
        return "holds" if holds(r) else "contradicted" if contradicted(r) else "inconclusive"

    tol = cfg.tolerance

    for loss in cfg.losses:
        names = set(runs[runs["loss"] == loss]["schedule"])
        if "prefix30" in names:
            r = _paired(runs, loss, "prefix30", "uniform", "aulc")
            add("prefix-30 ≈ all tokens", f"AULC(prefix30) − AULC(uniform); holds if the interval lies above −{tol}, "
                f"contradicted if below", r,
                test(r, lambda r: r["ci_low"] > -tol, lambda r: r["ci_high"] < -tol), loss)
        if "suffix30" in names:
            r = _paired(runs, loss, "suffix30", "uniform", "aulc")
            add("suffix-30 clearly lower", "AULC(suffix30) − AULC(uniform); holds if the interval lies below 0", r,
                test(r, lambda r: r["ci_high"] < 0, lambda r: r["ci_low"] > 0), loss)
        if "iw_opd" in names:
            r = _paired(runs, loss, "iw_opd", "uniform", "early_accuracy")
            add("IW-OPD faster early", f"accuracy(iw_opd) − accuracy(uniform) at ~{cfg.early_frac:.0%} of training; "
                "holds if the interval lies above 0", r,
                test(r, lambda r: r["ci_low"] > 0, lambda r: r["ci_high"] < 0), loss)
            r = _paired(runs, loss, "iw_opd", "uniform", "aulc")
            add("IW-OPD learns faster overall", "AULC(iw_opd) − AULC(uniform); holds if the interval lies above 0", r,
                test(r, lambda r: r["ci_low"] > 0, lambda r: r["ci_high"] < 0), loss)
            r = _paired(runs, loss, "iw_opd", "uniform", "final_accuracy")
            add("IW-OPD ends at least as well", f"final accuracy(iw_opd) − uniform; holds if the interval lies above "
                f"−{tol}", r, test(r, lambda r: r["ci_low"] > -tol, lambda r: r["ci_high"] < -tol), loss)
        uni = runs[(runs["loss"] == loss) & (runs["schedule"] == "uniform")]
        r = _mean_ci(uni["kl_plateau"])
        add("the gap persists (KL plateau > 0)", "uniform: mean k3 over the last 20% of steps; holds if the interval "
            "lies above 0", r, test(r, lambda r: r["ci_low"] > 0, lambda r: r["ci_high"] <= 0), loss)
        r = _mean_ci(uni["kl_reduction_pct"])
        rows.append({"loss": loss, "claim": "KL falls only partly (paper: ~20-40%)",
                     "measure": "uniform: % reduction of token-mean k3 from step 1 to the plateau", "value": r["diff"],
                     "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n_seeds": r["n"], "verdict": "reported"})
    if profiles is not None and len(profiles):
        shape = profiles[(profiles["what"] == "iw_weight")]
        if len(shape):
            dist = (shape["mean"] - (1 + cfg.gamma * (1 - shape["x"]))).abs()
            l1 = dist.groupby(shape["step"]).mean()
            steps = list(l1.index)
            mono = all(l1.iloc[i + 1] <= l1.iloc[i] for i in range(len(l1) - 1))
            rows.append({"loss": cfg.losses[0], "claim": "IW weight shape drifts toward 1 + γ(1 − t/T)",
                         "measure": "mean |w̄(x) − (1 + γ(1 − x))| over 20 bins at steps "
                                    + ", ".join(str(int(s)) for s in steps) + ": "
                                    + ", ".join(f"{v:.4f}" for v in l1),
                         "value": float(l1.iloc[-1] - l1.iloc[0]), "ci_low": math.nan, "ci_high": math.nan,
                         "n_seeds": 1, "verdict": "holds (one seed, no interval)" if mono and l1.iloc[-1] < l1.iloc[0]
                         else "not seen (one seed, no interval)"})
    return pd.DataFrame(rows)


def position_profiles(out: Path, cfg: AblationConfig) -> pd.DataFrame:
    """Per relative-position bin, from the drift datasets collected during training: KL (uniform run), the
    cumulative-gap fraction and the IW weight 1 + gamma (1 - C_t/C_T) (IW-OPD run), and C_t by absolute bins."""
    from drift.stats import BinSpec, bin_metric

    rows = []
    for run in sorted((out / "runs").glob(f"{cfg.losses[0]}-*-seed0")):
        schedule = run.name.split("-", 1)[1].rsplit("-seed", 1)[0]
        for ds in sorted((run / "drift").glob("step-*")):
            step = int(ds.name.split("-")[1])
            rel = bin_metric(str(ds), ["kl_reverse", "cum_abs_gap_frac"], BinSpec(by="rel", bins=20, margins=False),
                             n_boot=200, seed=0)
            for metric, what in (("kl_reverse", "kl_reverse"), ("cum_abs_gap_frac", "cum_gap_frac")):
                t = rel[rel["metric"] == metric]
                rows.append(pd.DataFrame({"schedule": schedule, "step": step, "what": what,
                                          "x": (t["bin_left"] + t["bin_right"]) / 2, "mean": t["mean"],
                                          "ci_low": t["ci_low"], "ci_high": t["ci_high"]}))
                if metric == "cum_abs_gap_frac":  # IW weight (code form) is 1 + gamma (1 - C_t / C_T)
                    rows.append(pd.DataFrame({"schedule": schedule, "step": step, "what": "iw_weight",
                                              "x": (t["bin_left"] + t["bin_right"]) / 2,
                                              "mean": 1 + cfg.gamma * (1 - t["mean"]),
                                              "ci_low": 1 + cfg.gamma * (1 - t["ci_high"]),
                                              "ci_high": 1 + cfg.gamma * (1 - t["ci_low"])}))
            ab = bin_metric(str(ds), ["cum_abs_gap"], BinSpec(by="abs", width=4, margins=False), n_boot=200, seed=0)
            rows.append(pd.DataFrame({"schedule": schedule, "step": step, "what": "cum_abs_gap_abs",
                                      "x": (ab["bin_left"] + ab["bin_right"]) / 2, "mean": ab["mean"],
                                      "ci_low": ab["ci_low"], "ci_high": ab["ci_high"]}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["schedule", "step", "what", "x", "mean", "ci_low", "ci_high"])


# ------------------------------------------------------------------------------------------- driver
def run_ablation(cfg: AblationConfig) -> AblationResult:
    """Prepare schedules, run the grid, analyse, and write results.md / results.csv / figures to ``cfg.out``."""
    out = Path(cfg.out)
    if cfg.analyze_only:
        return _analyze(cfg, out, time.perf_counter())
    if out.exists() and any(out.iterdir()):
        if cfg.if_exists != "overwrite":
            raise DatasetExistsError(f"{out} exists and is not empty; pass --if-exists overwrite or another --out")
        if not (out / "config.json").exists():
            raise DatasetExistsError(f"{out} holds no ablation config.json; refusing to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    save_config(cfg, out / "config.json")
    specs = prepare_schedules(cfg, out)
    metrics = run_grid(cfg, specs, out)
    metrics.to_parquet(out / "metrics.parquet", index=False)
    return _analyze(cfg, out, t0)


def _analyze(cfg: AblationConfig, out: Path, t0: float) -> AblationResult:
    """Summary, claims, drift profiles and the written results, from the files of an ablation folder."""
    from drift.train.report import write_results

    metrics_path = out / "metrics.parquet"
    if not metrics_path.exists():
        raise DatasetExistsError(f"{out} has no metrics.parquet to analyse; run the ablation first")
    metrics = pd.read_parquet(metrics_path)
    specs = {p.stem: json.loads(p.read_text()) for p in sorted((out / "schedules").glob("*.json"))}
    profiles = position_profiles(out, cfg)
    summary = summarize(metrics, cfg)
    table = claims(metrics, cfg, profiles)
    wall = float(metrics.groupby(["loss", "schedule", "seed"])["wall_s"].first().sum() / cfg.workers) \
        if cfg.analyze_only and "wall_s" in metrics else time.perf_counter() - t0
    result = AblationResult(metrics, summary, table, profiles, out, wall)
    write_results(result, cfg, specs)
    return result


def schedule_order(names: Sequence[str]) -> list[str]:
    """Schedules in the canonical table order."""
    return [s for s in ALL_SCHEDULES if s in set(names)]
