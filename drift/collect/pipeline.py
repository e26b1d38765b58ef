"""The collect and score pipelines: prompts → rollouts → per-token scores → parquet parts.

``collect`` samples rollouts from the student and scores them; ``score`` re-scores rollouts that already exist
(a drift dataset, or a jsonl from elsewhere) — e.g. with a later student checkpoint, labelled by ``step``. Both take
already-built model and tokenizer objects, so tests can pass tiny random models; ``collect_from_config`` /
``score_from_config`` load them from paths for the CLI.

Work is split into parts (``part_size`` rollouts). A part is generated, scored and written atomically before the
next begins; with ``if_exists="resume"`` the parts already in the manifest are skipped and the rest are
regenerated from the same seeds, so the finished dataset equals an uninterrupted run. Under ``torchrun`` the parts
are shared out between the ranks (:mod:`drift.runtime.distributed`); a part's rows depend on its index and the seed
only, so the dataset equals a one-process run whatever the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from drift import __version__
from drift.collect.config import CollectConfig, ScoreConfig, ScoringOptions
from drift.collect.guards import PairReport, alignment_self_check, check_pair
from drift.collect.metrics import K3_CLAMP, K3_MAX
from drift.collect.prompts import PromptRecord, read_prompts
from drift.collect.rollouts import derive_seed, sample_responses, stop_token_ids
from drift.collect.scoring import ScoringItem, score_items
from drift.config import config_to_dict, git_sha
from drift.errors import InputFormatError
from drift.models import pair_context
from drift.presets import apply_preset, preset_values
from drift.progress import make_progress
from drift.runtime.checks import preflight_out
from drift.runtime.distributed import SINGLE, Dist, PartPlan, plan_parts, rank_device, session, write_parts
from drift.runtime.loading import load_pair, set_threads
from drift.runtime.padding import pad_id_for
from drift.runtime.prompts import PromptStyle, check_context, render_checked, render_prompt
from drift.schema import ROLLOUT_SCHEMA, make_prompt_key, token_schema
from drift.store import DatasetWriter, DriftDataset, open_dataset
from drift.verifiers import get_verifier

__all__ = ["build_tables", "collect", "collect_from_config", "score", "score_from_config"]

log = logging.getLogger(__name__)

# Settings that do not change the rows (may differ on resume).
# placement knobs that cannot change a number (device maps stay identity, as --device does)
_NOT_IDENTITY = ("if_exists", "progress", "num_threads", "self_check", "max_batch_tokens", "max_memory",
                 "offload_folder")


@dataclass(frozen=True)
class _Models:
    student: Any
    teacher: Any
    tokenizer: Any
    pair: PairReport
    world: Any | None


def _identity(command: str, cfg: Any, models: _Models, inputs_hash: str) -> dict[str, Any]:
    from drift.models import model_identity, tokenizer_hash

    flat = config_to_dict(cfg)
    scoring = flat.pop("scoring", {})
    ident = {k: v for k, v in {**flat, **scoring}.items() if k not in _NOT_IDENTITY}
    ident.update(command=command, inputs=inputs_hash, tokenizer=tokenizer_hash(models.tokenizer),
                 student=model_identity(models.student).get("fingerprint"),
                 teacher=model_identity(models.teacher).get("fingerprint"))
    return ident


def _payload(command: str, cfg: Any, models: _Models, extra: dict[str, Any]) -> dict[str, Any]:
    from drift.models import model_identity, tokenizer_hash, vocab_hash

    return {
        "command": command, "config_type": type(cfg).__name__, "config": config_to_dict(cfg),
        "models": {"student": model_identity(models.student, getattr(cfg, "student", None) or None),
                   "teacher": model_identity(models.teacher, getattr(cfg, "teacher", None) or None)},
        "tokenizer": {"hash": tokenizer_hash(models.tokenizer), "vocab_hash": vocab_hash(models.tokenizer),
                      "source": getattr(cfg, "tokenizer", None) or getattr(cfg, "student", None),
                      "size": len(models.tokenizer),
                      "eos": models.tokenizer.eos_token, "chat_template": bool(
                          getattr(models.tokenizer, "chat_template", None))},
        "pair": models.pair.to_dict(), "world": models.world.to_dict() if models.world is not None else None,
        "drift_version": __version__, "git_sha": git_sha(), "torch_version": torch.__version__, **extra,
    }


def _metadata(cfg: Any, models: _Models, run_id: str, sampling: dict[str, Any] | None) -> dict[str, Any]:
    from drift.models import model_identity, tokenizer_hash, vocab_hash

    s = model_identity(models.student)
    t = model_identity(models.teacher)
    return {
        "estimator": "full", "support": "full", "k": cfg.scoring.topk, "teacher_source": "hf_forward",
        "score_temperature": cfg.scoring.score_temperature, "sampling": sampling,
        "temperature": sampling.get("temperature") if sampling else None,
        "k3_clamp": K3_CLAMP, "k3_max": K3_MAX, "run_id": run_id, "step": cfg.step,
        "student": {k: s[k] for k in ("source", "fingerprint", "revision")},
        "teacher": {k: t[k] for k in ("source", "fingerprint", "revision")},
        "tokenizer": tokenizer_hash(models.tokenizer), "vocab_hash": vocab_hash(models.tokenizer),
        "shared_vocab": models.pair.shared_vocab,
        "drift_version": __version__,
    }


def build_tables(rows: Sequence[dict[str, Any]], scores: Sequence[dict[str, np.ndarray]], *, step: int | None,
                 world: Any | None = None, tokenizer: Any | None = None) -> tuple[pa.Table, pa.Table]:
    """Turn rollout rows and their per-token scores into the rollouts and tokens arrow tables.

    ``step`` labels every row; None keeps each row's own ``step`` (an import of text dumps spanning steps).
    """
    rows = [r if r.get("prompt_key") else {**r, "prompt_key": make_prompt_key(r["run_id"], None,
                                                                              r["student_prompt_ids"])}
            for r in rows]
    steps = [int(r["step"]) if step is None else step for r in rows]
    rollouts = pa.Table.from_pylist([{**{c: r.get(c) for c in ROLLOUT_SCHEMA.names}, "step": s}
                                     for r, s in zip(rows, steps, strict=True)], schema=ROLLOUT_SCHEMA)
    if rows and "source_prompt" in rows[0]:
        rollouts = rollouts.append_column("source_prompt", pa.array([r.get("source_prompt") for r in rows],
                                                                    pa.string()))
    lengths = np.array([len(r["response_ids"]) for r in rows], dtype=np.int64)
    n = int(lengths.sum())

    def rep(key: str) -> list[Any]:
        return np.repeat(np.array([r[key] for r in rows], dtype=object), lengths).tolist()

    position = np.concatenate([np.arange(k, dtype=np.int32) for k in lengths]) if n else np.zeros(0, np.int32)
    response_len = np.repeat(lengths, lengths).astype(np.int32)
    cat = {k: (np.concatenate([s[k] for s in scores]) if n else np.zeros(0)) for k in scores[0]} if scores else {}
    token_id = np.concatenate([np.asarray(r["response_ids"], dtype=np.int32) for r in rows]) if n else \
        np.zeros(0, np.int32)
    cols: dict[str, Any] = {
        "run_id": rep("run_id"), "step": np.repeat(np.asarray(steps, dtype=np.int64), lengths),
        "prompt_id": rep("prompt_id"),
        "prompt_key": rep("prompt_key"),
        "sample_id": np.repeat([r["sample_id"] for r in rows], lengths).astype(np.int64),
        "position": position, "response_len": response_len,
        "rel_position": position / np.maximum(response_len, 1).astype(np.float64),
        "token_id": token_id,
    }
    for k in ("student_logprob", "teacher_logprob", "advantage", "k1", "k3", "kl_reverse", "kl_forward",
              "student_entropy", "teacher_entropy"):
        cols[k] = cat[k].astype(np.float32)
    cols["teacher_rank"] = cat["teacher_rank"].astype(np.int32)
    cols["teacher_top1"] = cat["teacher_rank"] == 0
    cols["argmax_agree"] = cat["student_argmax"] == cat["teacher_argmax"]
    cols["topk_overlap"] = cat["topk_overlap"].astype(np.float32)
    cols["teacher_argmax"] = cat["teacher_argmax"].astype(np.int32)
    cols["teacher_mass_student_topk"] = cat["teacher_mass_student_topk"].astype(np.float32)
    for k in ("prefix_logratio", "cum_abs_gap", "cum_abs_gap_frac", "student_prefix_logprob",
              "teacher_prefix_logprob"):
        cols[k] = cat[k].astype(np.float64)
    cols["finished"] = np.repeat([bool(r["finished"]) for r in rows], lengths)
    cols["truncated"] = np.repeat([bool(r["truncated"]) for r in rows], lengths)
    cols["reward"] = rep("reward")
    schema = token_schema(oracle=world is not None)
    if world is not None:
        oracle = [world.oracle_tokens(r["student_prompt_ids"], r["response_ids"], tokenizer) for r in rows]
        ok = [world.oracle_prefix_ok(r["student_prompt_ids"], r["response_ids"], tokenizer) for r in rows]
        oracle_n = np.concatenate(oracle).astype(np.int32) if n else np.zeros(0, np.int32)
        cols["oracle_token"] = oracle_n
        cols["oracle_teacher_correct"] = cat["teacher_argmax"] == oracle_n
        cols["oracle_student_correct"] = token_id == oracle_n
        cols["oracle_prefix_ok"] = np.concatenate(ok).astype(bool) if n else np.zeros(0, bool)
    tokens = pa.Table.from_pydict({name: cols[name] for name in schema.names}, schema=schema)
    return rollouts, tokens


class _PartScorer:
    """Scores the rollout rows of one part into its tables (shared by collect and score)."""

    def __init__(self, models: _Models, opts: ScoringOptions, step: int | None, bar: Any) -> None:
        self.models, self.opts, self.step, self.bar = models, opts, step, bar

    def items(self, rows: Sequence[dict[str, Any]]) -> list[ScoringItem]:
        return [ScoringItem(r["student_prompt_ids"], r["teacher_prompt_ids"], r["response_ids"]) for r in rows]

    def self_check(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        items = [it for it in self.items(rows) if len(it.response_ids) > 1][:8]
        report = alignment_self_check(self.models.student, self.models.teacher, items,
                                      vocab_size=self.models.pair.shared_vocab, chunk_size=self.opts.chunk_size,
                                      vocab_chunk=self.opts.vocab_chunk,
                                      topk=self.opts.topk, max_batch_tokens=self.opts.max_batch_tokens)
        log.debug("alignment self-check passed: self max KL %.2g, shifted mean |A| %.3g, offsets %s",
                 report.self_max_kl, report.shifted_mean_abs_advantage, report.offset_teacher_logprob)
        return report.to_dict()

    def tables(self, rows: list[dict[str, Any]]) -> dict[str, pa.Table]:
        scores = score_items(self.models.student, self.models.teacher, self.items(rows),
                             chunk_size=self.opts.chunk_size, vocab_chunk=self.opts.vocab_chunk, topk=self.opts.topk,
                             max_batch_tokens=self.opts.max_batch_tokens, vocab_size=self.models.pair.shared_vocab,
                             temperature=self.opts.score_temperature, on_tokens=self.bar.update)
        rollouts, tokens = build_tables(rows, scores, step=self.step, world=self.models.world,
                                        tokenizer=self.models.tokenizer)
        return {"rollouts": rollouts, "tokens": tokens}


def _run_parts(parts: list[Any], make_rows: Any, scorer: _PartScorer, writer: DatasetWriter | None, plan: PartPlan,
               dist: Dist, self_check: bool, bars: Sequence[Any] = ()) -> DriftDataset:
    """Generate (via ``make_rows(i, part)``), score and write this rank's pending parts; close the manifest.

    Rank 0 (the only rank with a ``writer``) records every rank's parts and closes the manifest; the self-check
    runs on rank 0's first part (the first pending part, as in a one-process run).
    """
    info: dict[str, Any] = {}
    all_bars = [*bars, scorer.bar]

    def make(index: int) -> dict[str, pa.Table]:
        for bar in all_bars:
            bar.set_postfix_str(f"part {index + 1}/{len(parts)}")
        rows = make_rows(index, parts[index])
        if self_check and dist.is_main and "self_check" not in info:
            info["self_check"] = scorer.self_check(rows)
        return scorer.tables(rows)

    try:
        write_parts(dist, plan, writer, make)
    except BaseException:
        if writer is not None:
            writer.close("interrupted", **info)
        for bar in all_bars:
            bar.close()
        raise
    for bar in all_bars:
        bar.close()
    with dist.together("closing the manifest (rank 0)"):
        if writer is not None:
            writer.close("complete", **info)
    return open_dataset(plan.root)


def _render_all(prompts: Sequence[PromptRecord], tokenizer: Any, style: PromptStyle, context: int | None,
                budget: int, truncate: str) -> list[dict[str, Any]]:
    """Render every prompt for both models and check it against the context, before anything is written."""
    return [{"record": rp.record, "prompt_id": rp.record.id, "prompt": rp.student_text,
             "teacher_prompt": rp.teacher_text, "student_prompt_ids": rp.student_ids,
             "teacher_prompt_ids": rp.teacher_ids, "answer": rp.record.answer, "source_prompt": rp.record.source_json()}
            for rp in render_checked(prompts, tokenizer, style, context=context, budget=budget, truncate=truncate)]


def rendered_example(row: dict[str, Any]) -> dict[str, Any]:
    """What each model saw for one rollout (recorded in ``config.json`` and printed by the CLI)."""
    return {"prompt_id": row["prompt_id"], "student": row["prompt"],
            "teacher": row["teacher_prompt"] if row.get("teacher_prompt") is not None else row["prompt"],
            "privileged": row.get("teacher_prompt") is not None}


def collect(student: Any, teacher: Any, tokenizer: Any, prompts: Sequence[PromptRecord], config: CollectConfig, *,
            teacher_tokenizer: Any | None = None, world: Any | None = None,
            own_tokenizers: dict[str, Any] | None = None, dist: Dist | None = None) -> DriftDataset:
    """Sample rollouts from ``student`` for ``prompts`` and score them with both models into ``config.out``.

    Args:
        student: student causal LM (eval mode). Sampling and scoring use its device.
        teacher: teacher causal LM on the same device (may be the student itself for a self-teacher).
        tokenizer: the student's tokenizer (prompts are rendered with it).
        prompts: prompt records (see :func:`drift.collect.prompts.read_prompts`).
        config: the resolved :class:`CollectConfig` (paths in it are only recorded, not loaded).
        teacher_tokenizer: the teacher's tokenizer, checked against the student's (default: same).
        world: an oracle world adding ``oracle_*`` columns and the world verifier.
        own_tokenizers: each model's own tokenizer when ``tokenizer`` is an override (see
            :func:`~drift.collect.guards.check_pair`).
        dist: this process's rank in a sharded run (:func:`drift.runtime.distributed.session`; every rank calls
            ``collect`` with the same arguments and makes its share of the parts). Default: a plain run.

    Returns:
        The written dataset, opened (on every rank).

    Raises:
        PromptTooLongError, ChatTemplateError, InputFormatError: a prompt cannot be rendered or does not fit the
            context; raised before anything is written.
        DistributedError: another rank failed (the parts finished so far are kept).
    """
    dist = dist or SINGLE
    set_threads(config.scoring.num_threads)
    if config.max_prompts is not None:
        prompts = list(prompts)[: config.max_prompts]
    if not prompts:
        raise InputFormatError("no prompts to collect from; give a prompt file with at least one prompt")
    pair = check_pair(student, teacher, tokenizer, teacher_tokenizer, own_tokenizers=own_tokenizers)
    models = _Models(student, teacher, tokenizer, pair, world)
    run_id = config.run_id or Path(config.out).name
    verifier = get_verifier(config.verifier, world=world, tokenizer=tokenizer)
    stops = stop_token_ids(tokenizer, student)
    pad_id = pad_id_for(tokenizer, stops)
    style = PromptStyle(config.chat_template, config.student_system_prompt, config.teacher_system_prompt)
    rendered = _render_all(prompts, tokenizer, style, pair_context(student, teacher), config.max_new_tokens,
                           config.truncate_prompt)
    per_part = max(1, config.part_size // config.samples_per_prompt)
    parts = [rendered[i: i + per_part] for i in range(0, len(rendered), per_part)]
    inputs_hash = hashlib.sha256(json.dumps([[p.id, p.source_json(), p.answer] for p in prompts]).encode()
                                 ).hexdigest()[:16]
    sampling = {"temperature": config.temperature, "top_p": config.top_p, "top_k": 0,
                "max_new_tokens": config.max_new_tokens, "samples_per_prompt": config.samples_per_prompt,
                "seed": config.seed, "stop_ids": stops, "pad_id": pad_id}
    writer, plan = plan_parts(dist, lambda: DatasetWriter(
        config.out, if_exists=config.if_exists,  # type: ignore[arg-type]
        config=_payload("collect", config, models, {"sampling": sampling,
                                                   "rendered_example": rendered_example(rendered[0])}),
        n_parts=len(parts), metadata=_metadata(config, models, run_id, sampling),
        identity=_identity("collect", config, models, inputs_hash)))
    n_rollouts = sum(len(parts[i]) for i in plan.share(dist)) * config.samples_per_prompt
    shown = config.scoring.progress and dist.is_main  # rank 0's bars stand for every rank's
    gen_bar = make_progress(n_rollouts * config.max_new_tokens, "collect: sample", enabled=shown)
    bar = make_progress(None, "collect: score", enabled=shown)

    def unused_budget(n: int) -> None:  # rows that stopped early: shrink the total so the ETA stays honest
        gen_bar.total = max(gen_bar.n, (gen_bar.total or 0) - n)

    def make_rows(index: int, base_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        prompt_rows = [r for r in base_rows for _ in range(config.samples_per_prompt)]
        gens = sample_responses(student, [r["student_prompt_ids"] for r in prompt_rows], stop_ids=stops,
                                pad_id=pad_id, max_new_tokens=config.max_new_tokens,
                                temperature=config.temperature, top_p=config.top_p,
                                batch_size=config.gen_batch_size, seed=derive_seed(config.seed, index),
                                on_tokens=gen_bar.update, on_early_stop=unused_budget)
        bar.total = (bar.total or 0) + sum(len(g.response_ids) for g in gens)
        rows = []
        for j, (base, gen) in enumerate(zip(prompt_rows, gens, strict=True)):
            rec: PromptRecord = base["record"]
            text = tokenizer.decode(gen.response_ids, skip_special_tokens=False)
            reward = verifier(rec, text, base["student_prompt_ids"], gen.response_ids)
            rows.append({**{k: v for k, v in base.items() if k != "record"}, "run_id": run_id,
                         "prompt_key": make_prompt_key(run_id, rec.id if rec.id_given else None,
                                                       base["student_prompt_ids"]),
                         "sample_id": j % config.samples_per_prompt, "response_ids": gen.response_ids,
                         "response_text": text, "response_len": len(gen.response_ids), "finished": gen.finished,
                         "truncated": gen.truncated, "reward": reward})
        return rows

    return _run_parts(parts, make_rows, _PartScorer(models, config.scoring, config.step, bar), writer, plan, dist,
                      config.scoring.self_check, bars=[gen_bar])


def score(student: Any, teacher: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], config: ScoreConfig, *,
          teacher_tokenizer: Any | None = None, world: Any | None = None,
          own_tokenizers: dict[str, Any] | None = None, recorded: tuple[str, Any] | None = None,
          source: dict[str, Any] | None = None, row_steps: bool = False, dist: Dist | None = None) -> DriftDataset:
    """Score existing rollout rows (rollouts-table dicts) with ``student`` and ``teacher`` into ``config.out``.

    Rows need ``prompt_id, sample_id, student_prompt_ids, teacher_prompt_ids, response_ids``; other rollout
    columns are carried over (``run_id`` is replaced when ``config.run_id`` is set). Check stored ids against the
    scoring tokenizer first (:func:`~drift.collect.guards.check_stored_tokenizer`; :func:`score_from_config`
    does).

    Args:
        recorded: ``(command, config)`` recorded in ``config.json`` and the resume identity instead of
            ``("score", config)`` (``drift import completions`` records its ``ImportConfig``).
        source: where the rows came from (format, files, rules), recorded as ``config.json``'s ``source`` block;
            its ``format`` becomes the parquet metadata ``source_format``.
        row_steps: every row carries its own ``step`` (labels its token rows) instead of ``config.step``.
        dist: this process's rank in a sharded run (as in :func:`collect`). Default: a plain run.

    Raises:
        PromptTooLongError: a prompt plus its response exceeds the models' context (before anything is written).
        InputFormatError: no rows, or ``row_steps`` with a row lacking an integer ``step``.
        DistributedError: another rank failed (the parts finished so far are kept).
    """
    dist = dist or SINGLE
    set_threads(config.scoring.num_threads)
    pair = check_pair(student, teacher, tokenizer, teacher_tokenizer, own_tokenizers=own_tokenizers)
    models = _Models(student, teacher, tokenizer, pair, world)
    rows = [dict(r) for r in rows]
    if not rows:
        raise InputFormatError("no rollouts to score")
    if row_steps and not all(isinstance(r.get("step"), int) and not isinstance(r["step"], bool) for r in rows):
        raise InputFormatError("row_steps needs an integer 'step' in every rollout row")
    command, recorded_cfg = recorded or ("score", config)
    default_run = config.run_id or Path(config.out).name
    for r in rows:
        r["run_id"] = config.run_id or r.get("run_id") or default_run
        r.setdefault("response_len", len(r["response_ids"]))
        if not r.get("prompt_key"):  # kept from a drift dataset; else the user's id, else the prompt's ids
            given = r.pop("user_prompt_id") if "user_prompt_id" in r else str(r["prompt_id"])
            r["prompt_key"] = make_prompt_key(r["run_id"], given, r["student_prompt_ids"])
    if config.teacher_system_prompt:
        rows = [_rerender_teacher(r, tokenizer, config) for r in rows]
    context = pair_context(student, teacher)
    for r in rows:
        n = len(r["response_ids"])
        for side in ("student", "teacher"):
            check_context(r[f"{side}_prompt_ids"], n, context, budget_name="its response of",
                          what=f"rollout {r['prompt_id']!r}/{r['sample_id']!r} ({side} prompt + response)",
                          fix="these models cannot score it in one pass; drop the rollout or score it with "
                              "models of a longer context.")
    parts = [rows[i: i + config.part_size] for i in range(0, len(rows), config.part_size)]
    inputs_hash = hashlib.sha256(json.dumps(
        [[r["prompt_id"], r["sample_id"], list(r["response_ids"]), list(r["teacher_prompt_ids"]),
          *([r["step"]] if row_steps else [])] for r in rows]
    ).encode()).hexdigest()[:16]
    run_id = rows[0]["run_id"]
    example = {"prompt_id": rows[0]["prompt_id"], "prompt": rows[0].get("prompt"),
               "teacher_prompt": rows[0].get("teacher_prompt")}
    metadata = _metadata(config, models, run_id, None)
    extra: dict[str, Any] = {"rendered_example": rendered_example(example)}
    if row_steps:
        metadata["step"] = None  # per row
    if source is not None:
        extra["source"] = source
        metadata["source_format"] = source.get("format")
    writer, plan = plan_parts(dist, lambda: DatasetWriter(
        config.out, if_exists=config.if_exists,  # type: ignore[arg-type]
        config=_payload(command, recorded_cfg, models, extra), n_parts=len(parts), metadata=metadata,
        identity=_identity(command, recorded_cfg, models, inputs_hash)))
    bar = make_progress(sum(len(r["response_ids"]) for i in plan.share(dist) for r in parts[i]), "score: tokens",
                        enabled=config.scoring.progress and dist.is_main)
    scorer = _PartScorer(models, config.scoring, None if row_steps else config.step, bar)
    return _run_parts(parts, lambda i, part: part, scorer, writer, plan, dist, config.scoring.self_check)


def _rerender_teacher(row: dict[str, Any], tokenizer: Any, config: ScoreConfig) -> dict[str, Any]:
    src = row.get("source_prompt")
    if not src:
        raise InputFormatError("--teacher-system-prompt needs the original prompts (rollouts column "
                               "'source_prompt'), which this input lacks; give teacher_prompt per row instead.")
    value = json.loads(src)
    prompt = value if isinstance(value, str) else tuple(value)
    t_text, t_ids = render_prompt(tokenizer, prompt, chat=config.chat_template,
                                  system_prompt=config.teacher_system_prompt)
    return {**row, "teacher_prompt": t_text, "teacher_prompt_ids": t_ids}


def _load(config: CollectConfig | ScoreConfig, dist: Dist) -> Any:
    """:func:`load_pair` on every rank (``cuda:LOCAL_RANK`` under ``--device auto``); a failure stops them all."""
    with dist.together("loading the models"):
        return load_pair(config.student, config.teacher, tokenizer=config.tokenizer,
                         device=rank_device(config.scoring.device, dist), dtype=config.scoring.dtype,
                         num_threads=config.scoring.num_threads, world=config.world, **config.scoring.placement())


def collect_from_config(config: CollectConfig) -> DriftDataset:
    """Load models, tokenizer, prompts and world from the paths in ``config`` and run :func:`collect`.

    The prompt file and the output folder are checked before any model is loaded. Under ``torchrun`` every rank
    loads the models and makes its share of the parts (:mod:`drift.runtime.distributed`).
    """
    if config.preset:
        config = apply_preset(config, preset_values(config.preset))
    prompts = read_prompts(config.prompts, limit=config.max_prompts)
    preflight_out(config.out, config.if_exists)
    with session(config.scoring.device) as dist:
        mp = _load(config, dist)
        return collect(mp.student, mp.teacher, mp.tokenizer, prompts, config,
                       teacher_tokenizer=mp.teacher_tokenizer, world=mp.world,
                       own_tokenizers=mp.own_tokenizers if config.tokenizer else None, dist=dist)


def score_from_config(config: ScoreConfig) -> DriftDataset:
    """Load models and the rollouts input named in ``config`` and run :func:`score` (sharded under torchrun)."""
    from drift.collect.inputs import read_rollouts

    preflight_out(config.out, config.if_exists)
    with session(config.scoring.device) as dist:
        mp = _load(config, dist)
        rows = read_rollouts(config.rollouts, mp.tokenizer, chat=config.chat_template,
                             stop_ids=stop_token_ids(mp.tokenizer, mp.student))
        return score(mp.student, mp.teacher, mp.tokenizer, rows, config, teacher_tokenizer=mp.teacher_tokenizer,
                     world=mp.world, own_tokenizers=mp.own_tokenizers if config.tokenizer else None, dist=dist)
