"""The paper's schedule ablation at small scale, on the oracle world: same student, same seeds, same steps.

Schedules: uniform (plain OPD), prefix-30 mask, suffix-30 mask, IW-OPD (gamma 0.5), linear decay (gamma 0.5), the
schedule ``drift schedule recommend`` derives from the *untrained* student's data, and the fitted position curve
(``recommend --signal position``). A schedule whose spec equals one listed before it (on the oracle world the
recommendation is IW-OPD) is not trained again: it is an *alias* whose runs are the earlier schedule's, and the
results say so. The sampled-token loss (the paper's) runs every schedule for ``seeds`` seeds and ``steps`` steps; the
full-vocabulary reverse-KL loss is a shorter check (``full_kl_seeds`` x ``full_kl_steps``, ``full_kl_schedules``).

Reported per (loss, schedule), over seeds (mean ± sd): final held-out accuracy (mean of the evaluations in the last
``tail_frac`` of training), steps to a target accuracy, area under the learning curve (AULC, in [0, 1]), early
accuracy, the KL plateau and its tail slope. Claims are checked with *paired* seed differences against uniform (same
seeds, so the same prompts and initial student) and a 95% t interval; each claim also carries its minimum detectable
effect at 80% power (two-sided 5%, paired t): ``MDE = (t_{0.975,n-1} + t_{0.80,n-1}) sd / sqrt(n)``. With one seed
there is no interval and no verdict. Verdict rules (:func:`verdict_above`, :func:`verdict_below`,
:func:`verdict_within`) are pure functions of the interval, printed beside each claim.

Drift over training comes from the collector run at three steps of one seed of uniform and IW-OPD: KL by relative
position at the first and last step, the cumulative gap, and the IW weight shape against 1 + gamma (1 - t/T).

This module computes results only; :mod:`drift.report.ablation` writes them (``results.md``, CSVs, figures), and
``scripts/reproduce_ablation.py`` calls both.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sstats

from drift.config import Checks, opt, save_config
from drift.errors import DatasetExistsError

__all__ = [
    "ALL_SCHEDULES",
    "BASE_SCHEDULES",
    "SECONDS_PER_RUN_STEP",
    "AblationConfig",
    "AblationResult",
    "budget_plan",
    "claims",
    "dedupe_specs",
    "mde",
    "mean_ci",
    "per_run",
    "run_ablation",
    "schedule_order",
    "summarize",
    "verdict_above",
    "verdict_below",
    "verdict_within",
]

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
LOSSES = ("sampled", "full_kl")

#: Wall seconds per run-step with 2 workers, measured on this 2-core machine: 7 schedules x 3 seeds x 2 losses x
#: 80 steps (3360 run-steps, evaluations and the untrained-student collection included) took 14.7 min.
SECONDS_PER_RUN_STEP = 14.7 * 60 / 3360
_MEASURED_WORKERS = 2


@dataclass(frozen=True)
class AblationConfig:
    """``python -m scripts.reproduce_ablation``: the schedule ablation on the oracle world."""

    out: str = opt("runs/ablation", "output folder (results.md, results.csv, metrics.parquet, figures/, ...)")
    steps: int = opt(200, "optimizer updates per run of the sampled loss (uniform plateaus from ~160 at lr 1e-4)")
    seeds: int = opt(6, "seeds per schedule of the sampled loss (0..N-1; paired across schedules)")
    full_kl_steps: int = opt(0, "optimizer updates per full-KL run (0 = half of --steps)")
    full_kl_seeds: int = opt(3, "seeds per full-KL schedule (at most --seeds)")
    full_kl_schedules: tuple[str, ...] = opt(("uniform", "prefix30", "suffix30", "iw_opd"),
                                             "schedules of the shorter full-KL check (those also in --schedules)")
    lr: float = opt(1e-4, "AdamW learning rate (same for every run)")
    prompts_per_step: int = opt(8, "training prompts per step")
    samples_per_prompt: int = opt(4, "rollouts per prompt per step")
    eval_every: int = opt(10, "held-out evaluation interval (steps)")
    eval_prompts: int = opt(64, "held-out prompts per evaluation")
    eval_samples: int = opt(2, "sampled rollouts per evaluation prompt")
    target_accuracy: float = opt(0.6, "held-out accuracy whose first crossing gives 'steps to target'")
    losses: tuple[str, ...] = opt(LOSSES, "losses: sampled (the paper's) and/or full_kl")
    schedules: tuple[str, ...] = opt(ALL_SCHEDULES, "schedules to run: " + ", ".join(ALL_SCHEDULES))
    drift_schedules: tuple[str, ...] = opt(("uniform", "iw_opd"), "schedules whose first seed also collects drift "
                                           "data at the first, middle and last step")
    collect_prompts: int = opt(64, "held-out prompts per drift collection")
    collect_samples: int = opt(2, "rollouts per prompt per drift collection")
    recommend_prompts: int = opt(128, "training prompts of the untrained-student dataset behind 'recommended'")
    gamma: float = opt(0.5, "gamma of the IW-OPD weight-shape reference 1 + gamma (1 - t/T)")
    early_frac: float = opt(0.25, "'early' = the evaluation step nearest this fraction of training")
    tail_frac: float = opt(0.2, "the tail (plateau) = the last this fraction of training steps")
    tolerance: float = opt(0.05, "non-inferiority margin: 'prefix-30 ≈ all' and 'IW-OPD ends at least as well' hold "
                                 "when the difference's interval stays above -this")
    plateau_tolerance: float = opt(0.05, "uniform has plateaued when its tail accuracy slope's interval lies in "
                                         "±this (accuracy per 100 steps)")
    kl_slope_tolerance: float = opt(0.1, "the KL gap is flat when its tail slope's interval lies in ±this "
                                         "(fraction of the plateau level per 100 steps)")
    kl_reduction_range: tuple[float, ...] = opt((20.0, 40.0), "the paper's % reduction of token-mean KL (§3.3)")
    workers: int = opt(2, "runs in parallel (one CPU thread each)")
    analyze_only: bool = opt(False, "re-analyse an existing OUT (metrics.parquet, schedules/, runs/) without training")
    if_exists: str = opt("fail", "when OUT exists: fail or overwrite", choices=("fail", "overwrite"))

    def __post_init__(self) -> None:
        c = Checks("AblationConfig")
        c.check(bool(self.out), "out is required")
        for name in ("steps", "seeds", "full_kl_seeds", "prompts_per_step", "samples_per_prompt", "eval_every",
                     "eval_prompts", "eval_samples", "collect_prompts", "collect_samples", "recommend_prompts",
                     "workers"):
            c.positive(name, getattr(self, name))
        c.check(self.full_kl_steps >= 0, f"full_kl_steps must be >= 0 (0 = steps // 2), got {self.full_kl_steps}")
        c.in_range("target_accuracy", self.target_accuracy, 0.0, 1.0)
        c.in_range("early_frac", self.early_frac, 0.0, 1.0)
        c.check(0.0 < self.tail_frac < 1.0, f"tail_frac must be in (0, 1), got {self.tail_frac}")
        for name in ("tolerance", "plateau_tolerance", "kl_slope_tolerance"):
            c.check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        lo_hi = tuple(self.kl_reduction_range)
        c.check(len(lo_hi) == 2 and lo_hi[0] < lo_hi[1],
                f"kl_reduction_range must be two increasing numbers, got {list(lo_hi)}")
        c.check(set(self.losses) <= set(LOSSES) and bool(self.losses),
                f"losses must be a non-empty subset of sampled, full_kl; got {list(self.losses)}")
        bad = [s for s in (*self.schedules, *self.full_kl_schedules) if s not in ALL_SCHEDULES]
        c.check(not bad, f"unknown schedules {bad}; choose from {list(ALL_SCHEDULES)}")
        c.check("uniform" in self.schedules, "schedules must include uniform (the baseline of every comparison)")
        c.check("full_kl" not in self.losses or "uniform" in self.full_kl_schedules,
                "full_kl_schedules must include uniform (the baseline of every comparison)")
        c.raise_if_any()

    def steps_for(self, loss: str) -> int:
        """Optimizer updates per run of ``loss``."""
        if loss == "full_kl":
            return self.full_kl_steps or max(1, self.steps // 2)
        return self.steps

    def seeds_for(self, loss: str) -> int:
        """Seeds per schedule of ``loss`` (seeds 0..n-1, so they pair with the sampled loss's)."""
        return min(self.seeds, self.full_kl_seeds) if loss == "full_kl" else self.seeds

    def schedules_for(self, loss: str) -> tuple[str, ...]:
        """The schedules ``loss`` runs, in canonical order (before removing aliases)."""
        wanted = set(self.schedules) & (set(self.full_kl_schedules) if loss == "full_kl" else set(ALL_SCHEDULES))
        return tuple(schedule_order(wanted))


@dataclass(frozen=True)
class AblationResult:
    """Everything the ablation computed, in memory; :func:`drift.report.ablation.write_ablation_report` writes it.

    Attributes:
        metrics: every logged step of every run (columns ``loss``, ``schedule``, ``seed``, ``step``, metric keys).
        summary: one row per (loss, schedule) of :func:`summarize` (aliases included, marked in ``runs_of``).
        claims: one row per claim of :func:`claims`.
        profiles: drift-by-position profiles of :func:`position_profiles`.
        specs: the schedule specs by name (aliases included). aliases: alias name -> the schedule whose runs it reuses.
        budget: the planned grid and its time estimate (:func:`budget_plan`), plus the measured wall time.
        cfg: the configuration. out: the ablation folder. wall_s: wall seconds of the whole run.
    """

    metrics: pd.DataFrame
    summary: pd.DataFrame
    claims: pd.DataFrame
    profiles: pd.DataFrame
    specs: dict[str, dict[str, Any]]
    aliases: dict[str, str]
    budget: dict[str, Any]
    cfg: AblationConfig
    out: Path
    wall_s: float
    notes: list[str] = field(default_factory=list)


def schedule_order(names: Any) -> list[str]:
    """Schedules in the canonical table order."""
    names = set(names)
    return [s for s in ALL_SCHEDULES if s in names]


# ------------------------------------------------------------------------------------------- schedules
def _normalized(spec: dict[str, Any]) -> str:
    """A spec's canonical JSON (every parameter explicit, defaults filled in, no version) for equality tests."""
    from drift.schedules.kinds import from_dict

    d = from_dict({k: v for k, v in spec.items() if k != "source"}).to_dict()
    d.pop("version", None)
    return json.dumps(d, sort_keys=True)


def dedupe_specs(specs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Aliases among ``specs``: a name whose spec equals an earlier one's (canonical order) maps to that name.

    Example:
        >>> dedupe_specs({"uniform": {"kind": "uniform"}, "iw_opd": BASE_SCHEDULES["iw_opd"],
        ...               "recommended": {**BASE_SCHEDULES["iw_opd"], "epsilon": 1e-8}})
        {'recommended': 'iw_opd'}
    """
    seen: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for name in schedule_order(specs):
        key = _normalized(specs[name])
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
    return aliases


def prepare_schedules(cfg: AblationConfig, out: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The base specs plus 'recommended' and 'fitted' (derived from a dataset of the untrained student), and the
    aliases among them (:func:`dedupe_specs`, also written to ``schedules/aliases.json``)."""
    from drift.collect.config import CollectConfig, ScoringOptions
    from drift.collect.pipeline import collect_from_config
    from drift.presets import preset_values
    from drift.schedules.recommend import RecommendConfig, recommend_from_config

    wanted = set(cfg.schedules) | (set(cfg.full_kl_schedules) if "full_kl" in cfg.losses else set())
    specs = {k: v for k, v in BASE_SCHEDULES.items() if k in wanted}
    folder = out / "schedules"
    folder.mkdir(parents=True, exist_ok=True)
    if any(s in wanted for s in DERIVED):
        toy = preset_values("toy")
        data = out / "untrained"
        collect_from_config(CollectConfig(
            out=str(data), student=toy["student"], teacher=toy["teacher"],
            prompts=toy["prompts"].replace("heldout.jsonl", "train.jsonl"), world=toy["world"],
            samples_per_prompt=4, max_prompts=cfg.recommend_prompts, max_new_tokens=toy["max_new_tokens"], seed=0,
            if_exists="overwrite", scoring=ScoringOptions(progress=False, num_threads=1)))
        for name, signal in (("recommended", "auto"), ("fitted", "position")):
            if name in wanted:
                rec, _, _ = recommend_from_config(RecommendConfig(
                    dataset=str(data), out=str(folder / f"{name}.json"), signal=signal, force=True))
                specs[name] = rec.schedule.to_dict()
                (folder / f"{name}.rationale.txt").write_text(rec.report() + "\n")
    for name, spec in specs.items():
        (folder / f"{name}.json").write_text(json.dumps(spec, indent=2) + "\n")
    aliases = dedupe_specs(specs)
    (folder / "aliases.json").write_text(json.dumps(aliases, indent=2) + "\n")
    return specs, aliases


# ------------------------------------------------------------------------------------------- budget
def budget_plan(cfg: AblationConfig, aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """The grid to run (aliases excluded) and its wall-time estimate from :data:`SECONDS_PER_RUN_STEP`.

    Returns a dict with ``rows`` (loss, schedules, seeds, steps, run_steps), ``run_steps``, ``estimate_s`` and
    ``text`` (the arithmetic, one line per loss and a total).
    """
    aliases = aliases or {}
    per_step = SECONDS_PER_RUN_STEP * _MEASURED_WORKERS / cfg.workers
    rows = []
    for loss in cfg.losses:
        names = [s for s in cfg.schedules_for(loss) if s not in aliases]
        seeds, steps = cfg.seeds_for(loss), cfg.steps_for(loss)
        rows.append({"loss": loss, "schedules": names, "seeds": seeds, "steps": steps,
                     "run_steps": len(names) * seeds * steps})
    total = sum(r["run_steps"] for r in rows)
    lines = [f"{r['loss']}: {len(r['schedules'])} schedules x {r['seeds']} seeds x {r['steps']} steps = "
             f"{r['run_steps']} run-steps" for r in rows]
    lines.append(f"total {total} run-steps x {per_step:.3f} s (= 14.7 min / 3360 run-steps measured with 2 workers, "
                 f"scaled to {cfg.workers} worker(s)) = {total * per_step / 60:.1f} min estimated")
    return {"rows": rows, "run_steps": total, "estimate_s": total * per_step, "text": lines}


# ------------------------------------------------------------------------------------------- training grid
_SETUP: dict[str, Any] = {}


def _train_config(cfg: AblationConfig, loss: str, collect: bool, out: str) -> Any:
    from drift.collect.config import ScoringOptions
    from drift.train.config import TrainConfig

    steps = cfg.steps_for(loss)
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
    return df.assign(loss=job["loss"], schedule=job["schedule"], seed=job["seed"], wall_s=time.perf_counter() - t0)


def run_grid(cfg: AblationConfig, specs: dict[str, dict[str, Any]], out: Path,
             aliases: dict[str, str] | None = None) -> pd.DataFrame:
    """Run every (loss, schedule, seed) but aliases in ``cfg.workers`` processes; return all metrics rows.

    Each finished run is also written to ``OUT/parts/`` and logged with the elapsed time, so a long grid can be
    followed (and survives an interruption of the analysis).
    """
    from tqdm.auto import tqdm

    aliases = aliases or {}
    jobs = []
    for loss in cfg.losses:
        for name in cfg.schedules_for(loss):
            if name in aliases:
                continue
            for seed in range(cfg.seeds_for(loss)):
                collect = loss == cfg.losses[0] and seed == 0 and name in cfg.drift_schedules
                jobs.append({"cfg": cfg, "loss": loss, "schedule": name, "seed": seed, "spec": specs[name],
                             "collect": collect, "out": str(out / "runs" / f"{loss}-{name}-seed{seed}")
                             if collect else "", "size": cfg.steps_for(loss)})
    jobs.sort(key=lambda j: -j["size"])  # longest first: the pool's last runs are the short ones
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    frames = []
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="ablation", unit="run", mininterval=30)

    def done(job: dict[str, Any], df: pd.DataFrame) -> None:
        frames.append(df)
        df.to_parquet(parts / f"{job['loss']}-{job['schedule']}-seed{job['seed']}.parquet", index=False)
        bar.update()
        log.info("ablation: %d/%d runs done (%s %s seed %d, %.0f s) after %.1f min", len(frames), len(jobs),
                 job["loss"], job["schedule"], job["seed"], float(df["wall_s"].iloc[0]),
                 (time.perf_counter() - t0) / 60)

    if cfg.workers == 1:
        for job in jobs:
            done(job, _job(job))
    else:
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(_job, job): job for job in jobs}
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
    bar.close()
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------- statistics
def mde(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.80) -> float:
    """Minimum detectable effect of a (paired) one-sample t test: ``(t_{1-alpha/2,n-1} + t_{power,n-1}) sd/sqrt(n)``.

    The smallest true mean difference a two-sided level-``alpha`` test detects with probability ``power`` when the
    differences have standard deviation ``sd`` (NaN for n < 2).

    Example:
        >>> round(mde(1.0, 5), 3)  # (2.776 + 0.941) / sqrt(5)
        1.662
    """
    if n < 2 or not math.isfinite(sd):
        return math.nan
    df = n - 1
    return float((sstats.t.ppf(1 - alpha / 2, df) + sstats.t.ppf(power, df)) * sd / math.sqrt(n))


def mean_ci(values: pd.Series | Sequence[float]) -> dict[str, float]:
    """Mean with a 95% t interval, the values' sd and the MDE at 80% power (NaN interval with fewer than two)."""
    v = pd.Series(values, dtype=float).dropna()
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    if n < 2:
        return {"value": mean, "ci_low": math.nan, "ci_high": math.nan, "sd": math.nan, "mde": math.nan, "n": n}
    sd = float(v.std(ddof=1))
    half = float(sstats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return {"value": mean, "ci_low": mean - half, "ci_high": mean + half, "sd": sd, "mde": mde(sd, n), "n": n}


def _no_interval(r: dict[str, float]) -> bool:
    return not (math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"]))


NO_VERDICT = "n/a (needs >= 2 seeds)"


def verdict_above(r: dict[str, float], bound: float) -> str:
    """holds if the interval lies above ``bound``, contradicted if below it, inconclusive if it contains it."""
    if _no_interval(r):
        return NO_VERDICT
    return "holds" if r["ci_low"] > bound else "contradicted" if r["ci_high"] < bound else "inconclusive"


def verdict_below(r: dict[str, float], bound: float) -> str:
    """holds if the interval lies below ``bound``, contradicted if above it, inconclusive if it contains it."""
    if _no_interval(r):
        return NO_VERDICT
    return "holds" if r["ci_high"] < bound else "contradicted" if r["ci_low"] > bound else "inconclusive"


def verdict_within(r: dict[str, float], low: float, high: float) -> str:
    """holds if the interval lies inside [low, high], contradicted if it lies entirely outside (above ``high`` or
    below ``low``), inconclusive if it straddles ``low`` or ``high``."""
    if _no_interval(r):
        return NO_VERDICT
    if low <= r["ci_low"] and r["ci_high"] <= high:
        return "holds"
    if r["ci_low"] > high or r["ci_high"] < low:
        return "contradicted"
    return "inconclusive"


def _slope_per_100(steps: np.ndarray, values: np.ndarray) -> float:
    """OLS slope of values on steps, per 100 steps (NaN with fewer than two distinct steps)."""
    if len(steps) < 2 or np.ptp(steps) == 0:
        return math.nan
    return float(np.polyfit(steps, values, 1)[0] * 100.0)


# ------------------------------------------------------------------------------------------- analysis
def _eval_rows(g: pd.DataFrame) -> pd.DataFrame:
    return g.dropna(subset=["eval/accuracy"]).sort_values("step")


def _run_stats(g: pd.DataFrame, cfg: AblationConfig) -> dict[str, float]:
    """One run's statistics; the run's length is its last logged step, the tail its last ``tail_frac``."""
    total = float(g["step"].max())
    tail_from = (1.0 - cfg.tail_frac) * total
    ev = _eval_rows(g)
    steps, acc = ev["step"].to_numpy(float), ev["eval/accuracy"].to_numpy(float)
    reached = steps[acc >= cfg.target_accuracy]
    early_step = steps[np.argmin(np.abs(steps - cfg.early_frac * total))] if len(steps) else math.nan
    tail_ev = steps >= tail_from
    train = g.dropna(subset=["kl/k3_mean"]).sort_values("step")
    tail = train[train["step"] >= tail_from]
    first_kl = float(train["kl/k3_mean"].iloc[0]) if len(train) else math.nan
    plateau = float(tail["kl/k3_mean"].mean()) if len(tail) else math.nan
    kl_slope = _slope_per_100(tail["step"].to_numpy(float), tail["kl/k3_mean"].to_numpy(float))
    return {
        "steps": total,
        "final_accuracy": float(acc[tail_ev].mean()) if tail_ev.any() else math.nan,
        "last_accuracy": float(acc[-1]) if len(acc) else math.nan,
        "final_greedy_accuracy": float(ev["eval/greedy_accuracy"].iloc[-1]) if "eval/greedy_accuracy" in ev
        and len(ev) else math.nan,
        "steps_to_target": float(reached[0]) if len(reached) else math.nan,
        "aulc": float(np.trapezoid(acc, steps) / (steps[-1] - steps[0])) if len(steps) > 1 else math.nan,
        "early_accuracy": float(acc[steps == early_step][0]) if len(steps) else math.nan,
        "acc_tail_slope": _slope_per_100(steps[tail_ev], acc[tail_ev]),
        "final_eval_kl": float(ev["eval/kl_mean"].iloc[-1]) if "eval/kl_mean" in ev and len(ev) else math.nan,
        "kl_first": first_kl,
        "kl_plateau": plateau,
        "kl_tail_slope": kl_slope,
        "kl_tail_slope_rel": kl_slope / plateau if plateau else math.nan,
        "kl_reduction_pct": 100.0 * (1.0 - plateau / first_kl) if first_kl else math.nan,
    }


SUMMARY_COLUMNS = ("final_accuracy", "last_accuracy", "final_greedy_accuracy", "aulc", "early_accuracy",
                   "steps_to_target", "acc_tail_slope", "final_eval_kl", "kl_plateau", "kl_tail_slope_rel",
                   "kl_reduction_pct")


def per_run(metrics: pd.DataFrame, cfg: AblationConfig) -> pd.DataFrame:
    """One row per (loss, schedule, seed) with the run statistics of :func:`_run_stats`."""
    rows = [{"loss": loss, "schedule": name, "seed": seed, **_run_stats(g, cfg)}
            for (loss, name, seed), g in metrics.groupby(["loss", "schedule", "seed"], sort=False)]
    return pd.DataFrame(rows)


def summarize(metrics: pd.DataFrame, cfg: AblationConfig, aliases: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (loss, schedule): mean and sd over seeds of each run statistic, and seeds reaching target.

    An alias gets the row of the schedule whose runs it reuses, with ``runs_of`` naming that schedule.
    """
    runs = per_run(metrics, cfg)
    out = []
    for (loss, name), g in runs.groupby(["loss", "schedule"], sort=False):
        row: dict[str, Any] = {"loss": loss, "schedule": name, "runs_of": name, "seeds": len(g),
                               "steps": int(g["steps"].max())}
        for col in SUMMARY_COLUMNS:
            vals = g[col].dropna()
            row[f"{col}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{col}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
        row["reached_target"] = f"{int(g['steps_to_target'].notna().sum())}/{len(g)}"
        out.append(row)
        for alias, target in (aliases or {}).items():
            if target == name and alias in cfg.schedules_for(loss):
                out.append({**row, "schedule": alias, "runs_of": name})
    frame = pd.DataFrame(out)
    if len(frame):
        order = {s: i for i, s in enumerate(ALL_SCHEDULES)}
        frame = frame.sort_values(["loss", "schedule"], key=lambda c: c.map(order) if c.name == "schedule"
                                  else c.map({x: i for i, x in enumerate(LOSSES)}), kind="stable")
    return frame.reset_index(drop=True)


def _paired(runs: pd.DataFrame, loss: str, a: str, b: str, col: str) -> dict[str, float]:
    """Mean paired difference a - b over the seeds both have, with its 95% t interval and MDE."""
    x = runs[(runs["loss"] == loss) & (runs["schedule"] == a)].set_index("seed")[col]
    y = runs[(runs["loss"] == loss) & (runs["schedule"] == b)].set_index("seed")[col]
    return mean_ci((x - y).dropna())


def _fmt(x: float, spec: str = "+.3f") -> str:
    return "—" if not math.isfinite(x) else f"{x:{spec}}"


def claims(metrics: pd.DataFrame, cfg: AblationConfig, profiles: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's claims, each with the measured number, its 95% interval, the MDE, a verdict and its rule.

    Columns: ``loss, claim, measure, value, ci_low, ci_high, mde, n_seeds, verdict, rule``.
    """
    runs = per_run(metrics, cfg)
    rows: list[dict[str, Any]] = []

    def add(loss: str, claim: str, measure: str, r: dict[str, float], verdict: str, rule: str) -> None:
        rows.append({"loss": loss, "claim": claim, "measure": measure, "value": r["value"], "ci_low": r["ci_low"],
                     "ci_high": r["ci_high"], "mde": r.get("mde", math.nan), "n_seeds": r["n"], "verdict": verdict,
                     "rule": rule})

    tol, lo_pct, hi_pct = cfg.tolerance, *cfg.kl_reduction_range
    paired: list[tuple[str, str, str, str, str, Callable[[dict[str, float]], str], str]] = [
        ("prefix-30 ≈ all tokens", "prefix30", "uniform", "aulc", "AULC(prefix30) − AULC(uniform)",
         lambda r: verdict_above(r, -tol), f"holds if the interval lies above −{tol:g}, contradicted if below"),
        ("suffix-30 clearly lower", "suffix30", "uniform", "aulc", "AULC(suffix30) − AULC(uniform)",
         lambda r: verdict_below(r, 0.0), "holds if the interval lies below 0, contradicted if above"),
        ("suffix-30 below prefix-30", "suffix30", "prefix30", "aulc", "AULC(suffix30) − AULC(prefix30)",
         lambda r: verdict_below(r, 0.0), "holds if the interval lies below 0, contradicted if above"),
        ("IW-OPD faster early", "iw_opd", "uniform", "early_accuracy",
         f"accuracy(iw_opd) − accuracy(uniform) at ~{cfg.early_frac:.0%} of training",
         lambda r: verdict_above(r, 0.0), "holds if the interval lies above 0, contradicted if below"),
        ("IW-OPD learns faster overall", "iw_opd", "uniform", "aulc", "AULC(iw_opd) − AULC(uniform)",
         lambda r: verdict_above(r, 0.0), "holds if the interval lies above 0, contradicted if below"),
        ("IW-OPD ends at least as well", "iw_opd", "uniform", "final_accuracy",
         f"final accuracy (mean over the last {cfg.tail_frac:.0%}) iw_opd − uniform",
         lambda r: verdict_above(r, -tol), f"holds if the interval lies above −{tol:g}, contradicted if below"),
        ("linear ≈ uniform (fixed-position ≈ OPD)", "linear", "uniform", "aulc", "AULC(linear) − AULC(uniform)",
         lambda r: verdict_within(r, -tol, tol),
         f"holds if the interval lies in ±{tol:g}, contradicted if entirely outside"),
    ]
    for loss in cfg.losses:
        lr = runs[runs["loss"] == loss]
        if not len(lr):
            continue
        names = set(lr["schedule"])
        for claim, a, b, col, measure, verdict, rule in paired:
            if a in names and b in names:
                r = _paired(runs, loss, a, b, col)
                add(loss, claim, measure, r, verdict(r), rule)
        uni = lr[lr["schedule"] == "uniform"]
        r = mean_ci(uni["acc_tail_slope"])
        add(loss, "uniform has plateaued (accuracy)",
            f"uniform: OLS slope of held-out accuracy over the last {cfg.tail_frac:.0%} of steps, per 100 steps", r,
            verdict_within(r, -cfg.plateau_tolerance, cfg.plateau_tolerance),
            f"holds if the interval lies in ±{cfg.plateau_tolerance:g}, contradicted if entirely outside")
        level = mean_ci(uni["kl_plateau"])
        r = mean_ci(uni["kl_tail_slope_rel"])
        ktol = cfg.kl_slope_tolerance
        flat = verdict_within(r, -ktol, ktol)
        positive = verdict_above(level, 0.0)
        verdict = flat if flat in ("contradicted", NO_VERDICT) else (
            "contradicted" if positive == "contradicted" else "holds" if flat == positive == "holds"
            else "inconclusive")
        add(loss, "the gap persists (KL flat at a level > 0 in the tail)",
            f"uniform: slope of token-mean k3 over the last {cfg.tail_frac:.0%} of steps, as a fraction of its "
            f"level per 100 steps; level {_fmt(level['value'], '.3f')} [{_fmt(level['ci_low'], '.3f')}, "
            f"{_fmt(level['ci_high'], '.3f')}]", r, verdict,
            f"holds if the slope's interval lies in ±{ktol:g} and the level's above 0; contradicted if the slope's "
            f"lies entirely outside ±{ktol:g}")
        r = mean_ci(uni["kl_reduction_pct"])
        add(loss, f"KL falls only partly (paper: ~{lo_pct:g}-{hi_pct:g}%)",
            "uniform: % reduction of token-mean k3 from step 1 to the tail mean", r,
            verdict_within(r, lo_pct, hi_pct),
            f"holds if the interval lies in [{lo_pct:g}, {hi_pct:g}], contradicted if entirely above {hi_pct:g} "
            f"or below {lo_pct:g}, else inconclusive")
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
                                    + ", ".join(f"{v:.4f}" for v in l1) + "; value = last − first",
                         "value": float(l1.iloc[-1] - l1.iloc[0]), "ci_low": math.nan, "ci_high": math.nan,
                         "mde": math.nan, "n_seeds": 1,
                         "verdict": "holds (one seed, no interval)" if mono and l1.iloc[-1] < l1.iloc[0]
                         else "not seen (one seed, no interval)",
                         "rule": "holds if the distance falls at every collected step (descriptive: one seed)"})
    return pd.DataFrame(rows, columns=["loss", "claim", "measure", "value", "ci_low", "ci_high", "mde", "n_seeds",
                                       "verdict", "rule"])


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
    """Prepare schedules, run the grid (aliases once) and analyse; returns the results without writing a report.

    Writes ``config.json``, ``schedules/``, ``metrics.parquet``, ``parts/``, ``runs/`` and ``timing.json`` (the
    measured wall time, read back by ``--analyze-only``) into ``cfg.out``; the
    report (``results.md``, CSVs, figures) is :func:`drift.report.ablation.write_ablation_report`'s job.
    """
    out = Path(cfg.out)
    if cfg.analyze_only:
        return analyze(cfg, out, time.perf_counter())
    if out.exists() and any(out.iterdir()):
        if cfg.if_exists != "overwrite":
            raise DatasetExistsError(f"{out} exists and is not empty; pass --if-exists overwrite or another --out")
        if not (out / "config.json").exists():
            raise DatasetExistsError(f"{out} holds no ablation config.json; refusing to overwrite it")
        for stale in (out / "parts").glob("*.parquet"):
            stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    save_config(cfg, out / "config.json")
    specs, aliases = prepare_schedules(cfg, out)
    plan = budget_plan(cfg, aliases)
    for line in plan["text"]:
        log.info("ablation plan: %s", line)
    metrics = run_grid(cfg, specs, out, aliases)
    metrics.to_parquet(out / "metrics.parquet", index=False)
    result = analyze(cfg, out, t0)
    (out / "timing.json").write_text(json.dumps({"wall_s": result.wall_s, "workers": cfg.workers}, indent=2) + "\n")
    return result


def analyze(cfg: AblationConfig, out: Path, t0: float) -> AblationResult:
    """Summary, claims and drift profiles from the files of an ablation folder (``metrics.parquet``, ``schedules/``,
    ``runs/``)."""
    metrics_path = out / "metrics.parquet"
    if not metrics_path.exists():
        raise DatasetExistsError(f"{out} has no metrics.parquet to analyse; run the ablation first")
    metrics = pd.read_parquet(metrics_path)
    specs = {p.stem: json.loads(p.read_text()) for p in sorted((out / "schedules").glob("*.json"))
             if p.stem in ALL_SCHEDULES}
    alias_path = out / "schedules" / "aliases.json"
    aliases = json.loads(alias_path.read_text()) if alias_path.exists() else dedupe_specs(specs)
    profiles = position_profiles(out, cfg)
    summary = summarize(metrics, cfg, aliases)
    table = claims(metrics, cfg, profiles)
    run_wall = metrics.groupby(["loss", "schedule", "seed"])["wall_s"].first() if "wall_s" in metrics else None
    timing = out / "timing.json"
    if not cfg.analyze_only:
        wall = time.perf_counter() - t0
    elif timing.exists():  # the measured wall time of the run that trained these runs
        wall = float(json.loads(timing.read_text())["wall_s"])
    else:  # an estimate: the runs' own time spread over the workers
        wall = float(run_wall.sum() / cfg.workers) if run_wall is not None else math.nan
    plan = budget_plan(cfg, aliases)
    plan["measured_wall_s"] = wall
    plan["run_wall_s"] = float(run_wall.sum()) if run_wall is not None else math.nan
    notes = [f"`{a}` has the same spec as `{t}`: it was not trained again; its rows reuse the runs of `{t}`."
             for a, t in aliases.items()]
    return AblationResult(metrics, summary, table, profiles, specs, aliases, plan, cfg, out, wall, notes)
