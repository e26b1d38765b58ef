"""Checks of imported log-probs against the models they claim to come from.

A framework's dump can be wrong in ways that pass every summary: a teacher column shifted by one token keeps the
mean gap near 0 (NeMo RL PR 3768), student and teacher columns can be swapped, and the ids can belong to another
tokenizer. Given the student (or teacher) model, :func:`check_logprobs` re-scores a few imported rollouts and
compares per token: the median |imported - re-scored| must stay under a tolerance (0.05 nats by default: sampler,
trainer and drift numerics differ, bf16 more so), and when it does not, the same comparison one token earlier and
later says whether the column is shifted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from drift.errors import AlignmentError, TokenizerMismatchError
from drift.ingest.records import ImportedRollout

__all__ = ["check_logprobs", "compare_logprobs", "sampled_logprobs"]

SHIFTS = (-1, 1)


@torch.inference_mode()
def sampled_logprobs(model: Any, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *,
                     temperature: float = 1.0, chunk: int = 256) -> list[np.ndarray]:
    """log pi(y_t | prompt, y_<t) of every response token under ``model``, one float64 array per rollout.

    log pi(y_t) = z_t[y_t] / tau - logsumexp(z_t / tau), computed in float32 a chunk of positions at a time (the
    (chunk, V) logits of one chunk are the only vocabulary-wide tensor).
    """
    from drift.collect.scoring import LMHead, gather_response_hidden

    lm = LMHead(model)
    out = []
    for p, r in zip(prompts, responses, strict=True):
        if not len(r):
            out.append(np.zeros(0))
            continue
        too_big = [int(i) for i in list(p) + list(r) if int(i) >= lm.vocab_size]
        if too_big:
            raise TokenizerMismatchError(
                f"token id {max(too_big)} is outside the check model's vocabulary ({lm.vocab_size}); the dump was "
                "written with another tokenizer than this model's. Pass the run's own --student / --tokenizer.")
        h = gather_response_hidden(lm, [p], [r])
        targets = torch.as_tensor(list(r), device=lm.device)
        parts = []
        for c0 in range(0, len(r), chunk):
            z = lm.logits(h[c0:c0 + chunk]).float() / temperature
            parts.append((z.gather(1, targets[c0:c0 + chunk, None])[:, 0] - torch.logsumexp(z, dim=-1)).cpu())
        out.append(torch.cat(parts).double().numpy())
    return out


def compare_logprobs(imported: Sequence[np.ndarray], ours: Sequence[np.ndarray]) -> dict[str, Any]:
    """Median |imported - ours| per token, aligned and shifted by one token either way.

    ``shift_+1`` compares imported[t] with ours[t + 1] (the imported column scores the *next* token), ``shift_-1``
    with ours[t - 1].
    """
    def med(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
        d = [np.abs(a - b) for a, b in pairs if len(a)]
        return float(np.median(np.concatenate(d))) if d else float("nan")

    res = {"median_abs_diff": med([(np.asarray(a, float), b) for a, b in zip(imported, ours, strict=True)]),
           "n_tokens": int(sum(len(b) for b in ours))}
    for s in SHIFTS:
        pairs = [(np.asarray(a, float)[:-s], b[s:]) if s > 0 else (np.asarray(a, float)[-s:], b[:s])
                 for a, b in zip(imported, ours, strict=True) if len(b) > abs(s)]
        res[f"shift_{s:+d}"] = med(pairs)
    return res


def _check_one(side: str, model: Any, rows: Sequence[ImportedRollout], tolerance: float,
               temperature: float) -> dict[str, Any]:
    column = f"{side}_logprob"
    rows = [r for r in rows if getattr(r, column) is not None and len(r.response_ids) > 1]
    if not rows:
        return {"verdict": "not run", "why": f"no rollout with {column} and more than one token"}
    # the teacher scored its own prompt (a privileged system turn shifts positions): re-score it on that one
    prompts = [(r.teacher_prompt_ids or r.prompt_ids) if side == "teacher" else r.prompt_ids for r in rows]
    ours = sampled_logprobs(model, prompts, [r.response_ids for r in rows], temperature=temperature)
    res = compare_logprobs([getattr(r, column) for r in rows], ours)
    res.update(n_rollouts=len(rows), tolerance=tolerance, sources=[r.source for r in rows[:3]])
    if res["median_abs_diff"] < tolerance:
        res["verdict"] = "ok"
        return res
    shifted = [s for s in SHIFTS if res[f"shift_{s:+d}"] < tolerance]
    where = ", ".join(res["sources"])
    if shifted:
        s = shifted[0]
        which = "the next token (entry t scores y_{t+1})" if s > 0 else "the previous token (entry t scores y_{t-1})"
        raise AlignmentError(
            f"the imported {column} is shifted by one token: it matches the {side} model re-scored on {which} "
            f"(median |diff| {res[f'shift_{s:+d}']:.3g} nats) but not on the same token ({res['median_abs_diff']:.3g};"
            f" tolerance {tolerance}). Checked {len(rows)} rollouts, e.g. {where}. The dump or its reader is off by "
            "one position (the classic prompt_logprobs / labels bug); fix the export, or report the format to drift.")
    raise AlignmentError(
        f"the imported {column} does not match the {side} model: median |imported - re-scored| = "
        f"{res['median_abs_diff']:.3g} nats over {res['n_tokens']} tokens (tolerance {tolerance}; shifted by one: "
        f"{res['shift_-1']:.3g} / {res['shift_+1']:.3g}). Checked {len(rows)} rollouts, e.g. {where}. Is --{side} the "
        f"checkpoint that produced the dump (and --temperature the scoring temperature)? Pass --check-rollouts 0 to "
        "import without this check.")


def check_logprobs(rows: Sequence[ImportedRollout], *, student: Any = None, teacher: Any = None, n: int = 8,
                   tolerance: float = 0.05, options: Any = None, temperature: float = 1.0) -> dict[str, Any]:
    """Re-score the first ``n`` rollouts with ``student`` / ``teacher`` and compare with the imported log-probs.

    Returns:
        ``{"student": {...}, "teacher": {...}}`` for each model given: the median |diff|, the shifted medians, the
        tokens compared and ``verdict`` ``ok``.

    Raises:
        AlignmentError: a column does not match (a one-token shift is named as such).
        TokenizerMismatchError: the ids do not fit the model's vocabulary.
    """
    del options  # the check scores a handful of rollouts on the models' own device and dtype
    sample = list(rows)[:n]
    out: dict[str, Any] = {}
    for side, model in (("student", student), ("teacher", teacher)):
        if model is not None:
            out[side] = _check_one(side, model, sample, tolerance, temperature)
    return out
