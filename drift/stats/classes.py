"""Derived token classes: split tokens by what kind of supervision they get, not only by where they sit.

A *token class* is a per-token label computed in DuckDB from the token columns, usable in ``BinSpec.group_by``
(``drift fit --group-by``) next to plain columns (``--group-by teacher_entropy_zone,finished``). Each class is
named and defined once, here (:data:`TOKEN_CLASSES`):

- ``teacher_entropy_zone``: the quantile zone of ``teacher_entropy`` (the teacher's full-vocabulary entropy in nats).
  With Z zones (``zones``, default 3) the cut points are the exact dataset quantiles
  ``c_j = Q(j / Z)``, ``j = 1..Z-1`` (DuckDB ``quantile_cont``: linear interpolation between order statistics, as
  ``numpy.quantile``) over the non-null, non-NaN values of the tokens that are binned (the binning's filters: steps,
  positions, window); a token's zone is ``#{j : value >= c_j}``, labelled ``low / mid / high`` for Z = 3,
  ``low / high`` for Z = 2 and ``z1 .. zZ`` (lowest first) otherwise. Low entropy: the teacher is sure.
- ``teacher_mass_zone``: the same zones of ``teacher_mass_student_topk``, the teacher's probability mass on the
  student's top-k tokens (full support only; written by full-vocabulary scoring of current drift). Low mass: the
  student's candidates are not what the teacher would say.
- ``low_student_logprob``: bool, ``student_logprob < ln(p)`` with ``p = low_prob`` (default 0.1): the student
  itself found the token it sampled unlikely (a temperature or top-p tail draw, or an exploratory token).

Null (or NaN) inputs give a null class: such tokens form their own group (``teacher_entropy_zone=NA``), as a null
value of a plain column does. A class splits *tokens*; the resampling clusters stay prompts (or rollouts), so a
prompt contributes to every class its tokens fall in and the cluster bootstrap is unchanged.

The cut points come from one first pass (:func:`resolve_classes`) and are written into the SQL of the class as
literals, so every query and every Ray task sees the same zones; they are kept on the
:class:`~drift.stats.bins.RolloutBins` (``classes``) and written to ``config.json`` and the summary of
``drift fit``, so a reader can audit them (:meth:`ResolvedClass.to_dict`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from drift.errors import SchemaError
from drift.schema import read_drift_metadata, support_hint
from drift.stats.reader import TokenSource, quote_ident

__all__ = ["DEFAULT_LOW_PROB", "DEFAULT_ZONES", "MAX_ZONES", "TOKEN_CLASSES", "ResolvedClass", "TokenClass",
           "class_source_columns", "resolve_classes", "zone_labels"]

log = logging.getLogger(__name__)

DEFAULT_ZONES = 3
MAX_ZONES = 10
DEFAULT_LOW_PROB = 0.1


@dataclass(frozen=True)
class TokenClass:
    """The definition of one derived token class.

    Attributes:
        name: the ``group_by`` name. column: the token column it is computed from.
        kind: ``"zone"`` (quantile zones of ``column``) or ``"below"`` (``column < ln(low_prob)``, a bool).
        doc: one line saying what it means.
    """

    name: str
    column: str
    kind: str
    doc: str


TOKEN_CLASSES: dict[str, TokenClass] = {c.name: c for c in (
    TokenClass("teacher_entropy_zone", "teacher_entropy", "zone",
               "quantile zone of the teacher's entropy (low = the teacher is sure)"),
    TokenClass("low_student_logprob", "student_logprob", "below",
               "student_logprob < ln(low_prob): the student found its own sampled token unlikely"),
    TokenClass("teacher_mass_zone", "teacher_mass_student_topk", "zone",
               "quantile zone of the teacher's mass on the student's top-k (low = the student's candidates are "
               "not the teacher's)"),
)}


def zone_labels(zones: int) -> tuple[str, ...]:
    """Labels of ``zones`` quantile zones, lowest first: ``low, mid, high`` (3), ``low, high`` (2), else ``z1..zZ``."""
    if zones == 3:
        return ("low", "mid", "high")
    if zones == 2:
        return ("low", "high")
    return tuple(f"z{j + 1}" for j in range(zones))


def class_source_columns(names: Sequence[str]) -> list[str]:
    """The token columns the classes among ``names`` are computed from (plain column names are left out)."""
    return list(dict.fromkeys(TOKEN_CLASSES[n].column for n in names if n in TOKEN_CLASSES))


@dataclass(frozen=True)
class ResolvedClass:
    """A token class with its parameters fixed by the first pass: the SQL every query uses, and its audit trail.

    Attributes:
        name, column, kind, doc: from the :class:`TokenClass`.
        labels: the class values in order (zones lowest first; ``(False, True)`` for a bool class).
        cuts: the zone cut points (quantiles ``j / Z`` of ``column``); empty for a bool class.
        probs: the quantile levels of ``cuts``.
        threshold: ``ln(low_prob)`` of a bool class (NaN for zones); low_prob: its ``p``.
        n_values: non-null values the cuts were computed from.
    """

    name: str
    column: str
    kind: str
    doc: str
    labels: tuple[Any, ...]
    cuts: tuple[float, ...] = ()
    probs: tuple[float, ...] = ()
    threshold: float = math.nan
    low_prob: float = math.nan
    n_values: int = 0

    @property
    def sql(self) -> str:
        """The per-token SQL expression of the class over the ``tokens`` view (literals: the same in every task)."""
        v = f"CAST({quote_ident(self.column)} AS DOUBLE)"
        null = f"{v} IS NULL OR isnan({v})"
        if self.kind == "below":
            return f"CASE WHEN {null} THEN NULL ELSE {v} < {_double(self.threshold)} END"
        zone = " + ".join(f"CAST({v} >= {_double(c)} AS INTEGER)" for c in self.cuts) or "0"
        labels = "[" + ", ".join("'" + str(x) + "'" for x in self.labels) + "]"
        return f"CASE WHEN {null} THEN NULL ELSE ({labels})[1 + {zone}] END"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: what ``config.json`` records so the zones can be audited."""
        out: dict[str, Any] = {"name": self.name, "column": self.column, "definition": self.doc,
                               "labels": [str(x) for x in self.labels]}
        if self.kind == "zone":
            out.update(cuts=list(self.cuts), quantiles=list(self.probs), n_values=self.n_values,
                       rule="zone = #{j : value >= cuts[j]}; cuts = exact quantiles (quantile_cont) of the binned "
                            "tokens' non-null values")
        else:
            out.update(low_prob=self.low_prob, threshold=self.threshold, rule=f"{self.column} < ln(low_prob)")
        return out

    def describe(self) -> str:
        """One line for a summary: ``teacher_entropy_zone: teacher_entropy cuts 0.41, 1.2 (low | mid | high)``."""
        if self.kind == "zone":
            cuts = ", ".join(f"{c:.4g}" for c in self.cuts)
            return (f"{self.name}: {self.column} quantile cuts {cuts} -> {' | '.join(map(str, self.labels))} "
                    f"({self.n_values:,} values)")
        return f"{self.name}: {self.column} < ln({self.low_prob:g}) = {self.threshold:.4g}"


