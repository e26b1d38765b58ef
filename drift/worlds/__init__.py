"""Offline worlds: synthetic tasks with ground truth, for demos, tests and calibrating drift's measurements.

A world defines prompts, a verifier and a per-token *oracle* (the correct token at every response slot), so
the quality of a teacher's supervision can be measured exactly instead of estimated. The shipped default is
the translate-copy oracle world in ``data/oracle/`` (built by ``python -m scripts.make_oracle_world --out
data/oracle``): the world description, its tokenizer, a teacher that solves the task, a weaker student whose
errors compound, and train / held-out prompt files.

Example:
    >>> from drift.worlds import DATA_DIR, load_world
    >>> world = load_world(DATA_DIR / "oracle")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import drift
from drift.errors import InputFormatError
from drift.worlds.translate_copy import WORLD_FILE, TranslateCopyWorld, read_world_file

__all__ = ["DATA_DIR", "ORACLE_DIR", "WORLDS", "WORLD_FILE", "TranslateCopyWorld", "load_world"]

DATA_DIR: Path = Path(os.environ["DRIFT_DATA"]) if os.environ.get("DRIFT_DATA") else (
    Path(drift.__file__).resolve().parent.parent / "data")
"""The repository's ``data/`` folder (override with the ``DRIFT_DATA`` environment variable)."""

ORACLE_DIR: Path = DATA_DIR / "oracle"
"""Where the shipped oracle world lives (world, tokenizer, teacher, student, prompts)."""

WORLDS: dict[str, type[TranslateCopyWorld]] = {TranslateCopyWorld.name: TranslateCopyWorld}
"""World classes by the ``name`` stored in ``world.json``."""


def load_world(path: str | os.PathLike[str]) -> TranslateCopyWorld:
    """Load the world described by ``path``: a folder holding ``world.json``, or the JSON file itself.

    Raises:
        DatasetError: if there is no world description at ``path``.
        InputFormatError: if the file is not valid JSON or names an unknown world.
    """
    data = read_world_file(path)
    name = data.get("name")
    if name not in WORLDS:
        raise InputFormatError(f"{path} names world {name!r}; known worlds: {sorted(WORLDS)}")
    return WORLDS[name].from_dict(data)
