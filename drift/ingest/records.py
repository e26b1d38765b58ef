"""One imported rollout, and how a list of them becomes drift's rollouts and tokens tables.

Every reader (:mod:`drift.ingest.slime`, ``nemo_rl``, ``tokens``, ``vllm``, ...) turns its source into
:class:`ImportedRollout` objects: token ids plus whatever per-token log-probs the source really holds. Nothing is
invented: a column the source cannot give is absent from the written tables, never zero. The teacher-dependent
columns (advantage, k1, k3, S_t, C_t, C_t/C_T, prefix log-likelihoods) are always *recomputed* from the two
log-prob columns by :func:`drift.collect.scoring.derived_metrics`, the same code ``drift collect`` uses, so an
imported dataset's signs and conventions are drift's whatever the source's were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from drift.errors import InputFormatError
from drift.schema import IMPORT_TOKEN_COLUMNS, ROLLOUT_SCHEMA, TOKEN_COLUMNS, make_prompt_key

__all__ = ["ImportedRollout", "build_import_tables", "check_lengths", "topk_argmax"]


@dataclass
class ImportedRollout:
    """One rollout as a source holds it. Arrays are response-long (one entry per response token).

    Attributes:
        prompt_ids: the prompt's token ids (template tokens included, as the source fed them).
        response_ids: the response's token ids (EOS included when the source kept it).
        student_logprob: log S(y_t) from the trainer-side forward (None: the source has none).
        teacher_logprob: log T(y_t) (None: the source has none, e.g. NeMo RL without pure-distillation advantages).
        rollout_logprob: log-prob of y_t under the sampler (vLLM/SGLang), if dumped.
        step: the training step the rollout was scored at.
        prompt_id: the source's prompt id; None when it has none (the prompt key is then a hash of prompt_ids).
        sample_id: index of the rollout among its prompt's rollouts at this step (None: order of appearance).
        loss_mask: whether the source trained on each response token (None: all).
        reward, finished, truncated: rollout-level facts, when known.
        prompt_text, response_text: the text, when the source holds it (else decoded with the tokenizer, if any).
        teacher_id, teacher_revision: which teacher scored this rollout.
        teacher_rank: 0-based rank of y_t under the teacher (top-k support), -1 where unknown.
        teacher_topk_ids, teacher_topk_logprobs: the teacher's top-k list per position (top-k support).
        source: where it came from, for error messages (``file:line``, ``file#sample``).
        teacher_prompt_ids: the teacher's prompt when it differs from ``prompt_ids`` (a teacher-only system
            prompt); None: the teacher saw ``prompt_ids``.
        teacher_prompt_text: the teacher's rendered prompt when it differs (None otherwise).
        answer: the reference answer, when the source holds one.
        prompt_key: the cluster key, used verbatim (e.g. kept from an existing drift dataset); None: made from
            ``prompt_id`` / ``prompt_ids`` by :func:`~drift.schema.make_prompt_key`.
    """

    prompt_ids: list[int]
    response_ids: list[int]
    student_logprob: np.ndarray | None = None
    teacher_logprob: np.ndarray | None = None
    rollout_logprob: np.ndarray | None = None
    step: int = 0
    prompt_id: str | None = None
    sample_id: int | None = None
    loss_mask: np.ndarray | None = None
    reward: float | None = None
    finished: bool | None = None
    truncated: bool | None = None
    prompt_text: str | None = None
    response_text: str | None = None
    teacher_id: str | None = None
    teacher_revision: str | None = None
    teacher_rank: np.ndarray | None = None
    teacher_topk_ids: list[list[int]] | None = None
    teacher_topk_logprobs: list[list[float]] | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    teacher_prompt_ids: list[int] | None = None
    teacher_prompt_text: str | None = None
    answer: str | None = None
    prompt_key: str | None = None


_PER_TOKEN = ("student_logprob", "teacher_logprob", "rollout_logprob", "loss_mask", "teacher_rank",
              "teacher_topk_ids", "teacher_topk_logprobs")


def check_lengths(r: ImportedRollout) -> list[str]:
    """Problems of one rollout: per-token arrays whose length is not the response's, non-finite log-probs."""
    n = len(r.response_ids)
    problems = []
    for name in _PER_TOKEN:
        v = getattr(r, name)
        if v is not None and len(v) != n:
            problems.append(f"{r.source}: {name} has {len(v)} entries but the response has {n} tokens")
    for name in ("student_logprob", "teacher_logprob", "rollout_logprob"):
        v = getattr(r, name)
        if v is not None and len(v) == n:
            a = np.asarray(v, dtype=np.float64)
            if not np.isfinite(a).all():
                problems.append(f"{r.source}: {name} holds {int((~np.isfinite(a)).sum())} non-finite value(s)")
            elif (a > 1e-3).any():
                problems.append(f"{r.source}: {name} holds positive values (max {a.max():.3g}); log-probs are <= 0 "
                                "(is this a KL or an advantage column instead?)")
    return problems


