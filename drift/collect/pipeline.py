"""The collect and score pipelines: prompts → rollouts → per-token scores → parquet parts.

``collect`` samples rollouts from the student and scores them; ``score`` re-scores rollouts that already exist
(a drift dataset, or a jsonl from elsewhere) — e.g. with a later student checkpoint, labelled by ``step``. Both take
already-built model and tokenizer objects, so tests can pass tiny random models; ``collect_from_config`` /
``score_from_config`` load them from paths for the CLI.

Work is split into parts (``part_size`` rollouts). A part is generated, scored and written atomically before the
next begins; with ``if_exists="resume"`` the parts already in the manifest are skipped and the rest are
regenerated from the same seeds, so the finished dataset equals an uninterrupted run.
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
from tqdm.auto import tqdm

from drift import __version__
from drift.collect.config import CollectConfig, ScoreConfig, ScoringOptions
from drift.collect.guards import PairReport, alignment_self_check, check_pair
from drift.collect.metrics import K3_CLAMP, K3_MAX
from drift.collect.prompts import PromptRecord, read_prompts, render_prompt, teacher_view
from drift.collect.rollouts import derive_seed, sample_responses, stop_token_ids
from drift.collect.scoring import ScoringItem, score_items
from drift.config import config_to_dict, git_sha
from drift.schema import ROLLOUT_SCHEMA, token_schema
from drift.store import DatasetWriter, DriftDataset, open_dataset
from drift.verifiers import get_verifier

__all__ = ["build_tables", "collect", "collect_from_config", "score", "score_from_config"]

log = logging.getLogger(__name__)

# Settings that do not change the rows (may differ on resume).
_NOT_IDENTITY = ("if_exists", "progress", "num_threads", "self_check", "max_batch_tokens")


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
    from drift.models import model_identity, tokenizer_hash

    return {
        "command": command, "config_type": type(cfg).__name__, "config": config_to_dict(cfg),
        "models": {"student": model_identity(models.student, getattr(cfg, "student", None) or None),
                   "teacher": model_identity(models.teacher, getattr(cfg, "teacher", None) or None)},
        "tokenizer": {"hash": tokenizer_hash(models.tokenizer), "size": len(models.tokenizer),
                      "eos": models.tokenizer.eos_token, "chat_template": bool(
                          getattr(models.tokenizer, "chat_template", None))},
        "pair": models.pair.to_dict(), "world": models.world.to_dict() if models.world is not None else None,
        "drift_version": __version__, "git_sha": git_sha(), "torch_version": torch.__version__, **extra,
    }


def _metadata(cfg: Any, models: _Models, run_id: str, sampling: dict[str, Any] | None) -> dict[str, Any]:
    from drift.models import model_identity, tokenizer_hash

    s = model_identity(models.student)
    t = model_identity(models.teacher)
    return {
        "estimator": "full", "support": "full", "k": cfg.scoring.topk, "teacher_source": "hf_forward",
        "score_temperature": cfg.scoring.score_temperature, "sampling": sampling,
        "temperature": sampling.get("temperature") if sampling else None,
        "k3_clamp": K3_CLAMP, "k3_max": K3_MAX, "run_id": run_id, "step": cfg.step,
        "student": {k: s[k] for k in ("source", "fingerprint", "revision")},
        "teacher": {k: t[k] for k in ("source", "fingerprint", "revision")},
        "tokenizer": tokenizer_hash(models.tokenizer), "shared_vocab": models.pair.shared_vocab,
        "drift_version": __version__,
    }


def build_tables(rows: Sequence[dict[str, Any]], scores: Sequence[dict[str, np.ndarray]], *, step: int,
                 world: Any | None = None, tokenizer: Any | None = None) -> tuple[pa.Table, pa.Table]:
    """Turn rollout rows and their per-token scores into the rollouts and tokens arrow tables."""
    rollouts = pa.Table.from_pylist([{**{c: r.get(c) for c in ROLLOUT_SCHEMA.names}, "step": step} for r in rows],
                                    schema=ROLLOUT_SCHEMA)
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
        "run_id": rep("run_id"), "step": np.full(n, step, dtype=np.int64), "prompt_id": rep("prompt_id"),
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
    tokens = tokens.append_column("teacher_argmax", pa.array(cat["teacher_argmax"].astype(np.int32)))
    return rollouts, tokens


class _PartWriter:
    """Scores rollout rows of one part and writes them (shared by collect and score)."""

    def __init__(self, models: _Models, opts: ScoringOptions, writer: DatasetWriter, step: int,
                 bar: tqdm) -> None:
        self.models, self.opts, self.writer, self.step, self.bar = models, opts, writer, step, bar

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

    def write(self, index: int, rows: list[dict[str, Any]]) -> None:
        scores = score_items(self.models.student, self.models.teacher, self.items(rows),
                             chunk_size=self.opts.chunk_size, vocab_chunk=self.opts.vocab_chunk, topk=self.opts.topk,
                             max_batch_tokens=self.opts.max_batch_tokens, vocab_size=self.models.pair.shared_vocab,
                             temperature=self.opts.score_temperature, on_batch=self.bar.update)
        rollouts, tokens = build_tables(rows, scores, step=self.step, world=self.models.world,
                                        tokenizer=self.models.tokenizer)
        self.writer.write_part(index, rollouts, tokens)


def _run_parts(parts: list[Any], make_rows: Any, part_writer: _PartWriter, writer: DatasetWriter,
               self_check: bool) -> DriftDataset:
    """Generate (via ``make_rows(i, part)``), score and write every pending part; close the manifest."""
    pending = [i for i in range(len(parts)) if i not in writer.completed_parts]
    info: dict[str, Any] = {}
    try:
        for n_done, i in enumerate(pending):
            part_writer.bar.set_postfix_str(f"part {i + 1}/{len(parts)}")
            rows = make_rows(i, parts[i])
            if self_check and n_done == 0:
                info["self_check"] = part_writer.self_check(rows)
            part_writer.write(i, rows)
    except BaseException:
        writer.close("interrupted", **info)
        part_writer.bar.close()
        raise
    part_writer.bar.close()
    writer.close("complete", **info)
    return open_dataset(writer.root)


def _setup_threads(opts: ScoringOptions) -> None:
    if opts.num_threads is not None:
        torch.set_num_threads(opts.num_threads)


def collect(student: Any, teacher: Any, tokenizer: Any, prompts: Sequence[PromptRecord], config: CollectConfig, *,
            teacher_tokenizer: Any | None = None, world: Any | None = None) -> DriftDataset:
    """Sample rollouts from ``student`` for ``prompts`` and score them with both models into ``config.out``.

    Args:
        student: student causal LM (eval mode). Sampling and scoring use its device.
        teacher: teacher causal LM on the same device (may be the student itself for a self-teacher).
        tokenizer: the student's tokenizer (prompts are rendered with it).
        prompts: prompt records (see :func:`drift.collect.prompts.read_prompts`).
        config: the resolved :class:`CollectConfig` (paths in it are only recorded, not loaded).
        teacher_tokenizer: the teacher's tokenizer, checked against the student's (default: same).
        world: an oracle world adding ``oracle_*`` columns and the world verifier.

    Returns:
        The written dataset, opened.
    """
    _setup_threads(config.scoring)
    if config.max_prompts is not None:
        prompts = list(prompts)[: config.max_prompts]
    pair = check_pair(student, teacher, tokenizer, teacher_tokenizer)
    models = _Models(student, teacher, tokenizer, pair, world)
    run_id = config.run_id or Path(config.out).name
    verifier = get_verifier(config.verifier, world=world, tokenizer=tokenizer)
    stops = stop_token_ids(tokenizer, student)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    per_part = max(1, config.part_size // config.samples_per_prompt)
    parts = [list(prompts[i: i + per_part]) for i in range(0, len(prompts), per_part)]
    inputs_hash = hashlib.sha256(json.dumps([[p.id, p.source_json(), p.answer] for p in prompts]).encode()
                                 ).hexdigest()[:16]
    sampling = {"temperature": config.temperature, "top_p": config.top_p, "top_k": 0,
                "max_new_tokens": config.max_new_tokens, "samples_per_prompt": config.samples_per_prompt,
                "seed": config.seed, "stop_ids": stops, "pad_id": pad_id}
    writer = DatasetWriter(config.out, if_exists=config.if_exists,  # type: ignore[arg-type]
                           config=_payload("collect", config, models, {"sampling": sampling}),
                           n_parts=len(parts), metadata=_metadata(config, models, run_id, sampling),
                           identity=_identity("collect", config, models, inputs_hash))
    n_pending = sum(len(parts[i]) for i in range(len(parts)) if i not in writer.completed_parts)
    bar = tqdm(total=n_pending * config.samples_per_prompt, desc="collect", unit="rollout",
               disable=not config.scoring.progress)

    def make_rows(index: int, records: list[PromptRecord]) -> list[dict[str, Any]]:
        rendered = [_render(rec, tokenizer, config.teacher_system_prompt, config.chat_template) for rec in records]
        prompt_rows = [r for r in rendered for _ in range(config.samples_per_prompt)]
        gens = sample_responses(student, [r["student_prompt_ids"] for r in prompt_rows], stop_ids=stops,
                                pad_id=pad_id, max_new_tokens=config.max_new_tokens,
                                temperature=config.temperature, top_p=config.top_p,
                                batch_size=config.gen_batch_size, seed=derive_seed(config.seed, index))
        rows = []
        for j, (base, gen) in enumerate(zip(prompt_rows, gens, strict=True)):
            rec: PromptRecord = base["record"]
            text = tokenizer.decode(gen.response_ids, skip_special_tokens=False)
            reward = verifier(rec, text, base["student_prompt_ids"], gen.response_ids)
            rows.append({**{k: v for k, v in base.items() if k != "record"}, "run_id": run_id,
                         "sample_id": j % config.samples_per_prompt, "response_ids": gen.response_ids,
                         "response_text": text, "response_len": len(gen.response_ids), "finished": gen.finished,
                         "truncated": gen.truncated, "reward": reward})
        return rows

    return _run_parts(parts, make_rows, _PartWriter(models, config.scoring, writer, config.step, bar), writer,
                      config.scoring.self_check)


def _render(rec: PromptRecord, tokenizer: Any, system_prompt: str | None, chat: str) -> dict[str, Any]:
    s_text, s_ids = render_prompt(tokenizer, rec.prompt, chat=chat)  # type: ignore[arg-type]
    t_prompt = teacher_view(rec, system_prompt)
    if t_prompt is None:
        t_text, t_ids = None, s_ids
    else:
        t_text, t_ids = render_prompt(tokenizer, t_prompt, chat=chat)  # type: ignore[arg-type]
    return {"record": rec, "prompt_id": rec.id, "prompt": s_text, "teacher_prompt": t_text,
            "student_prompt_ids": s_ids, "teacher_prompt_ids": t_ids, "answer": rec.answer,
            "source_prompt": rec.source_json()}


def score(student: Any, teacher: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], config: ScoreConfig, *,
          teacher_tokenizer: Any | None = None, world: Any | None = None) -> DriftDataset:
    """Score existing rollout rows (rollouts-table dicts) with ``student`` and ``teacher`` into ``config.out``.

    Rows need ``prompt_id, sample_id, student_prompt_ids, teacher_prompt_ids, response_ids``; other rollout
    columns are carried over (``run_id`` is replaced when ``config.run_id`` is set).
    """
    _setup_threads(config.scoring)
    pair = check_pair(student, teacher, tokenizer, teacher_tokenizer)
    models = _Models(student, teacher, tokenizer, pair, world)
    rows = [dict(r) for r in rows]
    default_run = config.run_id or Path(config.out).name
    for r in rows:
        r["run_id"] = config.run_id or r.get("run_id") or default_run
        r.setdefault("response_len", len(r["response_ids"]))
    if config.teacher_system_prompt:
        rows = [_rerender_teacher(r, tokenizer, config) for r in rows]
    parts = [rows[i: i + config.part_size] for i in range(0, len(rows), config.part_size)]
    inputs_hash = hashlib.sha256(json.dumps(
        [[r["prompt_id"], r["sample_id"], list(r["response_ids"]), list(r["teacher_prompt_ids"])] for r in rows]
    ).encode()).hexdigest()[:16]
    run_id = rows[0]["run_id"] if rows else default_run
    writer = DatasetWriter(config.out, if_exists=config.if_exists,  # type: ignore[arg-type]
                           config=_payload("score", config, models, {}), n_parts=len(parts),
                           metadata=_metadata(config, models, run_id, None),
                           identity=_identity("score", config, models, inputs_hash))
    n_pending = sum(len(parts[i]) for i in range(len(parts)) if i not in writer.completed_parts)
    bar = tqdm(total=n_pending, desc="score", unit="rollout", disable=not config.scoring.progress)
    return _run_parts(parts, lambda i, part: part, _PartWriter(models, config.scoring, writer, config.step, bar),
                      writer, config.scoring.self_check)


def _rerender_teacher(row: dict[str, Any], tokenizer: Any, config: ScoreConfig) -> dict[str, Any]:
    from drift.errors import InputFormatError

    src = row.get("source_prompt")
    if not src:
        raise InputFormatError("--teacher-system-prompt needs the original prompts (rollouts column "
                               "'source_prompt'), which this input lacks; give teacher_prompt per row instead.")
    value = json.loads(src)
    prompt = value if isinstance(value, str) else tuple(value)
    rec = PromptRecord(id=str(row["prompt_id"]), prompt=prompt)
    t_text, t_ids = render_prompt(tokenizer, teacher_view(rec, config.teacher_system_prompt),  # type: ignore[arg-type]
                                  chat=config.chat_template)  # type: ignore[arg-type]
    return {**row, "teacher_prompt": t_text, "teacher_prompt_ids": t_ids}


def _load_pair(student_path: str, teacher_path: str, tokenizer_path: str | None, opts: ScoringOptions,
               world_path: str | None) -> tuple[Any, Any, Any, Any, Any]:
    from drift.models import load_model, load_tokenizer
    from drift.worlds import load_world

    _setup_threads(opts)
    tokenizer = load_tokenizer(tokenizer_path or student_path)
    teacher_tok = None if tokenizer_path else load_tokenizer(teacher_path)
    student = load_model(student_path, device=opts.device, dtype=opts.dtype)
    teacher = student if teacher_path == student_path else load_model(teacher_path, device=opts.device,
                                                                       dtype=opts.dtype)
    world = load_world(world_path) if world_path else None
    return student, teacher, tokenizer, teacher_tok, world


def collect_from_config(config: CollectConfig) -> DriftDataset:
    """Load models, tokenizer, prompts and world from the paths in ``config`` and run :func:`collect`."""
    student, teacher, tok, teacher_tok, world = _load_pair(config.student, config.teacher, config.tokenizer,
                                                           config.scoring, config.world)
    prompts = read_prompts(config.prompts, limit=config.max_prompts)
    return collect(student, teacher, tok, prompts, config, teacher_tokenizer=teacher_tok, world=world)


def score_from_config(config: ScoreConfig) -> DriftDataset:
    """Load models and the rollouts input named in ``config`` and run :func:`score`."""
    from drift.collect.inputs import read_rollouts

    student, teacher, tok, teacher_tok, world = _load_pair(config.student, config.teacher, config.tokenizer,
                                                           config.scoring, config.world)
    rows = read_rollouts(config.rollouts, tok, chat=config.chat_template, stop_ids=stop_token_ids(tok, student))
    return score(student, teacher, tok, rows, config, teacher_tokenizer=teacher_tok, world=world)
