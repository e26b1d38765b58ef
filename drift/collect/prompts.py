"""Prompt files and prompt rendering.

A prompt file is JSON Lines, one object per prompt::

    {"id": "q1", "prompt": "What is 2+2?", "answer": "4"}
    {"id": "q2", "prompt": [{"role": "user", "content": "Hi"}], "teacher_prompt": [...]}

- ``prompt`` (required): raw text or a list of chat messages. How either becomes token ids (the chat template by
  default whenever the tokenizer has one; system turns) is decided by :mod:`drift.runtime.prompts`.
- ``id`` (optional, default: the 0-based line number), ``answer`` (optional, enables a verifier reward),
  ``teacher_prompt`` (optional privileged prompt for the teacher), ``task`` (optional, e.g. ``translate_copy``
  for the oracle world); other keys are kept in ``extra``.

The teacher may see a different prompt (a ``teacher_prompt`` field, or ``--teacher-system-prompt``): scores are
aligned on the *response* tokens, so prompt lengths may differ freely. Empty prompts are an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drift.errors import InputFormatError

__all__ = [
    "PromptRecord",
    "PromptValue",
    "iter_jsonl",
    "parse_prompt_value",
    "raise_input_problems",
    "read_prompts",
]

Message = dict[str, str]
PromptValue = str | tuple[Message, ...]


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a prompt file."""

    id: str
    prompt: PromptValue
    answer: str | None = None
    teacher_prompt: PromptValue | None = None
    task: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    id_given: bool = True  # False when the file had no `id` and ``id`` is the line number (not a stable identity)

    def source_json(self) -> str:
        """The prompt as given (text or messages), JSON-encoded, so it can be re-rendered later."""
        value = self.prompt if isinstance(self.prompt, str) else list(self.prompt)
        return json.dumps(value)


def parse_prompt_value(value: Any, where: str, problems: list[str]) -> PromptValue | None:
    """A prompt value (text or chat messages) from JSON; problems (wrong type, empty text) are appended."""
    if isinstance(value, str):
        if not value.strip():
            problems.append(f"{where}: is empty; every prompt needs some text")
            return None
        return value
    if isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        if not any(m["content"].strip() for m in value):
            problems.append(f"{where}: every message is empty; every prompt needs some text")
            return None
        return tuple({"role": m["role"], "content": m["content"]} for m in value)
    problems.append(f"{where}: must be a string or a non-empty list of {{'role': str, 'content': str}} messages")
    return None


def iter_jsonl(path: str | os.PathLike[str], problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line of a JSON Lines file that holds a JSON object; lines that do
    not are recorded in ``problems`` (so a caller can report every bad line at once) and skipped."""
    p = Path(path)
    if p.is_dir():
        raise InputFormatError(f"{p} is a folder, not a JSON Lines file; pass the .jsonl file itself")
    if not p.exists():
        raise InputFormatError(f"{p} does not exist")
    with open(p, encoding="utf-8") as fh:  # streamed line by line: step logs run to gigabytes
        lineno = 0
        while True:
            try:
                line = fh.readline()
            except UnicodeDecodeError as exc:
                raise InputFormatError(
                    f"{p} is not UTF-8 text (after line {lineno}, byte {exc.start}: {exc.reason}); JSON Lines files "
                    f"must be UTF-8. Re-encode it, e.g. `iconv -f latin1 -t utf-8 {p.name} > fixed.jsonl`."
                ) from None
            if not line:
                return
            lineno += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                cut = "" if line.endswith("\n") else " (the last line has no newline: the file was cut off?)"
                problems.append(f"line {lineno}: not valid JSON ({exc.msg}){cut}")
                continue
            if not isinstance(obj, dict):
                problems.append(f"line {lineno}: expected a JSON object, got {type(obj).__name__}")
                continue
            yield lineno, obj


def raise_input_problems(path: str | os.PathLike[str], problems: list[str]) -> None:
    """Raise one :class:`InputFormatError` naming the file and (up to 20 of) its problems, if there are any."""
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise InputFormatError(f"{path}: {len(problems)} problem(s):\n  - " + "\n  - ".join(shown))


def read_prompts(path: str | os.PathLike[str], *, limit: int | None = None) -> list[PromptRecord]:
    """Read a JSON Lines prompt file; every malformed line is reported at once.

    Raises:
        InputFormatError: naming the file, each bad line number and what is wrong with it.
    """
    path = Path(path)
    if not path.exists():
        raise InputFormatError(f"prompt file {path} does not exist")
    if path.is_dir():
        raise InputFormatError(f"prompt file {path} is a folder; pass the .jsonl file itself (--prompts FILE)")
    records: list[PromptRecord] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path, problems):
        if "prompt" not in obj:
            problems.append(f"line {lineno}: missing required key 'prompt' (keys: {sorted(obj)})")
            continue
        prompt = parse_prompt_value(obj["prompt"], f"line {lineno} 'prompt'", problems)
        teacher = (parse_prompt_value(obj["teacher_prompt"], f"line {lineno} 'teacher_prompt'", problems)
                   if obj.get("teacher_prompt") is not None else None)
        rid = str(obj.get("id", len(records)))
        if rid in seen:
            problems.append(f"line {lineno}: duplicate id {rid!r} (first on line {seen[rid]})")
        seen[rid] = lineno
        answer = obj.get("answer")
        known = {"id", "prompt", "answer", "teacher_prompt", "task"}
        if prompt is not None:
            records.append(PromptRecord(
                id=rid, prompt=prompt, answer=None if answer is None else str(answer),
                teacher_prompt=teacher, task=obj.get("task"),
                extra={k: v for k, v in obj.items() if k not in known}, id_given="id" in obj,
            ))
        if limit is not None and len(records) >= limit:
            break
    raise_input_problems(path, problems)
    if not records:
        raise InputFormatError(f"{path} holds no prompts")
    return records
