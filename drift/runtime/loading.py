"""Loading a student/teacher pair: the one loader of collect, score, probe and train.

:func:`load_pair` resolves the device and dtype once, loads the tokenizer the prompts are rendered with (the
student's, or a ``--tokenizer`` override) *and* each model's own tokenizer, so :func:`~drift.collect.guards.
check_pair` can compare an override with what each checkpoint was trained with instead of trusting it. A teacher
path equal to the student's is the same object (self-teacher) unless ``share=False`` (the trainer, whose student
moves while the teacher must stay frozen).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ModelPair", "load_pair", "set_threads"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPair:
    """A loaded student/teacher pair and the tokenizers that describe it.

    Attributes:
        student, teacher: the causal LMs (eval mode, no grad; the teacher may be the student object).
        tokenizer: the tokenizer prompts are rendered and responses decoded with.
        own_tokenizers: each model's own tokenizer as shipped in its folder (None where it ships none), compared
            with ``tokenizer`` by the pair check. Empty when ``tokenizer`` is itself the student's.
        world: the oracle world, when one was named.
        tokenizer_source: where ``tokenizer`` came from (a path or model spec).
    """

    student: Any
    teacher: Any
    tokenizer: Any
    own_tokenizers: dict[str, Any] = field(default_factory=dict)
    world: Any | None = None
    tokenizer_source: str | None = None

    @property
    def teacher_tokenizer(self) -> Any | None:
        """The teacher's own tokenizer when it differs in object from ``tokenizer`` (for the pair check)."""
        return self.own_tokenizers.get("teacher")

    @property
    def context(self) -> int | None:
        """The smaller ``max_position_embeddings`` of the two models (None when neither config says)."""
        from drift.models import pair_context

        return pair_context(self.student, self.teacher)


def set_threads(num_threads: int | None) -> None:
    """``torch.set_num_threads`` when a count is given (one place, so every stage honours ``--num-threads``)."""
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))


def load_pair(student: str, teacher: str, *, tokenizer: str | None = None, device: str = "auto",
              dtype: str = "auto", student_dtype: str | None = None, num_threads: int | None = None,
              world: str | None = None, share: bool = True) -> ModelPair:
    """Load student, teacher, tokenizers and (optionally) an oracle world from local paths.

    Args:
        student, teacher: model specs (``save_pretrained`` folders, ``.gguf`` files or ``smollm2``).
        tokenizer: a tokenizer folder overriding the student's (any folder ``AutoTokenizer`` loads); it is
            compared with each model's own tokenizer by the pair check, not trusted blindly.
        device, dtype: as in :func:`drift.models.load_model` (validated before anything is loaded).
        student_dtype: the student's dtype when it differs (the trainer keeps a float32 student).
        num_threads: torch CPU threads.
        world: an oracle world's ``world.json``.
        share: reuse one object when ``teacher == student`` (False loads the teacher separately).

    Raises:
        ModelLoadError, DeviceError: a path, device or dtype is wrong; nothing is loaded after the first error.
    """
    from drift.models import load_model, load_tokenizer, resolve_device, resolve_dtype
    from drift.worlds import load_world

    set_threads(num_threads)
    dev = resolve_device(device)  # fail on a bad device before spending time on weights
    resolve_dtype(dtype, dev)
    if tokenizer:
        tok = load_tokenizer(tokenizer)
        own = {"student": load_tokenizer(student, required=False), "teacher": load_tokenizer(teacher, required=False)}
    else:
        tok = load_tokenizer(student)
        own = {} if teacher == student else {"teacher": load_tokenizer(teacher)}
    s_model = load_model(student, device=device, dtype=student_dtype or dtype)
    if share and teacher == student and (student_dtype or dtype) == dtype:
        t_model = s_model
    else:
        t_model = load_model(teacher, device=device, dtype=dtype)
    w = load_world(world) if world else None
    return ModelPair(s_model, t_model, tok, own, w, tokenizer or student)
