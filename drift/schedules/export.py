"""Export schedules to the knobs of training stacks, and import them back (ECOSYSTEM §4).

Targets:

- ``verl``: the IW-OPD verl fork (YannX1e, on G-OPD), knobs of the ``actor_rollout_ref.actor.policy_loss``
  group: ``iw_opd_weight_{enable,max,use_abs}``,
  ``opd_prefix_weight_{enable,start_ratio,end_ratio,schedule,multiplier,min_tokens}``,
  ``opd_prefix_mask_{enable,start_ratio,end_ratio,schedule,min_tokens}``,
  ``teacher_prefix_conf_{weight,window,quantile,alpha,weight_min}``. All need
  ``only_reverse_kl_advantages=True`` and ``lambda_vals=1.0``; at most one of the first three enables may
  be true. Maps: uniform, iw_opd (code denominator, eps 1e-8), prefix_weight, prefix_mask, teacher_conf.
- ``trl``: ``trl.experimental.iw_opd.IWOPDConfig`` kwargs (``distillation_objective="iw_opd"``,
  ``iw_opd_gamma``, ``iw_opd_epsilon``, ``lmbda=1.0``). Maps: uniform (gamma 0) and iw_opd with |A| and
  the code denominator.
- ``tinker``: tinker-cookbook on-policy distillation (``kl_penalty_coef``, ``kl_discount_factor``). It
  has no per-token weights, so only uniform maps.
- ``json``: the drift spec itself, for a custom loss that calls ``load(spec).weights(...)``. Everything
  maps (also ``shuffled``, the negative control, which no training stack expresses: the other targets refuse it
  with that sentence).

``export`` returns an :class:`ExportResult`; a schedule a target cannot express raises
:class:`~drift.errors.ScheduleError` with a plain sentence. A close-but-not-equal mapping
(paper-denominator IW-OPD to verl or TRL) is refused unless ``allow_approximate=True``, which returns
``exact=False`` and says what differs. ``from_verl``, ``from_trl`` and ``from_tinker`` invert the
exports: ``from_verl(export(s, "verl").config) == s`` for every kind that maps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drift.errors import ScheduleError
from drift.schedules.base import Schedule
from drift.schedules.iw import IwOpd, TeacherConf
from drift.schedules.kinds import Uniform, load
from drift.schedules.masks import PrefixMask, PrefixWeight

__all__ = ["STYLES", "TARGETS", "VERL_DEFAULTS", "VERL_GROUP", "ExportResult", "export", "format_export",
           "from_tinker", "from_trl", "from_verl"]

TARGETS = ("verl", "trl", "tinker", "json")
STYLES = ("yaml", "overrides", "kwargs", "json")
VERL_GROUP = "actor_rollout_ref.actor.policy_loss"
"""Hydra group of every verl knob below (the prefix of command-line overrides)."""

_VERL_EPS = 1e-8  # hard-coded in the fork's dp_actor.py
_ENABLES = ("iw_opd_weight_enable", "opd_prefix_weight_enable", "opd_prefix_mask_enable")
_CONF_ENABLE = "teacher_prefix_conf_weight"
VERL_DEFAULTS: dict[str, Any] = {
    "iw_opd_weight_enable": False, "iw_opd_weight_max": 1.5, "iw_opd_weight_use_abs": True,
    "opd_prefix_weight_enable": False, "opd_prefix_weight_start_ratio": 0.3,
    "opd_prefix_weight_end_ratio": 1.0, "opd_prefix_weight_schedule": "cosine",
    "opd_prefix_weight_multiplier": 1.5, "opd_prefix_weight_min_tokens": 1,
    "opd_prefix_mask_enable": False, "opd_prefix_mask_start_ratio": 0.3, "opd_prefix_mask_end_ratio": 1.0,
    "opd_prefix_mask_schedule": "cosine", "opd_prefix_mask_min_tokens": 1,
    "teacher_prefix_conf_weight": False, "teacher_prefix_conf_window": 64,
    "teacher_prefix_conf_quantile": 0.9, "teacher_prefix_conf_alpha": 1.0,
    "teacher_prefix_conf_weight_min": 0.0,
    "only_reverse_kl_advantages": True, "lambda_vals": 1.0,
}
"""The fork's defaults (``PolicyLossConfig`` dataclass); :func:`from_verl` fills missing knobs with them."""
_VERL_KNOB_PREFIXES = ("iw_opd_weight_", "opd_prefix_weight_", "opd_prefix_mask_", "teacher_prefix_conf_")

