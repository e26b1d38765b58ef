"""On-policy distillation losses: pure, masked, token-mean, with weights and advantages held constant.

Notation (PAPER.md §1): the student pi_S samples y = (y_1..y_T); the frozen teacher pi_T scores every token;
the OPD advantage is A_t = log pi_T(y_t) - log pi_S(y_t), held constant (stop-gradient, ``sg``); a schedule
gives per-token weights w_t, also constant. With m_t the response mask and N = sum_t m_t over the batch
(verl's ``token-mean``):

- **sampled** (IW-OPD, TRL ``IWOPDTrainer``, tinker): the policy-gradient form on the sampled token,

      L = -(1/N) sum_{b,t} m_t · w_t · sg(A_t) · log pi_S(y_t).

  Its gradient is -(1/N) sum w_t A_t grad log pi_S(y_t); with w = 1 that is the gradient of the
  per-token reverse KL with the return-to-go coupling dropped. The loss *value* is not a KL (it is
  dominated by A·log pi); read the ``kl/*`` statistics instead.

  With ``advantage="batch_mean"`` (the *fixed negative advantage* control) every valid token gets the
  batch's mean advantage Ā = (1/N) sum_{b,t} m_t A_t instead of its own A_t (Ā <= 0 in expectation:
  E[A] = -KL(pi_S || pi_T) on student samples):

      L = -(1/N) sum_{b,t} m_t · w_t · sg(Ā) · log pi_S(y_t).

- **full_kl**: the full-vocabulary reverse KL at every response position,

      L = (1/N) sum_{b,t} m_t · w_t · KL(pi_S(.|x, y_<t) || pi_T(.|x, y_<t)),

  differentiated exactly through pi_S at each position (no sampling noise per position; the dependence of
  later positions on earlier tokens is still ignored, as in every OPD trainer).

Both return 0 (with a graph, so ``backward`` works) when no token is valid. The full-KL loss runs the LM heads
``chunk_size`` positions at a time under activation checkpointing, so peak memory is O(chunk x vocab) in the
forward *and* the backward pass, never tokens x vocab.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from drift.collect import metrics as m
from drift.train.config import ADVANTAGES

__all__ = ["opd_full_kl_loss", "opd_sampled_loss", "reverse_kl", "sampled_stats", "token_logprobs"]

Head = Callable[[Tensor], Tensor]


def sampled_stats(student_logprob_B_L: Tensor, teacher_logprob_B_L: Tensor, weights_B_L: Tensor,
                  mask_B_L: Tensor) -> dict[str, float]:
    """Token means over valid tokens of A, |A|, k1, k3 and the weights (min/max too); N = ``rollout/tokens``.

    Keys are the logged metric names: ``adv/mean``, ``adv/abs_mean``, ``kl/k1_mean``, ``kl/k3_mean`` (with its
    token quartiles ``kl/k3_q25``, ``kl/k3_median``, ``kl/k3_q75``),
    ``weight/mean``, ``weight/min``, ``weight/max``, ``rollout/tokens``. Means are NaN when no token is valid.
    """
    with torch.no_grad():
        valid = mask_B_L.bool()
        s, t = student_logprob_B_L.detach().float(), teacher_logprob_B_L.detach().float()
        n = int(valid.sum())
        if n == 0:
            nan = float("nan")
            return {"adv/mean": nan, "adv/abs_mean": nan, "kl/k1_mean": nan, "kl/k3_mean": nan, "kl/k3_q25": nan,
                    "kl/k3_median": nan, "kl/k3_q75": nan,
                    "weight/mean": nan, "weight/min": nan, "weight/max": nan, "rollout/tokens": 0.0}
        a = m.advantage(s, t, valid)[valid]
        w = weights_B_L.detach().float()[valid]
        k3 = m.k3(s, t, valid)[valid]
        q25, q50, q75 = (float(v) for v in torch.quantile(k3, torch.tensor([0.25, 0.5, 0.75])))
        return {
            "adv/mean": float(a.mean()),
            "adv/abs_mean": float(a.abs().mean()),
            "kl/k1_mean": float(m.k1(s, t, valid)[valid].mean()),
            "kl/k3_mean": float(k3.mean()),
            "kl/k3_q25": q25,
            "kl/k3_median": q50,
            "kl/k3_q75": q75,
            "weight/mean": float(w.mean()),
            "weight/min": float(w.min()),
            "weight/max": float(w.max()),
            "rollout/tokens": float(n),
        }


def opd_sampled_loss(student_logprob_B_L: Tensor, teacher_logprob_B_L: Tensor, weights_B_L: Tensor,
                     mask_B_L: Tensor, *, advantage: str = "token") -> tuple[Tensor, dict[str, float]]:
    """Sampled-token OPD loss L = -(1/N) sum m·w·sg(A)·log pi_S(y_t), A = log pi_T(y_t) - sg(log pi_S(y_t)).

    Args:
        student_logprob_B_L: log pi_S(y_t) *with* grad (the only input gradients flow into).
        teacher_logprob_B_L: log pi_T(y_t); detached here.
        weights_B_L: schedule weights w_t; detached here.
        mask_B_L: 1 (or True) at response tokens; N = its sum over the whole batch (token-mean).
        advantage: ``token`` (A_t per token) or ``batch_mean`` (every valid token gets
            Ā = (1/N) sum m·A, the fixed-negative-advantage control).

    Returns:
        ``(loss, stats)``: a scalar tensor, and :func:`sampled_stats` (of the real A_t) plus ``loss``.
    """
    if advantage not in ADVANTAGES:
        raise ValueError(f"advantage must be one of {list(ADVANTAGES)}, got {advantage!r}")
    mask = mask_B_L.to(student_logprob_B_L.dtype)
    adv = (teacher_logprob_B_L.detach() - student_logprob_B_L.detach()) * mask
    w = weights_B_L.detach().to(student_logprob_B_L.dtype) * mask
    n = mask.sum().clamp_min(1.0)
    if advantage == "batch_mean":
        adv = (adv.sum() / n) * mask  # one constant, negative in expectation, for every valid token
    # Zero-valued padding still multiplies the (finite) student log-prob, so the graph is intact when N = 0.
    loss = -(w * adv * torch.where(mask > 0, student_logprob_B_L, torch.zeros_like(student_logprob_B_L))).sum() / n
    stats = sampled_stats(student_logprob_B_L, teacher_logprob_B_L, weights_B_L, mask_B_L)
    stats["loss"] = float(loss.detach())
    return loss, stats


def reverse_kl(student_logits_C_V: Tensor, teacher_logits_C_V: Tensor) -> Tensor:
    """KL(p || q) = sum_v p_v (log p_v - log q_v) per row, p = softmax(student), q = softmax(teacher); float32.

    Differentiable in the student logits; shape (C,).
    """
    logp = torch.log_softmax(student_logits_C_V.float(), dim=-1)
    logq = torch.log_softmax(teacher_logits_C_V.float(), dim=-1)
    return (logp.exp() * (logp - logq)).sum(dim=-1)


def _weighted_kl_sum(student_hidden_C_D: Tensor, teacher_hidden_C_D: Tensor, weights_C: Tensor,
                     student_head: Head, teacher_head: Head) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        teacher_logits = teacher_head(teacher_hidden_C_D)
    kl_C = reverse_kl(student_head(student_hidden_C_D), teacher_logits)
    return (weights_C * kl_C).sum(), kl_C.detach().sum()


def opd_full_kl_loss(student_hidden_N_D: Tensor, teacher_hidden_N_D: Tensor, weights_N: Tensor, n_tokens: int, *,
                     student_head: Head, teacher_head: Head | None = None,
                     chunk_size: int = 256) -> tuple[Tensor, dict[str, float]]:
    """Full-vocabulary OPD loss L = (1/N) sum_n w_n · KL(pi_S || pi_T)_n over flattened response positions.

    Args:
        student_hidden_N_D: what ``student_head`` turns into logits, one row per response token (with grad):
            final hidden states, or logits themselves with an identity head.
        teacher_hidden_N_D: the teacher's rows for the same tokens (no grad needed).
        weights_N: schedule weight per row; detached here. Rows that are not response tokens must be absent.
        n_tokens: the token-mean denominator N (usually the number of rows; at least 1 is used).
        student_head, teacher_head: (C, D) -> (C, V) logits over the same vocabulary; teacher_head defaults to
            student_head.
        chunk_size: rows per head call; each chunk is recomputed in the backward pass (checkpointing).

    Returns:
        ``(loss, stats)`` with ``loss`` and ``kl/full_mean`` = (1/N) sum_n KL_n (unweighted).
    """
    teacher_head = teacher_head or student_head
    w = weights_N.detach().float()
    total = (student_hidden_N_D.sum() * 0.0).float()  # keeps a graph even when there is no row
    kl_sum = 0.0
    chunk = max(1, int(chunk_size))
    for lo in range(0, student_hidden_N_D.shape[0], chunk):
        args = (student_hidden_N_D[lo: lo + chunk], teacher_hidden_N_D[lo: lo + chunk].detach(), w[lo: lo + chunk])
        if torch.is_grad_enabled() and student_hidden_N_D.requires_grad:
            part, kl = checkpoint(_weighted_kl_sum, *args, student_head, teacher_head, use_reentrant=False)
        else:
            part, kl = _weighted_kl_sum(*args, student_head, teacher_head)
        total = total + part
        kl_sum += float(kl)
    n = max(1, int(n_tokens))
    loss = total / n
    return loss, {"loss": float(loss.detach()), "kl/full_mean": kl_sum / n if n_tokens > 0 else float("nan")}


def _logprob_chunk(hidden_C_D: Tensor, targets_C: Tensor, head: Head) -> Tensor:
    logits = head(hidden_C_D).float()
    return logits.gather(1, targets_C.view(-1, 1)).squeeze(1) - torch.logsumexp(logits, dim=-1)


def token_logprobs(hidden_N_D: Tensor, targets_N: Tensor, head: Head, *, chunk_size: int = 256) -> Tensor:
    """log softmax(head(hidden))[target] per row, float32, ``chunk_size`` rows at a time (checkpointed when
    gradients are needed, so memory stays O(chunk x vocab) in the backward pass too)."""
    out = []
    chunk = max(1, int(chunk_size))
    grad = torch.is_grad_enabled() and hidden_N_D.requires_grad
    for lo in range(0, hidden_N_D.shape[0], chunk):
        h, t = hidden_N_D[lo: lo + chunk], targets_N[lo: lo + chunk]
        out.append(checkpoint(_logprob_chunk, h, t, head, use_reentrant=False) if grad
                   else _logprob_chunk(h, t, head))
    return torch.cat(out) if out else hidden_N_D.new_zeros(0, dtype=torch.float32)
