"""The ablation's analysis: per-run statistics, summaries over seeds, the paper's claims with paired intervals.

Pure functions of the metrics table a grid wrote (one row per run and logged step) and the :class:`AblationConfig`;
:mod:`drift.train.ablation` runs the grid and calls them, :mod:`drift.report.ablation` writes what they return.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from drift.train.ablation_specs import ALL_SCHEDULES, LOSSES, POSITION_SCHEDULES
from drift.train.verdicts import NO_VERDICT, mean_ci, slope_per_100, verdict_above, verdict_below, verdict_within

if TYPE_CHECKING:
    from drift.train.ablation import AblationConfig

__all__ = ["SUMMARY_COLUMNS", "claims", "per_run", "position_profiles", "summarize"]


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
    kl_slope = slope_per_100(tail["step"].to_numpy(float), tail["kl/k3_mean"].to_numpy(float))
    return {
        "steps": total,
        "final_accuracy": float(acc[tail_ev].mean()) if tail_ev.any() else math.nan,
        "last_accuracy": float(acc[-1]) if len(acc) else math.nan,
        "final_greedy_accuracy": float(ev["eval/greedy_accuracy"].iloc[-1]) if "eval/greedy_accuracy" in ev
        and len(ev) else math.nan,
        "steps_to_target": float(reached[0]) if len(reached) else math.nan,
        "aulc": float(np.trapezoid(acc, steps) / (steps[-1] - steps[0])) if len(steps) > 1 else math.nan,
        "early_accuracy": float(acc[steps == early_step][0]) if len(steps) else math.nan,
        "acc_tail_slope": slope_per_100(steps[tail_ev], acc[tail_ev]),
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
    """The paper's claims and the controls', each with the measured number, its 95% interval, the MDE, a verdict
    and its rule. A claim whose schedules did not both run (an alias, or a schedule left out) is not listed.

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
        *[(f"{name} beats its shuffled control", name, f"{name}_shuffled", "aulc",
           f"AULC({name}) − AULC({name}_shuffled)", lambda r: verdict_above(r, 0.0),
           "holds (the schedule works) if the interval lies above 0, contradicted if below")
          for name in POSITION_SCHEDULES],
        ("fixed negative advantage ≈ teacher advantage", "uniform_fixed_adv", "uniform", "aulc",
         "AULC(uniform_fixed_adv) − AULC(uniform); uniform_fixed_adv: A_t replaced by its batch mean",
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
