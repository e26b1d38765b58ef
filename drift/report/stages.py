"""Report sections fed by the other stages: the continuation probe, drift over training, the recommended schedule.

Each function returns a :class:`~drift.report.render.Section`; when its input is absent the section says what to run
to get it (``missing``) instead of being left out, so a report of a bare dataset still shows what it could hold.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from drift.report import plots
from drift.report.render import CodeBlock, Section, TableBlock, TextBlock, new_figure
from drift.report.sections import Context, fmt_ci
from drift.stats.bins import pooled_rows

__all__ = ["probe_section", "schedule_section", "train_steps", "training_section"]

log = logging.getLogger(__name__)

_TRAIN_COLUMNS = ("run_id", "step", "prompt_id", "sample_id", "position", "response_len", "rel_position")


# --------------------------------------------------------------------------------------------------- probe
def probe_section(ctx: Context) -> tuple[Section, Any]:
    """Teacher and student continuation accuracy by prefix ratio, the gap, and reliability AUROCs.

    The probe's own analysis (``accuracy.parquet``, ``auroc.json``) is reloaded with
    :func:`~drift.probe.analysis.load_analysis`; only a probe that wrote none is analysed here. Returns the section
    and the :class:`~drift.probe.ProbeAnalysis` (None without a probe), which is also kept on ``ctx.analysis``.
    """
    sec = Section("probe", "Continuation probe",
                  "Each student rollout is cut at several prefix ratios; the teacher and the student each "
                  "continue from the kept prefix and the result is verified. If the teacher's accuracy falls as "
                  "the prefix grows, its supervision on later tokens is worth less: the student's own prefix has "
                  "led it somewhere even the teacher rarely recovers from. The AUROCs say which per-token signal "
                  "at the cut best predicts a successful teacher continuation.")
    if ctx.probe_dir is None:
        sec.missing = (f"no continuation probe found. Run `drift probe {ctx.ds.root} --ratios 0,0.1,...,1 "
                       "--continuations 4` (it writes DATASET/probe, which the report picks up), or pass "
                       "--probe DIR.")
        return sec, None
    from drift.probe.analysis import analyze, flip_text, load_analysis

    name = ctx.probe_dir.name
    if (ctx.probe_dir / "accuracy.parquet").is_file() and (ctx.probe_dir / "auroc.json").is_file():
        a = load_analysis(ctx.probe_dir)
        ctx.note_input("probe analysis", "—", "reloaded", f"{name}/accuracy.parquet, {name}/auroc.json "
                       f"({a.n_boot} {a.cluster}-bootstrap resamples, seed {a.seed})")
    else:
        a = analyze(ctx.probe_dir, n_boot=ctx.cfg.n_boot, seed=ctx.cfg.seed)
        ctx.note_input("probe analysis", "—", "computed", f"{name}/continuations (the probe wrote no "
                       "accuracy.parquet / auroc.json)")
    ctx.analysis = a
    pcfg = json.loads((ctx.probe_dir / "config.json").read_text()).get("config", {}) \
        if (ctx.probe_dir / "config.json").exists() else {}
    fig, axes = new_figure(2, 1, width=5.4, height=3.8)
    plots.plot_continuation_gap(a.accuracy, ax=axes[0, 0])
    axes[0, 0].set_title("continuation accuracy by prefix ratio", fontsize="medium")
    plots.plot_aurocs(a.aurocs, ax=axes[0, 1])
    axes[0, 1].set_title("reliability predictors (AUROC, 95% interval)", fontsize="medium")
    k = pcfg.get("continuations")
    sec.blocks.append(ctx.figures.add(fig, "continuation_gap", "Continuation gap and predictor AUROCs",
                                      f"{a.n_rollouts} rollouts in {a.n_clusters} {a.cluster} clusters"
                                      + (f", {k} continuations per model and cut" if k else "")
                                      + f"; {a.cluster}-bootstrap bands"))
    acc = a.accuracy
    rows = []
    for r in a.ratios:
        cell = {m: acc[(acc["ratio"] == r) & (acc["model"] == m)].iloc[0] for m in ("teacher", "student", "gap")}
        rows.append({"prefix ratio": f"{r:g}", **{m: fmt_ci(c["accuracy"], c["ci_low"], c["ci_high"], ".3f")
                                                  for m, c in cell.items()},
                     "continuations": int(cell["teacher"]["n_continuations"] + cell["student"]["n_continuations"])})
    sec.blocks.append(TableBlock("Accuracy by prefix ratio (95% intervals)", pd.DataFrame(rows)))
    arows = [{"predictor": v.get("score") or plots.PREDICTOR_LABELS.get(n, n),
              "AUROC [95%]": flip_text(v["score"], v["flipped"], v["auroc"], v["ci_low"], v["ci_high"])
              if "flipped" in v else fmt_ci(v["auroc"], v["ci_low"], v["ci_high"], ".3f"),
              "n": v["n"], "clusters": v.get("n_clusters", "—"), "reading": v.get("reading", "—"),
              "orientation": v["orientation"]} for n, v in a.aurocs.items()]
    sec.blocks.append(TableBlock("AUROC of reliability predictors vs teacher continuation success",
                                 pd.DataFrame(arows)))
    d, g = a.direction, a.gap_change
    why = f"; {d.reason}" if d.reason and d.verdict in ("insufficient", "inconclusive") else ""
    sec.findings.append(f"{a.teacher_sentence} (Spearman rho {fmt_ci(d.rho, d.ci_low, d.ci_high, '+.2f')}; "
                        f"{a.n_clusters} {a.cluster} clusters{why})")
    if g.get("estimate") is not None and math.isfinite(g["estimate"]):
        sec.findings.append(f"gap at ratio {g['first_ratio']:g} minus gap at ratio {g['last_ratio']:g}: "
                            f"{fmt_ci(g['estimate'], g['ci_low'], g['ci_high'], '+.3f')}")
    sec.findings.append(a.reliability_sentence)
    sec.blocks.append(TextBlock(tuple(sec.findings), bullets=True))
    return sec, a


# ------------------------------------------------------------------------------------------------ training
def train_steps(run: Path) -> list[Path]:
    """The drift datasets a training run collected, in step order: ``RUN/drift/step-*`` (``drift train
    --collect-at``, or a ``DriftCallback`` with ``out=RUN/drift``), else ``RUN/step-*`` (the callback's ``out``
    itself)."""
    run = Path(run)
    found = sorted(p for p in (run / "drift").glob("step-*") if p.is_dir())
    return found or sorted(p for p in run.glob("step-*") if p.is_dir() and (p / "manifest.json").exists())


def _training_tokens(ctx: Context, metrics: tuple[str, ...]) -> Any:
    """Token rows of every step: the dataset itself (several steps) or the run's step datasets concatenated."""
    import pyarrow as pa

    from drift.store import open_dataset

    if ctx.train_dir is None:
        return ctx.ds
    tables = [open_dataset(p).read("tokens", columns=[*_TRAIN_COLUMNS, *metrics]) for p in train_steps(ctx.train_dir)]
    return pa.concat_tables(tables, promote_options="default")


