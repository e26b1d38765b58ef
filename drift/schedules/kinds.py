"""Position-only schedules (uniform, linear, pwopsd, fitted, vector), the shuffled control, the registry, ``load``.

Per row, L is the valid length and t = 0..L-1 the position among valid tokens.

- ``uniform``: w_t = 1 (plain OPD).
- ``linear``: w_t = 1 + gamma·(1 - t/L) (the v3 ablation row; equals code-form IW-OPD when |A| is
  constant).
- ``pwopsd``: w_t = w_min + (1 - w_min)·sigmoid((u - tau)/s), u = (t + 0.5)/L the token centre
  (PW-OPSD; rises with position).
- ``fitted``: a curve family of the registry :data:`drift.curves.FAMILIES` at x = (t + 0.5)/L
  (``x="rel"``) or x = t + 1 (``x="abs"``), so every position lies inside every family's domain
  (power laws need x > 0; a point outside would be evaluated at the domain edge,
  :func:`drift.curves.evaluate_on_domain`), clipped to [floor, ceiling], then divided per row by a
  statistic over its valid positions: ``mean`` (each row's valid weights then average exactly 1),
  ``max`` (row maximum 1), ``first`` (w_0 = 1) or ``none``. Parameter names, and which must be > 0,
  come from the registry. ``source`` carries provenance (dataset, metric, fit summary) and does not
  affect the weights.
- ``vector``: explicit weights per bin. ``x="rel"`` bins u = (t + 0.5)/L, by default into len(values)
  equal bins on [0, 1]; ``x="abs"`` bins the 0-based position t and needs ``edges``. Bin i holds
  edges[i] <= x < edges[i+1]; positions below the first edge take the first value, at or beyond the
  last edge the last value.
- ``shuffled``: a negative control. The ``base`` schedule's weights of each row, permuted uniformly at
  random over that row's valid positions: every rollout keeps its multiset of weights (so the same total
  weight and the same share of zeros) but loses any link between weight and position. The permutation of
  row b at training step s is a function of ``(seed, s, b)`` only (``numpy.random.default_rng([seed, s,
  b])``; s = 0 when no step is given), so a run is reproducible and a row's permutation does not depend on
  the other rows.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

from drift.config import Checks, opt
from drift.curves import FAMILIES, evaluate_on_domain
from drift.errors import InputFormatError, ScheduleError
from drift.schedules.base import SPEC_VERSION, Rows, Schedule, SpecMixin, check_number, fmt, raise_problems
from drift.schedules.iw import IdealRatio, IwOpd, TeacherConf
from drift.schedules.masks import PrefixMask, PrefixWeight, SuffixMask

__all__ = ["KINDS", "Fitted", "Linear", "Pwopsd", "Shuffled", "Uniform", "Vector", "from_dict", "load"]

POSITIONS = ("rel", "abs")
NORMALIZATIONS = ("mean", "max", "first", "none")


def _help(text: str) -> dict[str, Any]:
    """Field metadata in the shape :func:`drift.config.opt` writes, for fields without a default."""
    return {"help": text, "choices": None, "cli": True, "flag": None}


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


@dataclass(frozen=True)
class Uniform(SpecMixin):
    """Plain OPD: every valid token has weight 1."""

    kind: ClassVar[str] = "uniform"
    summary: ClassVar[str] = "w = 1 (plain OPD)"

    def _compute(self, rows: Rows) -> torch.Tensor:
        import torch

        return torch.ones_like(rows.adv)

    def describe(self) -> str:
        return "uniform: w_t = 1 (plain OPD)"


@dataclass(frozen=True)
class Linear(SpecMixin):
    """Linear decay from 1 + gamma at the first token towards 1 at the end."""

    kind: ClassVar[str] = "linear"
    summary: ClassVar[str] = "w = 1 + gamma·(1 - t/L)"

    gamma: float = opt(0.5, "amplification: weights lie in (1, 1 + gamma]")

    def __post_init__(self) -> None:
        c = Checks(self.kind)
        check_number(c, "gamma", self.gamma, 0.0)
        raise_problems(self.kind, c)
        object.__setattr__(self, "gamma", float(self.gamma))

    def _compute(self, rows: Rows) -> torch.Tensor:
        return 1.0 + self.gamma * (1.0 - rows.pos / rows.length.clamp(min=1.0))

    def describe(self) -> str:
        return f"linear: w_t = 1 + {fmt(self.gamma)}·(1 - t/L)"


@dataclass(frozen=True)
class Pwopsd(SpecMixin):
    """PW-OPSD's rising sigmoid: later tokens weigh more (privileged self-teacher setting)."""

    kind: ClassVar[str] = "pwopsd"
    summary: ClassVar[str] = ("w = w_min + (1 - w_min)·sigmoid(((t + 0.5)/L - tau)/s); rises from ~w_min "
                              "to ~1")

    w_min: float = opt(0.25, "weight at the start of the sigmoid, in [0, 1]")
    tau: float = opt(0.3, "relative position of the sigmoid's midpoint")
    s: float = opt(0.1, "sigmoid width in relative position (> 0)")

    def __post_init__(self) -> None:
        c = Checks(self.kind)
        check_number(c, "w_min", self.w_min, 0.0, 1.0)
        check_number(c, "tau", self.tau)
        check_number(c, "s", self.s, 0.0, lo_open=True)
        raise_problems(self.kind, c)
        for name in ("w_min", "tau", "s"):
            object.__setattr__(self, name, float(getattr(self, name)))

    def _compute(self, rows: Rows) -> torch.Tensor:
        import torch

        u = (rows.pos + 0.5) / rows.length.clamp(min=1.0)
        return self.w_min + (1.0 - self.w_min) * torch.sigmoid((u - self.tau) / self.s)

    def describe(self) -> str:
        return (f"pwopsd: w_t = {fmt(self.w_min)} + {fmt(1.0 - self.w_min)}·sigmoid(((t + 0.5)/L - "
                f"{fmt(self.tau)})/{fmt(self.s)})")