_TARGET_NAMES = {"verl": "verl's IW-OPD fork", "trl": "TRL's IWOPDConfig", "tinker": "tinker-cookbook"}
_WHAT_MAPS = {
    "verl": "its knobs express only IW-OPD (code denominator), the annealed prefix weight and prefix mask, "
            "and the teacher-confidence gate",
    "trl": "IWOPDConfig expresses only IW-OPD with |A| and the code denominator (iw_opd_gamma = 0 is "
           "plain OPD)",
    "tinker": "its OPD has no per-token weights (kl_penalty_coef scales every token alike), so only "
              "uniform maps",
}
_WHY = {
    ("verl", "suffix_mask"): "it only masks prefixes (opd_prefix_mask_*)",
    ("verl", "linear"): "its only decaying weight is IW-OPD, which depends on the advantages",
    ("trl", "prefix_mask"): "it has no masks",
    ("trl", "suffix_mask"): "it has no masks",
    **{(t, "shuffled"): "shuffled is a negative control (each rollout's weights permuted at random over its "
                        "positions, from a seed, the step and the row); no training stack has such a knob"
       for t in ("verl", "trl", "tinker")},
}


@dataclass(frozen=True)
class ExportResult:
    """A schedule in a target's terms: ``config`` keys/values, whether they are ``exact``, ``notes``."""

    target: str
    config: dict[str, Any]
    exact: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "config": self.config, "exact": self.exact, "notes": list(self.notes)}


def _no_equivalent(s: Schedule, target: str, why: str | None = None) -> ScheduleError:
    why = why or _WHY.get((target, s.kind)) or _WHAT_MAPS[target]
    return ScheduleError(
        f"{s.kind} has no equivalent in {_TARGET_NAMES[target]}: {why}; use the drift weights vector "
        "(target 'json', then drift.schedules.load(spec).weights(...)) with a custom loss.")


def _approximate(s: Schedule, target: str, what: str, allow: bool, notes: list[str]) -> bool:
    """Refuse an inexact mapping unless allowed; when allowed, record why it is inexact. Returns False."""
    if not allow:
        raise ScheduleError(
            f"{s.kind} has no exact equivalent in {_TARGET_NAMES[target]}: {what}. Pass "
            "allow_approximate=True (CLI: --approximate) to export the closest setting anyway, or use "
            "target 'json'.")
    notes.append(f"APPROXIMATE: {what}.")
    return False


_PAPER_DIFF = ("{who} divides by the sum over all tokens + eps (code form), not the paper's sum over "
               "k < L-1, so the last weight is 1 + gamma·|A_L|/total instead of 1")

# ---------------------------------------------------------------------------------------------- verl