def training_section(ctx: Context) -> Section:
    """Metrics by relative position per training step, and their means against the step."""
    from drift.stats import BinSpec, aggregate_bins

    sec = Section("training", "Drift over training",
                  "The same held-out prompts measured at several training steps. Left: a metric by relative "
                  "position, one line per step (dark = early, light = late); right: its mean over all tokens "
                  "against the step, with a rollout-bootstrap band. OPD does not drive the KL to zero; watch "
                  "whether the position profile flattens or keeps its shape as the student improves.")
    steps: list[int] = []
    if ctx.train_dir is None:
        con = ctx.ds.duckdb()
        steps = [r[0] for r in con.sql("SELECT DISTINCT step FROM tokens ORDER BY step").fetchall()]
        con.close()
        if len(steps) < 2:
            sec.missing = ("this dataset holds a single step. Pass --train RUNDIR (a `drift train` run folder with "
                           "drift/step-* datasets, from --collect-at or a DriftCallback) or a dataset with several "
                           "`step` values.")
            return sec
    elif len(train_steps(ctx.train_dir)) < 1:
        sec.missing = (f"{ctx.train_dir} holds no drift/step-* datasets; train with --collect-at STEPS, or record "
                       "a TRL run with drift.integrations.trl.DriftCallback(out=RUN/drift)")
        return sec
    cfg = ctx.cfg
    metrics = ctx.metrics
    if ctx.train_dir is not None:  # keep the metrics every step dataset has
        import pyarrow.parquet as pq

        from drift.store import open_dataset

        names = set(metrics) | {"cum_abs_gap"}
        for p in train_steps(ctx.train_dir):
            names &= set(pq.read_schema(open_dataset(p).files("tokens")[0]).names)
        metrics = tuple(m for m in metrics if m in names)
    # C_t is drawn when the dataset has it (an import without teacher log-probs has none: the section says so)
    has_gap = ctx.support is None or "cum_abs_gap" in ctx.support.columns
    extra = ("cum_abs_gap",) if "cum_abs_gap" not in metrics and has_gap else ()
    if not metrics:
        sec.missing = "no metric to draw over training: " + ("; ".join(f"{m}: {h}" for m, h in ctx.absent.items())
                                                             or "pass --metrics")
        return sec
    src = _training_tokens(ctx, metrics + extra)
    prof = aggregate_bins(src, metrics, BinSpec(by="rel", bins=cfg.bins, step="each", margins=False)).table(
        n_boot=cfg.n_boot, seed=cfg.seed)
    means = aggregate_bins(src, metrics, BinSpec(by="rel", bins=1, step="each", margins=False)).table(
        n_boot=cfg.n_boot, seed=cfg.seed)
    steps = sorted(int(s) for s in means["step"].dropna().unique())
    for metric in metrics:
        fig, axes = new_figure(2, 1)
        plots.plot_metric_by_step(prof, metric, ax=axes[0, 0])
        if metric == "cum_abs_gap_frac":
            axes[0, 0].plot([0, 1], [0, 1], color="0.5", ls=":", lw=1)
        axes[0, 0].set_title(f"{metric} by relative position, per step", fontsize="medium")
        plots.plot_metric_vs_step(means, metric=metric, ax=axes[0, 1])
        axes[0, 1].set_title(f"mean {metric} over training", fontsize="medium")
        sec.blocks.append(ctx.figures.add(fig, f"training_{metric}", f"{metric} over training",
                                          f"steps {', '.join(map(str, steps))}"))
        m = means[means["metric"] == metric].sort_values("step")
        if len(m) >= 2 and m["mean"].iloc[0]:
            a, b = float(m["mean"].iloc[0]), float(m["mean"].iloc[-1])
            sec.findings.append(f"mean {metric}: {a:.3g} at step {steps[0]} → {b:.3g} at step {steps[-1]} "
                                f"({(b - a) / abs(a):+.0%})")
    if has_gap:
        gap = aggregate_bins(src, ["cum_abs_gap"], BinSpec(by="abs", bins=cfg.bins, step="each",
                                                           margins=False)).table(n_boot=min(cfg.n_boot, 200),
                                                                                 seed=cfg.seed)
        fig, axes = new_figure(1, 1, width=6.0, height=3.8)
        plots.plot_metric_by_step(gap, "cum_abs_gap", ax=axes[0, 0])
        axes[0, 0].set_title("cumulative gap C_t by absolute position, per step", fontsize="medium")
        sec.blocks.append(ctx.figures.add(fig, "training_cum_gap", "Cumulative gap over training",
                                          "slope = mean |A| per token; shorter and flatter as the student learns"))
    else:
        sec.blocks.append(TextBlock((f"cum_abs_gap: not in this dataset: {ctx.support.hint('cum_abs_gap')}",)))
    rows = []
    for step in steps:
        row: dict[str, Any] = {"step": step}
        for metric in metrics:
            r = means[(means["metric"] == metric) & (means["step"] == step)]
            row[metric] = fmt_ci(r["mean"].iloc[0], r["ci_low"].iloc[0], r["ci_high"].iloc[0]) if len(r) else "—"
            if "n_rollouts" in r and len(r):
                row["rollouts"] = int(r["n_rollouts"].iloc[0])
        rows.append(row)
    sec.blocks.append(TableBlock("Mean per step (95% intervals)", pd.DataFrame(rows)))
    metrics_file = ctx.train_dir / "metrics.parquet" if ctx.train_dir is not None else None
    if metrics_file is not None and metrics_file.exists():
        sec.blocks += _learning_curves(ctx, metrics_file)
    return sec


