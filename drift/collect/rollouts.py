"""Sampling student rollouts with ``generate``: left padding, pure sampling, EOS handling, reproducible seeds.

Sampling is *pure*: a fresh ``GenerationConfig`` overrides whatever the checkpoint ships (``top_k`` 0, no
repetition penalty), so rollouts come from the student's distribution at the requested temperature / top-p, the
distribution OPD assumes. Each call is seeded from ``(seed, part, batch)`` so a part can be regenerated
identically when a run is resumed.

A response is the generated tokens up to and including the first stop token (the tokenizer's EOS plus any EOS ids
in the model's generation config). ``finished`` means a stop token was produced; ``truncated`` means
``max_new_tokens`` were produced without one.

Progress: ``on_tokens`` is told, once per decoding step, how many rows produced a response token in that step
(rows not yet stopped), through a :class:`TokenCounter` stopping criterion that never stops anything and draws no
random numbers, so the samples are the same with and without it. The counts add up to the summed response lengths.

Shared prompts (``share_prompts=True``; the trainer uses it): when a batch repeats a prompt (several samples per
prompt), each distinct prompt but its last token is run once into a KV cache, which is expanded to the batch's rows
and handed to ``generate``; ``generate`` then only runs the last prompt token before decoding. Attention sees the
same tokens at the same positions and the random stream is the same (one draw per decoding step), so the samples
are those of the plain call up to float rounding of the logits (a token flips only when a uniform draw lands
within rounding of a boundary). Models whose cache is not plain full attention (sliding windows, linear
attention, quantized) are run the plain way.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from drift.runtime.padding import pad

__all__ = ["Generated", "TokenCounter", "cache_argument", "derive_seed", "plain_cache", "sample_responses",
           "stop_token_ids"]

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


class TokenCounter:
    """A ``transformers`` stopping criterion that only counts: rows still running at each decoding step.

    ``generate`` calls a stopping criterion once per step, after appending the step's token to ``input_ids``. A row
    contributes a response token at step t iff no stop token appeared among its first t tokens, so the count of step
    t is the number of such rows, and summed over steps it is the total response length (stop token included). A
    row that stops at length n < ``max_new_tokens`` is reported to ``on_early_stop`` with ``max_new_tokens - n``, the
    part of the rows x ``max_new_tokens`` upper bound it will not generate: sum(on_tokens) + sum(on_early_stop) =
    rows x max_new_tokens once ``generate`` returns.

    The criterion always answers "not done", reads only ``input_ids[:, -1]`` and consumes no random numbers.
    """

    def __init__(self, n_rows: int, stop_ids: Sequence[int], max_new_tokens: int, device: torch.device,
                 on_tokens: Callable[[int], None] | None, on_early_stop: Callable[[int], None] | None = None) -> None:
        self.stops = torch.as_tensor(sorted(set(int(s) for s in stop_ids)), dtype=torch.long, device=device)
        self.running = torch.ones(n_rows, dtype=torch.bool, device=device)
        self.max_new_tokens = int(max_new_tokens)
        self.steps = 0
        self.on_tokens, self.on_early_stop = on_tokens, on_early_stop

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        self.steps += 1
        stopped = self.running & torch.isin(input_ids[:, -1], self.stops)
        n_running, n_stopped = torch.stack((self.running.sum(), stopped.sum())).tolist()  # one host sync per step
        self.running &= ~stopped
        if n_running and self.on_tokens is not None:
            self.on_tokens(n_running)
        left = self.max_new_tokens - self.steps
        if n_stopped and left > 0 and self.on_early_stop is not None:
            self.on_early_stop(n_stopped * left)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def cache_argument(module: Any) -> str | None:
    """The name of a model's KV-cache argument: ``cache`` in recent transformers, else ``past_key_values``."""
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return None
    for name in ("cache", "past_key_values"):
        if name in params:
            return name
    return None