@dataclass(frozen=True)
class Fitted(SpecMixin):
    """A fitted curve over position (from ``drift fit``), clipped and normalized per row."""

    kind: ClassVar[str] = "fitted"
    summary: ClassVar[str] = ("w = curve(x) clipped to [floor, ceiling], / row mean (or max, first, none);"
                              " x = (t + 0.5)/L (rel) or t + 1 (abs); families: " + ", ".join(FAMILIES))

    family: str = dataclasses.field(metadata=_help("curve family: " + " | ".join(FAMILIES)))
    params: dict[str, float] = dataclasses.field(
        metadata=_help('curve parameters as JSON, e.g. {"a": 0.5, "tau": 0.3, "c": 1.0}'))
    x: str = opt("rel", "position axis: rel = (t + 0.5)/L, abs = t + 1", choices=POSITIONS)
    normalize: str = opt("mean", "per-row normalization over valid tokens: mean | max | first | none",
                         choices=NORMALIZATIONS)
    floor: float = opt(0.0, "lower clip of the curve before normalizing (>= 0)")
    ceiling: float | None = opt(None, "upper clip of the curve before normalizing (unset: none)")
    source: dict[str, Any] | None = dataclasses.field(
        default=None, metadata=_help("provenance as JSON (dataset, metric, fit summary); not used"))

    def __post_init__(self) -> None:
        c = Checks(self.kind)
        c.choice("family", self.family, tuple(FAMILIES))
        if not isinstance(self.params, Mapping):
            c.problems.append(f"params must be an object of named numbers, got {self.params!r}")
        elif self.family in FAMILIES:
            fam = FAMILIES[self.family]
            want = fam.param_names
            c.check(set(self.params) == set(want),
                    f"params for {self.family} must be exactly {list(want)}, got {sorted(self.params)}")
            for k, v in self.params.items():
                check_number(c, f"params[{k!r}]", v)
            for positive in fam.positive:  # the registry says which parameters must be > 0 (tau, s, b)
                if positive in self.params:
                    check_number(c, f"params[{positive!r}]", self.params[positive], 0.0, lo_open=True)
        c.choice("x", self.x, POSITIONS)
        c.choice("normalize", self.normalize, NORMALIZATIONS)
        check_number(c, "floor", self.floor, 0.0)
        if self.ceiling is not None:
            lo = float(self.floor) if not c.problems else 0.0
            check_number(c, "ceiling", self.ceiling, lo, lo_open=True)
        if self.source is not None:
            if not isinstance(self.source, Mapping):
                c.problems.append(f"source must be an object (provenance) or null, got {self.source!r}")
            else:
                try:
                    json.dumps(self.source)
                except (TypeError, ValueError) as exc:
                    c.problems.append(f"source must be JSON-serializable: {exc}")
        raise_problems(self.kind, c)
        object.__setattr__(self, "params", {k: float(self.params[k]) for k in FAMILIES[self.family].param_names})
        object.__setattr__(self, "floor", float(self.floor))
        if self.ceiling is not None:
            object.__setattr__(self, "ceiling", float(self.ceiling))
        if self.source is not None:
            object.__setattr__(self, "source", json.loads(json.dumps(self.source)))

    def _compute(self, rows: Rows) -> torch.Tensor:
        import torch

        if self.x == "rel":
            x = (rows.pos + 0.5) / rows.length.clamp(min=1.0)
        else:
            x = (rows.pos + 1.0).expand_as(rows.adv)
        # The curve formulas live once, in the registry drift.curves.FAMILIES (numpy); positions do not depend on
        # the input type. Every position here is inside the domain; evaluate_on_domain only guards the edge.
        curve = evaluate_on_domain(self.family, self.params, x.cpu().numpy())
        v = torch.as_tensor(curve, dtype=torch.float64, device=rows.adv.device)
        v = v.clamp(min=self.floor, max=self.ceiling)
        bad = rows.valid & ~torch.isfinite(v)
        if bool(bad.any()):
            raise ScheduleError(f"fitted {self.family} curve is not finite at {int(bad.sum())} valid "
                                "position(s); check params or set a ceiling")
        if self.normalize == "none":
            return v
        if self.normalize == "mean":
            norm = (v * rows.valid).sum(dim=1, keepdim=True) / rows.length.clamp(min=1.0)
        elif self.normalize == "max":
            norm = torch.where(rows.valid, v, torch.full_like(v, -math.inf)).amax(dim=1, keepdim=True)
        else:  # first
            norm = v[:, :1]
        nonempty = rows.length > 0
        if bool((nonempty & (norm <= 0)).any()):
            raise ScheduleError(f"fitted weights: the per-row {self.normalize} of the curve is <= 0 for "
                                "some row, so it cannot be normalized; set floor > 0 or normalize='none'")
        return v / torch.where(nonempty, norm, torch.ones_like(norm))

    def describe(self) -> str:
        xs = "(t + 0.5)/L" if self.x == "rel" else "t + 1"
        ps = ", ".join(f"{k}={fmt(v)}" for k, v in self.params.items())
        clip = f"[{fmt(self.floor)}, {fmt(self.ceiling) if self.ceiling is not None else 'inf'}]"
        norm = "" if self.normalize == "none" else f", / row {self.normalize}"
        return f"fitted: w_t = {self.family}(x = {xs}; {ps}) clipped to {clip}{norm}"


