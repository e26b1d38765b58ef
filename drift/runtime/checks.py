"""Checks every stage makes before it spends time on models: is the output folder usable?

A stage that fails *after* loading models but before writing a part leaves nothing behind (the dataset writer
cleans up what it created); checking the obvious mistakes first also saves the minutes a model load takes.
"""

from __future__ import annotations

import os
from pathlib import Path

from drift.errors import DatasetExistsError

__all__ = ["preflight_out"]


def preflight_out(out: str | os.PathLike[str], if_exists: str) -> None:
    """Fail fast when ``--out`` cannot be written as asked.

    Raises:
        DatasetExistsError: ``out`` is an existing file, or a non-empty folder with ``if_exists="fail"``.
    """
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise DatasetExistsError(f"--out {path} is an existing file, not a folder; choose a folder path (it is "
                                 "created when missing).")
    if if_exists == "fail" and path.is_dir() and any(path.iterdir()):
        raise DatasetExistsError(
            f"{path} already exists and is not empty. Pass --if-exists overwrite to replace it, --if-exists resume "
            "to complete an interrupted run, or choose another --out."
        )
