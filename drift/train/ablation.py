"""The paper's schedule ablation at small scale, on an oracle world: same student, same seeds, same steps.

The world is a folder laid out like ``data/oracle`` (``--world``; student, teacher, tokenizer, prompts and
``world.json`` come from it), so the same ablation runs on the translate-copy world and on ``data/plan``.

Schedules: uniform (plain OPD), prefix-30 mask, suffix-30 mask, IW-OPD (gamma 0.5), linear decay (gamma 0.5), the
schedule ``drift schedule recommend`` derives from the *untrained* student's data, and the fitted position curve
(``recommend --signal position``). Negative controls (sampled loss): each position schedule ``S`` has
``S_shuffled`` (kind ``shuffled``: S's weights permuted per rollout over its valid positions, same multiset, no
position information), and ``uniform_fixed_adv`` trains uniform with A_t replaced by its batch mean over valid
tokens (``TrainConfig.advantage = "batch_mean"``). A schedule whose spec (and advantage) equals one listed before
it (on the oracle world the recommendation is IW-OPD) is not trained again: it is an *alias* whose runs are the
earlier schedule's, and the results say so. The sampled-token loss (the paper's) runs every schedule for ``seeds``
seeds and ``steps`` steps; the full-vocabulary reverse-KL loss is an optional shorter check (``--losses
sampled,full_kl``: ``full_kl_seeds`` x ``full_kl_steps``, ``full_kl_schedules``), off by default to keep the
budget.

Steps come from a measured plateau: a pilot of uniform alone (``--pilot``) measures the trainer's seconds per
run-step and the step where held-out accuracy stops rising (:mod:`drift.train.pilot`); ``--steps-from PILOT`` then
sets ``steps`` so that the tail of every run lies past it, and the budget plan uses the pilot's seconds.

Reported per (loss, schedule), over seeds (mean ± sd): final held-out accuracy (mean of the evaluations in the last
``tail_frac`` of training), steps to a target accuracy, area under the learning curve (AULC, in [0, 1]), early
accuracy, the KL plateau and its tail slope. Claims are checked with *paired* seed differences against uniform or a
control (same seeds, so the same prompts and initial student) and a 95% t interval; a schedule *works* only if it
beats its shuffled control (the interval of AULC(S) - AULC(S_shuffled) lies above 0). Each claim also carries its
minimum detectable effect at 80% power (two-sided 5%, paired t): ``MDE = (t_{0.975,n-1} + t_{0.80,n-1}) sd /
sqrt(n)``. With one seed there is no interval and no verdict. Verdict rules (:func:`verdict_above`,
:func:`verdict_below`, :func:`verdict_within`) are pure functions of the interval, printed beside each claim.

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
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from drift.config import Checks, opt, save_config
from drift.errors import DatasetExistsError
from drift.train.ablation_specs import (
    ADVANTAGE,
    ALL_SCHEDULES,
    BASE_SCHEDULES,
    CONTROLS,
    DERIVED,
    LOSSES,
    advantage_of,
    dedupe_specs,
    schedule_order,
    shuffled_spec,
)
from drift.train.ablation_stats import claims, per_run, position_profiles, summarize
from drift.train.pilot import PILOT_FILE, pilot_summary, read_runs, steps_from_pilot
from drift.train.verdicts import (
    mde,
    mean_ci,
    verdict_above,
    verdict_below,
    verdict_within,
)

__all__ = [
    "ALL_SCHEDULES",
    "BASE_SCHEDULES",
    "CONTROLS",
    "SECONDS_PER_RUN_STEP",
    "AblationConfig",
    "AblationResult",
    "advantage_of",
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
    "world_values_for",
]

log = logging.getLogger(__name__)

#: Wall seconds per run-step with 2 workers of the current trainer on a quiet 2-core machine (evaluations every 10
#: steps on 64 x 2 held-out rollouts included): the uniform pilot on the oracle world (2 finished seeds x 240 steps,
#: 2 workers, 2026-12-01) spent 0.557 CPU s per run-step, so 2 workers on 2 free cores take 0.557 / 2 s of wall per
#: run-step. (The same pilot took 2.94 s of wall per run-step while ~10 other jobs shared the cores; the previous
#: trainer's full ablation took 0.320.) A pilot passed with ``--steps-from`` replaces this by its own measurement.
SECONDS_PER_RUN_STEP = 0.557 / 2
_MEASURED_WORKERS = 2


def world_values_for(world: str) -> dict[str, Any]:
    """Model, prompt and world paths (and the toy sizes) of a world folder; raises ConfigError naming what is
    missing. A relative folder that does not exist from here is looked up beside ``data/`` (``DRIFT_DATA``)."""
    from drift.presets import check_world_values, world_values
    from drift.worlds import DATA_DIR

    root = Path(world)
    if not root.exists() and not root.is_absolute() and (DATA_DIR.parent / root).exists():
        root = DATA_DIR.parent / root
    values = world_values(root)
    check_world_values(values, f"world {world}")
    heldout = Path(values.pop("prompts"))
    train = heldout.with_name("train.jsonl")
    if not train.exists():
        from drift.errors import ConfigError

        raise ConfigError(f"world {world}", [f"missing file {train} (the training prompts)"])
    tokenizer = root / "tokenizer"
    values.update(prompts=str(train), heldout_prompts=str(heldout), root=str(root),
                  tokenizer=str(tokenizer) if tokenizer.exists() else None)
    return values


@dataclass(frozen=True)
class AblationConfig:
    """``python -m scripts.reproduce_ablation``: the schedule ablation, with its controls, on one oracle world."""

    out: str = opt("runs/ablation", "output folder (results.md, results.csv, metrics.parquet, figures/, ...)")
    world: str = opt("data/oracle", "world folder laid out like data/oracle (student/, teacher/, tokenizer/, "
                                    "prompts/train.jsonl, prompts/heldout.jsonl, world.json), e.g. data/plan")
    steps: int = opt(200, "optimizer updates per run of the sampled loss (replaced by --steps-from's)")
    steps_from: str = opt("", "a pilot folder (--pilot): steps = its measured plateau / (1 - tail_frac), "
                              "rounded up to eval_every, and the budget uses its seconds per run-step")
    pilot: bool = opt(False, "run the pilot instead: uniform only, --pilot-seeds x --steps, no drift collection; "
                             "writes pilot.json (seconds per run-step, the plateau, the steps it implies)")
    pilot_seeds: int = opt(4, "seeds of the pilot")
    pilot_tolerance: float = opt(0.1, "the pilot's plateau: the first step whose next --pilot-window steps raise "
                                      "uniform's held-out accuracy by less than this per 100 steps (95% bound)")
    pilot_window: int = opt(80, "steps per slope window of the pilot's plateau scan")
    pilot_plateau_from: str = opt("", "take the pilot's plateau from this earlier ablation folder's uniform runs "
                                      "(the seconds per run-step still come from the pilot's own runs)")
    seeds: int = opt(4, "seeds per schedule of the sampled loss (0..N-1; paired across schedules)")
    full_kl_steps: int = opt(0, "optimizer updates per full-KL run (0 = half of --steps)")
    full_kl_seeds: int = opt(3, "seeds per full-KL schedule (at most --seeds)")
    full_kl_schedules: tuple[str, ...] = opt(("uniform", "prefix30", "suffix30", "iw_opd"),
                                             "schedules of the shorter full-KL check (those also in --schedules)")
    lr: float = opt(1e-4, "AdamW learning rate (same for every run)")
    max_new_tokens: int | None = opt(None, "response cap of every rollout (default: min(64, the room the world's "
                                           "models leave after its longest prompt): 64 on data/oracle, 21 on "
                                           "data/plan)")
    prompts_per_step: int = opt(8, "training prompts per step")
    samples_per_prompt: int = opt(4, "rollouts per prompt per step")
    eval_every: int = opt(10, "held-out evaluation interval (steps)")
    eval_prompts: int = opt(64, "held-out prompts per evaluation")
    eval_samples: int = opt(2, "sampled rollouts per evaluation prompt")
    target_accuracy: float = opt(0.6, "held-out accuracy whose first crossing gives 'steps to target'")
    losses: tuple[str, ...] = opt(("sampled",), "losses: sampled (the paper's) and/or full_kl (the shorter "
                                                "full-vocabulary check, off by default for the budget)")
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
    budget_minutes: float = opt(35.0, "wall-time target of the grid; the plan says whether its estimate fits")
    workers: int = opt(2, "runs in parallel (one CPU thread each)")
    analyze_only: bool = opt(False, "re-analyse an existing OUT (metrics.parquet, schedules/, runs/) without training")
    if_exists: str = opt("fail", "when OUT exists: fail or overwrite", choices=("fail", "overwrite"))

    def __post_init__(self) -> None:
        c = Checks("AblationConfig")
        c.check(bool(self.out), "out is required")
        for name in ("steps", "seeds", "full_kl_seeds", "prompts_per_step", "samples_per_prompt", "eval_every",
                     "eval_prompts", "eval_samples", "collect_prompts", "collect_samples", "recommend_prompts",
                     "workers", "pilot_seeds", "pilot_window", "pilot_tolerance"):
            c.positive(name, getattr(self, name))
        c.positive("max_new_tokens", self.max_new_tokens, allow_none=True)
        c.check(bool(self.world), "world is required (a folder such as data/oracle or data/plan)")
        c.check(not (self.pilot and self.steps_from), "--pilot and --steps-from exclude each other: run the pilot "
                                                      "first, then the ablation with --steps-from PILOT")
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
        orphans = [f"{k} (needs {CONTROLS[k]})" for k in self.schedules if k in CONTROLS
                   and CONTROLS[k] not in self.schedules]
        c.check(not orphans, f"a control runs with the schedule it controls; add them or drop the controls: {orphans}")
        c.check("full_kl" not in self.losses or "uniform" in self.full_kl_schedules,
                "full_kl_schedules must include uniform (the baseline of every comparison)")
        fixed = [s for s in self.full_kl_schedules if advantage_of(s) != "token"]
        c.check("full_kl" not in self.losses or not fixed,
                f"full_kl_schedules cannot hold {fixed}: the full-KL loss has no advantage to fix")
        c.raise_if_any()

    def as_pilot(self) -> AblationConfig:
        """This config as its pilot: uniform only, ``pilot_seeds`` seeds, the sampled loss, no drift collection."""
        import dataclasses

        return dataclasses.replace(self, schedules=("uniform",), seeds=self.pilot_seeds, losses=("sampled",),
                                   drift_schedules=())

    def with_pilot_steps(self) -> tuple[AblationConfig, dict[str, Any] | None]:
        """``steps`` from ``steps_from``'s pilot (unchanged without one), and the pilot's measurements."""
        import dataclasses

        if not self.steps_from:
            return self, None
        pilot = steps_from_pilot(self.steps_from)
        return dataclasses.replace(self, steps=int(pilot["ablation_steps"])), pilot

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
        notes: sentences for the report (aliases). world: the world's ``folder``, ``name`` (its folder's name)
        and ``kind`` (``world.json``'s name). pilot: the pilot's measurements when steps came from one.
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
    world: dict[str, str] = field(default_factory=dict)
    pilot: dict[str, Any] | None = None


def prepare_schedules(cfg: AblationConfig, out: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The base specs, 'recommended' and 'fitted' (derived from a dataset of the untrained student on the world),
    the controls (:data:`CONTROLS`), and the aliases among them (:func:`dedupe_specs`, also written to
    ``schedules/aliases.json``)."""
    from drift.collect.config import CollectConfig, ScoringOptions
    from drift.collect.pipeline import collect_from_config
    from drift.schedules.recommend import RecommendConfig, recommend_from_config

    wanted = set(cfg.schedules) | (set(cfg.full_kl_schedules) if "full_kl" in cfg.losses else set())
    needed = wanted | {CONTROLS[k] for k in wanted if k in CONTROLS}  # a control needs its schedule's spec
    specs = {k: v for k, v in BASE_SCHEDULES.items() if k in needed}
    folder = out / "schedules"
    folder.mkdir(parents=True, exist_ok=True)
    if any(s in needed for s in DERIVED):
        world = world_values_for(cfg.world)
        data = out / "untrained"
        collect_from_config(CollectConfig(
            out=str(data), student=world["student"], teacher=world["teacher"], tokenizer=world["tokenizer"],
            prompts=world["prompts"], world=world["world"], samples_per_prompt=4, max_prompts=cfg.recommend_prompts,
            max_new_tokens=cfg.max_new_tokens or world["max_new_tokens"], seed=0, if_exists="overwrite",
            scoring=ScoringOptions(progress=False, num_threads=1)))
        for name, signal in (("recommended", "auto"), ("fitted", "position")):
            if name in needed:
                rec, _, _ = recommend_from_config(RecommendConfig(
                    dataset=str(data), out=str(folder / f"{name}.json"), signal=signal, force=True))
                specs[name] = rec.schedule.to_dict()
                (folder / f"{name}.rationale.txt").write_text(rec.report() + "\n")
    for name in schedule_order(wanted):
        if name in CONTROLS:
            base = specs[CONTROLS[name]]
            specs[name] = base if advantage_of(name) != "token" else shuffled_spec(base)
    specs = {k: specs[k] for k in schedule_order(wanted)}
    for name, spec in specs.items():
        (folder / f"{name}.json").write_text(json.dumps(spec, indent=2) + "\n")
    aliases = dedupe_specs(specs)
    (folder / "aliases.json").write_text(json.dumps(aliases, indent=2) + "\n")
    return specs, aliases