@dataclass(frozen=True)
class Vector(SpecMixin):
    """Explicit weights per position bin (relative or absolute)."""

    kind: ClassVar[str] = "vector"
    summary: ClassVar[str] = ("w = values[bin(x)]; rel: x = (t + 0.5)/L in len(values) equal bins (or "
                              "edges); abs: x = t with explicit edges")

    values: tuple[float, ...] = dataclasses.field(metadata=_help("weight per bin (>= 0), e.g. 1.5,1.2,1.0"))
    x: str = opt("rel", "position axis: rel = (t + 0.5)/L, abs = t", choices=POSITIONS)
    edges: tuple[float, ...] | None = opt(None, "bin edges, len(values) + 1, increasing (abs: required)")

    def __post_init__(self) -> None:
        c = Checks(self.kind)
        vals = self.values
        if isinstance(vals, (str, bytes)) or not _is_list(vals) or len(vals) == 0:
            c.problems.append(f"values must be a non-empty list of numbers, got {vals!r}")
            vals = ()
        for i, v in enumerate(vals):
            check_number(c, f"values[{i}]", v, 0.0)
        c.choice("x", self.x, POSITIONS)
        edges = self.edges
        if edges is None:
            c.check(self.x != "abs", "x='abs' needs edges (token positions, e.g. [0, 256, 512, 1024]): "
                                     "there is no natural end to split evenly")
        elif isinstance(edges, (str, bytes)) or not _is_list(edges):
            c.problems.append(f"edges must be a list of numbers or null, got {edges!r}")
        else:
            c.check(len(edges) == len(vals) + 1,
                    f"edges must have len(values) + 1 = {len(vals) + 1} entries, got {len(edges)}")
            for i, e in enumerate(edges):
                check_number(c, f"edges[{i}]", e)
            if not c.problems:
                c.check(all(float(a) < float(b) for a, b in itertools.pairwise(edges)),
                        f"edges must be strictly increasing, got {list(edges)}")
        raise_problems(self.kind, c)
        object.__setattr__(self, "values", tuple(float(v) for v in vals))
        if edges is not None:
            object.__setattr__(self, "edges", tuple(float(e) for e in edges))

    def bin_edges(self) -> tuple[float, ...]:
        """The edges in use (for rel without edges: len(values) equal bins on [0, 1])."""
        if self.edges is not None:
            return self.edges
        n = len(self.values)
        return tuple(i / n for i in range(n + 1))

    def _compute(self, rows: Rows) -> torch.Tensor:
        import torch

        rel = (rows.pos + 0.5) / rows.length.clamp(min=1.0)
        x = rel if self.x == "rel" else rows.pos.expand_as(rows.adv)
        edges = torch.tensor(self.bin_edges(), dtype=torch.float64, device=x.device)
        idx = (torch.searchsorted(edges, x.contiguous(), right=True) - 1).clamp(0, len(self.values) - 1)
        return torch.tensor(self.values, dtype=torch.float64, device=x.device)[idx]

    def describe(self) -> str:
        xs = "(t + 0.5)/L" if self.x == "rel" else "t"
        shown = ", ".join(fmt(v) for v in self.values[:6]) + (", ..." if len(self.values) > 6 else "")
        how = "equal bins" if self.edges is None else f"bins with edges {list(map(fmt, self.edges))}"
        return f"vector: w_t = values[bin({xs})], {len(self.values)} {how}; values = [{shown}]"


