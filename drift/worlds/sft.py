"""Supervised training and evaluation of the small Llama models that live in an oracle world.

The recipe (measured on a 2-core CPU): train a plain ``LlamaForCausalLM`` (tied embeddings, 4 heads) on
correct sequences only, with the loss on the response tokens including the EOS; AdamW with linear warm-up and
cosine decay, gradient clipping, and a *length curriculum*: the most input symbols per example rises linearly
from ``curriculum_start`` to the world's ``max_len`` over ``curriculum_steps`` steps, while the fewest stays
at ``train_min_len``. Without the curriculum the model never finds the "locate your last output in the
prompt, translate the next symbol" circuit; mixed lengths in every batch matter too: with fixed-length
batches a 2-layer model settles on a positional shortcut at about 0.82 token accuracy.

A *teacher* is trained to convergence. A weaker *student* is the same recipe stopped at the first checkpoint
whose teacher-forced token accuracy reaches ``select_token_acc``; the model sits in a sharp phase transition
there, so the stop is chosen by measured accuracy, never by step. Such a student is right on most tokens given
a correct prefix, but its free-running errors compound.

Training data are generated on the fly from a seeded ``numpy.random.Generator`` and the weights from
``torch.manual_seed``, so a config and a seed determine the model on a given machine.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from drift.config import Checks, config_to_dict, opt
from drift.runtime.padding import pad as pad_rows
from drift.worlds.translate_copy import TranslateCopyWorld

__all__ = [
    "SFTConfig",
    "build_model",
    "evaluate",
    "n_parameters",
    "sample_rollouts",
    "supervision_quality",
    "teacher_forced_accuracy",
    "train_world_model",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SFTConfig:
    """Architecture and optimisation of one world model (defaults: the teacher of the default world)."""

    layers: int = opt(3, "transformer blocks")
    width: int = opt(96, "hidden size")
    heads: int = opt(4, "attention heads (width must be divisible by heads)")
    mlp_ratio: int = opt(4, "MLP intermediate size as a multiple of width")
    steps: int = opt(600, "optimisation steps (the cosine schedule spans all, even if training stops early)")
    batch: int = opt(64, "sequences per step")
    lr: float = opt(3e-3, "peak AdamW learning rate")
    betas: tuple[float, float] = opt((0.9, 0.98), "AdamW betas")
    weight_decay: float = opt(0.01, "AdamW weight decay")
    warmup: int = opt(50, "linear warm-up steps")
    clip: float = opt(1.0, "gradient-norm clipping threshold")
    curriculum_steps: int = opt(300, "steps over which the most symbols per example rises to max_len")
    curriculum_start: int = opt(6, "most symbols per example at step 0")
    train_min_len: int = opt(1, "fewest symbols per training example (lengths are uniform up to the bound)")
    seed: int = opt(0, "seed of the weights and of the on-the-fly training data")
    eval_every: int = opt(50, "steps between token-accuracy evaluations on the selection set")
    eval_from: int = opt(0, "first step at which evaluations start")
    eval_prompts: int = opt(64, "prompts in the fixed selection set (full-length, own seed stream)")
    select_token_acc: float | None = opt(
        None, "stop at the first evaluation whose teacher-forced token accuracy reaches this (student); "
              "None trains all steps")

    def __post_init__(self) -> None:
        c = Checks("SFTConfig")
        for key in ("layers", "width", "heads", "mlp_ratio", "steps", "batch", "lr", "clip", "eval_every",
                    "eval_prompts", "curriculum_start", "train_min_len"):
            c.positive(key, getattr(self, key))
        c.check(self.width % max(self.heads, 1) == 0,
                f"width={self.width} must be divisible by heads={self.heads}")
        c.check(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
                f"betas must be two numbers in [0, 1), got {self.betas!r}")
        c.check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        c.check(self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}")
        c.check(self.curriculum_steps >= 0, f"curriculum_steps must be >= 0, got {self.curriculum_steps}")
        c.check(self.eval_from >= 0, f"eval_from must be >= 0, got {self.eval_from}")
        c.in_range("select_token_acc", self.select_token_acc, 0.0, 1.0, allow_none=True)
        c.raise_if_any()


# ------------------------------------------------------------------------------------------------- model
def build_model(world: TranslateCopyWorld, tokenizer: Any, cfg: SFTConfig) -> Any:
    """A freshly initialised ``LlamaForCausalLM`` for ``world`` (seeded by ``cfg.seed``).

    The vocabulary is the tokenizer's, embeddings are tied, and pad/bos/eos ids are set in both the model
    config and its generation config, so ``generate`` stops at ``<eos>`` without further arguments.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    sp = world.special_ids(tokenizer)
    max_positions = 1 << math.ceil(math.log2(2 * world.max_len + 4))
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.width, intermediate_size=cfg.mlp_ratio * cfg.width,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True, initializer_range=0.02,
        pad_token_id=sp["pad"], bos_token_id=sp["bos"], eos_token_id=sp["eos"],
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(config)
    gen = model.generation_config
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = sp["pad"], sp["bos"], sp["eos"]
    return model


