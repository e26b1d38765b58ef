"""Teacher forcing for the trainer: the hidden states that predict each response token, each prompt run once.

A training batch repeats every prompt ``samples_per_prompt`` times. The plain forward
(:func:`drift.collect.scoring.gather_response_hidden`) runs the body on every prompt + response row, padded to
the longest row. :func:`shared_prefix_hidden` computes the same hidden states in two passes:

1. **prompts**: the body runs once per *distinct* prompt (right-padded), filling a KV cache; the hidden state at
   a prompt's last token predicts response token 0;
2. **responses**: each row's response tokens but the last (the last predicts nothing) run on top of its prompt's
   cached keys and values, at positions ``P + j``, in a few groups of similar length (:func:`length_groups`), so
   a handful of long rows do not pad every row.

Attention sees exactly the tokens of the plain forward (the prompt padding is masked out), so the result is the
same function of the weights, with the same gradient: the prompt's keys and values are shared by its samples
through an index, and backward sums their contributions. With 16 prompts x 4 samples this halves the tokens the
body processes, forward and backward. Numerically the two agree to float rounding (about 1e-6 relative in
float32); :class:`TeacherForcing` checks that on its first batch and falls back to the plain forward for a model
whose cache behaves otherwise (sliding-window, linear-attention or quantized caches are not used at all).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from drift.collect.rollouts import cache_argument, plain_cache
from drift.collect.scoring import LMHead, gather_response_hidden
from drift.runtime.padding import pad

__all__ = ["GROUP_COST_TOKENS", "MAX_GROUPS", "TeacherForcing", "length_groups", "shared_prefix_hidden"]

log = logging.getLogger(__name__)

GROUP_COST_TOKENS = 512
"""What one more response group (one more body call) must save, in padded tokens, to be worth it."""

MAX_GROUPS = 4
"""At most this many response groups per batch."""

_CHECK_ROWS = 8  # rows of the first batch compared against the plain forward
_MAX_CUTS = 256  # candidate group boundaries of length_groups


def length_groups(lengths: Sequence[int], *, group_cost: int = GROUP_COST_TOKENS,
                  max_groups: int = MAX_GROUPS) -> list[list[int]]:
    """Split rows into at most ``max_groups`` groups of similar length, minimising padded area + group costs.

    The cost of a grouping is sum over groups of (rows x longest row) + ``group_cost`` per group, minimised by a
    dynamic program over the rows sorted by length, with group boundaries between distinct lengths: exact for up
    to ``_MAX_CUTS`` distinct lengths, else over that many evenly spaced candidate boundaries. Rows of length 0 are
    left out; each group lists row indices in ascending order, the groups from short to long.
    """
    rows = [i for i, n in enumerate(lengths) if n > 0]
    if not rows:
        return []
    distinct, counts = np.unique(np.asarray([lengths[i] for i in rows], dtype=np.int64), return_counts=True)
    d = len(distinct)
    cuts = np.arange(d + 1) if d <= _MAX_CUTS else np.unique(np.linspace(0, d, _MAX_CUTS + 1).round().astype(int))
    below = np.concatenate([[0], np.cumsum(counts)])[cuts].astype(np.float64)  # rows shorter than each cut
    top = distinct[np.maximum(cuts - 1, 0)].astype(np.float64)  # longest length of a group ending at each cut
    m = len(cuts)
    # area[j, k]: a group holding the distinct lengths between cuts j and k (j < k)
    area = (below[None, :] - below[:, None]) * top[None, :] + float(group_cost)
    area[np.tril_indices(m)] = np.inf
    groups = max(1, min(int(max_groups), m - 1))
    best = np.full((groups, m), np.inf)  # best[g, k]: g + 1 groups covering the lengths below cut k
    back = np.zeros((groups, m), dtype=np.int64)
    best[0] = area[0]
    for g in range(1, groups):
        total = best[g - 1][:, None] + area
        back[g] = np.argmin(total, axis=0)
        best[g] = total[back[g], np.arange(m)]
    g, k = int(np.argmin(best[:, m - 1])), m - 1
    bounds = [int(cuts[k])]
    while g > 0:
        k = int(back[g, k])
        bounds.append(int(cuts[k]))
        g -= 1
    bounds.append(0)
    bounds.reverse()
    group_of = np.searchsorted(np.asarray(bounds[1:]), np.arange(d), side="right")  # distinct length -> group
    where = {int(v): int(gi) for v, gi in zip(distinct, group_of, strict=True)}
    out: list[list[int]] = [[] for _ in range(len(bounds) - 1)]
    for i in rows:
        out[where[int(lengths[i])]].append(i)
    return [grp for grp in out if grp]


def shared_prefix_hidden(lm: LMHead, prompts: Sequence[Sequence[int]],
                         responses: Sequence[Sequence[int]]) -> Tensor | None:
    """Hidden states predicting each response token, (N, D) in row order, like ``gather_response_hidden``.

    Runs each distinct prompt once and the responses on top of its KV cache (module docstring). Returns None
    when the model has no plain KV cache to build on (the caller then uses the plain forward).
    """
    from transformers import DynamicCache

    name = cache_argument(lm.body)
    cache = plain_cache(lm.model) if name is not None else None
    if cache is None:
        return None
    at = getattr(lm, "input_device", lm.device)  # where the body takes its inputs (a dispatched model)
    index: dict[tuple[int, ...], int] = {}
    inv = [index.setdefault(tuple(int(t) for t in p), len(index)) for p in prompts]
    distinct = [list(k) for k in index]
    ids_U_P, mask_U_P = pad(distinct, 0, side="right", device=at)
    plen = [len(p) for p in distinct]
    out = lm.body(input_ids=ids_U_P, attention_mask=mask_U_P, use_cache=True, **{name: cache})
    hidden_U_P_D = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    kv = [(layer.keys, layer.values) for layer in cache.layers]
    lengths = [len(r) for r in responses]
    offsets = np.cumsum([0, *lengths[:-1]])
    live = [b for b, n in enumerate(lengths) if n > 0]
    if not live:
        return hidden_U_P_D.new_zeros((0, hidden_U_P_D.shape[-1])).to(lm.device)

    def pick(hidden_B_L_D: Tensor, b: Sequence[int] | np.ndarray, j: Sequence[int] | np.ndarray) -> Tensor:
        on = hidden_B_L_D.device
        return hidden_B_L_D[torch.as_tensor(b, device=on), torch.as_tensor(j, device=on)].to(lm.device)

    parts = [pick(hidden_U_P_D, [inv[b] for b in live], [plen[inv[b]] - 1 for b in live])]
    dest = [offsets[live]]  # token 0 of row b lands at its row offset
    for rows in length_groups([n - 1 for n in lengths]):
        g_inv = torch.as_tensor([inv[b] for b in rows], device=at)
        group_cache = DynamicCache()
        for layer, (k, v) in enumerate(kv):
            group_cache.update(k.index_select(0, g_inv.to(k.device)), v.index_select(0, g_inv.to(v.device)), layer)
        ids_G_R, mask_G_R = pad([list(responses[b][:-1]) for b in rows], 0, side="right", device=at)
        attention = torch.cat([mask_U_P.index_select(0, g_inv), mask_G_R], dim=1)
        start = torch.as_tensor([plen[inv[b]] for b in rows], device=at)
        positions = start[:, None] + torch.arange(ids_G_R.shape[1], device=at)
        res = lm.body(input_ids=ids_G_R, attention_mask=attention, position_ids=positions, use_cache=True,
                      **{name: group_cache})
        hidden_G_R_D = res.last_hidden_state if hasattr(res, "last_hidden_state") else res[0]
        parts.append(pick(hidden_G_R_D, np.concatenate([np.full(lengths[b] - 1, i) for i, b in enumerate(rows)]),
                          np.concatenate([np.arange(lengths[b] - 1) for b in rows])))
        dest.append(np.concatenate([offsets[b] + 1 + np.arange(lengths[b] - 1) for b in rows]))
    order = np.empty(sum(lengths), dtype=np.int64)
    order[np.concatenate(dest)] = np.arange(len(order))
    return torch.cat(parts).index_select(0, torch.as_tensor(order, device=lm.device))


class TeacherForcing:
    """Response hidden states of one model: the shared-prefix forward once it has matched the plain one.

    The first call computes a few rows both ways (no grad) and keeps the shared-prefix path only when they agree
    to ``rtol`` (relative to the rows' norm; 1e-4 in float32, 3e-2 in 16-bit types); otherwise, or when the
    model has no plain KV cache, every call uses :func:`~drift.collect.scoring.gather_response_hidden`.
    """

    def __init__(self, lm: LMHead, *, shared: bool = True) -> None:
        self.lm = lm
        self.mode: str | None = None if shared else "plain"

    def _check(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> str:
        first = {tuple(q) for q in prompts[:2]}
        keep = [i for i, p in enumerate(prompts) if tuple(p) in first][:_CHECK_ROWS]
        p, r = [prompts[i] for i in keep], [responses[i] for i in keep]
        with torch.no_grad():
            fast = shared_prefix_hidden(self.lm, p, r)
            if fast is None:
                return "plain"
            ref = gather_response_hidden(self.lm, p, r)
        rtol = 1e-4 if ref.dtype == torch.float32 or ref.dtype == torch.float64 else 3e-2
        err = float((fast.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12))
        if err > rtol:
            log.warning("the shared-prefix forward of %s differs from the plain one by %.2e (relative): using the "
                        "plain forward", type(self.lm.model).__name__, err)
            return "plain"
        return "shared"

    def hidden(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> Tensor:
        """Final hidden states at the positions predicting each response token, concatenated: (N, D)."""
        if self.mode is None:
            self.mode = self._check(prompts, responses)
        if self.mode == "shared":
            out = shared_prefix_hidden(self.lm, prompts, responses)
            if out is not None:
                return out
            self.mode = "plain"
        return gather_response_hidden(self.lm, prompts, responses)
