"""Rollouts that already exist, as input to ``drift score``.

Accepted inputs:

- a drift dataset folder (its ``rollouts/`` table is read; every column is carried over);
- a JSON Lines file, one rollout per line, in one of two forms:

  * text: ``{"prompt": ..., "response": "...", "teacher_prompt": ... (optional)}`` — prompts are rendered like
    prompt files (raw text, or chat messages through the template); the response is tokenized without special
    tokens, so include the EOS text (e.g. ``<|im_end|>``) if it ended with one;
  * ids: ``{"prompt_ids": [...], "response_ids": [...], "teacher_prompt_ids": [...] (optional)}``.

  Optional keys in both: ``id`` / ``prompt_id``, ``sample_id`` (default: order of appearance per prompt),
  ``answer``, ``reward``, ``finished``, ``truncated``, ``run_id``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drift.collect.prompts import PromptRecord, iter_jsonl, parse_prompt_value, raise_input_problems
from drift.errors import InputFormatError
from drift.runtime.prompts import render_prompt, unknown_token_report

__all__ = ["read_rollouts"]


def read_rollouts(path: str | os.PathLike[str], tokenizer: Any, *, chat: str = "auto",
                  stop_ids: Sequence[int] = ()) -> list[dict[str, Any]]:
    """Read rollouts to re-score as rollouts-table rows (dicts); all malformed lines are reported at once.

    Raises:
        InputFormatError: the path is neither a drift dataset nor a readable jsonl, or lines are malformed.
    """
    p = Path(path)
    if p.is_dir():
        from drift.collect.guards import check_stored_tokenizer, dataset_tokenizer_identity
        from drift.store import open_dataset

        ds = open_dataset(p)
        ds.validate("rollouts", required=["prompt_id", "sample_id", "student_prompt_ids", "teacher_prompt_ids",
                                          "response_ids"])
        rows = ds.read("rollouts").to_pylist()
        check_stored_tokenizer(dataset_tokenizer_identity(ds.config), tokenizer, rows, where=f"dataset {p}")
        return rows
    if not p.exists():
        raise InputFormatError(f"rollouts input {p} does not exist (give a drift dataset folder or a .jsonl file)")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    per_prompt: dict[str, int] = {}
    stops = set(int(s) for s in stop_ids)
    for lineno, obj in iter_jsonl(p, problems):
        row = _row_from_obj(obj, lineno, tokenizer, chat, problems)
        if row is None:
            continue
        pid = row["prompt_id"]
        if "sample_id" not in obj:
            row["sample_id"] = per_prompt.get(pid, 0)
        per_prompt[pid] = per_prompt.get(pid, 0) + 1
        resp = row["response_ids"]
        row.setdefault("finished", bool(resp) and resp[-1] in stops)
        rows.append(row)
    raise_input_problems(p, problems)
    if not rows:
        raise InputFormatError(f"{p} holds no rollouts")
    # text we tokenized ourselves: words the vocabulary cannot represent became the unknown token
    unknown_token_report(tokenizer, [(f"line {r.pop('_line')}", r["response_ids"]) for r in rows if "_line" in r],
                         what="text responses")
    keys = [(r["prompt_id"], r["sample_id"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise InputFormatError(f"{p}: (prompt_id, sample_id) pairs are not unique; give explicit sample_id values")
    return rows


def _row_from_obj(obj: Any, lineno: int, tokenizer: Any, chat: str, problems: list[str]) -> dict[str, Any] | None:
    pid = str(obj.get("prompt_id", obj.get("id", lineno - 1)))
    base: dict[str, Any] = {"prompt_id": pid, "answer": obj.get("answer"), "reward": obj.get("reward"),
                            "truncated": bool(obj.get("truncated", False)),
                            "id_given": "prompt_id" in obj or "id" in obj}
    for key in ("sample_id", "run_id", "finished"):
        if key in obj:
            base[key] = obj[key]
    if "prompt_ids" in obj or "response_ids" in obj:
        from drift.ingest.tokens import parse_ids_record  # the one reader of token-id records

        rec = parse_ids_record(obj, f"line {lineno}", problems)
        if rec is None:
            return None
        s_ids, r_ids = rec["prompt_ids"], rec["response_ids"]
        t_ids = rec["teacher_prompt_ids"] if rec["teacher_prompt_ids"] is not None else s_ids
        s_text = tokenizer.decode(s_ids, skip_special_tokens=False)
        t_text = None if t_ids == s_ids else tokenizer.decode(t_ids, skip_special_tokens=False)
        source = None
    elif "prompt" in obj and "response" in obj:
        prompt = parse_prompt_value(obj["prompt"], f"line {lineno} 'prompt'", problems)
        teacher = parse_prompt_value(obj["teacher_prompt"], f"line {lineno} 'teacher_prompt'", problems) \
            if obj.get("teacher_prompt") is not None else None
        if not isinstance(obj["response"], str):
            problems.append(f"line {lineno} 'response': must be a string")
            return None
        if prompt is None or (obj.get("teacher_prompt") is not None and teacher is None):
            return None
        try:
            s_text, s_ids = render_prompt(tokenizer, prompt, chat=chat)
            t_text, t_ids = render_prompt(tokenizer, teacher, chat=chat) if teacher else (None, s_ids)
        except InputFormatError as exc:
            problems.append(f"line {lineno}: {exc}")
            return None
        r_ids = list(tokenizer(obj["response"], add_special_tokens=False)["input_ids"])
        source = PromptRecord(id=pid, prompt=prompt).source_json()
        base["_line"] = lineno
    else:
        problems.append(f"line {lineno}: needs either 'prompt' + 'response' (text) or 'prompt_ids' + "
                        f"'response_ids' (token ids); found keys {sorted(obj)}")
        return None
    base["user_prompt_id"] = pid if base.pop("id_given") else None  # prompt_key is made once run_id is known
    return {**base, "prompt": s_text, "teacher_prompt": t_text, "student_prompt_ids": s_ids,
            "teacher_prompt_ids": t_ids, "response_ids": r_ids,
            "response_text": tokenizer.decode(r_ids, skip_special_tokens=False), "response_len": len(r_ids),
            "source_prompt": source}
