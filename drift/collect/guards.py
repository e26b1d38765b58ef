"""Guards that run before any number is written: tokenizer compatibility and the alignment self-check.

Per-token comparison of two models only means something if both score the *same token ids* at the *same
response positions*. Known ways this goes silently wrong (ECOSYSTEM.md §6): different tokenizers, vocabulary
padding (151936 vs 152064 rows), differing EOS tokens or chat templates, and a teacher column shifted by one
token, which keeps the mean gap near 0 and so passes casual checks.

- :func:`check_pair` compares the tokenizers and the LM-head widths: identical tokenizers pass; head widths that
  differ only by padding warn and score over the shared ids; different vocabularies stop with
  :class:`~drift.errors.TokenizerMismatchError`; differing EOS tokens or chat templates warn.
- :func:`alignment_self_check` scores a model against itself (must give zero KL at every position), checks that a
  deliberate one-token shift of the teacher is detected, and scans teacher offsets -1/0/+1 on the real pair.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from drift.collect.scoring import LMHead, ScoringItem, score_items
from drift.errors import AlignmentError, AlignmentWarning, TokenizerMismatchError, TokenizerWarning

__all__ = ["PairReport", "SelfCheckReport", "alignment_self_check", "check_pair"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairReport:
    """Outcome of :func:`check_pair`."""

    shared_vocab: int
    student_vocab: int
    teacher_vocab: int
    tokenizer_size: int
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "warnings": list(self.warnings)}


def _vocab_diff(a: dict[str, int], b: dict[str, int], limit: int = 5) -> list[str]:
    out = []
    for tok in sorted(set(a) | set(b), key=lambda t: (a.get(t, b.get(t, 0)), t)):
        if a.get(tok) != b.get(tok):
            out.append(f"{tok!r}: student id {a.get(tok)} vs teacher id {b.get(tok)}")
            if len(out) >= limit:
                break
    return out


def check_pair(student: Any, teacher: Any, student_tokenizer: Any, teacher_tokenizer: Any | None = None) -> PairReport:
    """Check that student and teacher can score the same token ids.

    Raises:
        TokenizerMismatchError: the two tokenizers map tokens to different ids, or a model's LM head is smaller
            than the tokenizer (some ids could not be scored).

    Warns:
        TokenizerWarning: head widths differ (vocab padding: scoring uses the shared ids), EOS tokens differ, or
        chat templates differ.
    """
    notes: list[str] = []
    s_tok, t_tok = student_tokenizer, teacher_tokenizer if teacher_tokenizer is not None else student_tokenizer
    if t_tok is not s_tok:
        s_vocab, t_vocab = s_tok.get_vocab(), t_tok.get_vocab()
        if s_vocab != t_vocab:
            diff = _vocab_diff(s_vocab, t_vocab)
            n_diff = sum(1 for k in set(s_vocab) | set(t_vocab) if s_vocab.get(k) != t_vocab.get(k))
            raise TokenizerMismatchError(
                f"student and teacher tokenizers differ ({len(s_vocab)} vs {len(t_vocab)} tokens, {n_diff} "
                f"token(s) with different ids, e.g. {'; '.join(diff)}). drift scores the same token ids with both "
                "models, which needs one shared tokenizer; cross-tokenizer distillation is not supported. Use a "
                "teacher from the student's family (e.g. Qwen3-0.6B <- Qwen3-4B), or pass --tokenizer to force one."
            )
        if s_tok.eos_token_id != t_tok.eos_token_id:
            notes.append(f"EOS differs: student {s_tok.eos_token!r} ({s_tok.eos_token_id}) vs teacher "
                         f"{t_tok.eos_token!r} ({t_tok.eos_token_id}); responses end at the student's EOS, which "
                         "the teacher may not expect (base vs instruct checkpoints do this)")
        if getattr(s_tok, "chat_template", None) != getattr(t_tok, "chat_template", None):
            notes.append("chat templates differ; each model's prompt is rendered with the student tokenizer's "
                         "template unless a teacher_prompt is given. Check that this is what you want.")
    s_head, t_head = LMHead(student), LMHead(teacher)
    n_tok = len(s_tok)
    probe = [i for i in (s_tok.bos_token_id, *range(min(n_tok, 16))) if i is not None][:12]
    s_head.check_parity(probe)  # body + head must reproduce model(...).logits for this architecture
    if teacher is not student:
        t_head.check_parity(probe)
    s_v, t_v = s_head.vocab_size, t_head.vocab_size
    shared = min(s_v, t_v)
    if shared < n_tok:
        raise TokenizerMismatchError(
            f"the tokenizer has {n_tok} tokens but an LM head has only {shared} rows (student {s_v}, teacher "
            f"{t_v}); these checkpoints do not belong to this tokenizer."
        )
    if s_v != t_v:
        notes.append(f"LM-head widths differ (student {s_v}, teacher {t_v}; tokenizer {n_tok}): vocabulary "
                     f"padding. Scoring over the shared ids [0, {shared}); log-probs are renormalized there.")
    for note in notes:
        warnings.warn(note, TokenizerWarning, stacklevel=2)
    return PairReport(shared_vocab=shared, student_vocab=s_v, teacher_vocab=t_v, tokenizer_size=n_tok,
                      warnings=tuple(notes))


@dataclass(frozen=True)
class SelfCheckReport:
    """Numbers behind the alignment self-check (stored in the manifest)."""

    n_rollouts: int
    n_tokens: int
    self_max_kl: float
    self_max_abs_advantage: float
    shifted_mean_abs_advantage: float
    shifted_mean_kl: float
    offset_teacher_logprob: dict[int, float] = field(default_factory=dict)
    passed: bool = True
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["offset_teacher_logprob"] = {str(k): v for k, v in self.offset_teacher_logprob.items()}
        d["notes"] = list(self.notes)
        return d


def alignment_self_check(student: Any, teacher: Any, items: Sequence[ScoringItem], *, vocab_size: int,
                         tol: float = 1e-4, shift_min: float = 1e-3, **score_kw: Any) -> SelfCheckReport:
    """Verify that scoring is aligned, on a few real rollouts.

    1. The student scored against itself, with the student's prompts on both sides, must give
       KL(p||p) = 0 and A_t = 0 at every position (max abs <= ``tol``); likewise the teacher with its prompts.
    2. The same self-scoring with the teacher side read one position late must be *detected*: its mean |A_t|
       must exceed ``shift_min`` (otherwise this check could not see a shift, e.g. constant models).
    3. On the real pair, the teacher's mean log-prob of the realized tokens is compared at offsets -1, 0, +1; a
       note is added when offset 0 is not the best (a hint of misalignment, not proof).

    Raises:
        AlignmentError: step 1 or 2 fails; the message gives the numbers.
    """
    if not items:
        raise AlignmentError("self-check needs at least one rollout with a non-empty response")
    own_s = [ScoringItem(it.student_prompt_ids, it.student_prompt_ids, it.response_ids) for it in items]
    own_t = [ScoringItem(it.teacher_prompt_ids, it.teacher_prompt_ids, it.response_ids) for it in items]
    kw = {"vocab_size": vocab_size, **score_kw}
    self_s = score_items(student, student, own_s, **kw)
    self_t = score_items(teacher, teacher, own_t, **kw)
    n_tokens = sum(len(it.response_ids) for it in items)

    def mx(res: list[dict[str, np.ndarray]], key: str) -> float:
        return float(max((np.abs(r[key]).max() if len(r[key]) else 0.0) for r in res))

    self_kl = max(mx(self_s, "kl_reverse"), mx(self_t, "kl_reverse"), mx(self_s, "kl_forward"))
    self_adv = max(mx(self_s, "advantage"), mx(self_t, "advantage"))
    if self_kl > tol or self_adv > tol:
        raise AlignmentError(
            f"self-check failed: scoring a model against itself should give 0 at every position, got max KL "
            f"{self_kl:.3g} and max |A| {self_adv:.3g} (tolerance {tol}). Student and teacher inputs are not "
            "aligned on response tokens (padding or prompt handling); please report this with your models."
        )
    shifted = score_items(student, student, own_s, teacher_offset=1, **kw)
    long_enough = [r for r, it in zip(shifted, items, strict=True) if len(it.response_ids) > 1]
    shift_adv = float(np.mean(np.concatenate([np.abs(r["advantage"]) for r in long_enough]))) if long_enough else 0.0
    shift_kl = float(np.mean(np.concatenate([r["kl_reverse"] for r in long_enough]))) if long_enough else 0.0
    if shift_adv <= shift_min:
        raise AlignmentError(
            f"self-check inconclusive: a one-token shift of the teacher changed mean |A| by only {shift_adv:.3g} "
            f"(<= {shift_min}), so a misalignment would go unnoticed. Use longer responses or non-degenerate models."
        )
    offsets = {}
    for off in (-1, 0, 1):
        res = score_items(student, teacher, list(items), teacher_offset=off, **kw)
        offsets[off] = float(np.mean(np.concatenate([r["teacher_logprob"] for r in res])))
    notes = []
    if max(offsets, key=offsets.get) != 0:  # type: ignore[arg-type]
        notes.append(f"the teacher predicts the realized tokens better at a shifted offset ({offsets}); with a "
                     "capable teacher this hints at misalignment. With random or very weak teachers it is noise.")
        for n in notes:
            warnings.warn(n, AlignmentWarning, stacklevel=2)
    return SelfCheckReport(n_rollouts=len(items), n_tokens=n_tokens, self_max_kl=self_kl,
                           self_max_abs_advantage=self_adv, shifted_mean_abs_advantage=shift_adv,
                           shifted_mean_kl=shift_kl, offset_teacher_logprob=offsets, notes=tuple(notes))
