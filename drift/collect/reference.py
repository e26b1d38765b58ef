"""A deliberately naive scorer: full logits, full log-softmax (in float64), plain loops.

It exists to check :func:`drift.collect.scoring.score_items` (tests compare the two at atol 1e-5 in float32) and
as the baseline of ``benchmarks/bench_scoring.py``. It scores one rollout at a time with no padding, keeps the
whole (L, V) logits of both models, and computes every metric straight from its definition. Top-k sets and
argmaxes come from a stable descending sort of the logits (ties toward the lower id, drift's rule). Do not use it on
long sequences with large vocabularies: memory is O(L x V).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from drift.collect.scoring import ScoringItem

__all__ = ["naive_score_item"]


@torch.inference_mode()
def naive_score_item(student: Any, teacher: Any, item: ScoringItem, *, topk: int = 16,
                     vocab_size: int | None = None, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """Score one rollout with full logits; returns the same keys as ``score_items`` (per-token arrays)."""
    resp = list(item.response_ids)
    out: dict[str, list[float]] = {}

    def logits_of(model: Any, prompt: list[int]) -> torch.Tensor:
        ids = torch.tensor([prompt + resp], device=model.device)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0].float()
        if vocab_size is not None:
            logits = logits[:, :vocab_size]
        # row P + j - 1 predicts response token j
        return (logits / temperature)[len(prompt) - 1: len(prompt) + len(resp) - 1].double()

    raw_t = logits_of(teacher, list(item.teacher_prompt_ids))
    raw_s = logits_of(student, list(item.student_prompt_ids))
    ls = torch.log_softmax(raw_s, dim=-1)
    lt = torch.log_softmax(raw_t, dim=-1)
    ps, pt = ls.exp(), lt.exp()
    k = min(topk, ls.shape[1])
    # ids by decreasing logit, ties in increasing id order
    order_s = np.argsort(-raw_s.cpu().numpy(), axis=1, kind="stable")
    order_t = np.argsort(-raw_t.cpu().numpy(), axis=1, kind="stable")
    for j, y in enumerate(resp):
        top_s, top_t = order_s[j, :k].tolist(), order_t[j, :k].tolist()
        s_lp, t_lp = float(ls[j, y]), float(lt[j, y])
        a = t_lp - s_lp
        d = min(max(a, -20.0), 20.0)
        rows = {
            "student_logprob": s_lp,
            "teacher_logprob": t_lp,
            "student_entropy": float(-(ps[j] * ls[j]).sum()),
            "teacher_entropy": float(-(pt[j] * lt[j]).sum()),
            "kl_reverse": float((ps[j] * (ls[j] - lt[j])).sum()),
            "kl_forward": float((pt[j] * (lt[j] - ls[j])).sum()),
            "teacher_rank": int((raw_t[j] > raw_t[j, y]).sum()),  # by definition: ids with a larger logit
            "student_argmax": top_s[0],
            "teacher_argmax": top_t[0],
            "topk_overlap": len(set(top_s) & set(top_t)) / k,
            "teacher_mass_student_topk": float(sum(pt[j, v] for v in top_s)),
            "advantage": a,
            "k1": -a,
            "k3": min(float(np.expm1(d) - d), 10.0),
        }
        for key, val in rows.items():
            out.setdefault(key, []).append(val)
    # exclusive prefix sums with a plain running total
    running = {"prefix_logratio": 0.0, "cum_abs_gap": 0.0, "student_prefix_logprob": 0.0,
               "teacher_prefix_logprob": 0.0}
    for key in running:
        out[key] = []
    for j in range(len(resp)):
        for key in running:
            out[key].append(running[key])
        running["prefix_logratio"] += out["advantage"][j]
        running["cum_abs_gap"] += abs(out["advantage"][j])
        running["student_prefix_logprob"] += out["student_logprob"][j]
        running["teacher_prefix_logprob"] += out["teacher_logprob"][j]
    total = running["cum_abs_gap"]
    out["cum_abs_gap_frac"] = [c / total if total > 0 else 0.0 for c in out["cum_abs_gap"]]
    return {k: np.asarray(v) for k, v in out.items()}