def _sample_ids(rows: Sequence[ImportedRollout], keys: Sequence[str], seen: dict[tuple[Any, ...], int]) -> list[int]:
    """Sample ids: the source's, else order of appearance per (step, prompt key), counted across chunks."""
    out = []
    for r, key in zip(rows, keys, strict=True):
        k = (r.step, key)
        if r.sample_id is not None:
            out.append(int(r.sample_id))
            seen[k] = max(seen.get(k, 0), int(r.sample_id) + 1)
        else:
            out.append(seen.get(k, 0))
            seen[k] = out[-1] + 1
    return out


def build_import_tables(rows: Sequence[ImportedRollout], *, run_id: str, support: str, tokenizer: Any = None,
                        seen: dict[tuple[Any, ...], int] | None = None) -> tuple[pa.Table, pa.Table]:
    """The rollouts and tokens tables of imported rollouts (every rollout must hold ``student_logprob``).

    Args:
        rows: the rollouts of one part.
        run_id: written to every row (and part of the prompt key).
        support: ``sampled`` or ``topk`` (topk adds teacher_rank, teacher_top1, the top-k lists and, where every
            position has a non-empty list, teacher_argmax: :func:`topk_argmax`).
        tokenizer: decodes prompt/response text the source does not hold (None: the text columns are null).
        seen: sample-id counters shared by the parts of one import (so order-of-appearance ids continue).

    Raises:
        InputFormatError: a rollout's arrays do not match its response, or rollouts disagree on which columns
            they hold.
    """
    from drift.collect.scoring import derived_metrics

    problems = [p for r in rows for p in check_lengths(r)]
    missing = [r.source for r in rows if r.student_logprob is None]
    if missing:
        problems.append(f"{len(missing)} rollout(s) hold no student log-probs, e.g. {missing[0]}")
    has = {name: [getattr(r, name) is not None for r in rows] for name in ("teacher_logprob", "rollout_logprob")}
    for name, flags in has.items():
        if any(flags) and not all(flags):
            problems.append(f"{name}: {sum(flags)} of {len(flags)} rollouts hold it, e.g. not "
                            f"{rows[flags.index(False)].source}; every rollout of an import must")
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise InputFormatError("imported rollouts are inconsistent:\n  - " + "\n  - ".join(shown))
    seen = {} if seen is None else seen
    keys = [r.prompt_key or make_prompt_key(run_id, r.prompt_id, r.prompt_ids) for r in rows]
    sample_ids = _sample_ids(rows, keys, seen)
    lengths = np.array([len(r.response_ids) for r in rows], dtype=np.int64)
    n = int(lengths.sum())

    def text(value: str | None, ids: Sequence[int]) -> str | None:
        if value is not None or tokenizer is None:
            return value
        return tokenizer.decode(list(ids), skip_special_tokens=False)

    pids = [str(r.prompt_id) if r.prompt_id is not None else k.rsplit("/", 1)[-1] for r, k in zip(rows, keys,
                                                                                                   strict=True)]
    finished = [bool(r.finished) if r.finished is not None else False for r in rows]
    truncated = [bool(r.truncated) if r.truncated is not None else False for r in rows]
    rewards = [None if r.reward is None else float(r.reward) for r in rows]
    # columnar (no per-token Python): list columns from one flat array and offsets, per-rollout values repeated
    # over their tokens by index (pyarrow take), never through object arrays
    rollouts = pa.Table.from_pydict({
        "run_id": [run_id] * len(rows), "step": [int(r.step) for r in rows], "prompt_id": pids,
        "sample_id": sample_ids, "prompt_key": keys, "prompt": [text(r.prompt_text, r.prompt_ids) for r in rows],
        "teacher_prompt": [r.teacher_prompt_text for r in rows],
        "student_prompt_ids": _int_lists([r.prompt_ids for r in rows]),
        "teacher_prompt_ids": _int_lists([r.prompt_ids if r.teacher_prompt_ids is None else r.teacher_prompt_ids
                                          for r in rows]),
        "response_ids": _int_lists([r.response_ids for r in rows]),
        "response_text": [text(r.response_text, r.response_ids) for r in rows], "response_len": lengths.tolist(),
        "finished": finished, "truncated": truncated, "reward": rewards, "answer": [r.answer for r in rows],
    }, schema=ROLLOUT_SCHEMA)
    index = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)

    def rep(values: Sequence[Any], type_: pa.DataType | None = None) -> pa.Array:
        return pa.array(list(values), type_ or pa.string()).take(index)

    def cat(name: str, dtype: Any) -> np.ndarray:
        return np.concatenate([np.asarray(getattr(r, name), dtype=dtype) for r in rows]) if n else \
            np.zeros(0, dtype)

    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = (np.arange(n, dtype=np.int64) - starts).astype(np.int32)
    response_len = np.repeat(lengths, lengths).astype(np.int32)
    cols: dict[str, Any] = {
        "run_id": rep([run_id] * len(rows)), "step": np.repeat(np.array([int(r.step) for r in rows], dtype=np.int64),
                                                               lengths),
        "prompt_id": rep(pids), "sample_id": np.repeat(np.array(sample_ids, dtype=np.int64), lengths),
        "prompt_key": rep(keys), "position": position, "response_len": response_len,
        "rel_position": position / np.maximum(response_len, 1).astype(np.float64),
        "token_id": cat("response_ids", np.int32),
        "student_logprob": cat("student_logprob", np.float32),
    }
    teacher = bool(rows) and all(has["teacher_logprob"])
    if teacher:
        cols["teacher_logprob"] = cat("teacher_logprob", np.float32)
        d = derived_metrics(cols["student_logprob"], cols["teacher_logprob"], lengths.tolist())
        for k in ("advantage", "k1", "k3"):
            cols[k] = d[k].astype(np.float32)
        if support == "topk":
            rank = cat("teacher_rank", np.int32)
            cols["teacher_rank"] = rank
            cols["teacher_top1"] = rank == 0
            argmax = topk_argmax(rows)
            if argmax is not None:
                cols["teacher_argmax"] = argmax
        for k in ("prefix_logratio", "cum_abs_gap", "cum_abs_gap_frac", "student_prefix_logprob",
                  "teacher_prefix_logprob"):
            cols[k] = d[k].astype(np.float64)
    else:
        import torch

        from drift.collect.metrics import exclusive_cumsum

        # one padded (B, W) pass; each row's cumsum is the same sequential sum as on the row alone
        width = int(lengths.max()) if n else 0
        mask = torch.arange(width).unsqueeze(0) < torch.as_tensor(lengths).unsqueeze(1)
        s = torch.zeros((len(rows), width), dtype=torch.float32)
        s[mask] = torch.as_tensor(cols["student_logprob"], dtype=torch.float32)
        cols["student_prefix_logprob"] = exclusive_cumsum(s, mask).numpy()[mask.numpy()].astype(np.float64) if n \
            else np.zeros(0)
    cols["finished"] = np.repeat(np.array(finished, dtype=bool), lengths)
    cols["truncated"] = np.repeat(np.array(truncated, dtype=bool), lengths)
    cols["reward"] = rep(rewards, pa.float64())
    extra: dict[str, Any] = {}
    if rows and all(has["rollout_logprob"]):
        extra["rollout_logprob"] = cat("rollout_logprob", np.float32)
    if any(r.loss_mask is not None for r in rows):
        extra["loss_mask"] = np.concatenate([np.asarray(r.loss_mask, dtype=bool) if r.loss_mask is not None else
                                             np.ones(len(r.response_ids), bool) for r in rows]) if n else \
            np.zeros(0, bool)
    for name in ("teacher_id", "teacher_revision"):
        if any(getattr(r, name) is not None for r in rows):
            extra[name] = rep([getattr(r, name) for r in rows])
    if support == "topk" and teacher:
        extra["teacher_topk_ids"] = [list(map(int, k)) for r in rows for k in (r.teacher_topk_ids or [])]
        extra["teacher_topk_logprobs"] = [list(map(float, k)) for r in rows for k in (r.teacher_topk_logprobs or [])]
    fields = [pa.field(c.name, c.type, nullable=c.nullable) for c in TOKEN_COLUMNS if c.name in cols]
    fields += [pa.field(c.name, c.type, nullable=c.nullable) for c in IMPORT_TOKEN_COLUMNS if c.name in extra]
    data = {**cols, **extra}
    tokens = pa.Table.from_pydict({f.name: data[f.name] for f in fields}, schema=pa.schema(fields))
    return rollouts, tokens


