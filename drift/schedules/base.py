"""Shared machinery of the weight schedules: the ``Schedule`` protocol, batch layout, validation, specs.

Every schedule kind is a small frozen dataclass that declares its parameters with
:func:`drift.config.opt` and implements one method, ``_compute(rows)``, on a *right-aligned* float64
torch view of the batch (:class:`Rows`). :class:`SpecMixin` owns everything else, once for all kinds:

1. convert ``advantage`` / ``mask`` / ``teacher_logprob`` (numpy arrays, torch tensors or lists;
   ``(B, L)`` or ``(L,)``) to float64 torch tensors, detached, on the advantage's device;
2. *compact* each row so its valid tokens come first, in order. Position ``t`` of a token is therefore
   the number of valid tokens before it and ``L_b = mask[b].sum()`` is the row's valid length, whatever
   the padding side (or holes) of the input. For right-padded batches (verl's layout) this is the
   identity;
3. call ``_compute``, zero every invalid position, scatter back to the input layout;
4. return the input's type: numpy float64, or a torch tensor with the advantage's dtype and device
   and no grad.

Padding convention: **the weight is 0 at every invalid position, for every kind**, so
``weights * advantage`` is exactly the per-token training signal. (verl's IW-OPD leaves 1.0 at padding
and its prefix mask 0; both are multiplied by the response mask in the loss, so training is identical.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

from drift.config import Checks
from drift.errors import ScheduleError

__all__ = ["SPEC_VERSION", "Rows", "Schedule", "SpecMixin", "check_number", "fmt", "raise_problems"]

SPEC_VERSION = 1
"""Version written into every spec as ``"version"``; :func:`drift.schedules.load` refuses newer ones."""


@runtime_checkable
class Schedule(Protocol):
    """What training code and exporters rely on; every kind in ``drift.schedules.KINDS`` has it."""

    kind: ClassVar[str]

    def weights(self, advantage: Any, mask: Any = None, *, teacher_logprob: Any = None,
                step: int | None = None, total_steps: int | None = None) -> Any:
        """Per-token weights of the same shape and type as ``advantage``; 0 at invalid positions."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON spec with ``"kind"`` and ``"version"``; ``load(s.to_dict()) == s``."""
        ...

    def to_json(self, indent: int | None = 2) -> str:
        """The spec as JSON text."""
        ...

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the spec as JSON to ``path``."""
        ...

    def describe(self) -> str:
        """One line: the formula with this spec's numbers filled in."""
        ...

    @property
    def needs_step(self) -> bool:
        """Whether ``weights`` needs ``step`` and ``total_steps`` (annealed kinds whose ratio moves)."""
        ...


@dataclass(frozen=True)
class Rows:
    """A batch in right-aligned layout, float64: row ``b`` holds its ``length[b]`` valid tokens first.

    Attributes:
        adv: ``(B, L)`` advantages A_t, 0 at invalid positions.
        teacher: ``(B, L)`` teacher log-probs (0 at invalid positions), or None when not given.
        valid: ``(B, L)`` bool, ``pos < length``.
        length: ``(B, 1)`` float64 valid length L_b (0 for an empty row).
        pos: ``(1, L)`` float64 position t = 0, 1, ..., L - 1.
        step, total_steps: the training step (1-based) and the run length, as given to ``weights``.
    """

    adv: torch.Tensor
    teacher: torch.Tensor | None
    valid: torch.Tensor
    length: torch.Tensor
    pos: torch.Tensor
    step: int | None
    total_steps: int | None


# ------------------------------------------------------------------------------------ validation helpers

def _is_number(value: Any) -> bool:
    numeric = isinstance(value, (int, float, np.integer, np.floating))
    return numeric and not isinstance(value, (bool, np.bool_))


