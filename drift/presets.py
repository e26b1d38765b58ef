"""Named presets: embedded defaults that need no arguments.

``toy`` is the offline oracle world shipped in ``data/oracle`` (regenerate with
``python -m scripts.make_oracle_world --out data/oracle``): a tiny teacher that solves translate-copy almost
always, a weaker student whose errors compound, held-out prompts with answers, and per-step oracles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drift.errors import ConfigError

__all__ = ["PRESETS", "preset_values"]


def _oracle_dir() -> Path:
    from drift.worlds import DATA_DIR

    return DATA_DIR / "oracle"


def _toy() -> dict[str, Any]:
    root = _oracle_dir()
    return {
        "student": str(root / "student"),
        "teacher": str(root / "teacher"),
        "prompts": str(root / "prompts" / "heldout.jsonl"),
        "world": str(root / "world.json"),
        "samples_per_prompt": 4,
        "max_new_tokens": 64,
        "gen_batch_size": 64,
        "num_threads": 1,
    }


PRESETS = {"toy": _toy}


def preset_values(name: str) -> dict[str, Any]:
    """The settings of preset ``name`` (paths resolved); fails clearly when its files are missing."""
    if name not in PRESETS:
        raise ConfigError("preset", [f"unknown preset {name!r}; choose one of {sorted(PRESETS)}"])
    values = PRESETS[name]()
    missing = [f"{k}: {v}" for k, v in values.items() if k in ("student", "teacher", "prompts", "world")
               and not Path(v).exists()]
    if missing:
        raise ConfigError(f"preset {name}", [f"missing file {m}; regenerate with `make world` or set DRIFT_DATA"
                                             for m in missing])
    return values