# ------------------------------------------------------------------------------------------- budget
def budget_plan(cfg: AblationConfig, aliases: dict[str, str] | None = None,
                pilot: dict[str, Any] | None = None) -> dict[str, Any]:
    """The grid to run (aliases excluded) and its wall-time estimate from a pilot's measured seconds per run-step
    (:func:`drift.train.pilot.pilot_summary`), or :data:`SECONDS_PER_RUN_STEP` without one.

    Returns a dict with ``rows`` (loss, schedules, seeds, steps, run_steps), ``run_steps``, ``estimate_s``,
    ``quiet_estimate_s`` (from the pilot's CPU seconds: the machine to itself; NaN without a pilot), ``fits``
    (estimate within ``budget_minutes``) and ``text`` (the arithmetic, one line per loss and a total).
    """
    aliases = aliases or {}
    if pilot is not None:
        per_step = float(pilot["seconds_per_run_step"]) * int(pilot["workers"]) / cfg.workers
        source = (f"measured by the pilot {pilot['folder']}: {pilot['wall_s'] / 60:.1f} min / {pilot['run_steps']} "
                  f"run-steps with {pilot['workers']} worker(s), scaled to {cfg.workers} worker(s)")
        cpu = float(pilot.get("cpu_seconds_per_run_step", math.nan))
    else:
        per_step = SECONDS_PER_RUN_STEP * _MEASURED_WORKERS / cfg.workers
        source = (f"SECONDS_PER_RUN_STEP, measured with {_MEASURED_WORKERS} workers, scaled to {cfg.workers} "
                  "worker(s)")
        cpu = math.nan
    rows = []
    for loss in cfg.losses:
        names = [s for s in cfg.schedules_for(loss) if s not in aliases]
        seeds, steps = cfg.seeds_for(loss), cfg.steps_for(loss)
        rows.append({"loss": loss, "schedules": names, "seeds": seeds, "steps": steps,
                     "run_steps": len(names) * seeds * steps})
    total = sum(r["run_steps"] for r in rows)
    lines = [f"{r['loss']}: {len(r['schedules'])} schedules x {r['seeds']} seeds x {r['steps']} steps = "
             f"{r['run_steps']} run-steps" for r in rows]
    estimate = total * per_step
    lines.append(f"total {total} run-steps x {per_step:.3f} s ({source}) = {estimate / 60:.1f} min estimated; "
                 f"budget {cfg.budget_minutes:g} min: " + ("fits" if estimate <= 60 * cfg.budget_minutes
                                                            else "DOES NOT FIT"))
    quiet = total * cpu / cfg.workers if math.isfinite(cpu) else math.nan
    if math.isfinite(quiet):
        lines.append(f"on a quiet machine: {total} run-steps x {cpu:.3f} CPU s / {cfg.workers} worker(s) = "
                     f"{quiet / 60:.1f} min of runs (the pilot's CPU seconds per run-step; loading not included)")
    return {"rows": rows, "run_steps": total, "estimate_s": estimate, "quiet_estimate_s": quiet,
            "fits": estimate <= 60 * cfg.budget_minutes, "seconds_per_run_step": per_step, "text": lines}


