"""Offline worlds: synthetic tasks with ground truth, for demos, tests and calibrating drift's measurements.

A world defines prompts, a verifier and a per-token *oracle* (the correct token at every response slot), so
the quality of a teacher's supervision can be measured exactly instead of estimated. Every world implements
the :class:`~drift.worlds.base.World` protocol. Two are shipped, each with its world description, tokenizer,
a teacher that solves the task, a weaker student and train / held-out prompt files:

- ``data/oracle/``: the translate-copy world (:mod:`drift.worlds.translate_copy`, the default), where one
  wrong token derails the later ones but later tokens still carry their own signal (``python -m
  scripts.make_oracle_world --out data/oracle``);
- ``data/plan/``: the plan-cipher world (:mod:`drift.worlds.plan_cipher`), where the first tokens choose a
  key and the rest follows from it, so an early error is fatal (``python -m scripts.make_oracle_world
  --world plan --out data/plan``).

Example:
    >>> from drift.worlds import DATA_DIR, load_world
    >>> world = load_world(DATA_DIR / "oracle")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import drift
from drift.errors import InputFormatError
from drift.worlds.base import WORLD_FILE, World, read_world_file
from drift.worlds.plan_cipher import PlanCipherWorld
from drift.worlds.translate_copy import TranslateCopyWorld

__all__ = ["DATA_DIR", "ORACLE_DIR", "PLAN_DIR", "WORLDS", "WORLD_FILE", "PlanCipherWorld", "TranslateCopyWorld",
           "World", "load_world"]

DATA_DIR: Path = Path(os.environ["DRIFT_DATA"]) if os.environ.get("DRIFT_DATA") else (
    Path(drift.__file__).resolve().parent.parent / "data")
"""The repository's ``data/`` folder (override with the ``DRIFT_DATA`` environment variable)."""

ORACLE_DIR: Path = DATA_DIR / "oracle"
"""Where the shipped oracle world lives (world, tokenizer, teacher, student, prompts)."""

PLAN_DIR: Path = DATA_DIR / "plan"
"""Where the shipped plan-cipher world lives (same layout as :data:`ORACLE_DIR`)."""

WORLDS: dict[str, type[TranslateCopyWorld] | type[PlanCipherWorld]] = {
    cls.name: cls for cls in (TranslateCopyWorld, PlanCipherWorld)}
"""World classes by the ``name`` stored in ``world.json``."""


def load_world(path: str | os.PathLike[str]) -> World:
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