def plain_cache(model: Any) -> Any | None:
    """A fresh ``DynamicCache`` for ``model`` when all its layers are plain full attention, else None.

    Plain: transformers' ``DynamicLayer`` itself (keys and values grow by concatenation, every position kept), not
    a sliding-window, linear-attention, quantized or offloaded layer, whose contents a caller could not index.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer for layer in layers):
        return None
    return cache


def _shared_prefill(model: Any, rows: Sequence[Sequence[int]], pad_id: int,
                    device: torch.device) -> dict[str, Any]:
    """``generate`` kwargs with a KV cache of every row's prompt but its last token, each distinct prompt run once.

    The distinct prompts are left-padded to the batch's width with generate's own position ids (mask cumsum - 1)
    and the cache is expanded to the rows: the cache generate's prefill would build. Empty (plain ``generate``)
    when no prompt repeats, a prompt has one token, or the model's cache is not plain full attention.
    """
    name, body = cache_argument(model), getattr(model, "base_model", model)
    index: dict[tuple[int, ...], int] = {}
    inv = [index.setdefault(tuple(int(t) for t in r), len(index)) for r in rows]
    if len(index) == len(rows) or min(len(r) for r in rows) < 2 or name is None or body is model \
            or cache_argument(body) != name:
        return {}
    cache = plain_cache(model)
    if cache is None:
        return {}
    ids, mask = pad([list(k) for k in index], int(pad_id), side="left", device=device)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    # the body alone: the prefix's logits are not needed (generate runs the last prompt token itself)
    body(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], use_cache=True,
         **{name: cache})
    cache.reorder_cache(torch.as_tensor(inv, device=device))
    return {name: cache}


@torch.inference_mode()
def sample_responses(model: Any, prompts: Sequence[Sequence[int]], *, stop_ids: Sequence[int], pad_id: int,
                     max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 32,
                     seed: int = 0, on_batch: Callable[[int], None] | None = None,
                     on_tokens: Callable[[int], None] | None = None,
                     on_early_stop: Callable[[int], None] | None = None,
                     share_prompts: bool = False) -> list[Generated]:
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
        on_tokens: token-level progress, called once per decoding step with the number of response tokens that step
            produced (rows not yet stopped); the calls add up to the summed response lengths.
        on_early_stop: called when rows stop before ``max_new_tokens``, with the tokens of the
            ``len(prompts) x max_new_tokens`` upper bound they leave unused (to shrink a progress total live).
        share_prompts: run each distinct prompt of a batch once into a KV cache that its rows share (see the
            module docstring): the same samples up to float rounding, faster with several samples per prompt.
    """
    from transformers import GenerationConfig, StoppingCriteriaList

    if not stop_ids:
        raise ValueError("no stop token: the tokenizer has no EOS; set tokenizer.eos_token")
    gen_cfg = GenerationConfig(
        max_new_tokens=int(max_new_tokens), do_sample=temperature > 0, temperature=temperature if temperature > 0
        else None, top_p=top_p if temperature > 0 else None, top_k=0 if temperature > 0 else None,
        pad_token_id=int(pad_id), eos_token_id=list(stop_ids), bos_token_id=None, repetition_penalty=None,
    )
    from drift.models import input_device

    device = input_device(model)  # the embeddings' execution device: never meta, even when they are offloaded
    stops = set(int(s) for s in stop_ids)
    out: list[Generated] = []
    for bi, lo in enumerate(range(0, len(prompts), batch_size)):
        rows = [list(p) for p in prompts[lo: lo + batch_size]]
        ids, mask = pad(rows, int(pad_id), side="left", device=device)
        width = ids.shape[1]
        extra: dict[str, Any] = {}
        if on_tokens is not None or on_early_stop is not None:
            counter = TokenCounter(len(rows), stop_ids, max_new_tokens, device, on_tokens, on_early_stop)
            extra["stopping_criteria"] = StoppingCriteriaList([counter])
        if share_prompts:
            extra.update(_shared_prefill(model, rows, pad_id, device))
        torch.manual_seed(derive_seed(seed, bi))
        seq = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg, **extra)
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
