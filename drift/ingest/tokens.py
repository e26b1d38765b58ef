"""The generic per-token format, and the one reader of token-id records (``drift import tokens``, ``drift score``).

A file (JSON Lines, or parquet with list columns) holds one rollout per line / row::

    {"prompt_ids": [1, 2, 3], "response_ids": [7, 8, 2],
     "student_logprobs": [-0.1, -2.3, -0.4], "teacher_logprobs": [-0.2, -1.1, -0.3],
     "rollout_logprobs": [...], "step": 10, "prompt_id": "q1", "sample_id": 0,
     "reward": 1.0, "finished": true, "truncated": false, "teacher_id": "qwen3-8b", "loss_mask": [1, 1, 1]}

Required: ``prompt_ids`` and ``response_ids`` (non-negative integers) and, for an import, ``student_logprobs``
(one log-prob <= 0 per response token, the *trainer-side* student's). Optional: ``teacher_logprobs`` (without it
only student columns are written), ``rollout_logprobs`` (the sampler's), ``step`` (default ``--step``, else 0),
``prompt_id`` / ``id`` (the cluster key; else a hash of ``prompt_ids``), ``sample_id``, ``reward``, ``finished``,
``truncated``, ``teacher_id``, ``teacher_revision``, ``loss_mask``, ``teacher_prompt_ids`` (``drift score`` only),
``run_id``, ``answer``. The ids-jsonl that ``drift score --rollouts`` reads is the same format without log-probs,
parsed by the same :func:`parse_ids_record`.

PATH may be one file or a folder of ``*.jsonl`` / ``*.parquet`` files (imported in name order).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from drift.errors import InputFormatError
from drift.ingest.config import ImportConfig
from drift.ingest.records import ImportedRollout

__all__ = ["iter_records", "open_tokens", "parse_ids_record", "token_files"]

_SUFFIXES = (".jsonl", ".parquet")
_LOGPROBS = ("student_logprobs", "teacher_logprobs", "rollout_logprobs")


def _ids(value: Any, where: str, problems: list[str]) -> list[int] | None:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and all(isinstance(x, (int, np.integer)) and not isinstance(x, bool)
                                                and x >= 0 for x in value):
        return [int(x) for x in value]
    problems.append(f"{where}: must be a list of non-negative integers")
    return None


def _floats(value: Any, where: str, problems: list[str]) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                for x in value):
        return np.asarray(value, dtype=np.float64)
    problems.append(f"{where}: must be a list of numbers")
    return None


def parse_ids_record(obj: dict[str, Any], where: str, problems: list[str], *,
                     logprobs: bool = False) -> dict[str, Any] | None:
    """Validate one token-id record and normalize it; problems go to ``problems`` (all of them, then None).

    Args:
        obj: the parsed line / row.
        where: how to name it in problems (``file line 3``).
        problems: where problems are appended.
        logprobs: an import: ``student_logprobs`` is required and the log-prob lists are parsed.

    Returns:
        ``prompt_ids``, ``response_ids``, ``teacher_prompt_ids`` (None when absent), ``prompt_id`` (None when
        absent), the optional scalars, and (``logprobs``) float arrays ``student_logprobs`` etc. (None when absent).
    """
    n0 = len(problems)
    for key in ("prompt_ids", "response_ids", *(("student_logprobs",) if logprobs else ())):
        if obj.get(key) is None:
            problems.append(f"{where}: missing {key!r} (found keys {sorted(obj)})")
    if len(problems) > n0:
        return None
    out: dict[str, Any] = {"prompt_ids": _ids(obj["prompt_ids"], f"{where} 'prompt_ids'", problems),
                           "response_ids": _ids(obj["response_ids"], f"{where} 'response_ids'", problems)}
    tp = obj.get("teacher_prompt_ids")
    out["teacher_prompt_ids"] = _ids(tp, f"{where} 'teacher_prompt_ids'", problems) if tp is not None else None
    pid = obj.get("prompt_id", obj.get("id"))
    out["prompt_id"] = None if pid is None or (isinstance(pid, float) and math.isnan(pid)) else str(pid)
    for key, kind in (("sample_id", int), ("step", int), ("reward", float), ("finished", bool), ("truncated", bool),
                      ("teacher_id", str), ("teacher_revision", str), ("run_id", str), ("answer", str)):
        v = obj.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[key] = None
        elif kind is int and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
            problems.append(f"{where} {key!r}: must be a non-negative integer, got {v!r}")
        elif kind is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
            problems.append(f"{where} {key!r}: must be a number, got {v!r}")
        elif kind is bool and not isinstance(v, (bool, np.bool_)):
            problems.append(f"{where} {key!r}: must be true or false, got {v!r}")
        else:
            out[key] = kind(v)
    if logprobs:
        for key in _LOGPROBS:
            v = obj.get(key)
            out[key] = _floats(v, f"{where} {key!r}", problems) if v is not None else None
        mask = obj.get("loss_mask")
        out["loss_mask"] = None if mask is None else (_floats(mask, f"{where} 'loss_mask'", problems))
        if out["loss_mask"] is not None:
            out["loss_mask"] = out["loss_mask"] != 0
    if len(problems) > n0:
        return None
    if logprobs and out["response_ids"] is not None:
        n = len(out["response_ids"])
        for key in (*_LOGPROBS, "loss_mask"):
            if out[key] is not None and len(out[key]) != n:
                problems.append(f"{where}: {key!r} has {len(out[key])} entries but 'response_ids' has {n}; they must "
                                "be aligned (entry t = the log-prob of response token t)")
    return out if len(problems) == n0 else None


def token_files(path: Path) -> tuple[Path, ...]:
    """The record files at ``path``: the file itself, or a folder's ``*.jsonl`` / ``*.parquet`` in name order."""
    if path.is_file():
        if path.suffix not in _SUFFIXES:
            raise InputFormatError(f"{path}: expected a .jsonl or .parquet file of token records")
        return (path,)
    if path.is_dir():
        return tuple(sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and p.is_file()))
    raise InputFormatError(f"{path} does not exist (give a .jsonl / .parquet file or a folder of them)")


