"""The on-policy distillation loop: sample from the current student, score, weight, update.

Training step k (1-based; :mod:`drift.train.config` states the convention):

1. take ``prompts_per_step`` training prompts (:func:`~drift.train.evaluate.prompt_indices`), each repeated
   ``samples_per_prompt`` times;
2. sample a response for each from the *current* student (eval mode, no grad), seeded ``derive_seed(seed, k)``
   (each distinct prompt's prefix runs once for its samples);
3. teacher forcing: the student's body runs on prompt + response *with* grad, the frozen teacher's without;
   response token j is predicted at index P + j - 1 of each model's own input, so the teacher may read its own
   (privileged) prompt; each distinct prompt runs once and its samples' responses on its KV cache
   (:mod:`drift.train.forward`: the same hidden states and gradient as the padded prompt + response rows, to
   float rounding); log-probs come from the LM heads a chunk of positions at a time;
4. A_t = log pi_T(y_t) - sg(log pi_S(y_t)); w = ``schedule.weights(A, mask, teacher_logprob=...,
   step=k, total_steps=steps)`` (no grad);
5. the loss of :mod:`drift.train.loss` (``sampled`` or ``full_kl``), backward, global-norm clipping, AdamW.

When every weight of a batch is 0 there is no training signal and the optimizer step is **skipped**
(``optim/skipped`` = 1): AdamW would otherwise still move the parameters through weight decay and the
momentum of earlier steps. The learning-rate schedule advances regardless.

The student stays in eval mode throughout (no dropout), so the log-probs the loss differentiates are those
of the policy that sampled: the update is exactly on-policy (importance ratio 1, as in the IW-OPD reference).

One step lives in :mod:`drift.train.step` (:func:`~drift.train.step.prepare_step`, :class:`~drift.train.step.OpdStep`);
this module adds the evaluations, checkpoints, drift collections and the metrics log around it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from drift import schedules
from drift.collect.prompts import PromptRecord, read_prompts
from drift.config import save_config
from drift.errors import ConfigError
from drift.train.config import TrainConfig, resolve_preset
from drift.train.evaluate import evaluate, render_prompts
from drift.train.outputs import MetricsLog, collect_at, prepare_out, save_checkpoint
from drift.train.step import lr_factor, prepare_step

__all__ = ["TrainResult", "TrainSetup", "load_setup", "lr_factor", "run_training", "train", "train_from_config"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` returns. ``metrics`` has one row per step 0..steps (row 0: the initial evaluation)."""

    metrics: pd.DataFrame
    student: Any
    out: Path | None
    checkpoints: dict[int, Path]
    drift: dict[int, Path]
    wall_s: float


@dataclass(frozen=True)
class TrainSetup:
    """Loaded models, tokenizer, prompts and world; reusable across runs (:func:`run_training` copies the
    student, so one setup serves a whole ablation grid)."""

    student: Any
    teacher: Any
    tokenizer: Any
    train_prompts: list[PromptRecord]
    heldout_prompts: list[PromptRecord]
    world: Any | None = None
    teacher_tokenizer: Any | None = None