def _export_verl(s: Schedule, allow: bool) -> ExportResult:
    cfg: dict[str, Any] = {"only_reverse_kl_advantages": True, "lambda_vals": 1.0}
    cfg.update(dict.fromkeys((*_ENABLES, _CONF_ENABLE), False))
    notes = ["needs only_reverse_kl_advantages=True (advantage = log pi_T - log pi_S) and lambda_vals=1.0 "
             "(plain OPD, no ExOPD reward extrapolation); both are included",
             "verl leaves weight 1 at padding where drift returns 0; the loss masks padding, so training "
             "is identical"]
    exact = True
    if isinstance(s, Uniform):
        notes.append("plain OPD: every weighting knob is off")
    elif isinstance(s, IwOpd):
        if s.denominator == "paper":
            exact = _approximate(s, "verl", _PAPER_DIFF.format(who="verl"), allow, notes)
        if s.epsilon != _VERL_EPS:
            exact = _approximate(s, "verl", f"verl hard-codes eps = 1e-8, this spec uses {s.epsilon:g}",
                                 allow, notes)
        cfg.update(iw_opd_weight_enable=True, iw_opd_weight_max=1.0 + s.gamma,
                   iw_opd_weight_use_abs=s.use_abs)
        notes.append(f"iw_opd_weight_max = 1 + gamma = {1.0 + s.gamma:g}")
    elif isinstance(s, PrefixWeight):
        cfg.update(opd_prefix_weight_enable=True, opd_prefix_weight_start_ratio=s.start_ratio,
                   opd_prefix_weight_end_ratio=s.end_ratio, opd_prefix_weight_schedule=s.anneal,
                   opd_prefix_weight_multiplier=s.multiplier, opd_prefix_weight_min_tokens=s.min_tokens)
        notes.append("progress comes from actor.optim.total_training_steps and the global step, like "
                     "drift's total_steps and step")
    elif isinstance(s, PrefixMask):
        cfg.update(opd_prefix_mask_enable=True, opd_prefix_mask_start_ratio=s.start_ratio,
                   opd_prefix_mask_end_ratio=s.end_ratio, opd_prefix_mask_schedule=s.anneal,
                   opd_prefix_mask_min_tokens=s.min_tokens)
        notes.append("progress comes from actor.optim.total_training_steps and the global step, like "
                     "drift's total_steps and step")
    elif isinstance(s, TeacherConf):
        cfg.update({_CONF_ENABLE: True, "teacher_prefix_conf_window": s.window,
                    "teacher_prefix_conf_quantile": s.quantile, "teacher_prefix_conf_alpha": s.alpha,
                    "teacher_prefix_conf_weight_min": s.floor})
        notes.append("the gate acts only while the three other enables are off (they are); verl windows "
                     "over raw indices, drift over valid tokens: identical for right-padded responses")
    else:
        raise _no_equivalent(s, "verl")
    return ExportResult("verl", cfg, exact, tuple(notes))


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ScheduleError(f"verl knob {key} must be true or false, got {value!r}")


def _as_number(key: str, value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value) if any(ch in value for ch in ".eE") else int(value)
        except ValueError:
            raise ScheduleError(f"verl knob {key} must be a number, got {value!r}") from None
    return value


def from_verl(config: Mapping[str, Any]) -> Schedule:
    """The schedule a verl IW-OPD-fork config sets (keys with or without the ``policy_loss`` prefix).

    Unrelated keys are ignored; misspelled weighting knobs, two enables at once, ``lambda_vals != 1`` or
    ``only_reverse_kl_advantages=False`` raise :class:`ScheduleError`. Missing knobs take the fork's
    defaults (:data:`VERL_DEFAULTS`). String values (from command lines) are parsed.
    """
    cfg = {str(k).lstrip("+").removeprefix(VERL_GROUP + "."): v for k, v in config.items()}
    unknown = sorted(k for k in cfg if k.startswith(_VERL_KNOB_PREFIXES) and k not in VERL_DEFAULTS)
    if unknown:
        known = sorted(k for k in VERL_DEFAULTS if k.startswith(_VERL_KNOB_PREFIXES))
        raise ScheduleError(f"unknown verl weighting knob(s) {unknown}; known: {known}")
    merged = {**VERL_DEFAULTS, **cfg}
    flag: Callable[[str], bool] = lambda k: _as_bool(k, merged[k])  # noqa: E731
    num: Callable[[str], Any] = lambda k: _as_number(k, merged[k])  # noqa: E731
    if not flag("only_reverse_kl_advantages"):
        raise ScheduleError("only_reverse_kl_advantages=False: the advantage is then the GRPO reward "
                            "advantage, not the OPD advantage, so no drift schedule describes this run")
    if float(num("lambda_vals")) != 1.0:
        raise ScheduleError(f"lambda_vals={num('lambda_vals')} is G-OPD/ExOPD reward extrapolation, not a "
                            "token-weight schedule; drift represents only lambda_vals=1.0")
    on = [k for k in _ENABLES if flag(k)]
    if len(on) > 1:
        raise ScheduleError(f"at most one of {list(_ENABLES)} may be true (verl raises too); got {on}")
    if on == ["iw_opd_weight_enable"]:
        w_max = float(num("iw_opd_weight_max"))
        if w_max < 1.0:
            raise ScheduleError(f"iw_opd_weight_max must be >= 1.0 (it is 1 + gamma), got {w_max:g}")
        # Rounded: 1 + 0.3 - 1 = 0.30000000000000004 would otherwise break export/import round trips.
        return IwOpd(gamma=round(w_max - 1.0, 12), use_abs=flag("iw_opd_weight_use_abs"))
    if on == ["opd_prefix_weight_enable"]:
        return PrefixWeight(start_ratio=num("opd_prefix_weight_start_ratio"),
                            end_ratio=num("opd_prefix_weight_end_ratio"),
                            anneal=merged["opd_prefix_weight_schedule"],
                            multiplier=num("opd_prefix_weight_multiplier"),
                            min_tokens=num("opd_prefix_weight_min_tokens"))
    if on == ["opd_prefix_mask_enable"]:
        return PrefixMask(start_ratio=num("opd_prefix_mask_start_ratio"),
                          end_ratio=num("opd_prefix_mask_end_ratio"),
                          anneal=merged["opd_prefix_mask_schedule"],
                          min_tokens=num("opd_prefix_mask_min_tokens"))
    if flag(_CONF_ENABLE):
        return TeacherConf(window=num("teacher_prefix_conf_window"),
                           quantile=num("teacher_prefix_conf_quantile"),
                           alpha=num("teacher_prefix_conf_alpha"),
                           floor=num("teacher_prefix_conf_weight_min"))
    return Uniform()


