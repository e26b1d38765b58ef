"""Named presets: embedded defaults that need no arguments.

``toy`` is the offline oracle world shipped in ``data/oracle`` (regenerate with
``python -m scripts.make_oracle_world --out data/oracle``): a tiny teacher that solves translate-copy almost
always, a weaker student whose errors compound, held-out prompts with answers, and per-step oracles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drift.errors import ConfigError

__all__ = ["PATH_FIELDS", "PRESETS", "apply_preset", "check_world_values", "preset_values", "world_max_new_tokens",
           "world_values"]

#: Fields that name files: a preset fills them when they are empty.
PATH_FIELDS = ("student", "teacher", "prompts", "heldout_prompts", "world")


def _oracle_dir() -> Path:
    from drift.worlds import DATA_DIR

    return DATA_DIR / "oracle"


#: Response cap of the toy sizes, lowered to what a world's models can hold (:func:`world_max_new_tokens`).
TOY_MAX_NEW_TOKENS = 64


def world_max_new_tokens(root: str | Path, cap: int = TOY_MAX_NEW_TOKENS) -> int:
    """``min(cap, P - L_prompt)``: the longest response a world's student can hold after its longest prompt.

    ``P`` is ``max_position_embeddings`` of ``root/student/config.json`` and ``L_prompt`` the world's longest prompt
    (``max_sequence_len - max_response_len``); ``cap`` when either file is missing (then nothing can run anyway,
    and :func:`check_world_values` says which). data/oracle: min(64, 128 - 50) = 64; data/plan: min(64, 32 - 11) = 21.
    """
    import json

    root = Path(root)
    try:
        positions = int(json.loads((root / "student" / "config.json").read_text())["max_position_embeddings"])
        from drift.worlds import load_world

        world = load_world(root)
    except (OSError, KeyError, ValueError):
        return cap
    return max(1, min(cap, positions - (world.max_sequence_len - world.max_response_len)))


def world_values(root: str | Path) -> dict[str, Any]:
    """The settings of an oracle-world folder laid out like ``data/oracle`` (``student/``, ``teacher/``,
    ``prompts/heldout.jsonl`` beside ``prompts/train.jsonl``, ``world.json``) with the toy sizes (the response cap
    fitted to the world's models); paths are not checked here (:func:`check_world_values` does)."""
    root = Path(root)
    return {
        "student": str(root / "student"),
        "teacher": str(root / "teacher"),
        "prompts": str(root / "prompts" / "heldout.jsonl"),
        "world": str(root / "world.json"),
        "samples_per_prompt": 4,
        "max_new_tokens": world_max_new_tokens(root),
        "gen_batch_size": 64,
        "num_threads": 1,
    }


def check_world_values(values: dict[str, Any], where: str) -> None:
    """Raise one :class:`ConfigError` naming every missing model, prompt or world file of ``values``."""
    missing = [f"{k}: {v}" for k, v in values.items() if k in ("student", "teacher", "prompts", "world")
               and not Path(v).exists()]
    if missing:
        raise ConfigError(where, [f"missing file {m}; regenerate with `make world` or set DRIFT_DATA"
                                  for m in missing])


def _toy() -> dict[str, Any]:
    return world_values(_oracle_dir())


PRESETS = {"toy": _toy}


def preset_values(name: str) -> dict[str, Any]:
    """The settings of preset ``name`` (paths resolved); fails clearly when its files are missing."""
    if name not in PRESETS:
        raise ConfigError("preset", [f"unknown preset {name!r}; choose one of {sorted(PRESETS)}"])
    values = PRESETS[name]()
    check_world_values(values, f"preset {name}")
    return values


def apply_preset(cfg: Any, values: dict[str, Any]) -> Any:
    """``cfg`` (a frozen stage config) with a preset's ``values`` filled in: empty path fields, and fields (also
    of its nested ``scoring`` options) still at their dataclass default.

    This is the one place presets meet configs. The CLI merges a preset *under* the flags the user gave before
    building the config, which is the same thing for flags; in Python, a field left at its default is taken from
    the preset (e.g. ``max_new_tokens`` 64 and ``num_threads`` 1 for ``toy``).
    """
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    scoring = getattr(cfg, "scoring", None)
    scoring_defaults = {f.name: f.default for f in dataclasses.fields(scoring)} if scoring is not None else {}
    top: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if key in PATH_FIELDS and key in defaults:
            if not getattr(cfg, key):
                top[key] = value
        elif key in defaults:
            if getattr(cfg, key) == defaults[key]:
                top[key] = value
        elif key in scoring_defaults and getattr(scoring, key) == scoring_defaults[key]:
            nested[key] = value
    if nested:
        top["scoring"] = dataclasses.replace(scoring, **nested)
    return dataclasses.replace(cfg, **top) if top else cfg
