"""Held-out evaluation during training, and the prompt plumbing shared with the loop.

An evaluation of the student after ``s`` updates (:func:`evaluate`) samples ``eval_samples`` rollouts per
held-out prompt at the training temperature with a *fixed* seed (the same random stream at every evaluation,
so successive evaluations differ by the model, not by the dice; each prompt's prefix is run once for its samples,
``sample_responses(share_prompts=True)``) plus one greedy rollout per prompt, and reports:

- ``eval/accuracy``: mean verifier reward of the sampled rollouts (NaN when the verifier cannot judge);
- ``eval/greedy_accuracy``: the same for the greedy rollouts;
- ``eval/kl_mean``: token-mean full-vocabulary reverse KL(pi_S || pi_T) over the sampled rollouts' tokens,
  from the inference-only chunked scorer (:func:`drift.collect.scoring.score_items`);
- ``eval/k3_mean``, ``eval/k1_mean``: token means of the sampled-token estimators on the same tokens;
- ``eval/length_mean``, ``eval/finished_frac``: of the sampled rollouts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from drift.collect.prompts import PromptRecord
from drift.collect.rollouts import derive_seed, sample_responses
from drift.collect.scoring import ScoringItem, score_items
from drift.runtime.prompts import PromptStyle, RenderedPrompt, render_checked

__all__ = ["EVAL_SEED_STREAM", "RenderedPrompt", "evaluate", "mean_reward", "prompt_indices", "render_prompts",
           "rewards"]

EVAL_SEED_STREAM = -1
"""Evaluation rollouts are seeded with ``derive_seed(seed, EVAL_SEED_STREAM)``; training step k uses
``derive_seed(seed, k)`` (k >= 1), so the two streams never coincide."""

_ORDER_STREAM = -2  # seed stream of the per-epoch prompt permutations


def render_prompts(records: Sequence[PromptRecord], tokenizer: Any, *, chat_template: str = "auto",
                   teacher_system_prompt: str | None = None, student_system_prompt: str | None = None,
                   context: int | None = None, max_new_tokens: int = 0) -> list[RenderedPrompt]:
    """Render each record for the student and (privileged prompt and system turns applied) for the teacher,
    through the one renderer of :mod:`drift.runtime.prompts`; with a ``context``, every prompt plus
    ``max_new_tokens`` must fit (:class:`~drift.errors.PromptTooLongError`)."""
    style = PromptStyle(chat_template, student_system_prompt, teacher_system_prompt)
    return render_checked(records, tokenizer, style, context=context, budget=max_new_tokens)


def prompt_indices(n_prompts: int, per_step: int, seed: int, step: int) -> list[int]:
    """Prompt indices of training step ``step`` (1-based): consecutive slices of seeded epoch permutations.

    A function of its arguments only (no hidden state), so any step can be reproduced on its own.
    """
    lo = (step - 1) * per_step
    out = []
    for i in range(lo, lo + per_step):
        epoch, pos = divmod(i, n_prompts)
        order = np.random.default_rng(derive_seed(seed, _ORDER_STREAM, epoch)).permutation(n_prompts)
        out.append(int(order[pos]))
    return out


def rewards(verifier: Any, tokenizer: Any, prompts: Sequence[RenderedPrompt],
             responses: Sequence[Sequence[int]]) -> list[float | None]:
    """Verifier reward of each (prompt, response) pair; None where the verifier cannot judge."""
    out = []
    for p, r in zip(prompts, responses, strict=True):
        text = tokenizer.decode(list(r), skip_special_tokens=False)
        out.append(verifier(p.record, text, p.student_ids, list(r)))
    return out


def mean_reward(values: Sequence[float | None]) -> float:
    """Mean of the judged rewards; NaN when none could be judged."""
    judged = [r for r in values if r is not None]
    return float(np.mean(judged)) if judged else math.nan


def evaluate(student: Any, teacher: Any, tokenizer: Any, prompts: Sequence[RenderedPrompt], *, verifier: Any,
             stop_ids: Sequence[int], pad_id: int, samples: int, max_new_tokens: int, temperature: float,
             top_p: float, seed: int, batch_size: int, vocab_size: int | None = None,
             chunk_size: int = 256, max_batch_tokens: int = 16384) -> dict[str, float]:
    """Evaluate the student on held-out ``prompts``; returns the ``eval/*`` metrics described above."""
    t0 = time.perf_counter()
    rows = [p for p in prompts for _ in range(samples)]
    gens = sample_responses(student, [p.student_ids for p in rows], stop_ids=stop_ids, pad_id=pad_id,
                            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                            batch_size=batch_size, seed=derive_seed(seed, EVAL_SEED_STREAM), share_prompts=True)
    greedy = sample_responses(student, [p.student_ids for p in prompts], stop_ids=stop_ids, pad_id=pad_id,
                              max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size)
    responses = [g.response_ids for g in gens]
    scores = score_items(student, teacher, [ScoringItem(p.student_ids, p.teacher_ids, r)
                                            for p, r in zip(rows, responses, strict=True)],
                         chunk_size=chunk_size, max_batch_tokens=max_batch_tokens, vocab_size=vocab_size)

    def token_mean(key: str) -> float:
        values = np.concatenate([s[key] for s in scores]) if scores else np.zeros(0)
        return float(values.astype(np.float64).mean()) if values.size else math.nan

    return {
        "eval/accuracy": mean_reward(rewards(verifier, tokenizer, rows, responses)),
        "eval/greedy_accuracy": mean_reward(rewards(verifier, tokenizer, prompts,
                                                     [g.response_ids for g in greedy])),
        "eval/kl_mean": token_mean("kl_reverse"),
        "eval/k3_mean": token_mean("k3"),
        "eval/k1_mean": token_mean("k1"),
        "eval/length_mean": float(np.mean([len(r) for r in responses])),
        "eval/finished_frac": float(np.mean([g.finished for g in gens])),
        "time/eval": time.perf_counter() - t0,
    }
