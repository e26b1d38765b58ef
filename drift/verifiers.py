"""Verifiers: is a response right? Used for rollout rewards and, later, continuation-probe success.

A verifier maps (prompt record, response text, response ids) to a score in [0, 1], or None when it cannot judge
(no reference answer). Built in:

- ``numeric``: the final answer (last ``\\boxed{...}``, else the last number in the text) equals the reference
  numerically (fractions and thousands separators understood, relative tolerance 1e-6);
- ``exact``: the final answer (last ``\\boxed{...}``, else the stripped text) equals the reference string after
  whitespace/case normalization;
- ``answer``: ``numeric`` when the reference parses as a number, else ``exact``;
- ``world``: the task's own verifier (the oracle world: the response must be exactly right, EOS included).

``auto`` picks ``world`` for records that name a known task, else ``answer`` when a reference exists, else none.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Protocol

from drift.collect.prompts import PromptRecord
from drift.errors import ConfigError

__all__ = ["VERIFIERS", "Verifier", "extract_final_answer", "get_verifier", "parse_number"]

VERIFIERS = ("auto", "none", "answer", "numeric", "exact", "world")

_BOXED = re.compile(r"\\boxed\s*\{")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


class Verifier(Protocol):
    """Scores a response; None means 'cannot judge'."""

    name: str

    def __call__(self, record: PromptRecord, response_text: str, prompt_ids: Sequence[int],
                 response_ids: Sequence[int]) -> float | None: ...


def _last_boxed(text: str) -> str | None:
    starts = [m.end() for m in _BOXED.finditer(text)]
    if not starts:
        return None
    i, depth = starts[-1], 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract_final_answer(text: str) -> str:
    """The last ``\\boxed{...}`` content, else the text itself, stripped."""
    boxed = _last_boxed(text)
    return (boxed if boxed is not None else text).strip()


def parse_number(text: str) -> Fraction | None:
    """Parse a number ("1,234", "-3.5", "3/4", "$12") or None; the *last* number in the text wins."""
    found = _NUMBER.findall(text.replace("$", ""))
    if not found:
        return None
    try:
        return Fraction(found[-1].replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


class _Numeric:
    name = "numeric"

    def __call__(self, record: PromptRecord, response_text: str, prompt_ids: Sequence[int],
                 response_ids: Sequence[int]) -> float | None:
        if record.answer is None:
            return None
        ref, got = parse_number(record.answer), parse_number(extract_final_answer(response_text))
        if ref is None or got is None:
            return 0.0 if ref is not None else None
        return float(abs(got - ref) <= abs(ref) * Fraction(1, 10**6) + Fraction(1, 10**9))


class _Exact:
    name = "exact"

    def __call__(self, record: PromptRecord, response_text: str, prompt_ids: Sequence[int],
                 response_ids: Sequence[int]) -> float | None:
        if record.answer is None:
            return None

        def norm(s: str) -> str:
            return " ".join(s.lower().split())

        return float(norm(extract_final_answer(response_text)) == norm(record.answer))


class _Answer:
    name = "answer"

    def __call__(self, record: PromptRecord, response_text: str, prompt_ids: Sequence[int],
                 response_ids: Sequence[int]) -> float | None:
        if record.answer is None:
            return None
        inner = _Numeric() if parse_number(record.answer) is not None and re.fullmatch(
            r"[\s$\-\d.,/]+", record.answer) else _Exact()
        return inner(record, response_text, prompt_ids, response_ids)


class _World:
    name = "world"

    def __init__(self, world: Any, tokenizer: Any) -> None:
        self.world, self.tokenizer = world, tokenizer

    def __call__(self, record: PromptRecord, response_text: str, prompt_ids: Sequence[int],
                 response_ids: Sequence[int]) -> float | None:
        return float(self.world.verify(list(prompt_ids), list(response_ids), self.tokenizer))


class _Auto:
    name = "auto"

    def __init__(self, world: Any | None, tokenizer: Any) -> None:
        self.world = _World(world, tokenizer) if world is not None else None
        self.answer = _Answer()

    def __call__(self, record: PromptRecord, response_text: str, prompt_ids: Sequence[int],
                 response_ids: Sequence[int]) -> float | None:
        if self.world is not None and record.task == getattr(self.world.world, "name", None):
            return self.world(record, response_text, prompt_ids, response_ids)
        return self.answer(record, response_text, prompt_ids, response_ids)


class _NoVerifier:
    name = "none"

    def __call__(self, record: PromptRecord, response_text: str, prompt_ids: Sequence[int],
                 response_ids: Sequence[int]) -> float | None:
        return None


def get_verifier(name: str, *, world: Any | None = None, tokenizer: Any | None = None) -> Verifier:
    """Build verifier ``name`` (one of :data:`VERIFIERS`); ``world`` needs a loaded world and its tokenizer."""
    if name not in VERIFIERS:
        raise ConfigError("verifier", [f"unknown verifier {name!r}; choose one of {list(VERIFIERS)}"])
    if name == "world":
        if world is None:
            raise ConfigError("verifier", ["verifier 'world' needs --world PATH (a world.json)"])
        return _World(world, tokenizer)
    table: dict[str, Any] = {"none": _NoVerifier, "numeric": _Numeric, "exact": _Exact, "answer": _Answer}
    if name == "auto":
        return _Auto(world, tokenizer)
    return table[name]()
