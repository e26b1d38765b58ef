"""Data-dependent schedules: IW-OPD, the teacher-confidence gate, the ideal prefix ratio (PAPER §5).

Notation per row: A_t the OPD advantage, L the valid length, t = 0..L-1.

**iw_opd** (``denominator="code"``: the verl fork's ``dp_actor.py`` and TRL's ``IWOPDTrainer``)::

    p_t = |A_t| (use_abs) or A_t;   C_t = sum_{k<t} p_k;   F_t = C_t / (sum_{k<L} p_k + eps)
    w_t = 1 + gamma·clamp(1 - F_t, 0, 1)

``denominator="paper"`` (App. C.3 Eq. 17) divides by D = sum_{k<L-1} p_k instead (the last token left
out), so F = 1 and w = 1.0 exactly at the last token; D is replaced by eps when |D| < eps (a one-token
row, or all-zero drift before the last token, then gets w = 1 + gamma). Worked example |A| = [1, 1, 2],
gamma 0.5: code gives [1.5, 1.375, 1.25], paper [1.5, 1.25, 1.0]. Signed mode (use_abs false) is the
paper's ablation: the total can be near 0 or negative and the clamp saturates.

**teacher_conf** (verl ``teacher_prefix_conf_weight``): nll_t = -log pi_T(y_t); the window of t is the
``window`` tokens strictly before t (fewer near the start); n = their count;
k = max(1, floor((1 - quantile)·n)) evaluated in float32 like the reference (in float64
(1 - 0.9)·20 = 1.9999999999999996 and k would be 1, not 2); Q_t = mean of the k largest nll in the
window (0 when n = 0, i.e. t = 0); w_t = max(exp(-alpha·Q_t), floor). Differences from the reference,
all below 1e-8 relative: verl divides the top-k sum by k + 1e-8, and clamps nll at 0 (teacher log-probs
are <= 0, so that never binds).

**ideal_ratio**: S_t = sum_{k<t} A_k (log prefix ratio); w_t = exp(alpha·S_t); with ``normalize``
divided by the batch mean of exp(alpha·S_t) over the rows where t is valid (a log-mean-exp, so no
overflow); with ``blend_gamma`` g the weight becomes 1 + g·w. The exponent is capped at
``MAX_LOG_WEIGHT`` = 80 so the weight stays finite in float32 (exp(80) ~ 5.5e34); large alpha
collapses by design (PAPER §9 item 7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch

from drift.config import Checks, opt
from drift.schedules.base import Rows, SpecMixin, check_number, fmt, raise_problems

__all__ = ["DENOMINATORS", "MAX_LOG_WEIGHT", "IdealRatio", "IwOpd", "TeacherConf"]

MAX_LOG_WEIGHT = 80.0
DENOMINATORS = ("code", "paper")


@dataclass(frozen=True)
class IwOpd(SpecMixin):
    """Importance-weighted OPD: early tokens, before drift accumulates, weigh up to 1 + gamma."""

    kind: ClassVar[str] = "iw_opd"
    uses_advantage: ClassVar[bool] = True
    summary: ClassVar[str] = ("w = 1 + gamma·clamp(1 - C_t/(C_L + eps), 0, 1), C_t = sum_{k<t} |A_k|; "
                              "denominator=paper divides by sum_{k<L-1} |A_k| (last weight 1)")

    gamma: float = opt(0.5, "amplification: weights lie in [1, 1 + gamma]; 0 is plain OPD")
    use_abs: bool = opt(True, "accumulate |A_t| (true) or the signed A_t (an ablation)")
    denominator: str = opt("code", "code: / (sum over all tokens + eps), as verl and TRL; "
                                   "paper: / sum over k < L-1", choices=DENOMINATORS)
    epsilon: float = opt(1e-8, "eps of the denominator (verl hard-codes 1e-8)")

    def __post_init__(self) -> None:
        c = Checks(self.kind)
        check_number(c, "gamma", self.gamma, 0.0)
        c.check(isinstance(self.use_abs, bool), f"use_abs must be true or false, got {self.use_abs!r}")
        c.choice("denominator", self.denominator, DENOMINATORS)
        check_number(c, "epsilon", self.epsilon, 0.0, lo_open=True)
        raise_problems(self.kind, c)
        object.__setattr__(self, "gamma", float(self.gamma))
        object.__setattr__(self, "epsilon", float(self.epsilon))

    def _compute(self, rows: Rows) -> torch.Tensor:
        import torch

        proxy = (rows.adv.abs() if self.use_abs else rows.adv) * rows.valid
        prev = torch.cumsum(proxy, dim=1) - proxy  # C_t, computed as verl does
        if self.denominator == "code":
            den = proxy.sum(dim=1, keepdim=True) + self.epsilon
        else:
            # D = C at the last valid token, read from the same tensor so that F = 1 there exactly.
            last = (rows.length - 1).clamp(min=0).to(torch.long)
            den = torch.gather(prev, 1, last)
            den = torch.where(den.abs() < self.epsilon, torch.full_like(den, self.epsilon), den)
        remaining = (1.0 - prev / den).clamp(0.0, 1.0)
        return 1.0 + self.gamma * remaining

    def describe(self) -> str:
        p = "|A_k|" if self.use_abs else "A_k"
        den = f"C_L + {fmt(self.epsilon)}" if self.denominator == "code" else "sum_{k<L-1} " + p
        return (f"iw_opd ({self.denominator} form): w_t = 1 + {fmt(self.gamma)}·clamp(1 - C_t/({den}), 0, 1),"
                f" C_t = sum_{{k<t}} {p}")


@dataclass(frozen=True)
class TeacherConf(SpecMixin):
    """Windowed teacher-surprise gate: down-weight tokens that follow tokens the teacher found unlikely."""

    kind: ClassVar[str] = "teacher_conf"
    uses_teacher: ClassVar[bool] = True
    summary: ClassVar[str] = ("w = max(exp(-alpha·Q_t), floor); Q_t = mean of the k largest teacher NLLs "
                              "among the `window` tokens before t; k = max(1, floor((1 - quantile)·n)), "
                              "n = tokens in the window; needs teacher_logprob")

    window: int = opt(64, "tokens strictly before t that the gate looks at")
    quantile: float = opt(0.9, "the top (1 - quantile) share of the window's teacher NLLs is averaged")
    alpha: float = opt(1.0, "sharpness: w = exp(-alpha·Q_t)")
    floor: float = opt(0.0, "lower bound of the weight, in [0, 1]")

    def __post_init__(self) -> None:
        c = Checks(self.kind)
        check_number(c, "window", self.window, 1, math.inf, integer=True)
        check_number(c, "quantile", self.quantile, 0.0, 1.0)
        check_number(c, "alpha", self.alpha, 0.0)
        check_number(c, "floor", self.floor, 0.0, 1.0)
        raise_problems(self.kind, c)
        object.__setattr__(self, "window", int(self.window))
        for name in ("quantile", "alpha", "floor"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def top_k(self, n: torch.Tensor) -> torch.Tensor:
        """k = max(1, floor((1 - quantile)·n)), the product in float32 as the reference computes it."""
        import torch

        q = torch.tensor(1.0 - self.quantile, dtype=torch.float32, device=n.device)
        return torch.floor(q * n.to(torch.float32)).clamp(min=1.0).to(torch.long)

    def _compute(self, rows: Rows) -> torch.Tensor:
        import torch

        assert rows.teacher is not None  # SpecMixin.weights guarantees it for uses_teacher kinds
        nll = -rows.teacher * rows.valid
        B, L = nll.shape
        W = min(self.window, L)  # a window longer than the row changes nothing
        n = rows.pos.clamp(max=W)  # valid tokens strictly before t (rows are right-aligned)
        k = self.top_k(n)  # (1, L)
        # Window of t = nll[t-W .. t-1]: left-pad with -inf (never in the top k, as k <= n) and unfold.
        padded = torch.nn.functional.pad(nll, (W, 0), value=-math.inf)
        Q = torch.empty_like(nll)
        k_max = int(k.max())  # only the k_max largest of each window are ever needed
        chunk = max(1, (1 << 22) // max(1, B * W))  # bound memory at ~4M window entries per chunk
        for s in range(0, L, chunk):
            e = min(L, s + chunk)
            win = padded[:, s:e + W].unfold(1, W, 1)[:, : e - s]  # (B, e-s, W)
            top = win.topk(k_max, dim=-1).values  # descending
            top = torch.where(torch.isfinite(top), top, torch.zeros((), dtype=top.dtype, device=top.device))
            csum = top.cumsum(dim=-1)
            kk = k[:, s:e].expand(B, -1).unsqueeze(-1)  # (B, e-s, 1)
            Q[:, s:e] = torch.gather(csum, 2, kk - 1).squeeze(-1) / kk.squeeze(-1).to(torch.float64)
        Q = torch.where(n > 0, Q, torch.zeros((), dtype=Q.dtype, device=Q.device))
        return torch.exp(-self.alpha * Q).clamp(min=self.floor)

    def describe(self) -> str:
        return (f"teacher_conf: w_t = max(exp(-{fmt(self.alpha)}·Q_t), {fmt(self.floor)}), Q_t = mean of "
                f"the top max(1, floor({fmt(1.0 - self.quantile)}·n)) teacher NLLs among the "
                f"{self.window} tokens before t")


@dataclass(frozen=True)
class IdealRatio(SpecMixin):
    """The 'ideal' prefix-ratio weight exp(alpha·S_t) of the constrained-optimization view (unstable)."""

    kind: ClassVar[str] = "ideal_ratio"
    uses_advantage: ClassVar[bool] = True
    summary: ClassVar[str] = ("w = exp(alpha·S_t), S_t = sum_{k<t} A_k; normalize: / batch mean at t; "
                              "blend_gamma g: 1 + g·w")

    alpha: float = opt(1.0, "sharpness: w = exp(alpha·S_t)")
    normalize: bool = opt(False, "divide each weight by the batch mean of exp(alpha·S_t) at the same t")
    blend_gamma: float | None = opt(None, "blend with OPD as 1 + blend_gamma·w (unset: the weight alone)")

    def __post_init__(self) -> None:
        c = Checks(self.kind)
        check_number(c, "alpha", self.alpha, 0.0)
        c.check(isinstance(self.normalize, bool), f"normalize must be true or false, got {self.normalize!r}")
        if self.blend_gamma is not None:
            check_number(c, "blend_gamma", self.blend_gamma, 0.0)
        raise_problems(self.kind, c)
        object.__setattr__(self, "alpha", float(self.alpha))
        if self.blend_gamma is not None:
            object.__setattr__(self, "blend_gamma", float(self.blend_gamma))

    def _compute(self, rows: Rows) -> torch.Tensor:
        import torch

        a = rows.adv * rows.valid
        log_w = self.alpha * (torch.cumsum(a, dim=1) - a)
        if self.normalize:
            masked = torch.where(rows.valid, log_w, torch.full_like(log_w, -math.inf))
            count = rows.valid.sum(dim=0, keepdim=True).to(torch.float64)
            log_mean = torch.logsumexp(masked, dim=0, keepdim=True) - torch.log(count.clamp(min=1))
            log_w = log_w - torch.where(count > 0, log_mean, torch.zeros_like(log_mean))
        w = torch.exp(log_w.clamp(max=MAX_LOG_WEIGHT))
        if self.blend_gamma is not None:
            w = 1.0 + self.blend_gamma * w
        return w

    def describe(self) -> str:
        text = f"exp({fmt(self.alpha)}·S_t)"
        if self.normalize:
            text += " / batch mean at t"
        if self.blend_gamma is not None:
            text = f"1 + {fmt(self.blend_gamma)}·{text}"
        return f"ideal_ratio: w_t = {text}, S_t = sum_{{k<t}} A_k"