def _learning_curves(ctx: Context, path: Path) -> list[Any]:
    from drift.train.plots import plot_kl_band, plot_learning_curves

    m = pd.read_parquet(path)
    tcfg = json.loads((path.parent / "config.json").read_text()).get("config", {}) \
        if (path.parent / "config.json").exists() else {}
    m["schedule"], m["seed"] = path.parent.name, tcfg.get("seed", 0)
    fig, axes = new_figure(2, 1)
    if "eval/accuracy" in m and m["eval/accuracy"].notna().any():
        plot_learning_curves(m, "eval/accuracy", ax=axes[0, 0])
        axes[0, 0].set_title("held-out accuracy (sampled)", fontsize="medium")
    else:
        axes[0, 0].set_visible(False)
    if "kl/k3_mean" in m and m["kl/k3_mean"].notna().any():
        plot_kl_band(m, schedules=(path.parent.name,), ax=axes[0, 1])
        axes[0, 1].set_title("token-mean k3 on the training batch, IQR band", fontsize="medium")
    else:
        axes[0, 1].set_visible(False)
    return [ctx.figures.add(fig, "learning_curves", "Training run", f"from {path}")]


# ------------------------------------------------------------------------------------------------ schedule
def _precomputed(ctx: Context) -> tuple[Any, dict[str, Any]]:
    """What the report already holds for ``recommend`` (:class:`~drift.schedules.recommend.Precomputed`), and the
    cluster settings it was computed with (the recommendation must use the same)."""
    from drift.schedules.recommend import Precomputed

    if ctx.analysis is not None:
        a = ctx.analysis
        return Precomputed(analysis=a), {"cluster": a.cluster, "min_clusters": a.min_clusters}
    metric = "oracle_teacher_correct"
    if metric in ctx.selections and ctx.fit_by.get(metric) == "rel" and ctx.rel_table is not None:
        d = ctx.directions[metric]
        pre = Precomputed(bins=ctx.rel_table[ctx.rel_table["metric"] == metric], direction=d,
                          selection=ctx.selections[metric], n_clusters=ctx.n_clusters.get(metric))
        return pre, {"cluster": d.cluster, "min_clusters": d.min_clusters}
    return None, {}


