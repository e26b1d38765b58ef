"""The schedule ablation's report: ``results.md``, ``results.csv``, ``claims.csv`` and PNG figures in ``figures/``.

It reads an :class:`~drift.train.ablation.AblationResult` (computed by :func:`drift.train.ablation.run_ablation` or
:func:`drift.train.ablation.analyze`) and computes nothing of its own; figures are drawn by the plot functions of
:mod:`drift.train.plots` and by :func:`plot_position_profiles` (drawn only here), and saved by the report's
:class:`~drift.report.render.FigureStore`. The dependency is one-way: this module imports
:mod:`drift.train.ablation`, never the reverse::

    from drift.train.ablation import AblationConfig, run_ablation
    from drift.report.ablation import write_ablation_report

    result = run_ablation(AblationConfig(out="runs/ablation"))
    write_ablation_report(result)     # runs/ablation/results.md, results.csv, claims.csv, figures/*.png
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drift.report.render import FigureStore, new_figure
from drift.train.ablation import AblationResult, schedule_order
from drift.train.plots import plot_kl_band, plot_learning_curves

__all__ = ["plot_position_profiles", "write_ablation_figures", "write_ablation_report"]


def _pm(mean: float, sd: float, fmt: str = ".3f") -> str:
    if not math.isfinite(mean):
        return "—"
    return f"{mean:{fmt}}" + ("" if not math.isfinite(sd) else f" ± {sd:{fmt.lstrip('+')}}")


def _ci(row: pd.Series) -> str:
    if not math.isfinite(row["value"]):
        return "—"
    if not math.isfinite(row["ci_low"]):
        return f"{row['value']:+.3f}"
    return f"{row['value']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"


def _num(x: float, fmt: str = ".3f") -> str:
    return "—" if not math.isfinite(x) else f"{x:{fmt}}"


def plot_position_profiles(profiles: pd.DataFrame, value: str = "mean", *, ax: Any = None, by: str = "step",
                           reference: Any = None, reference_label: str | None = None, ylabel: str | None = None) -> Any:
    """One line per ``by`` value of ``value`` against ``x`` (bin centres), with ``ci_low``/``ci_high`` bands.

    Args:
        profiles: rows of :func:`drift.train.ablation.position_profiles` (``x``, ``value``, optional intervals).
        value: the column drawn. by: one line per value of this column.
        ax: the axes to draw on (default: pyplot's current axes).
        reference: optional callable x -> y drawn dashed (e.g. 1 + gamma (1 - t/T)); reference_label: its label.
        ylabel: the y-axis label (default ``value``).

    Returns:
        The axes (nothing is saved).
    """
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    for key, g in profiles.groupby(by, sort=True):
        g = g.sort_values("x")
        (line,) = ax.plot(g["x"], g[value], marker=".", label=f"{by} {key}")
        if {"ci_low", "ci_high"} <= set(g.columns) and g["ci_low"].notna().any():
            ax.fill_between(g["x"], g["ci_low"], g["ci_high"], color=line.get_color(), alpha=0.15, lw=0)
    if reference is not None:
        xs = np.linspace(0, 1, 101)
        ax.plot(xs, reference(xs), "k--", lw=1, label=reference_label)
    ax.set(xlabel="relative position t/T", ylabel=ylabel or value)
    ax.legend(fontsize="small")
    return ax


def write_ablation_figures(result: AblationResult, folder: Path) -> list[Path]:
    """Learning curves, KL over training, KL by position and the weight shape, as PNG files in ``folder``.

    Args:
        result: the ablation's results.
        folder: where the figures go (created on first use).

    Returns:
        The written paths, in the order they appear in ``results.md``.
    """
    cfg = result.cfg
    store = FigureStore(folder, svg=False, dpi=150)
    for loss in cfg.losses:
        m = result.metrics[result.metrics["loss"] == loss]
        if not len(m):
            continue
        order = schedule_order(m["schedule"].unique())
        fig, axes = new_figure(2, 1, width=6.0, height=4.2)
        plot_learning_curves(m, "eval/accuracy", ax=axes[0, 0], schedules=order)
        axes[0, 0].set_title(f"held-out accuracy (sampled), {loss} loss; mean ± sd over seeds")
        plot_learning_curves(m, "eval/kl_mean", ax=axes[0, 1], schedules=order)
        axes[0, 1].set_title("held-out token-mean KL(student || teacher)")
        store.add(fig, f"learning_curves_{loss}", "learning curves")
        fig, axes = new_figure(1, 1, width=6.5, height=4.2)
        plot_kl_band(m, schedules=[s for s in ("uniform", "iw_opd") if s in order], ax=axes[0, 0])
        axes[0, 0].set_title(f"mean KL over training with its IQR band ({loss} loss)")
        store.add(fig, f"kl_over_training_{loss}", "KL over training")
    prof = result.profiles
    if len(prof):
        kl = prof[(prof["what"] == "kl_reverse") & (prof["schedule"] == "uniform")]
        if len(kl):
            first_last = kl[kl["step"].isin([kl["step"].min(), kl["step"].max()])]
            fig, axes = new_figure(1, 1, width=6.5, height=4.2)
            plot_position_profiles(first_last, ax=axes[0, 0], ylabel="KL(student || teacher), full vocabulary")
            axes[0, 0].set_title("KL by relative position, first and last step (uniform)")
            store.add(fig, "kl_by_position", "KL by position")
        iw = prof[prof["schedule"] == "iw_opd"]
        if len(iw):
            fig, axes = new_figure(2, 1, width=6.0, height=4.2)
            plot_position_profiles(iw[iw["what"] == "cum_abs_gap_abs"], ax=axes[0, 0],
                                   ylabel="C_t = sum_{k<t} |A_k|")
            axes[0, 0].set(xlabel="absolute position t")
            axes[0, 0].set_title("cumulative gap by position at three steps (IW-OPD run)")
            plot_position_profiles(iw[iw["what"] == "iw_weight"], ax=axes[0, 1], ylabel="IW-OPD weight",
                                   reference=lambda x: 1 + cfg.gamma * (1 - x),
                                   reference_label=f"1 + {cfg.gamma}(1 - t/T)")
            axes[0, 1].set_title("IW weight shape vs the linear profile")
            store.add(fig, "weight_shape", "weight shape")
    return list(store.paths)


def _setup_lines(result: AblationResult) -> list[str]:
    cfg = result.cfg
    per_loss = "; ".join(f"{r['loss']} loss: {len(r['schedules'])} schedules x {r['seeds']} seed(s) x "
                         f"{r['steps']} steps" for r in result.budget["rows"])
    return [
        "# Schedule ablation on the oracle world",
        "",
        f"Student and teacher from `data/oracle`; seeds are paired across schedules (same prompts, same initial "
        f"student); {per_loss}; lr {cfg.lr}, {cfg.prompts_per_step} prompts x {cfg.samples_per_prompt} samples per "
        f"step; held-out accuracy = verifier reward of sampled rollouts on {cfg.eval_prompts} held-out prompts x "
        f"{cfg.eval_samples} samples every {cfg.eval_every} steps. The *tail* is the last {cfg.tail_frac:.0%} of "
        f"each run's steps; final accuracy is the mean of the evaluations in it. Wall time "
        f"{result.wall_s / 60:.1f} min.",
        "",
    ]


def _budget_lines(result: AblationResult) -> list[str]:
    b = result.budget
    lines = ["## Budget", "", "Planned from the earlier measurement (the grid without aliases):", "", "```",
             *b["text"], "```", ""]
    wall = b.get("measured_wall_s", math.nan)
    if math.isfinite(wall) and b["run_steps"]:
        lines += [f"Measured: {wall / 60:.1f} min wall ({wall / b['run_steps']:.3f} s per run-step, schedule "
                  f"preparation and analysis included; the runs themselves took "
                  f"{b.get('run_wall_s', math.nan) / 60:.1f} min summed over {result.cfg.workers} worker(s)).", ""]
    return lines


def _results_lines(result: AblationResult) -> list[str]:
    cfg = result.cfg
    lines: list[str] = []
    for loss in cfg.losses:
        s = result.summary[result.summary["loss"] == loss].set_index("schedule")
        if not len(s):
            continue
        lines += [f"## Results, {loss} loss (mean ± sd over seeds)", "",
                  "| schedule | seeds x steps | final accuracy (tail mean) | last accuracy | final greedy acc. | "
                  f"steps to {cfg.target_accuracy:g} (reached) | AULC | early accuracy | tail accuracy slope / 100 "
                  "steps | final held-out KL | k3 plateau | k3 tail slope (fraction of level / 100 steps) | "
                  "k3 reduction % |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name in schedule_order(s.index):
            r = s.loc[name]
            if r.runs_of != name:
                lines.append(f"| {name} | same spec as `{r.runs_of}`: not re-run, its runs are reused |"
                             + " |" * 11)
                continue
            lines.append(
                f"| {name} | {r.seeds} x {r.steps} | {_pm(r.final_accuracy_mean, r.final_accuracy_sd)} | "
                f"{_pm(r.last_accuracy_mean, r.last_accuracy_sd)} | "
                f"{_pm(r.final_greedy_accuracy_mean, r.final_greedy_accuracy_sd)} | "
                f"{_pm(r.steps_to_target_mean, r.steps_to_target_sd, '.0f')} ({r.reached_target}) | "
                f"{_pm(r.aulc_mean, r.aulc_sd)} | {_pm(r.early_accuracy_mean, r.early_accuracy_sd)} | "
                f"{_pm(r.acc_tail_slope_mean, r.acc_tail_slope_sd, '+.3f')} | "
                f"{_pm(r.final_eval_kl_mean, r.final_eval_kl_sd)} | {_pm(r.kl_plateau_mean, r.kl_plateau_sd)} | "
                f"{_pm(r.kl_tail_slope_rel_mean, r.kl_tail_slope_rel_sd, '+.3f')} | "
                f"{_pm(r.kl_reduction_pct_mean, r.kl_reduction_pct_sd, '.1f')} |")
        lines.append("")
    return lines


def _claims_lines(result: AblationResult) -> list[str]:
    cfg = result.cfg
    lines = ["## The paper's claims, measured here", "",
             "Differences are paired over seeds against the named baseline (seed k of one schedule minus seed k of "
             "the other), with a 95% t interval. **MDE** is the minimum detectable effect at those seeds: the true "
             "difference a two-sided 5% paired t test detects with 80% power, (t_{0.975,n−1} + t_{0.80,n−1}) · "
             "sd_diff / √n, in the claim's units. A claim whose interval contains its bound is *inconclusive*: an "
             "effect smaller than about the MDE could be present and not seen.", "",
             f"Plateau criterion for uniform: the OLS slope of held-out accuracy over the last {cfg.tail_frac:.0%} of "
             f"steps (per run, per 100 steps) has a seed-mean interval inside ±{cfg.plateau_tolerance:g}. The KL gap "
             f"persists when the tail slope of token-mean k3 (as a fraction of its level, per 100 steps) has an "
             f"interval inside ±{cfg.kl_slope_tolerance:g} and the level's interval lies above 0.", "",
             "| loss | claim | measure | value [95% CI] | MDE (80% power) | seeds | verdict | rule |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in result.claims.iterrows():
        lines.append(f"| {r['loss']} | {r['claim']} | {r['measure']} | {_ci(r)} | {_num(r['mde'])} | "
                     f"{r['n_seeds']} | **{r['verdict']}** | {r['rule']} |")
    return [*lines, ""]


def _spec_text(spec: dict[str, Any]) -> str:
    shown = {k: v for k, v in spec.items() if k not in ("version", "source")}
    if "params" in shown:
        shown["params"] = {k: round(float(v), 4) for k, v in shown["params"].items()}
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def _schedule_lines(result: AblationResult, out: Path) -> list[str]:
    lines = ["## Schedules", ""]
    for name in schedule_order(result.specs):
        alias = result.aliases.get(name)
        note = f" — same spec as `{alias}`, so it was not trained again (its runs are `{alias}`'s)" if alias else ""
        lines.append(f"- `{name}`: `{_spec_text(result.specs[name])}` (schedules/{name}.json){note}")
    for name in ("recommended", "fitted"):
        rationale = out / "schedules" / f"{name}.rationale.txt"
        if rationale.exists():
            lines += ["", f"How `{name}` was derived from the untrained student's data (`drift schedule recommend"
                      + (" --signal position" if name == "fitted" else "") + "`):", "", "```",
                      rationale.read_text().rstrip(), "```"]
    return [*lines, ""]


def write_ablation_report(result: AblationResult, out: str | Path | None = None) -> list[Path]:
    """Write ``results.md``, ``results.csv`` (one row per loss x schedule), ``claims.csv`` and ``figures/``.

    Args:
        result: the ablation's results (:func:`drift.train.ablation.run_ablation`).
        out: the folder to write into; default ``result.out`` (where ``schedules/`` and ``runs/`` are).

    Returns:
        The written files.
    """
    out = Path(out) if out is not None else result.out
    out.mkdir(parents=True, exist_ok=True)
    result.summary.to_csv(out / "results.csv", index=False)
    result.claims.to_csv(out / "claims.csv", index=False)
    figures = write_ablation_figures(result, out / "figures")
    lines = [*_setup_lines(result), *_budget_lines(result), *_results_lines(result)]
    if result.notes:
        lines += ["Aliases: " + " ".join(result.notes), ""]
    lines += [*_claims_lines(result), *_schedule_lines(result, result.out)]
    lines += ["## Figures", "", *[f"![{p.stem}](figures/{p.name})" for p in figures], ""]
    lines += ["Files in the run folder (`make ablation`: `runs/ablation`): `metrics.parquet` (every logged step of "
              "every run), `results.csv`, `claims.csv`, "
              "`runs/*/drift/step-*` (drift datasets collected during training), `schedules/` (specs, rationales, "
              "`aliases.json`).", ""]
    (out / "results.md").write_text("\n".join(lines))
    return [out / "results.md", out / "results.csv", out / "claims.csv", *figures]
