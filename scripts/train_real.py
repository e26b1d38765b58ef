"""Real-model OPD training: SmolLM2-135M-Instruct context distillation with ``drift train``, three schedules.

    python -m scripts.train_real --if-exists overwrite                        # the committed run (docs/real_training)
    python -m scripts.train_real --out /tmp/rt --docs /tmp/rt/docs --steps 2 --eval-every 1 --eval-prompts 4 \\
        --eval-samples 1 --prompts-per-step 2 --samples-per-prompt 2 --max-new-tokens 8 --recommend-prompts 4 \\
        --probe-rollouts 0 --n-boot 200 --if-exists overwrite               # smoke run (about a minute)
    python -m scripts.train_real --analyze-only --if-exists overwrite         # rewrite docs/ from OUT, no training

The student is SmolLM2-135M-Instruct (``smollm2``); the teacher is the *same weights* reading each prompt's privileged
``teacher_prompt`` (the reference answer, as in ``make demo-real``; ``data/real/README.md``). Prompts come from
``scripts/make_real_prompts.py`` (``data/real/train.jsonl``, ``data/real/heldout.jsonl``).

Stages (outputs of record in ``--docs``; the bulky ones in ``--out``):

1. recommend  the untrained student's rollouts on training prompts (``drift collect``), a continuation probe of some
              of them (``drift probe``) and ``drift schedule recommend`` on that dataset: the 'recommended' schedule.
              A spec equal to an earlier one (e.g. IW-OPD) is an *alias*: not trained again, its rows reuse the runs
              of that schedule (as in :mod:`drift.train.ablation`).
2. train      ``drift train`` (:func:`drift.train.train_from_config`, the library loop) for uniform, IW-OPD (the
              ablation's spec) and 'recommended', ``--seeds`` seeds each, same prompts order and initial student.
              Held-out reward is measured by the trainer's ``collect_at``: a drift dataset of the held-out prompts
              at steps 0, ``--eval-every``, ... and the last (same sampling seed at every step, so curves differ by
              the model), whose rollouts carry the ``answer`` verifier's reward. Step 0 is the same student for
              every schedule and is collected once per seed.
3. analyse    per prompt, the mean reward at each (schedule, step); a cluster bootstrap over held-out *prompts*
              (:func:`drift.stats.bootstrap.cluster_bootstrap_ratio`, every column on the same resample, so
              differences are paired by prompt) gives 95% intervals of the curves, of the final reward, of the AULC
              (trapezoid area under the curve over the step range, in [0, 1]) and of the paired differences against
              uniform, with the minimum detectable effect ``MDE = (z_0.975 + z_0.80) * SE(difference)``.
              With one seed the intervals cover prompt sampling only, not seed-to-seed training noise.
4. write      ``docs/results.md`` (the table and what it shows, in words), ``results.csv``, ``curves.csv``,
              ``heldout_curves.png`` and ``config.json`` with the schedule specs and the recommendation's rationale.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local weights only
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pandas as pd

from drift.config import Checks, add_config_arguments, config_from_namespace, opt, save_config
from drift.errors import DatasetExistsError

SCHEDULES = ("uniform", "iw_opd", "recommended")
Z_MDE = 1.959964 + 0.841621  # z_{0.975} + z_{0.80}: two-sided 5% test, 80% power


@dataclass(frozen=True)
class TrainRealConfig:
    """``python -m scripts.train_real``: uniform vs IW-OPD vs the recommended schedule on SmolLM2-135M."""

    out: str = opt("runs/real-train", "working folder: the untrained-student dataset, probe, runs/ (drift datasets "
                                      "of held-out rollouts per eval step; checkpoints are deleted after use)")
    docs: str = opt("docs/real_training", "results of record: results.md, results.csv, curves.csv, the figure, "
                                          "config.json")
    model: str = opt("smollm2", "student weights; the teacher is the same weights with each line's teacher_prompt")
    train_prompts: str = opt("data/real/train.jsonl", "training prompts (scripts/make_real_prompts.py)")
    heldout_prompts: str = opt("data/real/heldout.jsonl", "held-out prompts (disjoint from train)")
    schedules: tuple[str, ...] = opt(SCHEDULES, "schedules to train: " + ", ".join(SCHEDULES) + " (uniform required)")
    steps: int = opt(30, "optimizer updates per run (pilot: ~33 CPU-s per step at the default sizes)")
    prompts_per_step: int = opt(4, "training prompts per step")
    samples_per_prompt: int = opt(4, "student rollouts per prompt per step")
    lr: float = opt(1e-5, "peak AdamW learning rate (models of this size usually want 1e-6..1e-5; the top of "
                          "that range, for a short run)")
    warmup_steps: int = opt(0, "linear learning-rate warm-up steps")
    max_new_tokens: int = opt(48, "response length cap (tokens), training and evaluation")
    temperature: float = opt(1.0, "sampling temperature of training and evaluation rollouts")
    seeds: int = opt(1, "training seeds per schedule (0..N-1, paired across schedules)")
    eval_every: int = opt(10, "held-out evaluation interval (steps); step 0 and the last step always")
    eval_prompts: int = opt(100, "held-out prompts per evaluation (the first N; the bootstrap's clusters)")
    eval_samples: int = opt(1, "sampled rollouts per held-out prompt per evaluation")
    recommend_prompts: int = opt(40, "training prompts of the untrained-student dataset behind 'recommended'")
    recommend_samples: int = opt(2, "rollouts per prompt of that dataset")
    probe_rollouts: int = opt(24, "rollouts of that dataset given a continuation probe (the evidence recommend "
                                  "needs; 0 = no probe, then recommend returns its documented default)")
    probe_ratios: tuple[float, ...] = opt((0.0, 0.5, 1.0), "prefix ratios of the continuation probe")
    n_boot: int = opt(2000, "prompt-bootstrap resamples")
    num_threads: int | None = opt(1, "torch CPU threads (1: on a shared 2-core machine 2 threads ran 5-13x "
                                         "slower than 1; None = torch's choice)")
    analyze_only: bool = opt(False, "re-analyse an existing OUT (runs/, schedules/) and rewrite DOCS, no training")
    if_exists: str = opt("fail", "when OUT or DOCS already hold results: fail or overwrite",
                         choices=("fail", "overwrite"))
    progress: bool = opt(False, "progress bars of the trainer and collector")

    def __post_init__(self) -> None:
        for name, kind in (("schedules", str), ("probe_ratios", float)):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            object.__setattr__(self, name, tuple(kind(v) for v in value))
        c = Checks("TrainRealConfig")
        c.check(bool(self.out) and bool(self.docs), "out and docs are required")
        for name in ("steps", "prompts_per_step", "samples_per_prompt", "lr", "max_new_tokens", "temperature",
                     "seeds", "eval_every", "eval_prompts", "eval_samples", "recommend_prompts",
                     "recommend_samples", "n_boot"):
            c.positive(name, getattr(self, name))
        c.check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        c.check(self.probe_rollouts >= 0, f"probe_rollouts must be >= 0 (0 = no probe), got {self.probe_rollouts}")
        bad = [s for s in self.schedules if s not in SCHEDULES]
        c.check(not bad, f"unknown schedules {bad}; choose from {list(SCHEDULES)}")
        c.check("uniform" in self.schedules, "schedules must include uniform (the baseline of every comparison)")
        c.check(self.probe_rollouts == 0 or len(self.probe_ratios) >= 2, "--probe-ratios needs at least two ratios")
        c.positive("num_threads", self.num_threads, allow_none=True)
        c.choice("if_exists", self.if_exists, ("fail", "overwrite"))
        c.raise_if_any()

    def eval_steps(self) -> list[int]:
        """Steps of the held-out evaluations: 0, eval_every, 2 eval_every, ... and the last."""
        return sorted({0, *range(self.eval_every, self.steps + 1, self.eval_every), self.steps})


# ------------------------------------------------------------------------------------------- stages
def _scoring(cfg: TrainRealConfig) -> Any:
    from drift.collect.config import ScoringOptions

    return ScoringOptions(num_threads=cfg.num_threads, progress=cfg.progress)


def train_config(cfg: TrainRealConfig, seed: int, out: Path, collect_steps: list[int]) -> Any:
    """The :class:`~drift.train.TrainConfig` of one run; the trainer's own evaluation is kept minimal (1 prompt,
    first and last step): the held-out reward comes from the ``collect_at`` datasets, which keep it per prompt."""
    from drift.train import TrainConfig

    return TrainConfig(
        out=str(out), student=cfg.model, teacher=cfg.model, prompts=cfg.train_prompts,
        heldout_prompts=cfg.heldout_prompts, steps=cfg.steps, prompts_per_step=cfg.prompts_per_step,
        samples_per_prompt=cfg.samples_per_prompt, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=seed, eval_every=0, eval_prompts=1,
        eval_samples=1, collect_at=tuple(str(s) for s in collect_steps), collect_prompts=cfg.eval_prompts,
        collect_samples=cfg.eval_samples, save_every=0, if_exists="overwrite", verifier="answer",
        scoring=_scoring(cfg))


def recommend_schedule(cfg: TrainRealConfig, setup: Any, out: Path) -> tuple[dict[str, Any], str]:
    """'recommended': ``drift schedule recommend`` on the untrained student's rollouts of training prompts (with a
    continuation probe of ``probe_rollouts`` of them); returns the spec and the recommendation's report."""
    from drift.collect.config import CollectConfig
    from drift.collect.pipeline import collect
    from drift.probe.analysis import analyze
    from drift.probe.config import ProbeConfig
    from drift.probe.run import probe
    from drift.schedules.recommend import RecommendConfig, recommend_from_config

    data = out / "untrained"
    prompts = setup.train_prompts[: cfg.recommend_prompts]
    ds = collect(setup.student, setup.teacher, setup.tokenizer, prompts, CollectConfig(
        out=str(data), student=cfg.model, teacher=cfg.model, prompts=cfg.train_prompts,
        samples_per_prompt=cfg.recommend_samples, max_prompts=cfg.recommend_prompts,
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=0, verifier="answer",
        if_exists="overwrite", scoring=_scoring(cfg)))
    if cfg.probe_rollouts:
        probe_ds = probe(setup.student, setup.teacher, setup.tokenizer, ds, ProbeConfig(
            dataset=str(data), out=str(data / "probe"), ratios=cfg.probe_ratios, continuations=1,
            max_rollouts=cfg.probe_rollouts, seed=0, n_boot=cfg.n_boot, if_exists="overwrite",
            scoring=_scoring(cfg)))
        analyze(probe_ds, n_boot=cfg.n_boot, seed=0).write(probe_ds.root)
    rec, _, _ = recommend_from_config(RecommendConfig(dataset=str(data), out=str(out / "schedules" /
                                                                                 "recommended.json"),
                                                      n_boot=cfg.n_boot, seed=0, force=True))
    return rec.schedule.to_dict(), rec.report().strip()