def train(student: Any, teacher: Any, tokenizer: Any, train_prompts: Sequence[PromptRecord],
          heldout_prompts: Sequence[PromptRecord], schedule: Any, config: TrainConfig, *, world: Any | None = None,
          teacher_tokenizer: Any | None = None) -> TrainResult:
    """Distil ``teacher`` into ``student`` on-policy (``student`` is updated in place).

    Args:
        student: any HF ``*ForCausalLM``; its parameters are trained (grads enabled during the run, disabled
            after). Keep a copy if you need the initial weights.
        teacher: frozen causal LM on the same device, sharing the student's token ids. If it is the student
            object itself, a frozen copy of the initial student is used.
        tokenizer: the student's tokenizer (prompts are rendered with it).
        train_prompts, heldout_prompts: prompt records; held-out ones are used for evaluation and collection.
        schedule: a :class:`~drift.schedules.Schedule`, a spec dict, JSON text or a path; None = ``config.schedule``
            (``''`` = uniform, plain OPD).
        config: the resolved :class:`TrainConfig` (model and prompt paths in it are only recorded).
        world: an oracle world (world verifier, ``oracle_*`` columns in collected drift data).
        teacher_tokenizer: the teacher's tokenizer, checked against the student's (default: same).
    """
    t_start = time.perf_counter()
    if not train_prompts or not heldout_prompts:
        raise ConfigError("train", [f"{name} is empty; pass at least one prompt" for name, p in
                                    (("train_prompts", train_prompts), ("heldout_prompts", heldout_prompts)) if not p])
    if config.scoring.num_threads is not None:
        torch.set_num_threads(config.scoring.num_threads)
    if schedule is None:
        schedule = config.schedule or {"kind": "uniform"}
    if not callable(getattr(schedule, "weights", None)):
        schedule = schedules.load(schedule)
    spec = schedule.to_dict() if hasattr(schedule, "to_dict") else {"kind": getattr(schedule, "kind", "custom")}
    config = dataclasses.replace(config, schedule=json.dumps(spec))
    if teacher is student:
        log.info("teacher is the student object: distilling towards a frozen copy of the initial student")
        teacher = copy.deepcopy(student).requires_grad_(False)
    run = prepare_step(student, teacher, tokenizer, train_prompts, schedule, config, world=world,
                       teacher_tokenizer=teacher_tokenizer)
    pair, verifier, gen = run.pair, run.verifier, run.gen
    heldout_r = render_prompts(heldout_prompts, tokenizer, **run.render)

    out = prepare_out(config)
    metrics = MetricsLog(out / "metrics.jsonl" if out else None)
    if out is not None:
        from drift.models import model_identity, tokenizer_hash

        schedule_path = out / "schedule.json"
        schedule_path.write_text(json.dumps(spec, indent=2) + "\n")
        save_config(config, out / "config.json", command="train", schedule=spec,
                    models={"student": model_identity(student, config.student or None),
                            "teacher": model_identity(teacher, config.teacher or None)},
                    tokenizer={"hash": tokenizer_hash(tokenizer), "size": len(tokenizer)},
                    world=world.to_dict() if world is not None else None, pair=pair.to_dict(),
                    torch_version=torch.__version__,
                    step_convention="1-based updates; schedule step=k, total_steps=steps; outputs labelled s "
                                    "describe the student after s updates (0 = initial)")

    torch.manual_seed(config.seed)
    student.requires_grad_(True)
    eval_prompts = heldout_r[: config.eval_prompts]
    collect_steps = set(config.collect_steps())
    checkpoints: dict[int, Path] = {}
    drift_sets: dict[int, Path] = {}

    def evaluate_now() -> dict[str, float]:
        return evaluate(student, teacher, tokenizer, eval_prompts, verifier=verifier, samples=config.eval_samples,
                        seed=config.seed, vocab_size=pair.shared_vocab, chunk_size=config.scoring.chunk_size,
                        max_batch_tokens=config.scoring.max_batch_tokens, **gen)

    def outputs_after(s: int) -> None:
        """Checkpoint and drift collection of the student after ``s`` updates, as configured."""
        if out is None:
            return
        wanted = s == config.steps or (config.save_every > 0 and s % config.save_every == 0)
        if s > 0 and (wanted or s in collect_steps):  # a collected dataset must name weights that exist
            checkpoints[s] = save_checkpoint(student, tokenizer, out / "checkpoints" / f"step-{s:06d}")
        if s in collect_steps:
            drift_sets[s] = collect_at(s, student, teacher, tokenizer, heldout_prompts, config, out,
                                        checkpoints.get(s), world, teacher_tokenizer)

    try:
        metrics.log({"step": 0, **evaluate_now()})
        outputs_after(0)
        bar = tqdm(range(1, config.steps + 1), desc="train", unit="step", disable=not config.scoring.progress)
        for step in bar:
            row = run(step)
            if step == config.steps or (config.eval_every > 0 and step % config.eval_every == 0):
                row.update(evaluate_now())
                bar.set_postfix_str(f"kl {row['eval/kl_mean']:.3f} acc {row['eval/accuracy']:.3f}")
            metrics.log(row)
            outputs_after(step)
        bar.close()
    finally:
        student.requires_grad_(False)
    frame = metrics.frame()
    if out is not None:
        frame.to_parquet(out / "metrics.parquet", index=False)
    return TrainResult(frame, student, out, checkpoints, drift_sets, time.perf_counter() - t_start)


def load_setup(config: TrainConfig) -> TrainSetup:
    """Load the models, tokenizer, prompts and world named in ``config`` (preset applied).

    The student is loaded in float32 when ``dtype`` is ``auto`` (it is trained; AdamW on bf16 weights loses
    small updates); the teacher in the scoring dtype. A teacher path equal to the student's is loaded twice,
    so the teacher stays frozen.
    """
    from drift.runtime.loading import load_pair

    config = resolve_preset(config)
    opts = config.scoring
    if opts.student_device_map is not None:
        raise ConfigError("TrainConfig", ["--student-device-map is not supported by drift train: the student is "
                                          "trained on one device (--device auto); place a large teacher with "
                                          "--teacher-device-map"])
    train_prompts, heldout_prompts = read_prompts(config.prompts), read_prompts(config.heldout_prompts)
    mp = load_pair(config.student, config.teacher, tokenizer=config.tokenizer, device=opts.device, dtype=opts.dtype,
                   student_dtype="float32" if opts.dtype == "auto" else opts.dtype, num_threads=opts.num_threads,
                   world=config.world, share=False, **opts.placement())
    return TrainSetup(mp.student, mp.teacher, mp.tokenizer, train_prompts, heldout_prompts, mp.world,
                      mp.teacher_tokenizer)


def train_from_config(config: TrainConfig, *, setup: TrainSetup | None = None,
                      apply_preset: bool = True) -> TrainResult:
    """Apply the preset (:func:`resolve_preset`; the CLI, which merged it already, passes ``apply_preset=False``),
    load everything named in ``config`` (or use ``setup``) and run :func:`train`.

    With a ``setup`` the student is deep-copied first, so the setup can be reused.
    """
    if apply_preset:
        config = resolve_preset(config)
    if setup is None:
        setup = load_setup(config)
        student = setup.student
    else:
        student = copy.deepcopy(setup.student)
    return train(student, setup.teacher, setup.tokenizer, setup.train_prompts, setup.heldout_prompts, None,
                 config, world=setup.world, teacher_tokenizer=setup.teacher_tokenizer)


def run_training(schedule: Any, seed: int, config: TrainConfig, *, setup: TrainSetup | None = None,
                 **overrides: Any) -> pd.DataFrame:
    """One (schedule, seed) training run in-process; returns its metrics DataFrame (for ablation grids).

    ``schedule`` is a Schedule, spec dict, JSON text or path; ``overrides`` replace config fields (e.g.
    ``steps=100``). Pass a ``setup`` from :func:`load_setup` to load models once for many runs; each run
    trains a fresh copy of its student.
    """
    spec = schedule.to_json(indent=None) if hasattr(schedule, "to_json") else (
        json.dumps(dict(schedule)) if isinstance(schedule, Mapping) else str(schedule))
    cfg = dataclasses.replace(resolve_preset(config), schedule=spec, seed=seed, **overrides)
    return train_from_config(cfg, setup=setup, apply_preset=False).metrics