# ----------------------------------------------------------------------------------------------- trl

def _export_trl(s: Schedule, allow: bool) -> ExportResult:
    cfg: dict[str, Any] = {"distillation_objective": "iw_opd", "lmbda": 1.0}
    notes = ["distillation_objective='iw_opd' requires lmbda=1.0 (fully on-policy)",
             "TRL uses the vLLM rollout log-probs for the student side when present; verl uses the "
             "trainer's recomputed old_log_prob"]
    exact = True
    if isinstance(s, Uniform):
        cfg.update(iw_opd_gamma=0.0, iw_opd_epsilon=_VERL_EPS)
        notes.append("iw_opd_gamma = 0 makes every weight 1: plain OPD")
    elif isinstance(s, IwOpd):
        if not s.use_abs:
            raise _no_equivalent(s, "trl", "TRL always accumulates |A_t|; signed accumulation "
                                           "(use_abs=false) exists only in verl (iw_opd_weight_use_abs)")
        if s.denominator == "paper":
            exact = _approximate(s, "trl", _PAPER_DIFF.format(who="TRL"), allow, notes)
        cfg.update(iw_opd_gamma=s.gamma, iw_opd_epsilon=s.epsilon)
        notes.append("TRL guards the denominator with clamp_min(eps) where verl adds eps: the weights "
                     "differ by less than gamma·eps/total")
    else:
        raise _no_equivalent(s, "trl")
    return ExportResult("trl", cfg, exact, tuple(notes))


def from_trl(kwargs: Mapping[str, Any]) -> Schedule:
    """The schedule of TRL ``IWOPDConfig`` kwargs: ``iw_opd_gamma`` > 0 is IW-OPD, 0 is uniform."""
    objective = kwargs.get("distillation_objective", "iw_opd")
    if objective != "iw_opd":
        raise ScheduleError(f"distillation_objective={objective!r} is not IW-OPD; drift maps only 'iw_opd'")
    lmbda = float(kwargs.get("lmbda", 1.0))
    if lmbda != 1.0:
        raise ScheduleError(f"lmbda={lmbda:g}: IW-OPD in TRL requires lmbda=1.0 (fully on-policy)")
    gamma = float(kwargs.get("iw_opd_gamma", 0.5))
    if gamma == 0.0:
        return Uniform()
    eps = float(kwargs.get("iw_opd_epsilon", _VERL_EPS))
    return IwOpd(gamma=gamma, use_abs=True, denominator="code", epsilon=eps)


# -------------------------------------------------------------------------------------------- tinker