def prepare_schedules(cfg: TrainRealConfig, setup: Any, out: Path) -> tuple[dict[str, Any], dict[str, str], str]:
    """Specs by name (uniform and IW-OPD exactly as in the ablation), the aliases among them, the rationale."""
    from drift.train.ablation import BASE_SCHEDULES, dedupe_specs

    folder = out / "schedules"
    folder.mkdir(parents=True, exist_ok=True)
    specs = {k: BASE_SCHEDULES[k] for k in ("uniform", "iw_opd") if k in cfg.schedules}
    rationale = ""
    if "recommended" in cfg.schedules:
        specs["recommended"], rationale = recommend_schedule(cfg, setup, out)
        (folder / "recommended.rationale.txt").write_text(rationale + "\n")
    for name, spec in specs.items():
        (folder / f"{name}.json").write_text(json.dumps(spec, indent=2) + "\n")
    aliases = dedupe_specs(specs)  # canonical order: uniform, ..., iw_opd, ..., recommended
    (folder / "aliases.json").write_text(json.dumps(aliases, indent=2) + "\n")
    return specs, aliases, rationale


def train_runs(cfg: TrainRealConfig, setup: Any, specs: dict[str, Any], aliases: dict[str, str],
               out: Path) -> dict[str, float]:
    """Train every (schedule, seed) but aliases; returns the wall seconds per run. Checkpoints are deleted once
    the held-out datasets that name them exist (they are 0.5 GB each and nothing downstream reads them)."""
    import dataclasses

    from drift.train import train_from_config

    walls: dict[str, float] = {}
    steps = cfg.eval_steps()
    for seed in range(cfg.seeds):
        for i, name in enumerate(n for n in cfg.schedules if n not in aliases):
            run = out / "runs" / f"{name}-seed{seed}"
            tcfg = train_config(cfg, seed, run, steps if i == 0 else [s for s in steps if s > 0])
            tcfg = dataclasses.replace(tcfg, schedule=json.dumps(specs[name]))
            t0 = time.perf_counter()
            print(f"  train {name} seed {seed}: {cfg.steps} steps, held-out datasets at {steps}", flush=True)
            train_from_config(tcfg, setup=setup, apply_preset=False)
            walls[run.name] = time.perf_counter() - t0
            shutil.rmtree(run / "checkpoints", ignore_errors=True)
            print(f"  done in {walls[run.name] / 60:.1f} min", flush=True)
    (out / "timing.json").write_text(json.dumps(walls, indent=2) + "\n")
    return walls


