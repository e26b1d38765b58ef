"""The ablation's runs by name: base schedules, derived ones, negative controls, and which runs are the same.

Every name of :data:`ALL_SCHEDULES` is one run per (loss, seed): a base spec (:data:`BASE_SCHEDULES`), a spec
derived from the untrained student's data (:data:`DERIVED`), or a negative control (:data:`CONTROLS`: the shuffled
weights of a position schedule, or uniform weights with the advantage replaced by its batch mean). Two names whose
canonical spec and advantage mode agree are one run (:func:`dedupe_specs`): the later is an alias.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["ADVANTAGE", "ALL_SCHEDULES", "BASE_SCHEDULES", "CONTROLS", "DERIVED", "LOSSES", "POSITION_SCHEDULES",
           "SHUFFLE_SEED", "advantage_of", "dedupe_specs", "schedule_order", "shuffled_spec"]

BASE_SCHEDULES: dict[str, dict[str, Any]] = {
    "uniform": {"kind": "uniform"},
    "prefix30": {"kind": "prefix_mask", "frac": 0.3},
    "suffix30": {"kind": "suffix_mask", "frac": 0.3},
    "iw_opd": {"kind": "iw_opd", "gamma": 0.5, "use_abs": True, "denominator": "code"},
    "linear": {"kind": "linear", "gamma": 0.5},
}
DERIVED = ("recommended", "fitted")
#: Schedules with a shuffled control (``<name>_shuffled``): every one whose weights depend on position.
POSITION_SCHEDULES = ("prefix30", "suffix30", "iw_opd", "linear", "recommended", "fitted")
SHUFFLE_SEED = 0
#: Negative controls -> the schedule each one controls.
CONTROLS: dict[str, str] = {"uniform_fixed_adv": "uniform", **{f"{s}_shuffled": s for s in POSITION_SCHEDULES}}
#: Controls that change the loss's advantage instead of the weights (``TrainConfig.advantage``).
ADVANTAGE: dict[str, str] = {"uniform_fixed_adv": "batch_mean"}
#: Canonical table order: each control right after the schedule it controls.
ALL_SCHEDULES = tuple(n for s in (*BASE_SCHEDULES, *DERIVED)
                      for n in (s, *[c for c, b in CONTROLS.items() if b == s]))
LOSSES = ("sampled", "full_kl")


def advantage_of(name: str) -> str:
    """The sampled loss's advantage mode of schedule ``name`` (``token`` except for ``uniform_fixed_adv``)."""
    return ADVANTAGE.get(name, "token")


def schedule_order(names: Any) -> list[str]:
    """Schedules in the canonical table order."""
    names = set(names)
    return [s for s in ALL_SCHEDULES if s in names]


def _canonical(spec: dict[str, Any]) -> dict[str, Any]:
    """Every parameter explicit, no version, no provenance (``source``), nested bases too."""
    from drift.schedules.kinds import from_dict

    d = from_dict({k: v for k, v in spec.items() if k != "source"}).to_dict()
    d.pop("version", None)
    if d["kind"] == "shuffled":
        d["base"] = _canonical(d["base"])
        if d["base"]["kind"] == "uniform":  # permuting constant weights changes nothing: it *is* uniform
            return d["base"]
    return d


def _normalized(spec: dict[str, Any], advantage: str = "token") -> str:
    """A run's canonical JSON (its spec via :func:`_canonical`, and the loss's advantage) for equality tests."""
    key = _canonical(spec)
    if advantage != "token":
        key = {"spec": key, "advantage": advantage}
    return json.dumps(key, sort_keys=True)


def shuffled_spec(spec: dict[str, Any], seed: int = SHUFFLE_SEED) -> dict[str, Any]:
    """The shuffled control of ``spec`` (kind ``shuffled``; its provenance stays on the base)."""
    return {"kind": "shuffled", "base": spec, "seed": seed}


def dedupe_specs(specs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Aliases among ``specs``: a name whose run (spec and advantage mode) equals an earlier one's (canonical
    order) maps to that name.

    Example:
        >>> dedupe_specs({"uniform": {"kind": "uniform"}, "iw_opd": BASE_SCHEDULES["iw_opd"],
        ...               "recommended": {**BASE_SCHEDULES["iw_opd"], "epsilon": 1e-8},
        ...               "uniform_fixed_adv": {"kind": "uniform"}})
        {'recommended': 'iw_opd'}
    """
    seen: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for name in schedule_order(specs):
        key = _normalized(specs[name], advantage_of(name))
        if key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
    return aliases