def _export_tinker(s: Schedule, allow: bool) -> ExportResult:
    if not isinstance(s, Uniform):
        raise _no_equivalent(s, "tinker")
    notes = ["kl_penalty_coef scales every token's advantage alike (1.0 = plain OPD)",
             "kl_discount_factor > 0 replaces each token's advantage by a discounted sum of the later ones: "
             "a position effect, but not a per-token weight, so it stays 0"]
    return ExportResult("tinker", {"kl_penalty_coef": 1.0, "kl_discount_factor": 0.0}, True, tuple(notes))


def from_tinker(config: Mapping[str, Any]) -> Schedule:
    """The schedule of a tinker-cookbook OPD config: uniform, provided ``kl_discount_factor`` is 0."""
    discount = float(config.get("kl_discount_factor", 0.0))
    if discount != 0.0:
        raise ScheduleError(f"kl_discount_factor={discount:g} sums discounted future advantages; that is "
                            "not a per-token weight, so no drift schedule equals it")
    coef = float(config.get("kl_penalty_coef", 1.0))
    if coef <= 0.0:
        raise ScheduleError(f"kl_penalty_coef={coef:g}: without the KL term there is no distillation "
                            "signal to weight")
    return Uniform()


# -------------------------------------------------------------------------------------------- public

def export(schedule: Schedule | Mapping[str, Any] | str, target: str, *,
           allow_approximate: bool = False) -> ExportResult:
    """Express ``schedule`` (or a spec :func:`load` accepts) in a target's knobs: verl | trl | tinker | json.

    Raises:
        ScheduleError: the target has no equivalent (the message says why and what to use instead), or
            only an approximate one and ``allow_approximate`` is false.
    """
    s = load(schedule)
    if target == "json":
        note = ("apply in a custom loss: w = drift.schedules.load(spec).weights(advantage, mask, ...), then "
                "use w * advantage (w is 0 at padding and carries no gradient)")
        return ExportResult("json", s.to_dict(), True, (note,))
    exporters = {"verl": _export_verl, "trl": _export_trl, "tinker": _export_tinker}
    if target not in exporters:
        raise ScheduleError(f"unknown export target {target!r}; choose one of {list(TARGETS)}")
    return exporters[target](s, allow_approximate)


# -------------------------------------------------------------------------------------------- render

def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v)


def _yaml_lines(obj: Mapping[str, Any], indent: int = 0) -> list[str]:
    lines = []
    pad = " " * indent
    for k, v in obj.items():
        if isinstance(v, Mapping):
            lines += [f"{pad}{k}:", *_yaml_lines(v, indent + 2)] if v else [f"{pad}{k}: {{}}"]
        elif isinstance(v, (list, tuple)):
            lines.append(f"{pad}{k}: [{', '.join(_scalar(x) for x in v)}]")
        else:
            lines.append(f"{pad}{k}: {_scalar(v)}")
    return lines


def _override(v: Any) -> str:
    if isinstance(v, (dict, list, tuple)):
        return "'" + json.dumps(v) + "'"
    return v if isinstance(v, str) else _scalar(v)


def format_export(result: ExportResult, style: str | None = None) -> str:
    """Render an export for people.

    Styles: ``yaml`` (key: value), ``overrides`` (key=value lines: verl Hydra overrides with the
    ``policy_loss`` prefix, tinker chz flags), ``kwargs`` (Python keyword arguments, ``IWOPDConfig(...)``
    for trl) or ``json``. Default per target: verl and tinker overrides, trl kwargs, json json. Notes are
    not included (see ``result.notes``).
    """
    style = style or {"verl": "overrides", "trl": "kwargs", "tinker": "overrides"}.get(result.target, "json")
    cfg = result.config
    if style == "json":
        return json.dumps(cfg, indent=2)
    if style == "yaml":
        head = [f"# {VERL_GROUP}:"] if result.target == "verl" else []
        return "\n".join([*head, *_yaml_lines(cfg)])
    if style == "overrides":
        prefix = VERL_GROUP + "." if result.target == "verl" else ""
        return "\n".join(f"{prefix}{k}={_override(v)}" for k, v in cfg.items())
    if style == "kwargs":
        head = "IWOPDConfig(" if result.target == "trl" else "dict("
        return "\n".join([head, *(f"    {k}={v!r}," for k, v in cfg.items()), ")"])
    raise ScheduleError(f"unknown export style {style!r}; choose one of {list(STYLES)}")
