"""Prompt files and prompt rendering.

A prompt file is JSON Lines, one object per prompt::

    {"id": "q1", "prompt": "What is 2+2?", "answer": "4"}
    {"id": "q2", "prompt": [{"role": "user", "content": "Hi"}], "teacher_prompt": [...]}

- ``prompt`` (required): raw text (used as-is) or a list of chat messages (rendered with the tokenizer's chat
  template, generation prompt appended).
- ``id`` (optional, default: the 0-based line number), ``answer`` (optional, enables a verifier reward),
  ``teacher_prompt`` (optional privileged prompt for the teacher), ``task`` (optional, e.g. ``translate_copy``
  for the oracle world); other keys are kept in ``extra``.

The teacher may see a different prompt (a ``teacher_prompt`` field, or ``--teacher-system-prompt``): scores are
aligned on the *response* tokens, so prompt lengths may differ freely.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from drift.errors import InputFormatError

__all__ = [
    "ChatMode",
    "PromptRecord",
    "iter_jsonl",
    "parse_prompt_value",
    "raise_input_problems",
    "read_prompts",
    "render_prompt",
    "teacher_view",
]

Message = dict[str, str]
PromptValue = str | tuple[Message, ...]
ChatMode = Literal["auto", "never", "always"]


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a prompt file."""

    id: str
    prompt: PromptValue
    answer: str | None = None
    teacher_prompt: PromptValue | None = None
    task: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def source_json(self) -> str:
        """The prompt as given (text or messages), JSON-encoded, so it can be re-rendered later."""
        value = self.prompt if isinstance(self.prompt, str) else list(self.prompt)
        return json.dumps(value)


def parse_prompt_value(value: Any, where: str, problems: list[str]) -> PromptValue | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    ):
        return tuple({"role": m["role"], "content": m["content"]} for m in value)
    problems.append(f"{where}: must be a string or a non-empty list of {{'role': str, 'content': str}} messages")
    return None


def iter_jsonl(path: str | os.PathLike[str], problems: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line of a JSON Lines file that holds a JSON object; lines that do
    not are recorded in ``problems`` (so a caller can report every bad line at once) and skipped."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {lineno}: not valid JSON ({exc.msg})")
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
                extra={k: v for k, v in obj.items() if k not in known},
            ))
        if limit is not None and len(records) >= limit:
            break
    raise_input_problems(path, problems)
    if not records:
        raise InputFormatError(f"{path} holds no prompts")
    return records


def teacher_view(record: PromptRecord, system_prompt: str | None) -> PromptValue | None:
    """The teacher's prompt: the record's ``teacher_prompt``, else the student prompt with ``system_prompt``.

    With chat messages the system prompt replaces an existing system message (or is inserted first); with raw
    text it is prepended, separated by a blank line. Returns None when the teacher sees the student's prompt.
    """
    if record.teacher_prompt is not None:
        return record.teacher_prompt
    if not system_prompt:
        return None
    if isinstance(record.prompt, str):
        return f"{system_prompt}\n\n{record.prompt}"
    msgs = [m for m in record.prompt if m["role"] != "system"]
    return ({"role": "system", "content": system_prompt}, *msgs)


def render_prompt(tokenizer: Any, prompt: PromptValue, *, chat: ChatMode = "auto") -> tuple[str, list[int]]:
    """Render a prompt to (text, token ids) the way the model will see it.

    - messages, or raw text with ``chat="always"``: the tokenizer's chat template with the generation prompt;
      the template supplies any BOS, so no special tokens are added again;
    - raw text otherwise: encoded as-is with the tokenizer's special tokens (e.g. BOS).

    Raises:
        InputFormatError: messages given but the tokenizer has no chat template (or ``chat="never"``).
    """
    messages: Sequence[Message] | None
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}] if chat == "always" else None
    else:
        messages = prompt
    if messages is None:
        ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        return prompt, ids  # type: ignore[return-value]
    if chat == "never" or not getattr(tokenizer, "chat_template", None):
        raise InputFormatError(
            "a prompt is a list of chat messages but the tokenizer has no chat template"
            + (" (--chat-template never)" if chat == "never" else "")
            + "; give raw text prompts or use a tokenizer with a chat template."
        )
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return text, ids
