"""Supervised training and evaluation of the small Llama models that live in an oracle world.

Any :class:`~drift.worlds.base.World` works: the world's ``sft_sampler`` draws the training sequences (with
optional per-token loss masks, e.g. the plan-cipher world's :class:`~drift.worlds.plan_cipher.PlanData`) and
``slot_groups`` names the slots :func:`evaluate` also reports separately (e.g. the plan-cipher key).

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
from drift.worlds.base import World

__all__ = [
    "SFTConfig",
    "build_model",
    "evaluate",
    "n_parameters",
    "sample_rollouts",
    "supervision_quality",
    "teacher_forced_accuracy",
    "teacher_forced_hits",
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
def build_model(world: World, tokenizer: Any, cfg: SFTConfig) -> Any:
    """A freshly initialised ``LlamaForCausalLM`` for ``world`` (seeded by ``cfg.seed``).

    The vocabulary is the tokenizer's, embeddings are tied, and pad/bos/eos ids are set in both the model
    config and its generation config, so ``generate`` stops at ``<eos>`` without further arguments.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    sp = world.special_ids(tokenizer)
    max_positions = 1 << math.ceil(math.log2(world.max_sequence_len + 1))
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
def _sft_batch(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad: int,
               loss_masks: Sequence[Sequence[bool] | None] | None = None) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` with the loss on response tokens only.

    ``loss_masks[b][t]`` False drops response token ``t`` of row ``b`` from the loss (None: keep all).
    """
    ids_B_L, mask_B_L = pad_rows([[*p, *r] for p, r in zip(prompts, responses, strict=True)], pad, side="right")
    labels_B_L = torch.full_like(ids_B_L, -100)
    masks = loss_masks if loss_masks is not None else [None] * len(prompts)
    for b, (p, r, m) in enumerate(zip(prompts, responses, masks, strict=True)):
        labels_T = torch.as_tensor(list(r), dtype=torch.long)
        if m is not None:
            labels_T[~torch.as_tensor(list(m), dtype=torch.bool)] = -100
        labels_B_L[b, len(p):len(p) + len(r)] = labels_T
    return {"input_ids": ids_B_L, "attention_mask": mask_B_L, "labels": labels_B_L}


def _length_bounds(world: World, cfg: SFTConfig, step: int) -> tuple[int, int]:
    """Fewest and most input symbols per training example at ``step`` (the length curriculum)."""
    start = min(cfg.curriculum_start, world.max_len)
    frac = 1.0 if cfg.curriculum_steps == 0 else min(1.0, step / cfg.curriculum_steps)
    hi = round(start + (world.max_len - start) * frac)
    return min(cfg.train_min_len, hi), hi


# -------------------------------------------------------------------------------------------- training
def train_world_model(world: World, tokenizer: Any, cfg: SFTConfig, *, data: Any = None,
                      progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """Train one world model by supervised learning on the world's training sequences.

    Args:
        world: the task.
        tokenizer: the world tokenizer (``world.build_tokenizer()``).
        cfg: architecture, optimisation and stopping rule.
        data: the world's training-data options (passed to ``world.sft_sampler``; None: its defaults).
        progress: show a tqdm bar on stderr.

    Returns:
        ``(model, log)``: the model in eval mode, and a JSON-able log with the config, the data options (when
        given), parameter count,
        wall time, the evaluations ``[{"step", "loss", "token_acc"}]``, the selected step (the stop of a
        student, or the last step) and whether the ``select_token_acc`` target was reached.
    """
    from tqdm.auto import tqdm

    model = build_model(world, tokenizer, cfg)
    sampler = world.sft_sampler(tokenizer, data)
    pad = world.special_ids(tokenizer)["pad"]
    data_rng = np.random.default_rng([cfg.seed, 0])
    sel_rng = np.random.default_rng([cfg.seed, 1])
    selection = sampler.selection(sel_rng, cfg.eval_prompts)

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
        examples = sampler.sample(data_rng, cfg.batch, lo, hi)
        batch = _sft_batch([e.prompt for e in examples], [e.response for e in examples], pad,
                           [e.loss_mask for e in examples])
        loss = model(**batch).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        optim.step()
        sched.step()
        loss_value = loss.item()
        if step >= cfg.eval_from and (step % cfg.eval_every == 0 or step == cfg.steps):
            acc = teacher_forced_accuracy(model, [e.prompt for e in selection], [e.response for e in selection],
                                          pad=pad)
            evals.append({"step": step, "loss": round(loss_value, 5), "token_acc": round(acc, 5)})
            bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{acc:.3f}", n=hi)
            logger.info("step %d loss %.4f token_acc %.4f (n<=%d)", step, loss_value, acc, hi)
            if cfg.select_token_acc is not None and acc >= cfg.select_token_acc:
                selected, reached = step, True
                break
    bar.close()
    model.eval()
    log = {"config": config_to_dict(cfg), **({"data": config_to_dict(data)} if data is not None else {}),
           "n_parameters": n_parameters(model),
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
def teacher_forced_hits(model: Any, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                        *, pad: int, batch_size: int = 64) -> list[np.ndarray]:
    """Per example, ``hit_T[t] = [argmax p(.|x, r_<t) == r_t]`` given the correct prefixes (bool arrays)."""
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    for i in range(0, len(prompts), batch_size):
        chunk_r = responses[i:i + batch_size]
        for logits_T_V, r in zip(_response_logits(model, prompts[i:i + batch_size], chunk_r, pad), chunk_r,
                                 strict=True):
            out.append((logits_T_V.argmax(-1) == torch.as_tensor(list(r))).numpy())
    model.train(was_training)
    return out


def teacher_forced_accuracy(model: Any, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                            *, pad: int, batch_size: int = 64) -> float:
    """Token accuracy given correct prefixes: the mean over all tokens of ``[argmax p(.|x, r_<t) == r_t]``."""
    hits = teacher_forced_hits(model, prompts, responses, pad=pad, batch_size=batch_size)
    return sum(int(h.sum()) for h in hits) / max(sum(len(h) for h in hits), 1)


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


def evaluate(model: Any, world: World, tokenizer: Any, records: Sequence[dict[str, Any]], *,
             seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """Accuracy of a world model on prompt rows (``{"prompt": ...}``, as written by ``make_prompt_records``).

    Returns:
        ``token_acc`` (teacher-forced, over all response tokens incl. EOS), ``greedy_exact`` and
        ``sampled_exact`` (free-running exact match, greedy and temperature-1 sampling), and
        ``greedy_first_error_median`` / ``sampled_first_error_median``: the median 0-based slot of the first
        wrong token among the rollouts that are wrong (None if none are). For each slot group ``g`` of the
        world (:meth:`World.slot_groups`, e.g. ``key``), also ``token_acc_g`` (teacher-forced, over the
        group's slots) and ``greedy_exact_g`` / ``sampled_exact_g`` (share of rollouts whose slots in the
        group all hold the correct token).
    """
    prompts = _prompt_ids(records, tokenizer)
    correct = [world.correct_response_ids(p, tokenizer) for p in prompts]
    groups = [world.slot_groups(p, tokenizer) for p in prompts]
    sp = world.special_ids(tokenizer)
    hits = teacher_forced_hits(model, prompts, correct, pad=sp["pad"], batch_size=batch_size)
    result: dict[str, Any] = {"n_prompts": len(prompts),
                              "token_acc": sum(int(h.sum()) for h in hits) / max(sum(len(h) for h in hits), 1)}
    names = list(groups[0]) if groups else []
    for g in names:
        result[f"token_acc_{g}"] = (sum(int(h[m[g]].sum()) for h, m in zip(hits, groups, strict=True))
                                    / max(sum(int(m[g].sum()) for m in groups), 1))
    for mode, do_sample in (("greedy", False), ("sampled", True)):
        rollouts = sample_rollouts(model, prompts, eos=sp["eos"], pad=sp["pad"], do_sample=do_sample,
                                   max_new_tokens=world.max_response_len + 1, seed=seed, batch_size=batch_size)
        exact = [world.verify(p, r, tokenizer) for p, r in zip(prompts, rollouts, strict=True)]
        errors = [e for p, r in zip(prompts, rollouts, strict=True)
                  if (e := world.first_error(p, r, tokenizer)) is not None]
        result[f"{mode}_exact"] = float(np.mean(exact))
        result[f"{mode}_first_error_median"] = float(np.median(errors)) if errors else None
        for g in names:
            result[f"{mode}_exact_{g}"] = float(np.mean([
                _group_right(c, r, m[g]) for c, r, m in zip(correct, rollouts, groups, strict=True)]))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


def _group_right(correct: Sequence[int], response: Sequence[int], group_T: np.ndarray) -> float:
    """1.0 iff ``response`` holds the correct token at every slot of the group (a missing slot is wrong)."""
    slots = np.flatnonzero(group_T)
    return float(all(t < len(response) and response[t] == correct[t] for t in slots))


@torch.no_grad()
def supervision_quality(teacher: Any, world: World, tokenizer: Any,
                        prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], *,
                        batch_size: int = 64) -> dict[str, Any]:
    """How often the teacher's argmax names the oracle token, on clean prefixes vs prefixes holding an error.

    For every response slot ``t`` with an oracle token (``t <= n``), ``hit_t = [argmax_v p_teacher(v | prompt,
    r_<t) == oracle_t]``; slots are split by :meth:`World.oracle_prefix_ok`. On the error split also
    ``agree_t = [argmax_v p_teacher(v | prompt, r_<t) == r_t]``: the teacher names the token the rollout holds,
    i.e. it follows the error instead of pointing back to the oracle.

    Returns:
        ``clean_acc``, ``error_acc``, ``error_agree`` (None where a split is empty), and token counts
        ``n_clean``, ``n_error``.
    """
    teacher.eval()
    pad = world.special_ids(tokenizer)["pad"]
    hits = {True: 0, False: 0}
    counts = {True: 0, False: 0}
    agree = 0
    for i in range(0, len(prompts), batch_size):
        chunk_p, chunk_r = prompts[i:i + batch_size], responses[i:i + batch_size]
        for logits_T_V, p, r in zip(_response_logits(teacher, chunk_p, chunk_r, pad), chunk_p, chunk_r,
                                    strict=True):
            oracle_T = world.oracle_tokens(p, r, tokenizer)
            ok_T = world.oracle_prefix_ok(p, r, tokenizer)
            argmax_T = logits_T_V.argmax(-1).numpy()
            hit_T = argmax_T == oracle_T
            valid_T = oracle_T >= 0
            for clean in (True, False):
                sel_T = valid_T & (ok_T == clean)
                hits[clean] += int(hit_T[sel_T].sum())
                counts[clean] += int(sel_T.sum())
            agree += int((argmax_T == np.asarray(list(r)))[valid_T & ~ok_T].sum())
    return {"clean_acc": round(hits[True] / counts[True], 4) if counts[True] else None,
            "error_acc": round(hits[False] / counts[False], 4) if counts[False] else None,
            "error_agree": round(agree / counts[False], 4) if counts[False] else None,
            "n_clean": counts[True], "n_error": counts[False]}