# ------------------------------------------------------------------------------------------- analysis
def heldout_rewards(out: Path, cfg: TrainRealConfig, aliases: dict[str, str]) -> pd.DataFrame:
    """Tidy held-out rollouts: ``schedule, seed, step, prompt_id, sample_id, reward`` (aliases get their target's
    rows; step 0, collected in one run per seed, is given to every schedule)."""
    from drift.store import open_dataset

    frames = []
    for run in sorted((out / "runs").glob("*-seed*")):
        name, seed = run.name.rsplit("-seed", 1)
        for ds in sorted((run / "drift").glob("step-*")):
            r = open_dataset(ds).read("rollouts", columns=["step", "prompt_id", "sample_id", "reward"]).to_pandas()
            frames.append(r.assign(schedule=name, seed=int(seed)))
    if not frames:
        raise DatasetExistsError(f"{out / 'runs'} holds no held-out datasets; run without --analyze-only first")
    raw = pd.concat(frames, ignore_index=True)
    trained = [s for s in cfg.schedules if s not in aliases]
    step0 = raw[raw["step"] == 0].drop(columns="schedule").drop_duplicates(["seed", "prompt_id", "sample_id"])
    rows = [raw[raw["step"] > 0]] + [step0.assign(schedule=s) for s in trained]
    df = pd.concat(rows, ignore_index=True)
    df = pd.concat([df] + [df[df["schedule"] == t].assign(schedule=a) for a, t in aliases.items()
                           if a in cfg.schedules], ignore_index=True)
    return df[["schedule", "seed", "step", "prompt_id", "sample_id", "reward"]].sort_values(
        ["schedule", "seed", "step", "prompt_id", "sample_id"], kind="stable").reset_index(drop=True)


