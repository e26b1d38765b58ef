"""Write an ablation's results: ``results.csv``, ``results.md`` and the figures (PNG) in ``OUT/figures/``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from drift.train.plots import plot_kl_band, plot_learning_curves, plot_position_profiles

if TYPE_CHECKING:
    from drift.train.ablation import AblationConfig, AblationResult

__all__ = ["write_figures", "write_results"]


def _pm(mean: float, sd: float, fmt: str = ".3f") -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:{fmt}}" + ("" if math.isnan(sd) else f" ± {sd:{fmt}}")


def _ci(row: pd.Series) -> str:
    if math.isnan(row["value"]):
        return "—"
    if math.isnan(row["ci_low"]):
        return f"{row['value']:+.3f}"
    return f"{row['value']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"


def write_figures(result: AblationResult, cfg: AblationConfig) -> list[Path]:
    """Learning curves, KL over training, KL by position and weight shape; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drift.train.ablation import schedule_order

    figs = result.out / "figures"
    figs.mkdir(exist_ok=True)
    written = []

    def save(fig: Any, name: str) -> None:
        path = figs / name
        fig.savefig(path, dpi=150, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    for loss in cfg.losses:
        m = result.metrics[result.metrics["loss"] == loss]
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        order = schedule_order(m["schedule"].unique())
        plot_learning_curves(m, "eval/accuracy", ax=axes[0], schedules=order)
        axes[0].set_title(f"held-out accuracy (sampled), {loss} loss; mean ± sd over seeds")
        plot_learning_curves(m, "eval/kl_mean", ax=axes[1], schedules=order)
        axes[1].set_title("held-out token-mean KL(student || teacher)")
        save(fig, f"learning_curves_{loss}.png")
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        plot_kl_band(m, schedules=[s for s in ("uniform", "iw_opd") if s in order], ax=ax)
        ax.set_title(f"mean KL over training with its IQR band ({loss} loss)")
        save(fig, f"kl_over_training_{loss}.png")
    prof = result.profiles
    if len(prof):
        kl = prof[(prof["what"] == "kl_reverse") & (prof["schedule"] == "uniform")]
        if len(kl):
            first_last = kl[kl["step"].isin([kl["step"].min(), kl["step"].max()])]
            fig, ax = plt.subplots(figsize=(6.5, 4.2))
            plot_position_profiles(first_last, ax=ax, ylabel="KL(student || teacher), full vocabulary")
            ax.set_title("KL by relative position, first and last step (uniform)")
            save(fig, "kl_by_position.png")
        iw = prof[prof["schedule"] == "iw_opd"]
        if len(iw):
            fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
            plot_position_profiles(iw[iw["what"] == "cum_abs_gap_abs"].rename(columns={}), ax=axes[0],
                                   ylabel="C_t = sum_{k<t} |A_k|")
            axes[0].set(xlabel="absolute position t")
            axes[0].set_title("cumulative gap by position at three steps (IW-OPD run)")
            plot_position_profiles(iw[iw["what"] == "iw_weight"], ax=axes[1], ylabel="IW-OPD weight",
                                   reference=lambda x: 1 + cfg.gamma * (1 - x),
                                   reference_label=f"1 + {cfg.gamma}(1 - t/T)")
            axes[1].set_title("IW weight shape vs the linear profile")
            save(fig, "weight_shape.png")
    return written


def write_results(result: AblationResult, cfg: AblationConfig, specs: dict[str, dict[str, Any]]) -> None:
    """``results.csv`` (one row per loss x schedule), ``results.md`` (tables, claims, figures), figures."""
    from drift.train.ablation import schedule_order

    out = result.out
    summary = result.summary
    summary.to_csv(out / "results.csv", index=False)
    result.claims.to_csv(out / "claims.csv", index=False)
    figures = write_figures(result, cfg)
    lines = [
        "# Schedule ablation on the oracle world",
        "",
        f"Student and teacher from `data/oracle`; {cfg.seeds} seed(s) per schedule (paired: same prompts, same "
        f"initial student), {cfg.steps} steps, lr {cfg.lr}, {cfg.prompts_per_step} prompts x "
        f"{cfg.samples_per_prompt} samples per step; held-out accuracy = verifier reward of sampled rollouts on "
        f"{cfg.eval_prompts} held-out prompts every {cfg.eval_every} steps. Wall time {result.wall_s / 60:.1f} min.",
        "",
    ]
    for loss in cfg.losses:
        s = summary[summary["loss"] == loss].set_index("schedule")
        lines += [f"## Results, {loss} loss (mean ± sd over seeds)", "",
                  "| schedule | final accuracy | final greedy acc. | steps to " + f"{cfg.target_accuracy:g}"
                  + " (reached) | AULC | early accuracy | final held-out KL | k3 plateau | k3 reduction % |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name in schedule_order(s.index):
            r = s.loc[name]
            lines.append(
                f"| {name} | {_pm(r.final_accuracy_mean, r.final_accuracy_sd)} | "
                f"{_pm(r.final_greedy_accuracy_mean, r.final_greedy_accuracy_sd)} | "
                f"{_pm(r.steps_to_target_mean, r.steps_to_target_sd, '.0f')} ({r.reached_target}) | "
                f"{_pm(r.aulc_mean, r.aulc_sd)} | {_pm(r.early_accuracy_mean, r.early_accuracy_sd)} | "
                f"{_pm(r.final_eval_kl_mean, r.final_eval_kl_sd)} | {_pm(r.kl_plateau_mean, r.kl_plateau_sd)} | "
                f"{_pm(r.kl_reduction_pct_mean, r.kl_reduction_pct_sd, '.1f')} |")
        lines.append("")
    lines += ["## The paper's claims, measured here", "",
              "Differences are paired over seeds against uniform, with a 95% t interval.", "",
              "| loss | claim | measure | value [95% CI] | verdict |", "|---|---|---|---|---|"]
    for _, r in result.claims.iterrows():
        lines.append(f"| {r['loss']} | {r['claim']} | {r['measure']} | {_ci(r)} | **{r['verdict']}** |")
    lines += ["", "## Schedules", ""]
    for name in schedule_order(specs):
        lines.append(f"- `{name}`: `{_spec_text(specs[name])}` (schedules/{name}.json)")
    rationale = out / "schedules" / "recommended.rationale.txt"
    if rationale.exists():
        lines += ["", "How `recommended` was derived from the untrained student's data "
                  "(`drift schedule recommend`):", "", "```", rationale.read_text().rstrip(), "```"]
    lines += ["", "## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures]
    lines += ["", "Files: `metrics.parquet` (every logged step of every run), `results.csv`, `claims.csv`, "
              "`runs/*/drift/step-*` (drift datasets collected during training), `schedules/`.", ""]
    (out / "results.md").write_text("\n".join(lines))


def _spec_text(spec: dict[str, Any]) -> str:
    shown = {k: v for k, v in spec.items() if k not in ("version", "source")}
    if "params" in shown:
        shown["params"] = {k: round(float(v), 4) for k, v in shown["params"].items()}
    return ", ".join(f"{k}={v}" for k, v in shown.items())