def _interval(lo: float, hi: float, lo_open: bool, hi_open: bool) -> str:
    if math.isinf(hi):
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def check_number(c: Checks, name: str, value: Any, lo: float = -math.inf, hi: float = math.inf, *,
                 lo_open: bool = False, hi_open: bool = False, integer: bool = False) -> None:
    """Record a problem unless ``value`` is a finite number (an integer if asked) in the interval."""
    what = "an integer" if integer else "a number"
    ok = _is_number(value) and math.isfinite(float(value))
    if ok and integer:
        ok = float(value) == int(value)
    if ok:
        v = float(value)
        ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        rng = "" if (math.isinf(lo) and math.isinf(hi)) else " " + _interval(lo, hi, lo_open, hi_open)
        c.problems.append(f"{name} must be {what}{rng}, got {value!r}")


def raise_problems(kind: str, c: Checks) -> None:
    """Raise one :class:`ScheduleError` listing every problem of a ``kind`` spec, if there are any."""
    if c.problems:
        lines = "\n".join(f"  - {p}" for p in c.problems)
        raise ScheduleError(f"invalid {kind!r} schedule ({len(c.problems)} problem(s)):\n{lines}")


def _plain(value: Any) -> Any:
    """JSON-safe copy: tuples become lists, numpy scalars become Python numbers."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def fmt(x: float) -> str:
    """Short number for formulas: 0.5, 1e-08, 64."""
    return f"{x:g}"


# ---------------------------------------------------------------------------------------- array plumbing

def _to_tensor(x: Any, name: str, device: torch.device | None) -> torch.Tensor:
    import torch

    if isinstance(x, torch.Tensor):
        t = x.detach()
        return t.to(device) if device is not None else t
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged lists and the like
        raise ScheduleError(f"{name} must be a (batch, length) array or tensor: {exc}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ScheduleError(f"{name} must be a numeric (batch, length) array, got dtype {arr.dtype}")
    if not arr.flags.writeable:  # e.g. arrays pandas hands out; torch.from_numpy warns on read-only memory
        arr = arr.copy()
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device if device is not None else "cpu")


def _as_2d(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dim() == 1:
        return t.unsqueeze(0)
    if t.dim() != 2:
        raise ScheduleError(f"{name} must have shape (batch, length) or (length,), got {tuple(t.shape)}")
    return t


def _valid_mask(mask: Any, shape: torch.Size, device: torch.device) -> torch.Tensor:
    import torch

    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    m = _as_2d(_to_tensor(mask, "mask", device), "mask")
    if m.shape != shape:
        raise ScheduleError(f"mask has shape {tuple(m.shape)} but advantage has {tuple(shape)}; "
                            "they must match")
    if m.dtype != torch.bool:
        bad = ~((m == 0) | (m == 1))
        if bool(bad.any()):
            raise ScheduleError(
                f"mask must be bool or 0/1 (1 = a response token to train on); found {int(bad.sum())} "
                "other value(s). Pass the response mask, not a weight or attention-score tensor.")
        m = m != 0
    return m


def _check_finite(x: torch.Tensor, valid: torch.Tensor, name: str) -> None:
    import torch

    bad = valid & ~torch.isfinite(x)
    if bool(bad.any()):
        raise ScheduleError(
            f"{name} has {int(bad.sum())} non-finite value(s) at valid positions; fix the scores or "
            "mask those tokens out (mask = 0).")


def _zero_invalid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))


class SpecMixin:
    """Spec plumbing shared by every kind: ``weights``, ``to_dict``, ``to_json``, ``save``, ``from_params``.

    A kind sets ``kind`` and, when its formula reads them, ``uses_advantage`` / ``uses_teacher``, and
    implements ``_compute(rows) -> (B, L) float64`` (values at invalid positions are ignored) and
    ``describe()``.
    """

    kind: ClassVar[str] = ""
    uses_advantage: ClassVar[bool] = False
    uses_teacher: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    # -- provided by each kind ------------------------------------------------------------------------
    def _compute(self, rows: Rows) -> torch.Tensor:  # pragma: no cover - every kind overrides it
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - every kind overrides it
        raise NotImplementedError

    @property
    def needs_step(self) -> bool:
        return False

    # -- spec I/O -------------------------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> tuple[str, ...]:
        """The spec's parameter names (dataclass fields), in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Any:
        """Build from a spec's parameters (no ``kind``/``version``); unknown names raise ScheduleError."""
        names = cls.param_names()
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ScheduleError(f"unknown parameter(s) {unknown} for schedule kind {cls.kind!r}; "
                                f"valid parameters: {list(names)}")
        return cls(**params)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "version": SPEC_VERSION}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _plain(getattr(self, f.name))
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json() + "\n")
        os.replace(tmp, path)
        return path

    # -- the one weights() ----------------------------------------------------------------------------
    def weights(self, advantage: Any, mask: Any = None, *, teacher_logprob: Any = None,
                step: int | None = None, total_steps: int | None = None) -> Any:
        """Per-token weights w_t for a batch; multiply them into the detached OPD advantage.

        Args:
            advantage: ``(B, L)`` or ``(L,)`` per-token advantages A_t = log pi_T(y_t) - log pi_S(y_t),
                a numpy array, torch tensor or nested list. Only ``iw_opd`` and ``ideal_ratio`` read the
                values; every kind takes the shape, type and device from it.
            mask: same shape, bool or 0/1; 1 marks a response token. Default: every position is valid.
            teacher_logprob: same shape, log pi_T(y_t); needed by ``teacher_conf`` only.
            step: 1-based training step; with ``total_steps``, needed by annealed kinds whose ratio moves.
            total_steps: total training steps; ``<= 1`` means "fully annealed" (progress 1).

        Returns:
            Weights of the advantage's shape: numpy float64 for numpy/list input; for torch input a
            tensor with the advantage's dtype (float32 if it is not floating) and device, computed under
            ``no_grad`` so it never carries a gradient. Invalid positions get 0.
        """
        import torch

        is_torch = isinstance(advantage, torch.Tensor)
        with torch.no_grad():
            adv = _to_tensor(advantage, "advantage", None)
            device = adv.device
            one_d = adv.dim() == 1
            adv = _as_2d(adv, "advantage")
            valid = _valid_mask(mask, adv.shape, device)
            teacher = None
            if teacher_logprob is not None:
                teacher = _as_2d(_to_tensor(teacher_logprob, "teacher_logprob", device), "teacher_logprob")
                if teacher.shape != adv.shape:
                    raise ScheduleError(f"teacher_logprob has shape {tuple(teacher.shape)} but advantage "
                                        f"has {tuple(adv.shape)}; they must match")
                teacher = teacher.to(torch.float64)
            elif self.uses_teacher:
                raise ScheduleError(
                    f"{self.kind} weights depend on the teacher's log-probs: pass weights(advantage, mask, "
                    "teacher_logprob=...) with log pi_T(y_t), shape (batch, length).")
            adv64 = adv.to(torch.float64)
            if self.uses_advantage:
                _check_finite(adv64, valid, "advantage")
            if teacher is not None and self.uses_teacher:
                _check_finite(teacher, valid, "teacher_logprob")

            # Compact: a stable sort on "is invalid" brings each row's valid tokens to the front, in order.
            order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices
            valid_c = torch.gather(valid, 1, order)
            rows = Rows(
                adv=_zero_invalid(torch.gather(adv64, 1, order), valid_c),
                teacher=None if teacher is None else _zero_invalid(torch.gather(teacher, 1, order), valid_c),
                valid=valid_c,
                length=valid.sum(dim=1, keepdim=True).to(torch.float64),
                pos=torch.arange(adv.shape[1], dtype=torch.float64, device=device).unsqueeze(0),
                step=step, total_steps=total_steps)
            w_c = _zero_invalid(self._compute(rows), valid_c)
            w = torch.empty_like(w_c).scatter_(1, order, w_c)  # back to the input layout
            if one_d:
                w = w.squeeze(0)
        if is_torch:
            out_dtype = advantage.dtype if advantage.is_floating_point() else torch.float32
            return w.to(out_dtype).detach()
        return w.cpu().numpy()