# ------------------------------------------------------------------------------------------- training grid
_SETUP: dict[str, Any] = {}


def _train_config(cfg: AblationConfig, loss: str, collect: bool, out: str, advantage: str = "token") -> Any:
    from drift.collect.config import ScoringOptions
    from drift.train.config import TrainConfig

    steps = cfg.steps_for(loss)
    world = world_values_for(cfg.world)
    return TrainConfig(
        student=world["student"], teacher=world["teacher"], tokenizer=world["tokenizer"], prompts=world["prompts"],
        heldout_prompts=world["heldout_prompts"], world=world["world"],
        max_new_tokens=cfg.max_new_tokens or world["max_new_tokens"],
        gen_batch_size=world["gen_batch_size"], advantage=advantage,
        out=out, steps=steps, lr=cfg.lr, loss=loss, prompts_per_step=cfg.prompts_per_step,
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
    tcfg = _train_config(cfg, job["loss"], job["collect"], job["out"], advantage_of(job["schedule"]))
    if "setup" not in _SETUP:  # models, tokenizer and prompts are the same for every job of this world
        _SETUP["setup"] = load_setup(tcfg)
    t0, c0 = time.perf_counter(), time.process_time()
    df = run_training(job["spec"], job["seed"], tcfg, setup=_SETUP["setup"])
    # cpu_s: this process's CPU seconds, the run's cost on a quiet machine (wall_s also counts waiting for a core)
    return df.assign(loss=job["loss"], schedule=job["schedule"], seed=job["seed"], wall_s=time.perf_counter() - t0,
                     cpu_s=time.process_time() - c0)


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


# ------------------------------------------------------------------------------------------- driver
def run_ablation(cfg: AblationConfig) -> AblationResult:
    """Prepare schedules, run the grid (aliases once) and analyse; returns the results without writing a report.

    Writes ``config.json`` (steps resolved from ``steps_from``'s pilot), ``schedules/``, ``metrics.parquet``,
    ``parts/``, ``runs/`` and ``timing.json`` (the measured wall time, read back by ``--analyze-only``) into
    ``cfg.out``, and for a pilot (``cfg.pilot``) ``pilot.json``; the report (``results.md``, CSVs, figures) is
    :func:`drift.report.ablation.write_ablation_report`'s job.
    """
    out = Path(cfg.out)
    if cfg.pilot:
        cfg = cfg.as_pilot()
    cfg, pilot = cfg.with_pilot_steps()
    world_values_for(cfg.world)  # fail before anything is written when the world folder is incomplete
    if cfg.analyze_only:
        result = analyze(cfg, out, time.perf_counter(), pilot)
        return _with_pilot_file(result) if cfg.pilot else result
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
    plan = budget_plan(cfg, aliases, pilot)
    for line in plan["text"]:
        log.info("ablation plan: %s", line)
    metrics = run_grid(cfg, specs, out, aliases)
    metrics.to_parquet(out / "metrics.parquet", index=False)
    result = analyze(cfg, out, t0, pilot)
    (out / "timing.json").write_text(json.dumps({"wall_s": result.wall_s, "workers": cfg.workers}, indent=2) + "\n")
    return _with_pilot_file(result) if cfg.pilot else result


def _with_pilot_file(result: AblationResult) -> AblationResult:
    """Measure a pilot's folder into ``pilot.json`` and attach it to the result."""
    import dataclasses

    cfg = result.cfg
    summary = pilot_summary(result.out, tolerance=cfg.pilot_tolerance, tail_frac=cfg.tail_frac,
                            window=cfg.pilot_window, plateau_from=cfg.pilot_plateau_from or None)
    (result.out / PILOT_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return dataclasses.replace(result, pilot=summary)


def world_info(world: str) -> dict[str, str]:
    """The world's folder, short name (the folder's name) and kind (``world.json``'s ``name``)."""
    values = world_values_for(world)
    kind = json.loads(Path(values["world"]).read_text()).get("name", "?")
    return {"folder": world, "name": Path(values["root"]).name, "kind": str(kind)}


def analyze(cfg: AblationConfig, out: Path, t0: float, pilot: dict[str, Any] | None = None) -> AblationResult:
    """Summary, claims and drift profiles from the files of an ablation folder (``metrics.parquet``, ``schedules/``,
    ``runs/``)."""
    metrics = read_runs(out)  # metrics.parquet, or the finished runs of an interrupted grid (parts/)
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
    plan = budget_plan(cfg, aliases, pilot)
    plan["measured_wall_s"] = wall
    plan["run_wall_s"] = float(run_wall.sum()) if run_wall is not None else math.nan
    run_cpu = metrics.groupby(["loss", "schedule", "seed"])["cpu_s"].first() if "cpu_s" in metrics else None
    plan["run_cpu_s"] = float(run_cpu.sum()) if run_cpu is not None else math.nan
    notes = [f"`{a}` has the same {'spec and advantage' if a in ADVANTAGE else 'spec'} as `{t}`: it was not "
             f"trained again; its rows reuse the runs of `{t}`." for a, t in aliases.items()]
    world = world_info(cfg.world)
    table.insert(0, "world", world["name"])
    return AblationResult(metrics, summary, table, profiles, specs, aliases, plan, cfg, out, wall, notes, world, pilot)