def iter_records(path: Path, *, logprobs: bool = False, batch_rows: int = 256) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, normalized record) for every record of one file, streamed; malformed records stop it with every
    problem of the offending batch named (file and line / row)."""
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise InputFormatError(f"{path} is not a readable parquet file ({exc})") from None
        row = 0
        for batch in pf.iter_batches(batch_size=batch_rows):
            problems: list[str] = []
            parsed = []
            for obj in batch.to_pylist():
                where = f"{path} row {row}"
                rec = parse_ids_record(obj, where, problems, logprobs=logprobs)
                if rec is not None:
                    parsed.append((where, rec))
                row += 1
            _raise(path, problems)
            yield from parsed
        return
    from drift.collect.prompts import iter_jsonl

    problems = []
    for lineno, obj in iter_jsonl(path, problems):
        _raise(path, problems)
        where = f"{path} line {lineno}"
        rec = parse_ids_record(obj, where, problems, logprobs=logprobs)
        _raise(path, problems)
        yield where, rec  # type: ignore[misc]
    _raise(path, problems)


def _raise(path: Path, problems: list[str]) -> None:
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise InputFormatError(f"{path}: {len(problems)} problem(s):\n  - " + "\n  - ".join(shown))


def _rollout(where: str, rec: dict[str, Any], default_step: int, cfg: ImportConfig) -> ImportedRollout:
    return ImportedRollout(
        prompt_ids=rec["prompt_ids"], response_ids=rec["response_ids"], student_logprob=rec["student_logprobs"],
        teacher_logprob=rec["teacher_logprobs"], rollout_logprob=rec["rollout_logprobs"],
        step=rec["step"] if rec["step"] is not None else default_step, prompt_id=rec["prompt_id"],
        sample_id=rec["sample_id"], loss_mask=rec["loss_mask"], reward=rec["reward"], finished=rec["finished"],
        truncated=rec["truncated"], teacher_id=rec["teacher_id"] or cfg.teacher_id,
        teacher_revision=rec["teacher_revision"] or cfg.teacher_revision, source=where)


def open_tokens(cfg: ImportConfig) -> Any:
    """The :class:`~drift.ingest.run.SourcePlan` of a generic token-record import."""
    from drift.ingest.run import SourcePlan, default_step, resolve_tokenizer

    tokenizer, tokenizer_source = resolve_tokenizer(cfg)
    root = Path(cfg.path)
    files = token_files(root)
    step = default_step(cfg)
    has_teacher = True
    if files:
        first = next(iter_records(files[0], logprobs=True), None)
        has_teacher = first is None or first[1]["teacher_logprobs"] is not None

    def iter_file(path: Path) -> Iterator[ImportedRollout]:
        for where, rec in iter_records(path, logprobs=True):
            yield _rollout(where, rec, step, cfg)

    return SourcePlan(format="tokens", root=root, files=files, iter_file=iter_file, support="sampled",
                      has_teacher=has_teacher, teacher_source="user" if has_teacher else None, tokenizer=tokenizer,
                      tokenizer_source=tokenizer_source,
                      notes={"layout": "drift generic token records (README: Bring your own logs)"})