def n_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


# -------------------------------------------------------------------------------------------------- data
def _sft_batch(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
               pad: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` with the loss on response tokens only."""
    ids_B_L, mask_B_L = pad_rows([[*p, *r] for p, r in zip(prompts, responses, strict=True)], pad, side="right")
    labels_B_L = torch.full_like(ids_B_L, -100)
    for b, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        labels_B_L[b, len(p):len(p) + len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return {"input_ids": ids_B_L, "attention_mask": mask_B_L, "labels": labels_B_L}


class _Encoder:
    """Turns symbol lists into (prompt ids, correct response ids) without going through text."""

    def __init__(self, world: TranslateCopyWorld, tokenizer: Any) -> None:
        self.world = world
        self.sp = world.special_ids(tokenizer)
        self.in_ids, self.out_ids = world.symbol_ids(tokenizer)
        self.f_table = np.array([world.f(x) for x in range(world.n_symbols)], dtype=np.int64)

    def encode(self, symbols: Sequence[int]) -> tuple[list[int], list[int]]:
        x = np.asarray(symbols, dtype=np.int64)
        prompt = [self.sp["bos"], *self.in_ids[x].tolist(), self.sp["sep"]]
        response = [*self.out_ids[self.f_table[x]].tolist(), self.sp["eos"]]
        return prompt, response

    def sample(self, rng: np.random.Generator, count: int, lo: int,
               hi: int) -> list[tuple[list[int], list[int]]]:
        lengths = rng.integers(lo, hi + 1, size=count)
        return [self.encode(rng.permutation(self.world.n_symbols)[:n]) for n in lengths]


def _length_bounds(world: TranslateCopyWorld, cfg: SFTConfig, step: int) -> tuple[int, int]:
    """Fewest and most input symbols per training example at ``step`` (the length curriculum)."""
    start = min(cfg.curriculum_start, world.max_len)
    frac = 1.0 if cfg.curriculum_steps == 0 else min(1.0, step / cfg.curriculum_steps)
    hi = round(start + (world.max_len - start) * frac)
    return min(cfg.train_min_len, hi), hi


# -------------------------------------------------------------------------------------------- training
def train_world_model(world: TranslateCopyWorld, tokenizer: Any, cfg: SFTConfig, *,
                      progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """Train one world model by supervised learning on correct sequences.

    Args:
        world: the task.
        tokenizer: the world tokenizer (:meth:`TranslateCopyWorld.build_tokenizer`).
        cfg: architecture, optimisation and stopping rule.
        progress: show a tqdm bar on stderr.

    Returns:
        ``(model, log)``: the model in eval mode, and a JSON-able log with the config, parameter count,
        wall time, the evaluations ``[{"step", "loss", "token_acc"}]``, the selected step (the stop of a
        student, or the last step) and whether the ``select_token_acc`` target was reached.
    """
    from tqdm.auto import tqdm

    model = build_model(world, tokenizer, cfg)
    enc = _Encoder(world, tokenizer)
    data_rng = np.random.default_rng([cfg.seed, 0])
    sel_rng = np.random.default_rng([cfg.seed, 1])
    selection = [enc.encode(world.sample_symbols(sel_rng)) for _ in range(cfg.eval_prompts)]

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)

    def lr_factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_factor)
    evals: list[dict[str, float]] = []
    selected, reached = cfg.steps, False
    t0 = time.perf_counter()
    bar = tqdm(range(1, cfg.steps + 1), disable=not progress, desc=f"sft {cfg.layers}x{cfg.width}",
               leave=False)
    for step in bar:
        model.train()
        lo, hi = _length_bounds(world, cfg, step - 1)
        pairs = enc.sample(data_rng, cfg.batch, lo, hi)
        batch = _sft_batch([p for p, _ in pairs], [r for _, r in pairs], enc.sp["pad"])
        loss = model(**batch).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        optim.step()
        sched.step()
        loss_value = loss.item()
        if step >= cfg.eval_from and (step % cfg.eval_every == 0 or step == cfg.steps):
            acc = teacher_forced_accuracy(model, [p for p, _ in selection], [r for _, r in selection],
                                          pad=enc.sp["pad"])
            evals.append({"step": step, "loss": round(loss_value, 5), "token_acc": round(acc, 5)})
            bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{acc:.3f}", n=hi)
            logger.info("step %d loss %.4f token_acc %.4f (n<=%d)", step, loss_value, acc, hi)
            if cfg.select_token_acc is not None and acc >= cfg.select_token_acc:
                selected, reached = step, True
                break
    bar.close()
    model.eval()
    log = {"config": config_to_dict(cfg), "n_parameters": n_parameters(model),
           "wall_time_s": round(time.perf_counter() - t0, 1), "selected_step": selected,
           "select_target_reached": reached if cfg.select_token_acc is not None else None, "evals": evals}
    if cfg.select_token_acc is not None and not reached:
        logger.warning("token accuracy never reached %.3f in %d steps; keeping the last model",
                       cfg.select_token_acc, cfg.steps)
    return model, log


# ------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def _response_logits(model: Any, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                     pad: int) -> list[torch.Tensor]:
    """Per example, the logits ``logits_T_V`` that predict each response token from its prefix."""
    batch = _sft_batch(prompts, responses, pad)
    logits_B_L_V = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return [logits_B_L_V[b, len(p) - 1:len(p) - 1 + len(r)] for b, (p, r) in
            enumerate(zip(prompts, responses, strict=True))]


@torch.no_grad()
def teacher_forced_accuracy(model: Any, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                            *, pad: int, batch_size: int = 64) -> float:
    """Token accuracy given correct prefixes: the mean over all tokens of ``[argmax p(.|x, r_<t) == r_t]``."""
    was_training = model.training
    model.eval()
    hits = total = 0
    for i in range(0, len(prompts), batch_size):
        chunk_r = responses[i:i + batch_size]
        for logits_T_V, r in zip(_response_logits(model, prompts[i:i + batch_size], chunk_r, pad), chunk_r,
                                 strict=True):
            hits += int((logits_T_V.argmax(-1) == torch.as_tensor(list(r))).sum())
            total += len(r)
    model.train(was_training)
    return hits / max(total, 1)


@torch.no_grad()
def sample_rollouts(model: Any, prompts: Sequence[Sequence[int]], *, eos: int, pad: int, do_sample: bool,
                    max_new_tokens: int, seed: int = 0, batch_size: int = 64) -> list[list[int]]:
    """Free-running responses with ``model.generate`` (temperature 1, no top-k/top-p when sampling).

    Each response is cut after its first EOS (kept). Sampling is seeded by ``seed`` without touching the
    caller's global torch RNG state.
    """
    out: list[list[int]] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(prompts), batch_size):
            ids_B_L, mask_B_L = pad_rows(prompts[i:i + batch_size], pad, side="left")
            kwargs: dict[str, Any] = {"do_sample": do_sample}
            if do_sample:
                kwargs.update(temperature=1.0, top_k=0, top_p=1.0)
            seqs_B_S = model.generate(input_ids=ids_B_L, attention_mask=mask_B_L,
                                      max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad,
                                      **kwargs)
            for row in seqs_B_S[:, ids_B_L.shape[1]:].tolist():
                out.append(row[:row.index(eos) + 1] if eos in row else row)
    return out


def _prompt_ids(records: Sequence[dict[str, Any]], tokenizer: Any) -> list[list[int]]:
    return [list(tokenizer(r["prompt"])["input_ids"]) for r in records]


def evaluate(model: Any, world: TranslateCopyWorld, tokenizer: Any, records: Sequence[dict[str, Any]], *,
             seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """Accuracy of a world model on prompt rows (``{"prompt": ...}``, as written by ``make_prompt_records``).

    Returns:
        ``token_acc`` (teacher-forced, over all response tokens incl. EOS), ``greedy_exact`` and
        ``sampled_exact`` (free-running exact match, greedy and temperature-1 sampling), and
        ``greedy_first_error_median`` / ``sampled_first_error_median``: the median 0-based slot of the first
        wrong token among the rollouts that are wrong (None if none are).
    """
    prompts = _prompt_ids(records, tokenizer)
    correct = [world.correct_response_ids(p, tokenizer) for p in prompts]
    sp = world.special_ids(tokenizer)
    result: dict[str, Any] = {"n_prompts": len(prompts),
                              "token_acc": teacher_forced_accuracy(model, prompts, correct, pad=sp["pad"],
                                                                   batch_size=batch_size)}
    for mode, do_sample in (("greedy", False), ("sampled", True)):
        rollouts = sample_rollouts(model, prompts, eos=sp["eos"], pad=sp["pad"], do_sample=do_sample,
                                   max_new_tokens=world.max_len + 2, seed=seed, batch_size=batch_size)
        exact = [world.verify(p, r, tokenizer) for p, r in zip(prompts, rollouts, strict=True)]
        errors = [e for p, r in zip(prompts, rollouts, strict=True)
                  if (e := world.first_error(p, r, tokenizer)) is not None]
        result[f"{mode}_exact"] = float(np.mean(exact))
        result[f"{mode}_first_error_median"] = float(np.median(errors)) if errors else None
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


@torch.no_grad()
def supervision_quality(teacher: Any, world: TranslateCopyWorld, tokenizer: Any,
                        prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *,
                        batch_size: int = 64) -> dict[str, Any]:
    """How often the teacher's argmax names the oracle token, on clean prefixes vs prefixes holding an error.

    For every response slot ``t`` with an oracle token (``t <= n``), ``hit_t = [argmax_v p_teacher(v | prompt,
    r_<t) == oracle_t]``; slots are split by :meth:`TranslateCopyWorld.oracle_prefix_ok`.

    Returns:
        ``clean_acc``, ``error_acc`` (None where a split is empty), and token counts ``n_clean``, ``n_error``.
    """
    teacher.eval()
    pad = world.special_ids(tokenizer)["pad"]
    hits = {True: 0, False: 0}
    counts = {True: 0, False: 0}
    for i in range(0, len(prompts), batch_size):
        chunk_p, chunk_r = prompts[i:i + batch_size], responses[i:i + batch_size]
        for logits_T_V, p, r in zip(_response_logits(teacher, chunk_p, chunk_r, pad), chunk_p, chunk_r,
                                    strict=True):
            oracle_T = world.oracle_tokens(p, r, tokenizer)
            ok_T = world.oracle_prefix_ok(p, r, tokenizer)
            hit_T = logits_T_V.argmax(-1).numpy() == oracle_T
            valid_T = oracle_T >= 0
            for clean in (True, False):
                sel_T = valid_T & (ok_T == clean)
                hits[clean] += int(hit_T[sel_T].sum())
                counts[clean] += int(sel_T.sum())
    return {"clean_acc": round(hits[True] / counts[True], 4) if counts[True] else None,
            "error_acc": round(hits[False] / counts[False], 4) if counts[False] else None,
            "n_clean": counts[True], "n_error": counts[False]}