@dataclass(frozen=True)
class Shuffled(SpecMixin):
    """Negative control: the ``base`` schedule's weights, permuted per row over its valid positions.

    Example:
        >>> s = load({"kind": "shuffled", "base": {"kind": "linear", "gamma": 1.0}, "seed": 0})
        >>> w = s.weights([[1.0, 1.0, 1.0, 1.0]], step=1)
        >>> sorted(w[0].tolist()) == sorted(load({"kind": "linear", "gamma": 1.0}).weights([[1.0] * 4])[0].tolist())
        True
    """

    kind: ClassVar[str] = "shuffled"
    summary: ClassVar[str] = ("w = the base schedule's row weights, permuted at random over the row's valid "
                              "positions (same multiset, no position information); permutation from (seed, "
                              "step, row)")

    base: dict[str, Any] = dataclasses.field(
        metadata=_help('the schedule whose weights are permuted, as a JSON spec, e.g. {"kind": "prefix_mask", '
                       '"frac": 0.3}'))
    seed: int = opt(0, "seed of the permutations (each row's comes from seed, step and row index)")

    def __post_init__(self) -> None:
        c = Checks(self.kind)
        check_number(c, "seed", self.seed, 0.0, integer=True)
        base: Schedule | None = None
        if not isinstance(self.base, Mapping):
            c.problems.append(f"base must be a schedule spec (a JSON object with a kind), got {self.base!r}")
        elif self.base.get("kind") == self.kind:
            c.problems.append("base must not be another shuffled schedule: shuffling twice is one shuffle; "
                              "pass the unshuffled spec")
        else:
            try:
                base = from_dict(self.base)
            except ScheduleError as exc:
                c.problems.append("base: " + " ".join(str(exc).split()))
        raise_problems(self.kind, c)
        assert base is not None  # raise_problems raised otherwise
        object.__setattr__(self, "base", base.to_dict())  # canonical: every parameter explicit
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "_base", base)
        # the base's needs decide what weights() must check and be given
        object.__setattr__(self, "uses_advantage", bool(getattr(base, "uses_advantage", False)))
        object.__setattr__(self, "uses_teacher", bool(getattr(base, "uses_teacher", False)))

    @property
    def base_schedule(self) -> Schedule:
        """The schedule whose weights are permuted."""
        return self._base  # type: ignore[attr-defined,no-any-return]

    @property
    def needs_step(self) -> bool:
        return bool(self._base.needs_step)  # type: ignore[attr-defined]

    def _compute(self, rows: Rows) -> torch.Tensor:
        import torch

        w = self._base._compute(rows)  # type: ignore[attr-defined]
        step = int(rows.step) if rows.step is not None else 0
        lengths = rows.length.squeeze(1).to(torch.int64).tolist()
        out = w.clone()
        for b, n in enumerate(lengths):
            if n > 1:  # compact layout: the row's valid tokens are its first n positions
                perm = np.random.default_rng([self.seed, step, b]).permutation(n)
                out[b, :n] = w[b, torch.as_tensor(perm, device=w.device)]
        return out

    def describe(self) -> str:
        return f"shuffled: w_t = [{self._base.describe()}] permuted per row over valid positions (seed {self.seed})"  # type: ignore[attr-defined]


