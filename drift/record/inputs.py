"""Turning a trainer's batch (ragged lists, or padded tensors with a mask) into flat arrays plus lengths.

Every per-token input of :meth:`drift.record.Recorder.log` becomes a :class:`Ragged`: the valid values of all
sequences back to back (``values``) and how many belong to each sequence (``lengths``). A tensor is converted with
one ``.detach().float().cpu()`` (ids: ``.detach().cpu()``) for the whole batch and selected with one boolean-mask
index, never token by token, so a bf16 tensor on a GPU costs one device-to-host copy.

Layouts:

- ragged: a list (or tuple) of sequences, each a list, a 1-D array or a 1-D tensor, holding valid tokens only;
- padded: a 2-D tensor / array ``(B, L)`` with a ``(B, L)`` mask marking the valid entries (left padding, right
  padding or holes: the valid entries of a row are taken in order); without a mask every entry is valid;
- a ragged mask (one list per sequence, of that sequence's length) selects within ragged sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Ragged", "as_numpy", "per_sequence", "ragged"]


@dataclass(frozen=True)
class Ragged:
    """Sequences stored flat: ``values[offsets[i]:offsets[i + 1]]`` is sequence ``i``."""

    values: np.ndarray
    lengths: np.ndarray  # int64, one per sequence

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)])

    def rows(self) -> list[np.ndarray]:
        """One view per sequence (no copy)."""
        return np.split(self.values, np.cumsum(self.lengths)[:-1]) if len(self.lengths) else []


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def as_numpy(x: Any, kind: str) -> np.ndarray:
    """``x`` as a numpy array: a tensor with one ``.detach().float().cpu()`` (kind ``float``) or ``.detach().cpu()``
    (``int``, ``bool``); anything else with :func:`numpy.asarray`."""
    if _is_tensor(x):
        t = x.detach()
        if kind == "float":
            return t.float().cpu().numpy()
        return t.cpu().numpy()
    return np.asarray(x)


def _cast(a: np.ndarray, kind: str, name: str) -> np.ndarray:
    if kind == "float":
        return a.astype(np.float32, copy=False)
    if kind == "bool":
        return a.astype(bool, copy=False) if a.dtype == bool else a != 0
    if a.dtype.kind == "f":
        if a.size and not np.array_equal(a, np.round(a)):
            raise ValueError(f"{name} holds non-integer values; token ids must be integers")
    elif a.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer token ids, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _is_batch_of_rows(x: Any) -> bool:
    return isinstance(x, (list, tuple))


def ragged(x: Any, mask: Any, kind: str, name: str) -> Ragged:
    """One per-token input as :class:`Ragged` (see the module docstring for the layouts).

    Args:
        x: the input (ragged list of sequences, or a 2-D tensor / array).
        mask: the padded layout's ``(B, L)`` mask, a ragged mask, or None.
        kind: ``float`` (log-probs, float32), ``int`` (token ids, int64) or ``bool``.
        name: the argument's name, for error messages.

    Raises:
        ValueError: the input has no batch dimension, or its shape disagrees with the mask.
    """
    if _is_batch_of_rows(x):
        rows = []
        for i, r in enumerate(x):
            a = as_numpy(r, kind)
            if a.ndim > 1:
                raise ValueError(f"{name}[{i}] is not a 1-D sequence (shape {tuple(a.shape)})")
            rows.append(_cast(a.reshape(-1), kind, name))
        if mask is not None and _is_batch_of_rows(mask):
            if len(mask) != len(rows):
                raise ValueError(f"{name}: {len(rows)} sequences but the mask has {len(mask)}")
            kept = []
            for i, (r, m) in enumerate(zip(rows, mask, strict=True)):
                mb = _cast(as_numpy(m, "bool").reshape(-1), "bool", "mask")
                if len(mb) != len(r):
                    raise ValueError(f"{name}: sequence {i} has {len(r)} entries but its mask has {len(mb)}")
                kept.append(r[mb])
            rows = kept
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        empty = np.zeros(0, np.float32 if kind == "float" else bool if kind == "bool" else np.int64)
        return Ragged(np.concatenate(rows) if rows else empty, lengths)
    a = as_numpy(x, kind)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a batch: a list of sequences or a 2-D (batch, length) tensor; got an "
                         f"array of shape {tuple(a.shape)}")
    a = _cast(a, kind, name)
    if mask is None:
        return Ragged(a.reshape(-1), np.full(a.shape[0], a.shape[1], dtype=np.int64))
    if _is_batch_of_rows(mask):
        try:
            m = np.asarray([_cast(as_numpy(r, "bool").reshape(-1), "bool", "mask") for r in mask])
        except ValueError as exc:
            raise ValueError(f"{name} is a padded (batch, length) tensor but the mask is ragged") from exc
    else:
        m = _cast(as_numpy(mask, "bool"), "bool", "mask")
    if m.shape != a.shape:
        raise ValueError(f"{name} has shape {tuple(a.shape)} but the mask has shape {tuple(m.shape)}")
    return Ragged(a[m], m.sum(axis=1, dtype=np.int64))


def per_sequence(x: Any, n: int, name: str, *, broadcast: bool = True) -> list[Any] | None:
    """A per-sequence value as a list of ``n`` Python values: a list / 1-D tensor of ``n``, one scalar repeated
    (``broadcast``), or None."""
    if x is None:
        return None
    if _is_tensor(x) or isinstance(x, np.ndarray):
        if _is_tensor(x):
            t = x.detach()
            a = (t.float() if t.is_floating_point() else t).cpu().numpy()  # bf16 has no numpy dtype
        else:
            a = x
        if a.ndim == 0 and broadcast:
            return [a.item()] * n
        values = a.reshape(-1).tolist()
    elif isinstance(x, Sequence) and not isinstance(x, (str, bytes)):
        values = list(x)
    elif broadcast:
        return [x] * n
    else:
        raise ValueError(f"{name} must hold one value per sequence ({n}), got {x!r}")
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values but the batch has {n} sequences")
    return values