def _double(x: float) -> str:
    # a string cast is parsed correctly rounded: the literal is exactly the Python float (a decimal literal is not)
    return f"CAST('{float(x)!r}' AS DOUBLE)"


def _missing(src: TokenSource, cls: TokenClass) -> str:
    meta = read_drift_metadata(src.schema)
    dataset = str(src.dataset.root) if src.dataset is not None else "DATASET"
    hint = support_hint(cls.column, meta.get("support") or "full", teacher=bool(meta.get("has_teacher", True)),
                        dataset=dataset)
    how = hint or "no such column (derived classes need it)"
    return f"token class {cls.name!r} needs the column {cls.column!r}, which {src.name} lacks: {how}"


def resolve_classes(src: TokenSource, con: Any, names: Sequence[str], where: str, *, zones: int = DEFAULT_ZONES,
                    low_prob: float = DEFAULT_LOW_PROB) -> tuple[ResolvedClass, ...]:
    """The first pass: fix the cut points of the zone classes among ``names`` over the rows ``where`` selects.

    Args:
        src: the opened tokens (schema checked); con: a connection to them.
        names: ``group_by`` names; the derived classes among them are resolved (in order), plain columns skipped.
        where: SQL filter of the binned rows (the plan's), so the zones are quantiles of what is binned.
        zones: Z, zones per zone class (2..:data:`MAX_ZONES`); low_prob: p of ``low_student_logprob``.

    Raises:
        SchemaError: a class's source column is absent (naming the column and how to get it) or not numeric.
    """
    problems = []
    wanted = [TOKEN_CLASSES[n] for n in dict.fromkeys(names) if n in TOKEN_CLASSES]
    for cls in wanted:
        if cls.column not in src.schema.names:
            problems.append(_missing(src, cls))
        elif cls.column not in src.numeric_columns():
            problems.append(f"token class {cls.name!r} needs a numeric {cls.column!r}; it is "
                            f"{src.schema.field(cls.column).type}")
    if problems:
        raise SchemaError(f"tokens of {src.name}", problems)
    out = []
    for cls in wanted:
        if cls.kind == "below":
            out.append(ResolvedClass(cls.name, cls.column, cls.kind, cls.doc, (False, True),
                                     threshold=math.log(low_prob), low_prob=float(low_prob)))
            continue
        probs = tuple(j / zones for j in range(1, zones))
        v = f"CAST({quote_ident(cls.column)} AS DOUBLE)"
        row = con.sql(f"SELECT quantile_cont({v}, [{', '.join(repr(p) for p in probs)}]), count({v}) FROM tokens "
                      f"WHERE ({where}) AND {v} IS NOT NULL AND NOT isnan({v})").fetchall()[0]
        n_values = int(row[1] or 0)
        if n_values == 0:
            raise SchemaError(f"tokens of {src.name}", [f"token class {cls.name!r}: {cls.column!r} has no non-null "
                                                        "value among the binned tokens"])
        cuts = tuple(float(c) for c in row[0])
        if len(set(cuts)) < len(cuts):
            log.warning("%s: quantile cuts of %s collapse (%s: many equal values); some zones are empty", cls.name,
                        cls.column, cuts)
        out.append(ResolvedClass(cls.name, cls.column, cls.kind, cls.doc, zone_labels(zones), cuts, probs,
                                 n_values=n_values))
    return tuple(out)
