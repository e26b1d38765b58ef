"""Rendering prompts into the token ids each model reads: the one renderer of collect, score, probe and train.

A prompt is raw text or a list of chat messages (:class:`~drift.collect.prompts.PromptRecord`). How it becomes
token ids is decided here, once:

- ``chat="auto"`` (default): whenever the tokenizer has a chat template, the template is applied (a text prompt
  becomes one user turn) with the generation prompt appended; the template supplies any BOS, so no special tokens
  are added again. Without a template, text is encoded as-is with the tokenizer's special tokens (e.g. BOS).
- ``chat="never"``: raw text, encoded as-is; chat messages are an error (they need a template).
- ``chat="always"``: the template is required; a tokenizer without one stops with
  :class:`~drift.errors.ChatTemplateError`.

System turns. ``teacher_system_prompt`` is always the *teacher's* system turn: it replaces any system message of
the prompt (and so the template's default system prompt, e.g. SmolLM2's "You are a helpful AI assistant ...")
for the teacher only; ``student_system_prompt`` does the same for the student. The prompt's own shape (text or
messages) does not change what a system prompt means. Only where no template is used at all (raw text) is a
system prompt prepended as text, separated by a blank line, since there is no turn to put it in.

A record's ``teacher_prompt`` (a privileged prompt only the teacher sees) replaces the student prompt on the
teacher side; a ``teacher_system_prompt`` is applied to it as well.

Checks made here, for every stage: an empty rendered prompt stops; :func:`check_context` stops (or truncates on
the left, when asked) a prompt whose length plus the response budget exceeds the models' context; and
:func:`unknown_token_report` counts ids that the tokenizer mapped to its unknown token.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from drift.collect.prompts import PromptRecord, PromptValue
from drift.errors import ChatTemplateError, InputFormatError, PromptTooLongError, TokenizerWarning

__all__ = [
    "CHAT_MODES",
    "ChatMode",
    "PromptStyle",
    "RenderedPrompt",
    "check_context",
    "render_checked",
    "render_prompt",
    "render_record",
    "render_records",
    "unknown_token_report",
]

log = logging.getLogger(__name__)

ChatMode = Literal["auto", "never", "always"]
CHAT_MODES: tuple[str, ...] = ("auto", "never", "always")
Message = dict[str, str]


@dataclass(frozen=True)
class PromptStyle:
    """How prompts are rendered for the two models (the CLI's ``--chat-template`` and system-prompt flags)."""

    chat: str = "auto"
    student_system_prompt: str | None = None
    teacher_system_prompt: str | None = None

    def __post_init__(self) -> None:
        if self.chat not in CHAT_MODES:
            raise InputFormatError(f"chat template mode must be one of {CHAT_MODES}, got {self.chat!r}")


@dataclass(frozen=True)
class RenderedPrompt:
    """A prompt record with the text and token ids each model reads.

    ``teacher_text`` is None when the teacher reads exactly the student's prompt.
    """

    record: PromptRecord
    student_text: str
    student_ids: list[int]
    teacher_text: str | None
    teacher_ids: list[int]

    @property
    def privileged(self) -> bool:
        """The teacher reads a prompt different from the student's."""
        return self.teacher_ids != self.student_ids


def _has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _with_system(messages: Sequence[Message], system_prompt: str | None) -> list[Message]:
    msgs = [dict(m) for m in messages]
    if system_prompt is None:
        return msgs
    return [{"role": "system", "content": system_prompt}, *(m for m in msgs if m["role"] != "system")]


def render_prompt(tokenizer: Any, prompt: PromptValue, *, chat: str = "auto",
                  system_prompt: str | None = None) -> tuple[str, list[int]]:
    """Render one prompt to ``(text, token ids)`` the way the model will see it (rules in the module docstring).

    Raises:
        ChatTemplateError: ``chat="always"`` (or chat messages) with a tokenizer that has no chat template, or
            chat messages with ``chat="never"``.
        InputFormatError: the prompt renders to no tokens at all.
    """
    if chat not in CHAT_MODES:
        raise InputFormatError(f"chat template mode must be one of {CHAT_MODES}, got {chat!r}")
    template = _has_template(tokenizer)
    messages: list[Message] | None
    if isinstance(prompt, str):
        use_chat = chat == "always" or (chat == "auto" and template)
        messages = [{"role": "user", "content": prompt}] if use_chat else None
    else:
        if chat == "never":
            raise ChatTemplateError("a prompt is a list of chat messages but --chat-template never was given; "
                                    "give raw text prompts or use --chat-template auto.")
        messages = list(prompt)
    if messages is None:
        text = f"{system_prompt}\n\n{prompt}" if system_prompt else str(prompt)
        ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    else:
        if not template:
            what = "--chat-template always was given" if isinstance(prompt, str) else "a prompt is a list of chat " \
                "messages"
            raise ChatTemplateError(f"{what} but the tokenizer has no chat template; use raw text prompts with "
                                    "--chat-template auto or never, or a tokenizer that ships a chat template.")
        text = tokenizer.apply_chat_template(_with_system(messages, system_prompt), tokenize=False,
                                             add_generation_prompt=True)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise InputFormatError("a prompt renders to no tokens (an empty prompt and no BOS or template); give every "
                               "prompt some text.")
    return text, ids


def render_record(record: PromptRecord, tokenizer: Any, style: PromptStyle | None = None) -> RenderedPrompt:
    """Render ``record`` for the student and the teacher (privileged prompt and system turns applied)."""
    style = style or PromptStyle()
    try:
        s_text, s_ids = render_prompt(tokenizer, record.prompt, chat=style.chat,
                                      system_prompt=style.student_system_prompt)
        t_value = record.teacher_prompt if record.teacher_prompt is not None else record.prompt
        t_text, t_ids = render_prompt(tokenizer, t_value, chat=style.chat, system_prompt=style.teacher_system_prompt)
    except InputFormatError as exc:
        raise type(exc)(f"prompt {record.id!r}: {exc}") from exc
    same = t_ids == s_ids
    return RenderedPrompt(record, s_text, s_ids, None if same else t_text, s_ids if same else t_ids)


def render_records(records: Sequence[PromptRecord], tokenizer: Any,
                   style: PromptStyle | None = None) -> list[RenderedPrompt]:
    """:func:`render_record` for each record (one error names the first prompt that cannot be rendered)."""
    return [render_record(r, tokenizer, style) for r in records]


def render_checked(records: Sequence[PromptRecord], tokenizer: Any, style: PromptStyle | None = None, *,
                   context: int | None, budget: int, truncate: str = "none") -> list[RenderedPrompt]:
    """:func:`render_records`, then every prompt (both sides) checked against the context with :func:`check_context`
    (left-truncated with ``truncate="left"``), and the unknown-token count of the student prompts warned about.

    Raises:
        PromptTooLongError: a prompt plus ``budget`` does not fit ``context`` and ``truncate`` is ``none``.
    """
    from dataclasses import replace

    out = []
    for rp in render_records(records, tokenizer, style):
        rid = rp.record.id
        s_ids = check_context(rp.student_ids, budget, context, what=f"prompt {rid!r} (student)", truncate=truncate)
        t_ids = s_ids if not rp.privileged else check_context(rp.teacher_ids, budget, context,
                                                               what=f"prompt {rid!r} (teacher)", truncate=truncate)
        out.append(replace(rp, student_ids=s_ids, teacher_ids=t_ids))
    unknown_token_report(tokenizer, [(rp.record.id, rp.student_ids) for rp in out], what="prompts")
    return out


def check_context(ids: Sequence[int], budget: int, context: int | None, *, what: str,
                  truncate: str = "none", budget_name: str = "--max-new-tokens", fix: str | None = None) -> list[int]:
    """Ensure ``len(ids) + budget <= context``; return ``ids`` (left-truncated when ``truncate="left"``).

    Args:
        ids: the prompt's token ids.
        budget: tokens that follow the prompt (the response budget, or the response itself when re-scoring).
        context: the models' context (the smaller ``max_position_embeddings``); None skips the check.
        what: how to name the prompt in the error (e.g. ``prompt 'q3' (student)``).
        truncate: ``none`` (raise) or ``left`` (drop the oldest prompt tokens, with a warning).
        budget_name: the flag that sets ``budget``, named in the error's fix.
        fix: the error's advice, replacing the default (shorten, lower the budget, or truncate).

    Raises:
        PromptTooLongError: the prompt does not fit and ``truncate`` is ``none``, or ``budget`` alone fills the
            context.
    """
    if context is None or len(ids) + budget <= context:
        return list(ids)
    if budget >= context:
        raise PromptTooLongError(f"{what}: {budget_name} {budget} leaves no room for a prompt in the models' "
                                 f"context of {context} tokens; " + (fix or f"lower {budget_name}."))
    if truncate == "left":
        keep = context - budget
        log.warning("%s: %d prompt tokens + %d > context %d; keeping the last %d prompt tokens (--truncate-prompt "
                    "left)", what, len(ids), budget, context, keep)
        return list(ids)[len(ids) - keep:]
    raise PromptTooLongError(
        f"{what} has {len(ids)} tokens; with {budget_name} {budget} that is {len(ids) + budget} > the models' "
        f"context of {context} tokens (the smaller max_position_embeddings of the two configs). " + (
            fix or f"Shorten the prompt, lower {budget_name}, or pass --truncate-prompt left to keep the prompt's "
                   f"last {max(0, context - budget)} tokens.")
    )


def unknown_token_report(tokenizer: Any, rows: Sequence[tuple[str, Sequence[int]]], *, what: str) -> str | None:
    """Count ids equal to the tokenizer's unknown token in ``rows`` of ``(name, ids)``; warn and return a summary.

    Text that the tokenizer cannot represent becomes ``<unk>``: both models then score a token nobody wrote.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return None
    hits = [(name, sum(1 for i in ids if int(i) == int(unk)), len(ids)) for name, ids in rows]
    hits = [h for h in hits if h[1]]
    if not hits:
        return None
    total = sum(h[1] for h in hits)
    tokens = sum(len(ids) for _, ids in rows)
    examples = ", ".join(f"{n!r} ({k} of {m})" for n, k, m in hits[:3])
    msg = (f"{len(hits)} of {len(rows)} {what} contain the unknown token {tokenizer.unk_token!r}: {total} of "
           f"{tokens} tokens, e.g. {examples}. Text the tokenizer cannot represent is scored as that token; check "
           "the input's encoding or the tokenizer.")
    warnings.warn(msg, TokenizerWarning, stacklevel=2)
    return msg
