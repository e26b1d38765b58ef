"""Sampling student rollouts with ``generate``: left padding, pure sampling, EOS handling, reproducible seeds.

Sampling is *pure*: a fresh ``GenerationConfig`` overrides whatever the checkpoint ships (``top_k`` 0, no
repetition penalty), so rollouts come from the student's distribution at the requested temperature / top-p, the
distribution OPD assumes. Each call is seeded from ``(seed, part, batch)`` so a part can be regenerated
identically when a run is resumed.

A response is the generated tokens up to and including the first stop token (the tokenizer's EOS plus any EOS ids
in the model's generation config). ``finished`` means a stop token was produced; ``truncated`` means
``max_new_tokens`` were produced without one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Generated", "derive_seed", "sample_responses", "stop_token_ids"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generated:
    """One sampled response."""

    response_ids: list[int]
    finished: bool
    truncated: bool


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix-style mixing; stable across runs and platforms)."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) + 0x9E3779B97F4A7C15 + ((x << 6) & 0xFFFFFFFFFFFFFFFF) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def stop_token_ids(tokenizer: Any, model: Any | None = None) -> list[int]:
    """EOS ids that end a response: the tokenizer's EOS plus the model generation config's EOS id(s)."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    gen = getattr(model, "generation_config", None) if model is not None else None
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    if isinstance(extra, int):
        extra = [extra]
    for e in extra or []:
        if int(e) not in ids:
            ids.append(int(e))
    return ids


@torch.inference_mode()
def sample_responses(model: Any, prompts: Sequence[Sequence[int]], *, stop_ids: Sequence[int], pad_id: int,
                     max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 32,
                     seed: int = 0, on_batch: Callable[[int], None] | None = None) -> list[Generated]:
    """Sample one response per prompt (repeat a prompt to get several samples).

    Args:
        model: the student causal LM.
        prompts: prompt token ids, one row per response wanted.
        stop_ids: token ids that end a response (kept as the last response token).
        pad_id: id used for left padding (attention-masked).
        max_new_tokens: response length cap.
        temperature: sampling temperature; 0 means greedy decoding.
        top_p: nucleus threshold (1.0 = full distribution).
        batch_size: prompts per ``generate`` call.
        seed: base seed; batch i is seeded with ``derive_seed(seed, i)``.
        on_batch: progress callback, called with the number of responses done in each batch.
    """
    from transformers import GenerationConfig

    if not stop_ids:
        raise ValueError("no stop token: the tokenizer has no EOS; set tokenizer.eos_token")
    gen_cfg = GenerationConfig(
        max_new_tokens=int(max_new_tokens), do_sample=temperature > 0, temperature=temperature if temperature > 0
        else None, top_p=top_p if temperature > 0 else None, top_k=0 if temperature > 0 else None,
        pad_token_id=int(pad_id), eos_token_id=list(stop_ids), bos_token_id=None, repetition_penalty=None,
    )
    device = next(model.parameters()).device
    stops = set(int(s) for s in stop_ids)
    out: list[Generated] = []
    for bi, lo in enumerate(range(0, len(prompts), batch_size)):
        rows = [list(p) for p in prompts[lo: lo + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.as_tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        torch.manual_seed(derive_seed(seed, bi))
        seq = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_cfg)
        new = seq[:, width:].cpu().tolist()
        for toks in new:
            resp: list[int] = []
            finished = False
            for tok in toks:
                resp.append(int(tok))
                if tok in stops:
                    finished = True
                    break
            out.append(Generated(resp, finished, truncated=not finished and len(resp) >= max_new_tokens))
        if on_batch is not None:
            on_batch(len(rows))
    return out