def _aulc(steps: np.ndarray, curve_b_S: np.ndarray) -> np.ndarray:
    """Area under each row's curve over ``steps``, divided by the step range (a reward in [0, 1])."""
    return np.trapezoid(curve_b_S, steps, axis=-1) / (steps[-1] - steps[0])


def analyze(rewards: pd.DataFrame, cfg: TrainRealConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(curves, table, extra): curves with prompt-bootstrap intervals, the results table, and the MDEs and the
    uniform-vs-step-0 gain. Every statistic of one replicate uses the same resample of held-out prompts."""
    from drift.stats.bootstrap import cluster_bootstrap_ratio, percentile_interval

    judged = rewards.dropna(subset=["reward"])
    names = [s for s in SCHEDULES if s in set(judged["schedule"])]
    steps = np.array(sorted(judged["step"].unique()), dtype=float)
    cols = [(s, int(t)) for s in names for t in steps]
    g = judged.groupby(["prompt_id", "schedule", "step"])["reward"]
    sums = g.sum().unstack(["schedule", "step"]).reindex(columns=pd.MultiIndex.from_tuples(cols)).fillna(0.0)
    counts = g.count().unstack(["schedule", "step"]).reindex(columns=sums.columns).fillna(0.0)
    boot = cluster_bootstrap_ratio(sums.to_numpy(), counts.to_numpy(), n_boot=cfg.n_boot, seed=0,
                                   return_replicates=True)
    est = np.asarray(boot.estimate).reshape(len(names), len(steps))
    reps = np.asarray(boot.replicates).reshape(cfg.n_boot, len(names), len(steps))
    curves = pd.DataFrame([{"schedule": s, "step": int(t), "reward": est[i, j],
                            "ci_low": boot.ci_low[i * len(steps) + j],
                            "ci_high": boot.ci_high[i * len(steps) + j]}
                           for i, s in enumerate(names) for j, t in enumerate(steps)])

    def interval(point: float, reps_b: np.ndarray) -> dict[str, float]:
        lo, hi = percentile_interval(reps_b[:, None])
        se = float(np.nanstd(reps_b, ddof=1))
        return {"value": float(point), "ci_low": float(lo[0]), "ci_high": float(hi[0]), "se": se}

    aulc, aulc_b = _aulc(steps, est), _aulc(steps, reps)
    u = names.index("uniform")
    rows = []
    for i, s in enumerate(names):
        final = interval(est[i, -1], reps[:, i, -1])
        area = interval(aulc[i], aulc_b[:, i])
        row = {"schedule": s, "steps": int(steps[-1]), "seeds": int(judged[judged["schedule"] == s]["seed"].nunique()),
               "final_reward": final["value"], "final_ci_low": final["ci_low"], "final_ci_high": final["ci_high"],
               "aulc": area["value"], "aulc_ci_low": area["ci_low"], "aulc_ci_high": area["ci_high"]}
        for key, point, rep in (("final", est[i, -1] - est[u, -1], reps[:, i, -1] - reps[:, u, -1]),
                                ("aulc", aulc[i] - aulc[u], aulc_b[:, i] - aulc_b[:, u])):
            d = interval(point, rep) if i != u else {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                                                     "se": math.nan}
            row.update({f"{key}_diff_vs_uniform": d["value"], f"{key}_diff_ci_low": d["ci_low"],
                        f"{key}_diff_ci_high": d["ci_high"], f"{key}_diff_mde": Z_MDE * d["se"]})
        rows.append(row)
    gain = interval(est[u, -1] - est[u, 0], reps[:, u, -1] - reps[:, u, 0])
    extra = {"uniform_gain": {**gain, "mde": Z_MDE * gain["se"]}, "n_prompts": len(sums),
             "samples_per_prompt_step": float(counts.to_numpy().max())}
    return curves, pd.DataFrame(rows), extra


# ------------------------------------------------------------------------------------------- writing
def plot_heldout_curves(curves: pd.DataFrame, *, ax: Any = None) -> Any:
    """Held-out reward against the training step, one line per schedule with its 95% prompt-bootstrap band."""
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    for name, g in curves.groupby("schedule", sort=False):
        (line,) = ax.plot(g["step"], g["reward"], marker="o", ms=3, label=name)
        ax.fill_between(g["step"], g["ci_low"], g["ci_high"], color=line.get_color(), alpha=0.15, lw=0)
    ax.set(xlabel="training step", ylabel="held-out reward (answer verifier)")
    ax.legend(fontsize="small")
    return ax


def _ci(v: float, lo: float, hi: float, spec: str = ".3f") -> str:
    return "—" if not math.isfinite(v) else f"{v:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def findings(table: pd.DataFrame, extra: dict[str, Any], aliases: dict[str, str]) -> list[str]:
    """What the numbers show, in plain sentences (a verdict only where a 95% interval excludes 0)."""
    out = []
    g = extra["uniform_gain"]
    moved = "rises" if g["ci_low"] > 0 else "falls" if g["ci_high"] < 0 else "does not change detectably"
    out.append(f"Under uniform OPD the held-out reward {moved} from step 0 to the last step: "
               f"{_ci(g['value'], g['ci_low'], g['ci_high'], '+.3f')} (MDE {g['mde']:.3f}).")
    differs = False
    for r in table[table["schedule"] != "uniform"].itertuples():
        if r.schedule in aliases:
            out.append(f"`{r.schedule}` has the same spec as `{aliases[r.schedule]}`: it was not trained again; "
                       f"its numbers are those of `{aliases[r.schedule]}`.")
            continue
        for key, what in (("aulc", "AULC"), ("final", "final held-out reward")):
            v, lo, hi, m = (getattr(r, f"{key}_diff_vs_uniform"), getattr(r, f"{key}_diff_ci_low"),
                            getattr(r, f"{key}_diff_ci_high"), getattr(r, f"{key}_diff_mde"))
            if lo > 0 or hi < 0:
                differs = True
                out.append(f"`{r.schedule}` has a {'higher' if lo > 0 else 'lower'} {what} than uniform: "
                           f"{_ci(v, lo, hi, '+.3f')}.")
            else:
                out.append(f"`{r.schedule}` vs uniform, {what}: {_ci(v, lo, hi, '+.3f')}, interval contains 0 "
                           f"(MDE {m:.3f}).")
    if not differs:
        mdes = table["aulc_diff_mde"].dropna()
        out.append("No schedule differs from uniform at this budget"
                   + (f"; MDE of the AULC difference = {mdes.max():.3f}." if len(mdes) else "."))
    return out


def write_docs(cfg: TrainRealConfig, docs: Path, curves: pd.DataFrame, table: pd.DataFrame, extra: dict[str, Any],
               specs: dict[str, Any], aliases: dict[str, str], rationale: str, timing: dict[str, float]) -> Path:
    """results.md, results.csv, curves.csv, heldout_curves.png and config.json into ``docs``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs.mkdir(parents=True, exist_ok=True)
    table.to_csv(docs / "results.csv", index=False)
    curves.to_csv(docs / "curves.csv", index=False)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    plot_heldout_curves(curves, ax=ax)
    ax.set_title(f"SmolLM2-135M context distillation: {extra['n_prompts']} held-out prompts, 95% prompt bootstrap",
                 fontsize="medium")
    fig.savefig(docs / "heldout_curves.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    save_config(cfg, docs / "config.json", command="python -m scripts.train_real", schedules=specs, aliases=aliases,
                recommendation=rationale, timing_s=timing, eval_steps=cfg.eval_steps())
    lines = [
        "# Real-model OPD training: SmolLM2-135M-Instruct context distillation",
        "",
        f"`python -m scripts.train_real` (config in `config.json`): {cfg.steps} steps x {cfg.prompts_per_step} "
        f"prompts x {cfg.samples_per_prompt} rollouts (<= {cfg.max_new_tokens} tokens), lr {cfg.lr:g}, "
        f"{cfg.seeds} seed(s); held-out reward = mean `answer`-verifier reward of {cfg.eval_samples} sampled "
        f"rollout(s) (temperature {cfg.temperature:g}) on each of {extra['n_prompts']} held-out prompts, every "
        f"{cfg.eval_every} steps. Intervals: 95% percentile, {cfg.n_boot} bootstrap resamples of held-out prompts "
        "(paired: every schedule on the same resample)"
        + (". With one training seed they do not include seed-to-seed training noise." if cfg.seeds == 1 else "."),
        "",
        "## What it shows",
        "",
        *[f"- {s}" for s in findings(table, extra, aliases)],
        "",
        "## Results",
        "",
        "| schedule | steps | final held-out reward [95% CI] | AULC [95% CI] | final − uniform [CI] | "
        "AULC − uniform [CI] (MDE) |",
        "|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        note = f" (= {aliases[r.schedule]})" if r.schedule in aliases else ""
        lines.append(f"| {r.schedule}{note} | {r.steps} | {_ci(r.final_reward, r.final_ci_low, r.final_ci_high)} | "
                     f"{_ci(r.aulc, r.aulc_ci_low, r.aulc_ci_high)} | "
                     f"{_ci(r.final_diff_vs_uniform, r.final_diff_ci_low, r.final_diff_ci_high, '+.3f')} | "
                     f"{_ci(r.aulc_diff_vs_uniform, r.aulc_diff_ci_low, r.aulc_diff_ci_high, '+.3f')}"
                     + (f" ({r.aulc_diff_mde:.3f})" if math.isfinite(r.aulc_diff_mde) else "") + " |")
    lines += ["", "![held-out reward](heldout_curves.png)", "", "## Schedules", ""]
    lines += [f"- `{k}`: `{json.dumps(v)}`" for k, v in specs.items()]
    if rationale:
        lines += ["", "Recommendation (`drift schedule recommend` on the untrained student's rollouts of "
                      f"{cfg.recommend_prompts} training prompts, probe of {cfg.probe_rollouts} rollouts):", "",
                  "```", rationale, "```"]
    if timing:
        lines += ["", "Wall time per run: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timing.items()) + "."]
    (docs / "results.md").write_text("\n".join(lines) + "\n")
    return docs / "results.md"


# ------------------------------------------------------------------------------------------- driver
def _preflight(cfg: TrainRealConfig, out: Path, docs: Path) -> None:
    if cfg.analyze_only:
        return
    for folder in (out, docs):
        if folder.exists() and any(folder.iterdir()) and cfg.if_exists != "overwrite":
            raise DatasetExistsError(f"{folder} exists and is not empty; pass --if-exists overwrite or another path")
    if (out / "runs").exists():
        shutil.rmtree(out / "runs")  # stale runs of another config must not enter the analysis


def run(cfg: TrainRealConfig) -> dict[str, Any]:
    """All stages; returns the table, curves and findings."""
    out, docs = Path(cfg.out), Path(cfg.docs)
    _preflight(cfg, out, docs)
    t0 = time.perf_counter()
    if cfg.analyze_only:
        folder = out / "schedules"
        specs = {s: json.loads((folder / f"{s}.json").read_text()) for s in SCHEDULES
                 if (folder / f"{s}.json").exists()}
        aliases = json.loads((folder / "aliases.json").read_text())
        rationale_path = folder / "recommended.rationale.txt"
        rationale = rationale_path.read_text().strip() if rationale_path.exists() else ""
        timing = json.loads((out / "timing.json").read_text()) if (out / "timing.json").exists() else {}
    else:
        from drift.train import TrainConfig, load_setup

        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.json", command="python -m scripts.train_real")
        print(f"[{time.perf_counter() - t0:6.0f}s] load {cfg.model}", flush=True)
        setup = load_setup(TrainConfig(student=cfg.model, teacher=cfg.model, prompts=cfg.train_prompts,
                                       heldout_prompts=cfg.heldout_prompts, collect_at=(), scoring=_scoring(cfg)))
        print(f"[{time.perf_counter() - t0:6.0f}s] recommend / schedules", flush=True)
        specs, aliases, rationale = prepare_schedules(cfg, setup, out)
        for a, t in aliases.items():
            print(f"  {a} has the same spec as {t}: not trained again", flush=True)
        print(f"[{time.perf_counter() - t0:6.0f}s] train", flush=True)
        timing = train_runs(cfg, setup, specs, aliases, out)
        timing["total"] = time.perf_counter() - t0
    rewards = heldout_rewards(out, cfg, aliases)
    rewards.to_parquet(out / "heldout_rewards.parquet", index=False)
    curves, table, extra = analyze(rewards, cfg)
    path = write_docs(cfg, docs, curves, table, extra, specs, aliases, rationale, timing)
    text = findings(table, extra, aliases)
    print("\n".join(["", *text, f"results: {path}"]), flush=True)
    return {"table": table, "curves": curves, "findings": text, "extra": extra, "aliases": aliases}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, TrainRealConfig)
    cfg = config_from_namespace(TrainRealConfig, parser.parse_args(argv))
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