def _recommendation(ctx: Context) -> tuple[Any, Any, list[str]]:
    """(schedule, Recommendation or None, rationale lines): recommended now, or read from --schedule.

    A schedule recommended here gets the evidence the report already holds (the probe analysis, or the oracle
    metric's bins, direction test and fits), so ``recommend`` computes none of it again.
    """
    from drift.schedules import load

    if ctx.schedule_path is not None:
        ctx.note_input("schedule and rationale", "—", "reloaded", str(ctx.schedule_path))
        sched = load(ctx.schedule_path)
        side = ctx.schedule_path.with_name(ctx.schedule_path.stem + ".recommendation.json")
        lines = [f"schedule read from {ctx.schedule_path}."]
        if side.exists():
            rec = json.loads(side.read_text()).get("recommendation", {})
            lines += list(rec.get("rationale", []))
            return sched, rec, lines
        return sched, None, [*lines, "no rationale recorded beside it (drift schedule recommend writes "
                             "<stem>.recommendation.json)."]
    from drift.schedules.recommend import RecommendConfig, recommend

    pre, same = _precomputed(ctx)
    rcfg = RecommendConfig(dataset=str(ctx.ds.root), probe=str(ctx.probe_dir) if ctx.probe_dir else None,
                           gamma=ctx.cfg.gamma, bins=ctx.cfg.bins, n_boot=max(ctx.cfg.n_boot, 1), seed=ctx.cfg.seed,
                           **same)
    rec = recommend(ctx.ds.root, rcfg, precomputed=pre)
    ctx.note_input("schedule and rationale", "—", "computed", "drift schedule recommend, given the "
                   + ("probe analysis above" if pre is not None and pre.analysis is not None else
                      "oracle bins, direction test and fits above" if pre is not None else "dataset"))
    return rec.schedule, rec.to_dict(), list(rec.rationale)


