"""One OPD training step (steps 1-5 of :mod:`drift.train.loop`), on state prepared once per run.

:func:`prepare_step` checks the pair, renders the training prompts and builds the optimizer; :class:`OpdStep`
then runs one step per call and returns its metrics row. :func:`~drift.train.loop.train` wraps it with the
evaluations, checkpoints and drift collections; ``benchmarks/bench_train.py`` times it against a minimal
reference loop.

What a step computes, and only that (no full-vocabulary scorer: the ``eval/*`` metrics are the evaluation's):

- rollouts: :func:`~drift.collect.rollouts.sample_responses` with ``share_prompts`` (each distinct prompt's
  prefix is run once for its ``samples_per_prompt`` rows);
- teacher forcing: :class:`~drift.train.forward.TeacherForcing` (each distinct prompt once, responses on its KV
  cache in length groups; checked against the plain padded forward on the first batch), the student with grad,
  the teacher without; log-probs of the sampled tokens from the heads, ``chunk_size`` positions at a time;
- the schedule's weights (no grad; computed from the real A_t also when ``advantage="batch_mean"`` replaces A_t by
  its batch mean in the loss), the loss, backward, clipping, AdamW;
- the logged statistics: the sampled-token statistics of :func:`~drift.train.loss.sampled_stats`, lengths,
  the verifier's mean reward, the optimizer's lr and gradient norm, timings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from drift.collect.guards import PairReport, check_pair
from drift.collect.prompts import PromptRecord
from drift.collect.rollouts import derive_seed, sample_responses, stop_token_ids
from drift.collect.scoring import LMHead
from drift.runtime.padding import pad_id_for
from drift.train.config import TrainConfig
from drift.train.evaluate import RenderedPrompt, mean_reward, prompt_indices, render_prompts, rewards
from drift.train.forward import TeacherForcing
from drift.train.loss import opd_full_kl_loss, opd_sampled_loss, sampled_stats, token_logprobs
from drift.verifiers import get_verifier

__all__ = ["OpdStep", "loss_on_batch", "lr_factor", "prepare_step"]


class _Model:
    """Body + LM head of a causal LM, differentiable (the scorer's ``LMHead`` writes into buffers instead)."""

    def __init__(self, model: Any, vocab: int, *, shared_prefix: bool = True) -> None:
        self.lm = LMHead(model)
        self.vocab = vocab
        self.forcing = TeacherForcing(self.lm, shared=shared_prefix)

    def logits(self, hidden_C_D: Tensor) -> Tensor:
        return self.lm.logits(hidden_C_D, 0, self.vocab)

    def response_hidden(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> Tensor:
        """Final hidden states at the positions predicting each response token, concatenated: (N, D)."""
        return self.forcing.hidden(prompts, responses)


def _to_padded(x_N: Tensor, lengths: Sequence[int]) -> Tensor:
    """Concatenated per-row values (N,) -> right-padded (B, T) with zeros (differentiable)."""
    ib = torch.as_tensor(np.concatenate([np.full(n, b) for b, n in enumerate(lengths)]), device=x_N.device)
    it = torch.as_tensor(np.concatenate([np.arange(n) for n in lengths]), device=x_N.device)
    return x_N.new_zeros((len(lengths), max(lengths))).index_put((ib, it), x_N)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of ``lr`` at 1-based ``step``: linear warm-up k/warmup, then 1 (constant) or a cosine that
    starts at 1 on the first step after warm-up and would reach 0 one step after the last."""
    if step <= config.warmup_steps:
        return step / config.warmup_steps
    if config.lr_schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * (step - config.warmup_steps - 1) / (config.steps - config.warmup_steps)))


def loss_on_batch(student: _Model, teacher: _Model, prompts: Sequence[RenderedPrompt],
                  responses: Sequence[Sequence[int]], schedule: Any, step: int,
                  config: TrainConfig) -> tuple[Tensor, dict[str, float], bool]:
    """Steps 3-5 up to the loss: returns (loss, stats, whether any weight is non-zero)."""
    lengths = [len(r) for r in responses]
    chunk = config.scoring.chunk_size
    targets = torch.as_tensor(np.concatenate([np.asarray(r, dtype=np.int64) for r in responses]),
                              device=student.lm.device)
    hidden_s = student.response_hidden([p.student_ids for p in prompts], responses)  # with grad
    with torch.no_grad():
        hidden_t = teacher.response_hidden([p.teacher_ids for p in prompts], responses).to(student.lm.device)
        teacher_lp = _to_padded(token_logprobs(hidden_t, targets.to(hidden_t.device), teacher.logits,
                                               chunk_size=chunk), lengths)
    full_kl = config.loss == "full_kl"
    with torch.set_grad_enabled(not full_kl):  # the full-KL loss differentiates the heads itself
        student_lp = _to_padded(token_logprobs(hidden_s, targets, student.logits, chunk_size=chunk), lengths)
    mask = _to_padded(torch.ones(len(targets), device=targets.device), lengths) > 0
    adv = (teacher_lp - student_lp.detach()) * mask
    weights = schedule.weights(adv, mask, teacher_logprob=teacher_lp, step=step, total_steps=config.steps)
    if full_kl:
        loss, stats = opd_full_kl_loss(hidden_s, hidden_t, weights[mask], int(mask.sum()),
                                       student_head=student.logits, teacher_head=teacher.logits, chunk_size=chunk)
        stats = {**sampled_stats(student_lp, teacher_lp, weights, mask), **stats}
    else:
        loss, stats = opd_sampled_loss(student_lp, teacher_lp, weights, mask, advantage=config.advantage)
    return loss, stats, bool((weights[mask] != 0).any())


@dataclass
class OpdStep:
    """A run's prepared state; ``step(k)`` makes update k (1-based) and returns its metrics row."""

    student: Any
    teacher: Any
    tokenizer: Any
    config: TrainConfig
    schedule: Any
    pair: PairReport
    s_model: _Model
    t_model: _Model
    train_prompts: list[RenderedPrompt]
    render: dict[str, Any]
    gen: dict[str, Any]
    verifier: Any
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    share_prompts: bool = True

    def __call__(self, step: int) -> dict[str, float]:
        """Steps 1-5 of :mod:`drift.train.loop` for update ``step``; the row has no ``eval/*`` keys."""
        config = self.config
        t0 = time.perf_counter()
        # 1-2. a batch of fresh rollouts from the current student
        picked = prompt_indices(len(self.train_prompts), config.prompts_per_step, config.seed, step)
        batch = [self.train_prompts[i] for i in picked for _ in range(config.samples_per_prompt)]
        gens = sample_responses(self.student, [p.student_ids for p in batch], seed=derive_seed(config.seed, step),
                                share_prompts=self.share_prompts, **self.gen)
        responses = [g.response_ids for g in gens]
        t_sample = time.perf_counter() - t0
        # 3-5. score, weight, loss, update
        lr = config.lr * lr_factor(step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, stats, signal = loss_on_batch(self.s_model, self.t_model, batch, responses, self.schedule, step,
                                            config)
        grad_norm = 0.0
        if signal:
            loss.backward()
            clip = config.grad_clip if config.grad_clip is not None else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lengths = [len(r) for r in responses]
        return {"step": step, **stats, "length/mean": float(np.mean(lengths)), "length/max": float(max(lengths)),
                "rollout/finished_frac": float(np.mean([g.finished for g in gens])),
                "rollout/reward_mean": mean_reward(rewards(self.verifier, self.tokenizer, batch, responses)),
                "optim/lr": lr, "optim/grad_norm": grad_norm, "optim/skipped": float(not signal),
                "time/sample": t_sample, "time/step": time.perf_counter() - t0}


def prepare_step(student: Any, teacher: Any, tokenizer: Any, train_prompts: Sequence[PromptRecord], schedule: Any,
                 config: TrainConfig, *, world: Any | None = None, teacher_tokenizer: Any | None = None,
                 shared_prefix: bool = True) -> OpdStep:
    """Check the pair, render the training prompts and build AdamW; enable the student's grads before stepping.

    ``schedule`` must be loaded (an object with ``weights``) and ``teacher`` a separate, frozen model;
    :func:`~drift.train.loop.train` resolves both (and seeds torch, enables and finally disables the grads).
    ``shared_prefix=False`` samples and teacher-forces every row the plain way (each row's whole prompt; the
    reference the shared-prompt paths are checked against).
    """
    pair = check_pair(student, teacher, tokenizer, teacher_tokenizer)
    s_model = _Model(student, pair.shared_vocab, shared_prefix=shared_prefix)
    t_model = _Model(teacher, pair.shared_vocab, shared_prefix=shared_prefix)
    from drift.models import pair_context

    render = {"chat_template": config.chat_template, "teacher_system_prompt": config.teacher_system_prompt,
              "context": pair_context(student, teacher), "max_new_tokens": config.max_new_tokens}
    train_r = render_prompts(train_prompts, tokenizer, **render)
    s_model.lm.check_parity(train_r[0].student_ids)
    t_model.lm.check_parity(train_r[0].teacher_ids)
    verifier = get_verifier(config.verifier, world=world, tokenizer=tokenizer)
    stops = stop_token_ids(tokenizer, student)
    gen = {"stop_ids": stops, "pad_id": pad_id_for(tokenizer, stops), "max_new_tokens": config.max_new_tokens,
           "temperature": config.temperature, "top_p": config.top_p, "batch_size": config.gen_batch_size}
    named = list(student.named_parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for _, p in named if p.ndim >= 2], "weight_decay": config.weight_decay},
         {"params": [p for _, p in named if p.ndim < 2], "weight_decay": 0.0}],
        lr=config.lr * lr_factor(1, config), betas=tuple(config.betas))
    return OpdStep(student, teacher, tokenizer, config, schedule, pair, s_model, t_model, train_r, render, gen,
                   verifier, optimizer, [p for _, p in named], share_prompts=shared_prefix)
