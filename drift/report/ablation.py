"""The schedule ablation's report: ``results.md``, ``results.csv``, ``claims.csv`` and PNG figures in ``figures/``,
and the per-world verdict table of several ablations (:func:`write_verdicts`).

It reads an :class:`~drift.train.ablation.AblationResult` (computed by :func:`drift.train.ablation.run_ablation` or
:func:`drift.train.ablation.analyze`) and computes nothing of its own; figures are drawn by the plot functions of
:mod:`drift.train.plots` and by :func:`plot_position_profiles` (drawn only here), and saved by the report's
:class:`~drift.report.render.FigureStore`. The dependency is one-way: this module imports
:mod:`drift.train.ablation`, never the reverse::

    from drift.train.ablation import AblationConfig, run_ablation
    from drift.report.ablation import write_ablation_report

    result = run_ablation(AblationConfig(out="runs/ablation"))
    write_ablation_report(result)     # runs/ablation/results.md, results.csv, claims.csv, figures/*.png
    write_verdicts(["docs/ablation/oracle", "docs/ablation/plan"], "docs/ablation/README.md")

Controls sit next to the schedule they control (``prefix30`` then ``prefix30_shuffled``); the claims table
carries the paper's claims and the controls' ("<schedule> beats its shuffled control", "fixed negative advantage
≈ teacher advantage"), and a short verdict table per world opens the claims section.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drift.report.render import FigureStore, new_figure
from drift.train.ablation import CONTROLS, AblationResult, schedule_order
from drift.train.plots import plot_kl_band, plot_learning_curves

__all__ = ["plot_position_profiles", "verdict_table", "write_ablation_figures", "write_ablation_report",
           "write_verdicts"]


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
        main = [s for s in order if s not in CONTROLS]
        fig, axes = new_figure(2, 1, width=6.0, height=4.2)
        plot_learning_curves(m, "eval/accuracy", ax=axes[0, 0], schedules=main)
        axes[0, 0].set_title(f"held-out accuracy (sampled), {loss} loss; mean ± sd over seeds")
        plot_learning_curves(m, "eval/kl_mean", ax=axes[0, 1], schedules=main)
        axes[0, 1].set_title("held-out token-mean KL(student || teacher)")
        store.add(fig, f"learning_curves_{loss}", "learning curves")
        pairs = [(CONTROLS[c], c) for c in order if c in CONTROLS and CONTROLS[c] in order]
        if pairs:
            ncols = min(3, len(pairs))
            nrows = -(-len(pairs) // ncols)
            fig, axes = new_figure(ncols, nrows, width=4.6, height=3.4, sharey=True)
            for i, (name, control) in enumerate(pairs):
                ax = axes[i // ncols, i % ncols]
                plot_learning_curves(m, "eval/accuracy", ax=ax, schedules=[name, control])
                ax.set_title(f"{name} vs its control", fontsize="medium")
            for j in range(len(pairs), nrows * ncols):
                axes[j // ncols, j % ncols].set_axis_off()
            store.add(fig, f"controls_{loss}", "schedules against their controls")
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
    world = result.world or {"name": "oracle", "folder": cfg.world, "kind": "?"}
    dropped = "" if "full_kl" in cfg.losses else (" The full-vocabulary KL check was not run (``--losses sampled``, "
                                                   "to keep the budget); the sampled loss is the paper's.")
    return [
        f"# Schedule ablation on the {world['name']} world",
        "",
        f"World `{world['folder']}` (`world.json` name `{world['kind']}`): student, teacher, tokenizer and prompts "
        f"from that folder; seeds are paired across schedules (same prompts, same initial "
        f"student); {per_loss}; lr {cfg.lr}, {cfg.prompts_per_step} prompts x {cfg.samples_per_prompt} samples per "
        f"step; held-out accuracy = verifier reward of sampled rollouts on {cfg.eval_prompts} held-out prompts x "
        f"{cfg.eval_samples} samples every {cfg.eval_every} steps. The *tail* is the last {cfg.tail_frac:.0%} of "
        f"each run's steps; final accuracy is the mean of the evaluations in it. Wall time "
        f"{result.wall_s / 60:.1f} min.{dropped}",
        "",
        "Negative controls (sampled loss): `<schedule>_shuffled` trains with the schedule's weights permuted per "
        "rollout over its valid positions (same multiset of weights, no position information; kind `shuffled`); "
        "`uniform_fixed_adv` trains uniform with every token's advantage A_t replaced by the batch mean of A_t over "
        "valid tokens. A schedule *works* only if it beats its shuffled control with a paired interval above 0.",
        "",
    ]


def _budget_lines(result: AblationResult) -> list[str]:
    b = result.budget
    p = result.pilot
    lines = ["## Budget", ""]
    if p is not None and not result.cfg.pilot:
        lines += [f"Steps from a measured plateau: the pilot `{p['folder']}` ran uniform alone ({p['seeds']} seeds x "
                  f"{p['steps']} steps, {p['workers']} workers) in {p['wall_s'] / 60:.1f} min: "
                  f"{p['seconds_per_run_step']:.3f} s wall per run-step ({p['cpu_seconds_per_run_step']:.3f} CPU s). "
                  f"Rule: {p['rule']}. Plateau at step {p['plateau_step']}: steps = {p['ablation_steps']}.", "",
                  *_scan_lines(p), ""]
    lines += ["Planned (the grid without aliases):", "", "```", *b["text"], "```", ""]
    wall = b.get("measured_wall_s", math.nan)
    if math.isfinite(wall) and b["run_steps"]:
        cpu = b.get("run_cpu_s", math.nan)
        lines += [f"Measured: {wall / 60:.1f} min wall ({wall / b['run_steps']:.3f} s per run-step, schedule "
                  f"preparation and analysis included; the runs themselves took "
                  f"{b.get('run_wall_s', math.nan) / 60:.1f} min wall and {cpu / 60:.1f} min CPU summed over "
                  f"{result.cfg.workers} worker(s)).", ""]
    if result.cfg.pilot and p is not None:
        lines += [f"This is a pilot: {p['seconds_per_run_step']:.3f} s wall and {p['cpu_seconds_per_run_step']:.3f} "
                  f"CPU s per run-step with {p['workers']} workers. Rule: {p['rule']}. Plateau at step "
                  f"{p['plateau_step']} ({'reached' if p['reached'] else 'NOT reached'}): ablation steps = "
                  f"{p['ablation_steps']}.", "", *_scan_lines(p), ""]
    return lines


def _scan_lines(pilot: dict[str, Any]) -> list[str]:
    """The pilot's plateau scan as a table: slope of held-out accuracy from each start step to the end."""
    rows = pilot.get("scan", [])
    if not rows:
        return []
    lines = ["| from step | accuracy slope / 100 steps [95% CI] | points |", "|---|---|---|"]
    for r in rows:
        mark = " **(plateau)**" if r["from_step"] == pilot.get("plateau_step") else ""
        lines.append(f"| {r['from_step']}{mark} | {r['slope']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | "
                     f"{r['n_points']} |")
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
            label = f"↳ {name} (control)" if name in CONTROLS else name
            if r.runs_of != name:
                lines.append(f"| {label} | same spec as `{r.runs_of}`: not re-run, its runs are reused |"
                             + " |" * 11)
                continue
            lines.append(
                f"| {label} | {r.seeds} x {r.steps} | {_pm(r.final_accuracy_mean, r.final_accuracy_sd)} | "
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
             *_verdict_lines(result.claims), "",
             "| loss | claim | measure | value [95% CI] | MDE (80% power) | seeds | verdict | rule |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in result.claims.iterrows():
        lines.append(f"| {r['loss']} | {r['claim']} | {r['measure']} | {_ci(r)} | {_num(r['mde'])} | "
                     f"{r['n_seeds']} | **{r['verdict']}** | {r['rule']} |")
    return [*lines, ""]


def _verdict_lines(claims: pd.DataFrame) -> list[str]:
    """One line per claim of the sampled loss: the verdict, then the number (the detail follows in the table)."""
    lines = ["Verdicts (sampled loss):", ""]
    for _, r in claims[claims["loss"] == "sampled"].iterrows():
        lines.append(f"- {r['claim']}: **{r['verdict']}** ({_ci(r)})")
    return lines


def _spec_text(spec: dict[str, Any]) -> str:
    shown = {k: v for k, v in spec.items() if k not in ("version", "source")}
    if "params" in shown:
        shown["params"] = {k: round(float(v), 4) for k, v in shown["params"].items()}
    if isinstance(shown.get("base"), dict):
        shown["base"] = "{" + _spec_text(shown["base"]) + "}"
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
    lines += [f"Files in the run folder (`{result.cfg.out}`): `metrics.parquet` (every logged step of "
              "every run), `results.csv`, `claims.csv`, "
              "`runs/*/drift/step-*` (drift datasets collected during training), `schedules/` (specs, rationales, "
              "`aliases.json`).", ""]
    (out / "results.md").write_text("\n".join(lines))
    return [out / "results.md", out / "results.csv", out / "claims.csv", *figures]


# ------------------------------------------------------------------------------------------- several worlds
def verdict_table(folders: list[str | Path]) -> pd.DataFrame:
    """Claims of several ablation folders side by side: one row per (loss, claim), one column per world.

    Each folder holds an ablation's ``claims.csv`` (with its ``world`` column; a folder without one is named by
    its own name). A cell reads ``verdict (value [ci_low, ci_high])``; a claim one world did not test is "—".
    """
    frames = []
    for folder in folders:
        folder = Path(folder)
        table = pd.read_csv(folder / "claims.csv")
        if "world" not in table:
            table.insert(0, "world", folder.name)
        table["cell"] = [f"{r['verdict']} ({_ci(r)})" for _, r in table.iterrows()]
        frames.append(table)
    both = pd.concat(frames, ignore_index=True)
    worlds = list(dict.fromkeys(both["world"]))
    order = list(dict.fromkeys(zip(both["loss"], both["claim"], strict=True)))
    wide = both.pivot_table(index=["loss", "claim"], columns="world", values="cell", aggfunc="first")
    wide = wide.reindex(pd.MultiIndex.from_tuples(order, names=["loss", "claim"]))[worlds]
    return wide.fillna("—").reset_index()


def write_verdicts(folders: list[str | Path], out: str | Path) -> Path:
    """Write the per-world verdict table of :func:`verdict_table` as markdown to ``out``; returns the path."""
    table = verdict_table(folders)
    worlds = [c for c in table.columns if c not in ("loss", "claim")]
    lines = ["# Schedule ablation: the verdict per paper claim per world", "",
             "Each cell is the claim's verdict with its measured value and paired 95% interval (seeds paired across "
             "schedules; the rules, MDEs and seeds are in each world's `results.md`). Folders: "
             + ", ".join(f"`{f}`" for f in folders) + ".", "",
             "| loss | claim | " + " | ".join(worlds) + " |", "|---|---|" + "---|" * len(worlds)]
    for _, r in table.iterrows():
        lines.append(f"| {r['loss']} | {r['claim']} | " + " | ".join(str(r[w]) for w in worlds) + " |")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join([*lines, ""]))
    return out