KINDS: dict[str, type[SpecMixin]] = {
    cls.kind: cls
    for cls in (Uniform, PrefixMask, SuffixMask, PrefixWeight, Linear, IwOpd, TeacherConf, IdealRatio,
                Pwopsd, Fitted, Vector, Shuffled)
}
"""Every schedule kind, by the name used in specs (``{"kind": ...}``)."""


def from_dict(spec: Mapping[str, Any]) -> Schedule:
    """Build a schedule from a spec dict (``kind``, optional ``version``, parameters)."""
    if not isinstance(spec, Mapping):
        raise ScheduleError(f"a schedule spec must be a JSON object, got {type(spec).__name__}")
    params = dict(spec)
    kind = params.pop("kind", None)
    if kind is None:
        raise ScheduleError(f'schedule spec has no "kind"; choose one of {list(KINDS)}')
    if kind not in KINDS:
        raise ScheduleError(f"unknown schedule kind {kind!r}; valid kinds: {list(KINDS)}")
    version = params.pop("version", SPEC_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SPEC_VERSION:
        raise ScheduleError(f"schedule spec version {version!r} is not supported (this drift reads "
                            f"version {SPEC_VERSION}); upgrade drift or rewrite the spec")
    cls = KINDS[kind]
    missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               and f.name not in params]
    if missing:
        raise ScheduleError(f"schedule kind {kind!r} needs parameter(s) {missing}; valid parameters: "
                            f"{list(cls.param_names())}")
    return cls.from_params(params)


def load(spec: Schedule | Mapping[str, Any] | str | os.PathLike[str]) -> Schedule:
    """A schedule from a dict, JSON text or a path to a JSON file (a schedule passes through).

    Example:
        >>> s = load({"kind": "iw_opd", "gamma": 0.5, "use_abs": True, "denominator": "code"})
        >>> s.weights([[1.0, 1.0, 2.0]]).round(3).tolist()
        [[1.5, 1.375, 1.25]]
    """
    if isinstance(spec, SpecMixin):
        return spec
    if isinstance(spec, Mapping):
        return from_dict(spec)
    if isinstance(spec, (str, os.PathLike)):
        text = spec if isinstance(spec, str) else None
        where = "schedule JSON text"
        if text is None or not text.lstrip().startswith("{"):
            path = Path(spec)
            if not path.is_file():
                raise InputFormatError(
                    f"{str(spec)!r} is neither JSON text nor an existing file; pass a schedule spec such "
                    'as \'{"kind": "iw_opd", "gamma": 0.5}\' or a path to one')
            text, where = path.read_text(), str(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputFormatError(f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                                   f"{exc.msg}); fix it or write it with `drift schedule make`") from exc
        return from_dict(data)
    raise ScheduleError(f"cannot load a schedule from a {type(spec).__name__}; pass a dict, JSON text or "
                        "a path")