def schedule_section(ctx: Context, analysis: Any = None) -> Section:
    """The recommended schedule: evidence curve, weight shape against references, rationale and exports."""
    from drift.errors import ScheduleError
    from drift.schedules import export, format_export, load
    from drift.schedules.preview import decile_weights

    sec = Section("schedule", "Recommended schedule",
                  "A token-weight schedule derived from the measurements above (`drift schedule recommend`): the "
                  "strongest evidence of supervision quality found (a continuation probe, else the oracle labels), "
                  "its direction, and whether position or IW-OPD's per-rollout cumulative gap predicts it better. "
                  "Weights multiply the detached OPD advantage; OPD (w = 1) stays the floor.")
    sched, rec, lines = _recommendation(ctx)
    rec = rec or {}
    gamma = ctx.cfg.gamma
    fig, axes = new_figure(2, 1, width=5.4, height=3.8)
    ax = axes[0, 0]
    fit, evidence = rec.get("fit"), rec.get("evidence", "none")
    points = None
    if evidence == "probe" and analysis is not None:
        t = analysis.accuracy[analysis.accuracy["model"] == "teacher"]
        points = t.rename(columns={"ratio": "x", "accuracy": "mean"})
    elif evidence == "oracle" and ctx.rel_table is not None and "oracle_teacher_correct" in set(ctx.rel_table.metric):
        points = pooled_rows(ctx.rel_table, "oracle_teacher_correct")
    if fit or points is not None:
        plots.plot_fitted_curves(points, {fit["model"]: fit} if fit else {}, ax=ax, x_range=(0.0, 1.0))
        quality = rec.get("quality", {})
        ax.set(xlabel=quality.get("x", "relative position"), ylabel=quality.get("metric", "quality"))
        ax.set_title(f"evidence: {evidence}", fontsize="medium")
    else:
        ax.text(0.5, 0.5, "no measured quality curve\n(evidence: none)", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
        ax.set_axis_off()
    ax = axes[0, 1]
    plots.plot_schedule_shape(sched, ax=ax, label=f"recommended: {sched.kind}", color="k", lw=2.5)
    for spec, label in (({"kind": "uniform"}, "uniform OPD"),
                        ({"kind": "iw_opd", "gamma": gamma}, f"IW-OPD γ={gamma:g} (constant |A|)"),
                        ({"kind": "linear", "gamma": gamma}, f"linear 1 + {gamma:g}(1 − t/T)")):
        if spec["kind"] != sched.kind:
            plots.plot_schedule_shape(load(spec), ax=ax, label=label, lw=1.2, ls="--", alpha=0.8)
    ax.set_title("weight shape on a constant-|A| rollout", fontsize="medium")
    sec.blocks.append(ctx.figures.add(fig, "schedule", "Recommended schedule",
                                      "left: the quality curve it was derived from; right: its weights by position"))
    sec.blocks.append(CodeBlock("Rationale", "\n".join(lines)))
    dec = decile_weights(sched)
    sec.blocks.append(TableBlock("Mean weight per relative-position decile (constant |A|, length 100)",
                                 pd.DataFrame([{f"{10 * i}–{10 * i + 10}%": f"{w:.3f}" for i, w in enumerate(dec)}])))
    spec_path = ctx.figures.folder / "schedule.json"
    ctx.figures.folder.mkdir(parents=True, exist_ok=True)
    sched.save(spec_path)
    for target in ("json", "verl", "trl", "tinker"):
        try:
            res = export(sched, target)
            text = format_export(res) + ("\n\n# " + "\n# ".join(res.notes) if res.notes else "")
        except ScheduleError as exc:
            text = f"# no equivalent: {exc}"
        sec.blocks.append(CodeBlock(f"Export: {target}", text))
    sec.findings.append(f"recommended: {sched.describe()} (choice: {rec.get('choice') or 'given'}; evidence: "
                        f"{evidence}); spec saved as {ctx.figures.folder.name}/schedule.json")
    return sec
