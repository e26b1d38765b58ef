"""Guards that run before any number is written: tokenizer compatibility and the alignment self-check.

Per-token comparison of two models only means something if both score the *same token ids* at the *same
response positions*. Known ways this goes silently wrong (ECOSYSTEM.md §6): different tokenizers, vocabulary
padding (151936 vs 152064 rows), differing EOS tokens or chat templates, and a teacher column shifted by one
token, which keeps the mean gap near 0 and so passes casual checks.

- :func:`check_pair` compares the tokenizers and the LM-head widths: identical tokenizers pass; head widths that
  differ only by padding (at most :func:`padding_slack` rows beyond the tokenizer) warn and score over the shared
  ids; different vocabularies, or heads wider than padding explains, stop with
  :class:`~drift.errors.TokenizerMismatchError`; differing EOS tokens or chat templates warn. A ``--tokenizer``
  override is compared with each model's own tokenizer.
- :func:`check_stored_tokenizer` compares the vocabulary a dataset was written with against the scoring
  tokenizer before stored ids are re-scored.
- :func:`alignment_self_check` scores a model against itself (must give zero KL at every position), checks that a
  deliberate one-token shift of the teacher is detected, and scans teacher offsets -1/0/+1 on the real pair.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from drift.collect.scoring import LMHead, ScoringItem, score_items
from drift.errors import AlignmentError, AlignmentWarning, TokenizerMismatchError, TokenizerWarning

__all__ = ["PairReport", "SelfCheckReport", "alignment_self_check", "check_head_rows", "check_pair",
           "check_stored_tokenizer", "dataset_tokenizer_identity", "padding_slack"]

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


def _vocab_diff(a: dict[str, int], b: dict[str, int], limit: int = 5,
                names: tuple[str, str] = ("student", "teacher")) -> list[str]:
    out = []
    for tok in sorted(set(a) | set(b), key=lambda t: (a.get(t, b.get(t, 0)), t)):
        if a.get(tok) != b.get(tok):
            out.append(f"{tok!r}: {names[0]} id {a.get(tok)} vs {names[1]} id {b.get(tok)}")
            if len(out) >= limit:
                break
    return out


def padding_slack(n_tokens: int) -> int:
    """Largest head-rows - tokenizer-size difference accepted as vocabulary padding: max(1024, 1% of the tokenizer).

    Checkpoints pad their embedding matrix to a multiple of 64/128 (Qwen2.5: 151936 or 152064 rows for 151665
    tokens); a head thousands of rows wider than the tokenizer belongs to another vocabulary.
    """
    return max(1024, math.ceil(0.01 * n_tokens))


def check_head_rows(name: str, rows: int, n_tokens: int) -> None:
    """Accept an LM head of ``rows`` rows for a tokenizer of ``n_tokens`` only when ``0 <= rows - n_tokens <=
    padding_slack(n_tokens)`` (151936 or 152064 rows for Qwen2.5's 151665 tokens pass; 49152 for 133 does not).

    Raises:
        TokenizerMismatchError: the head is smaller than the tokenizer, or wider than padding explains.
    """
    if rows < n_tokens:
        raise TokenizerMismatchError(
            f"the tokenizer has {n_tokens} tokens but the {name}'s LM head has only {rows} rows, so some ids could "
            f"not be scored; this checkpoint does not belong to this tokenizer. Use the tokenizer shipped with the "
            f"{name}."
        )
    slack = padding_slack(n_tokens)
    if rows - n_tokens > slack:
        raise TokenizerMismatchError(
            f"the {name}'s LM head has {rows} rows but the tokenizer only {n_tokens} tokens: {rows - n_tokens} extra "
            f"rows is more than vocabulary padding (at most {slack} = max(1024, 1% of the tokenizer)), so the "
            f"{name} was trained with another vocabulary. Score it with its own tokenizer and a teacher that "
            "shares it."
        )


def _compare_vocab(name_a: str, tok_a: Any, name_b: str, tok_b: Any) -> None:
    a_vocab, b_vocab = tok_a.get_vocab(), tok_b.get_vocab()
    if a_vocab == b_vocab:
        return
    diff = _vocab_diff(a_vocab, b_vocab, names=(name_a.split(" ")[0], name_b))
    n_diff = sum(1 for k in set(a_vocab) | set(b_vocab) if a_vocab.get(k) != b_vocab.get(k))
    raise TokenizerMismatchError(
        f"the {name_a} and {name_b} tokenizers differ ({len(a_vocab)} vs {len(b_vocab)} tokens, {n_diff} token(s) "
        f"with different ids, e.g. {'; '.join(diff)}). drift scores the same token ids with both models, which "
        "needs one shared vocabulary; cross-tokenizer distillation is not supported. Use a teacher from the "
        "student's family (e.g. Qwen3-0.6B <- Qwen3-4B) that ships the same tokenizer."
    )


def check_pair(student: Any, teacher: Any, student_tokenizer: Any, teacher_tokenizer: Any | None = None, *,
               own_tokenizers: Mapping[str, Any | None] | None = None) -> PairReport:
    """Check that student and teacher can score the same token ids.

    Args:
        student, teacher: the two causal LMs.
        student_tokenizer: the tokenizer prompts are rendered with (the student's, or a ``--tokenizer`` override).
        teacher_tokenizer: the teacher's own tokenizer (default: the same).
        own_tokenizers: each model's own tokenizer (``{"student": ..., "teacher": ...}``, None where a model
            ships none) when ``student_tokenizer`` is an override: each is compared with the override.

    Raises:
        TokenizerMismatchError: two tokenizers map tokens to different ids, or a model's LM head is smaller than
            the tokenizer or wider than vocabulary padding explains (:func:`padding_slack`).

    Warns:
        TokenizerWarning: head widths differ (vocab padding: scoring uses the shared ids), EOS tokens differ, or
        chat templates differ.
    """
    notes: list[str] = []
    s_tok = student_tokenizer
    others = {k: v for k, v in dict(own_tokenizers or {}).items() if v is not None and v is not s_tok}
    if teacher_tokenizer is not None and teacher_tokenizer is not s_tok:
        others.setdefault("teacher", teacher_tokenizer)
    label = "override (--tokenizer)" if own_tokenizers else "student"
    for name, other in others.items():
        _compare_vocab(label, s_tok, name, other)
        if s_tok.eos_token_id != other.eos_token_id:
            notes.append(f"EOS differs: {label} {s_tok.eos_token!r} ({s_tok.eos_token_id}) vs {name} "
                         f"{other.eos_token!r} ({other.eos_token_id}); responses end at the {label}'s EOS, which "
                         f"the {name} may not expect (base vs instruct checkpoints do this)")
        if getattr(s_tok, "chat_template", None) != getattr(other, "chat_template", None):
            notes.append(f"chat templates differ ({label} vs {name}); both models' prompts are rendered with the "
                         f"{label} tokenizer's template unless a teacher_prompt is given. Check that this is what "
                         "you want.")
    s_head, t_head = LMHead(student), LMHead(teacher)
    n_tok = len(s_tok)
    probe = [i for i in (s_tok.bos_token_id, *range(min(n_tok, 16))) if i is not None][:12]
    s_head.check_parity(probe)  # body + head must reproduce model(...).logits for this architecture
    if teacher is not student:
        t_head.check_parity(probe)
    s_v, t_v = s_head.vocab_size, t_head.vocab_size
    check_head_rows("student", s_v, n_tok)
    check_head_rows("teacher", t_v, n_tok)
    shared = min(s_v, t_v)
    if s_v != t_v:
        notes.append(f"LM-head widths differ (student {s_v}, teacher {t_v}; tokenizer {n_tok}): vocabulary "
                     f"padding. Scoring over the shared ids [0, {shared}); log-probs are renormalized there.")
    for note in notes:
        warnings.warn(note, TokenizerWarning, stacklevel=2)
    return PairReport(shared_vocab=shared, student_vocab=s_v, teacher_vocab=t_v, tokenizer_size=n_tok,
                      warnings=tuple(notes))


def dataset_tokenizer_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The tokenizer identity a drift dataset's ``config.json`` records (``{}`` when it records none)."""
    tok = config.get("tokenizer") if isinstance(config, Mapping) else None
    return dict(tok) if isinstance(tok, Mapping) else {}


def check_stored_tokenizer(recorded: Mapping[str, Any], tokenizer: Any, rows: Sequence[Mapping[str, Any]], *,
                           where: str, sample: int = 16) -> None:
    """Stop when stored token ids were written under another vocabulary than ``tokenizer``'s.

    With a recorded ``vocab_hash`` the two hashes must be equal (:class:`TokenizerMismatchError` naming both);
    a recorded full ``hash`` that differs while the vocabularies agree (a changed chat template or pad token: the
    main use of re-scoring a later checkpoint) only warns. With no vocabulary hash (older or imported data) drift
    warns and checks that a sample of stored ids decodes to the stored ``response_text``.
    """
    from drift.models import tokenizer_hash, vocab_hash

    stored_vocab = recorded.get("vocab_hash")
    mine = vocab_hash(tokenizer)
    if stored_vocab:
        if stored_vocab != mine:
            raise TokenizerMismatchError(
                f"{where} was written with a tokenizer whose vocabulary hash is {stored_vocab} "
                f"(source {recorded.get('source') or 'unknown'}); the scoring tokenizer's is {mine}. Its stored "
                "token ids would be read as other tokens. Score it with models that share its tokenizer."
            )
        if recorded.get("hash") and recorded["hash"] != tokenizer_hash(tokenizer):
            warnings.warn(f"{where}: same vocabulary, but the tokenizer's chat template or special tokens changed "
                          "since it was written; the stored prompts keep their original rendering.",
                          TokenizerWarning, stacklevel=2)
        return
    warnings.warn(f"{where} records no vocabulary hash (older or imported data); checking that its stored ids "
                  "decode to its stored text.", TokenizerWarning, stacklevel=2)
    checked = 0
    for r in rows:
        text = r.get("response_text")
        if not text or not r.get("response_ids"):
            continue
        decoded = tokenizer.decode(list(r["response_ids"]), skip_special_tokens=False)
        if decoded.strip() != str(text).strip():
            raise TokenizerMismatchError(
                f"{where}: rollout {r.get('prompt_id')!r}/{r.get('sample_id')!r} stores the text {str(text)[:60]!r} "
                f"but its ids decode to {decoded[:60]!r} under the scoring tokenizer; the data was written with "
                "another tokenizer. Score it with models that share its tokenizer."
            )
        checked += 1
        if checked >= sample:
            break


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
