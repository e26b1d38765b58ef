"""Padding token-id rows into rectangular batches: the one place drift pads.

Sampling pads on the *left* (every row's last prompt token sits at the same column, so ``generate`` appends new
tokens in one column for all rows); scoring and training pad on the *right* (position j of a row is column j).
The pad id itself never matters for the numbers, because the attention mask hides it; :func:`pad_id_for` picks
one that exists in the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

__all__ = ["pad", "pad_id_for"]


def pad(rows: Sequence[Sequence[int]], pad_id: int, *, side: Literal["left", "right"] = "right",
        device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id rows into ``(ids_B_L, mask_B_L)`` (int64; mask 1 on real tokens) on ``side``.

    Raises:
        ValueError: ``rows`` is empty or ``side`` is not left/right.
    """
    if not rows:
        raise ValueError("pad needs at least one row")
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r)
        if n == 0:
            continue
        sl = slice(width - n, width) if side == "left" else slice(0, n)
        ids[i, sl] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, sl] = 1
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask


def pad_id_for(tokenizer: Any, stop_ids: Sequence[int] = ()) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS / the first stop id, else 0."""
    if getattr(tokenizer, "pad_token_id", None) is not None:
        return int(tokenizer.pad_token_id)
    if stop_ids:
        return int(stop_ids[0])
    if getattr(tokenizer, "eos_token_id", None) is not None:
        return int(tokenizer.eos_token_id)
    return 0
