"""Fixed-position schedules: prefix/suffix masks and the annealed prefix boost (PAPER §5.4-5.5, §9.1).

All three act per sequence: L is that row's valid length and t the 0-based position among its valid
tokens.

- ``prefix_mask``: w_t = 1[t < keep]. With ``frac`` (Prefix-30 = 0.3) keep = ceil(frac·L); annealed,
  keep = min(max(ceil(L·ratio), min_tokens), L) with the ratio moving from ``start_ratio`` to
  ``end_ratio``.
- ``suffix_mask``: w_t = 1[t >= L - ceil(frac·L)] (Suffix-30).
- ``prefix_weight``: w_t = 1 + (multiplier - 1)·1[t < keep], same keep and annealing as ``prefix_mask``.

Annealing, exactly as the IW-OPD verl fork (``dp_actor.py``): progress = 1 if total_steps <= 1 else
clamp((step - 1)/(total_steps - 1), 0, 1); anneal = 0.5·(1 - cos(pi·progress)) ("cosine") or progress
("linear"); ratio = clamp(start + (end - start)·anneal, 0, 1). ``frac`` is shorthand for
start_ratio = end_ratio = frac (a fixed prefix; no step needed). With frac in (0, 1] and min_tokens = 1,
ceil(frac·L) >= 1, so both readings agree.

Parity note: verl computes L·ratio as a float32 tensor times a Python float, i.e. in float32, and so
does drift, so a drift mask keeps exactly the tokens the fork keeps. It can differ by one token from
exact arithmetic: float32(0.3) = 0.30000001, so L = 50 at ratio 0.3 keeps ceil(15.000001) = 16 tokens
where ceil(50·0.3) = 15, and 25·0.28 keeps 7, not 8 (56 of the (L, ratio) pairs with L < 200 and ratio
on a 0.01 grid differ from the float64 result). ``suffix_mask`` uses the same rule, so Prefix-30 and
Suffix-30 keep equally many tokens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

from drift.config import Checks, opt
from drift.errors import ScheduleError
from drift.schedules.base import Rows, SpecMixin, check_number, fmt, raise_problems

__all__ = ["ANNEALS", "PrefixMask", "PrefixWeight", "SuffixMask", "anneal_progress", "annealed_ratio",
           "keep_count"]

ANNEALS = ("cosine", "linear")


def anneal_progress(step: int | None, total_steps: int | None, *, kind: str = "schedule") -> float:
    """progress = 1.0 if total_steps <= 1 else clamp((step - 1)/(total_steps - 1), 0, 1) (verl's rule)."""
    if total_steps is None:
        raise ScheduleError(
            f"{kind} anneals its ratio over training, so weights() needs total_steps= (and step=, the "
            "1-based training step). Pass both, or set start_ratio == end_ratio (or frac) for a fixed "
            "prefix.")
    if int(total_steps) <= 1:
        return 1.0
    if step is None:
        raise ScheduleError(f"{kind} anneals its ratio over training: pass step= (the 1-based training "
                            f"step) along with total_steps={total_steps}.")
    return min(max((int(step) - 1) / (int(total_steps) - 1), 0.0), 1.0)


def annealed_ratio(start: float, end: float, anneal: str, progress: float) -> float:
    """ratio = clamp(start + (end - start)·a(progress), 0, 1), a = 0.5(1 - cos(pi·p)) or p."""
    if anneal == "cosine":
        a = 0.5 * (1.0 - math.cos(math.pi * progress))
    elif anneal == "linear":
        a = progress
    else:
        raise ScheduleError(f"anneal must be one of {list(ANNEALS)}, got {anneal!r}")
    return min(max(start + (end - start) * a, 0.0), 1.0)


def keep_count(length: torch.Tensor, ratio: float, min_tokens: int = 0) -> torch.Tensor:
    """keep = min(max(ceil(L·ratio), min_tokens), L), with L·ratio evaluated in float32 as verl does."""
    import torch

    prod = length.to(torch.float32) * torch.tensor(ratio, dtype=torch.float32, device=length.device)
    keep = torch.ceil(prod).to(torch.float64)
    return torch.minimum(torch.clamp(keep, min=float(min_tokens)), length)


class _Annealed(SpecMixin):
    """Shared logic of the two annealed kinds (ratio, keep, validation, the ``frac`` shorthand)."""

    start_ratio: float
    end_ratio: float
    anneal: str
    min_tokens: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Any:
        params = dict(params)
        if "frac" in params:
            frac = params.pop("frac")
            clash = [k for k in ("start_ratio", "end_ratio") if k in params]
            if clash:
                raise ScheduleError(f"{cls.kind}: give either frac (a fixed prefix) or start_ratio/end_ratio "
                                    f"(annealed), not both; got frac and {clash}")
            c = Checks(cls.kind)
            check_number(c, "frac", frac, 0.0, 1.0, lo_open=True)
            raise_problems(cls.kind, c)
            params["start_ratio"] = params["end_ratio"] = float(frac)
        return super().from_params(params)

    def _check_annealing(self, c: Checks) -> None:
        check_number(c, "start_ratio", self.start_ratio, 0.0, 1.0)
        check_number(c, "end_ratio", self.end_ratio, 0.0, 1.0)
        c.choice("anneal", self.anneal, ANNEALS)
        check_number(c, "min_tokens", self.min_tokens, 0, math.inf, integer=True)
        if not c.problems:
            object.__setattr__(self, "start_ratio", float(self.start_ratio))
            object.__setattr__(self, "end_ratio", float(self.end_ratio))
            object.__setattr__(self, "min_tokens", int(self.min_tokens))

    @property
    def needs_step(self) -> bool:
        return self.start_ratio != self.end_ratio

    def ratio_at(self, step: int | None = None, total_steps: int | None = None) -> float:
        """The prefix ratio at ``step`` of ``total_steps`` (no step needed when start == end)."""
        if not self.needs_step:
            return self.start_ratio
        return annealed_ratio(self.start_ratio, self.end_ratio, self.anneal,
                              anneal_progress(step, total_steps, kind=self.kind))

    def _kept(self, rows: Rows) -> torch.Tensor:
        import torch

        keep = keep_count(rows.length, self.ratio_at(rows.step, rows.total_steps), self.min_tokens)
        return (rows.pos < keep).to(torch.float64)

    def _keep_text(self) -> str:
        lo = f"max(ceil(L·{{r}}), {self.min_tokens})" if self.min_tokens > 1 else "ceil(L·{r})"
        if not self.needs_step:
            return "keep = " + lo.format(r=fmt(self.start_ratio))
        return (f"keep = {lo.format(r='r')}, r: {fmt(self.start_ratio)} -> {fmt(self.end_ratio)} "
                f"({self.anneal} over training)")


@dataclass(frozen=True)
class PrefixMask(_Annealed):
    """Hard prefix mask: train only on the first ``keep`` valid tokens of each sequence."""

    kind: ClassVar[str] = "prefix_mask"
    summary: ClassVar[str] = ("w = 1[t < keep], keep = min(max(ceil(L·ratio), min_tokens), L); frac=0.3 "
                              "is Prefix-30, or anneal start_ratio -> end_ratio (verl opd_prefix_mask_*)")

    start_ratio: float = opt(0.3, "prefix ratio at step 1")
    end_ratio: float = opt(1.0, "prefix ratio at the last step")
    anneal: str = opt("cosine", "how the ratio moves from start to end: cosine | linear", choices=ANNEALS)
    min_tokens: int = opt(1, "keep at least this many tokens per sequence")

    def __post_init__(self) -> None:
        c = Checks(self.kind)
        self._check_annealing(c)
        raise_problems(self.kind, c)

    def _compute(self, rows: Rows) -> torch.Tensor:
        return self._kept(rows)

    def describe(self) -> str:
        return f"prefix_mask: w_t = 1[t < keep], {self._keep_text()}"


@dataclass(frozen=True)
class PrefixWeight(_Annealed):
    """Fixed-position boost: multiply the first ``keep`` tokens' advantages by ``multiplier``."""

    kind: ClassVar[str] = "prefix_weight"
    summary: ClassVar[str] = ("w = 1 + (multiplier - 1)·1[t < keep], keep as prefix_mask; default "
                              "0.3 -> 1.0 cosine, x1.5 (verl opd_prefix_weight_*)")

    start_ratio: float = opt(0.3, "prefix ratio at step 1")
    end_ratio: float = opt(1.0, "prefix ratio at the last step")
    anneal: str = opt("cosine", "how the ratio moves from start to end: cosine | linear", choices=ANNEALS)
    multiplier: float = opt(1.5, "weight of the kept prefix tokens (>= 1; the rest get 1)")
    min_tokens: int = opt(1, "keep at least this many tokens per sequence")

    def __post_init__(self) -> None:
        c = Checks(self.kind)
        self._check_annealing(c)
        check_number(c, "multiplier", self.multiplier, 1.0)
        raise_problems(self.kind, c)
        object.__setattr__(self, "multiplier", float(self.multiplier))

    def _compute(self, rows: Rows) -> torch.Tensor:
        return 1.0 + (self.multiplier - 1.0) * self._kept(rows)

    def describe(self) -> str:
        return f"prefix_weight: w_t = 1 + {fmt(self.multiplier - 1.0)}·1[t < keep], {self._keep_text()}"


@dataclass(frozen=True)
class SuffixMask(SpecMixin):
    """Hard suffix mask: train only on the last ceil(frac·L) valid tokens (Suffix-30 = frac 0.3)."""

    kind: ClassVar[str] = "suffix_mask"
    summary: ClassVar[str] = "w = 1[t >= L - ceil(frac·L)]; frac=0.3 is Suffix-30"

    frac: float = opt(0.3, "fraction of each sequence kept, in (0, 1]")

    def __post_init__(self) -> None:
        c = Checks(self.kind)
        check_number(c, "frac", self.frac, 0.0, 1.0, lo_open=True)
        raise_problems(self.kind, c)
        object.__setattr__(self, "frac", float(self.frac))

    def _compute(self, rows: Rows) -> torch.Tensor:
        import torch

        keep = keep_count(rows.length, self.frac)
        return (rows.pos >= rows.length - keep).to(torch.float64)

    def describe(self) -> str:
        return f"suffix_mask: w_t = 1[t >= L - ceil({fmt(self.frac)}·L)]"