def topk_argmax(rows: Sequence[ImportedRollout]) -> np.ndarray | None:
    """The teacher's argmax per position from its top-k lists (int32, all positions of ``rows`` in order): the
    listed id of largest log-prob, ties toward the lower id (drift's rule at full support; vLLM lists in rank
    order, so it is the first entry). None when some position has no list (a top-k import with K = 0).
    """
    ids_R = [r.teacher_topk_ids for r in rows]
    lps_R = [r.teacher_topk_logprobs for r in rows]
    if any(ids is None or lps is None for ids, lps in zip(ids_R, lps_R, strict=True)):
        return None
    lists = [(i, lp) for ids, lps in zip(ids_R, lps_R, strict=True) for i, lp in zip(ids, lps, strict=True)]
    lengths = np.array([len(i) for i, _ in lists], dtype=np.int64)
    if (lengths == 0).any() or any(len(i) != len(lp) for i, lp in lists):
        return None
    if not lists:
        return np.zeros(0, np.int32)
    # flat values per position segment: the segment's largest log-prob, then the lowest id holding it
    ids_F = np.concatenate([np.asarray(i, dtype=np.int64) for i, _ in lists])
    lps_F = np.concatenate([np.asarray(lp, dtype=np.float64) for _, lp in lists])
    starts = np.cumsum(lengths) - lengths
    best = np.repeat(np.maximum.reduceat(lps_F, starts), lengths)
    top = np.where(lps_F == best, ids_F, np.iinfo(np.int64).max)
    return np.minimum.reduceat(top, starts).astype(np.int32)


def _int_lists(seqs: Sequence[Sequence[int]]) -> pa.Array:
    """``list<int32>`` of integer sequences (each converted like ``int(x)``; out-of-range ids raise), built from one
    flat array and offsets."""
    arrays = [np.asarray(x).reshape(-1) for x in seqs]
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    flat = np.concatenate([a if a.dtype == np.int64 else a.astype(np.int64) for a in arrays]) if arrays else \
        np.zeros(0, np.int64)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(flat).cast(pa.int32()))
