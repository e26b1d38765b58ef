"""Loading ``.pt`` dumps without running code from them.

``torch.save`` files are pickles: a full unpickle can execute anything the file says. Dumps from other people's
runs are untrusted input, so drift loads them with ``torch.load(weights_only=True)``, which only rebuilds tensors,
numbers, strings and plain containers. A file that needs more stops with an error naming ``--allow-pickle`` (which
loads it with ``weights_only=False`` and so *executes code stored in the file*: only for files you wrote).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from drift.errors import InputFormatError

__all__ = ["load_pt"]


def load_pt(path: str | os.PathLike[str], *, allow_pickle: bool = False) -> Any:
    """Load a ``torch.save`` file on the CPU, refusing anything but data unless ``allow_pickle``.

    Raises:
        InputFormatError: the file is truncated or not a torch file, or it needs full unpickling and
            ``allow_pickle`` is False (the message names the flag and what it does).
    """
    p = Path(path)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not allow_pickle:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputFormatError(
                f"{p} holds Python objects that a safe load (torch.load(weights_only=True)) refuses: {first[:300]}. "
                "Loading it fully would execute code stored in the file. If you wrote this file yourself and trust "
                "it, rerun with --allow-pickle."
            ) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputFormatError(f"{p} cannot be read as a torch.save file ({type(exc).__name__}: "
                               f"{str(exc)[:200]}); it is truncated or not a .pt dump.") from None
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise InputFormatError(f"{p} failed to load even with --allow-pickle ({type(exc).__name__}: "
                               f"{str(exc)[:200]})") from None
