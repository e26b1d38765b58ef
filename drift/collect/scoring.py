"""Teacher-forced scoring of response tokens by a student and a teacher, chunked over positions.

For every rollout, both models read their own prompt followed by the *same* response tokens. The model bodies run
once per batch and only the final hidden states of the positions that predict response tokens are kept
(``N x D``). These go through each LM head ``chunk_size`` positions at a time, and the vocabulary is visited in
tiles of ``vocab_chunk`` ids with an online softmax (:func:`drift.collect.metrics.vocab_stats_tiled`), every tile
reduced at once. Peak memory is therefore the body's own plus O(chunk_size x vocab_chunk): never batch x length x
vocab, not even chunk x vocab.

Precision: one precision per log-softmax. A tile holds x_v = transform(h . W_v (+ b_v)) / T for its ids, where the
matrix product runs in the model's dtype (bfloat16 for a bfloat16 model: float32 accumulation, one rounding) and is
then upcast to float32 for the transform, the temperature and every reduction. The realized token's logit x_y is
gathered from the tile that holds y, so

    log p(y) = x_y - log sum_v e^(x_v)

is computed from one set of values and is never above 0; KL, entropies and the top-k come from the same values.
This equals the model's own ``model(...).logits`` (in its dtype, upcast) followed by a float32 log-softmax. The
teacher rank alone uses an anchor computed ahead of the tiles (:meth:`LMHead.target_logits`, rounded like a tile)
and may differ at one-ulp near-ties.

Placement: either model may be dispatched by accelerate (a device map spreading its layers over devices, some
offloaded to CPU RAM or disk). The body's hooks move activations layer to layer; the final hidden states are then
moved to the LM head's execution device, an offloaded head's weight (on ``meta`` between forward passes) is copied
in through its own hook for a batch's whole head phase (:meth:`LMHead.onloaded`), and the teacher's tiles are
written into buffers on the student head's device. The numbers are those of a one-device run.

Alignment: response token j of a rollout whose prompt has P tokens is predicted by the hidden state at index
``P + j - 1`` of that model's input. Student and teacher prompts may differ in length (privileged teacher
prompts); both index into their own inputs, so the pairing is by response position.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from drift.collect import metrics as m
from drift.errors import AlignmentError
from drift.runtime.padding import pad

__all__ = ["LMHead", "ScoringItem", "derived_metrics", "gather_response_hidden", "score_items"]

log = logging.getLogger(__name__)

# Columns produced per token, in output order (float32 unless noted).
VOCAB_COLUMNS = ("student_logprob", "teacher_logprob", "student_entropy", "teacher_entropy", "kl_reverse",
                 "kl_forward", "teacher_rank", "student_argmax", "teacher_argmax", "topk_overlap",
                 "teacher_mass_student_topk")


@dataclass(frozen=True)
class ScoringItem:
    """One rollout to score: the two prompts and the shared response (token ids)."""

    student_prompt_ids: Sequence[int]
    teacher_prompt_ids: Sequence[int]
    response_ids: Sequence[int]


class LMHead:
    """A causal LM split into body (→ final hidden states) and LM head (→ logits), for chunked scoring.

    Handles the output transforms some architectures apply after the head: Gemma-style
    ``final_logit_softcapping``, Cohere-style ``logit_scale`` (multiply) and Granite-style ``logits_scaling``
    (divide). :meth:`check_parity` verifies on a short input that body + head reproduces ``model(...).logits``,
    so an architecture with an unknown transform fails loudly instead of scoring silently wrong.

    A dispatched model (accelerate device map) works as is: ``device`` is the head's execution device (never
    ``meta``), ``input_device`` the embeddings', and the head methods accept hidden states on any device, compute
    on ``device`` and return on the input's device. An offloaded head is onloaded for each call, or once for a
    whole block under :meth:`onloaded`.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.body = model.base_model
        self.head = model.get_output_embeddings()
        if self.body is model or self.head is None:
            raise AlignmentError(
                f"{type(model).__name__} does not expose a base model and an output embedding; drift's chunked "
                "scorer needs a standard *ForCausalLM model."
            )
        cfg = model.config
        self.softcap = getattr(cfg, "final_logit_softcapping", None)
        self.scale = getattr(cfg, "logit_scale", None) if cfg.model_type.startswith("cohere") else None
        self.divide = getattr(cfg, "logits_scaling", None)
        self.vocab_size = int(self.head.weight.shape[0])
        from drift.models import execution_device, input_device

        self.device = execution_device(self.head)
        self.input_device = input_device(model)
        # accelerate hooks that keep the head's weights offloaded (on meta) between forward passes
        hook = getattr(self.head, "_hf_hook", None)
        chain = getattr(hook, "hooks", None) or ([hook] if hook is not None else [])
        self._offload_hooks = [h for h in chain if getattr(h, "offload", False)]
        self._onloaded = 0

    def _weights(self) -> AbstractContextManager[Any]:
        """:meth:`onloaded` for an offloaded head, else a no-op (the per-tile fast path)."""
        return self.onloaded() if self._offload_hooks else nullcontext()

    @contextmanager
    def onloaded(self) -> Iterator[LMHead]:
        """Keep an offloaded head's weights on :attr:`device` inside the block (nested blocks share one load).

        Uses the head's own accelerate hook (``pre_forward`` copies the weights in from CPU RAM or disk,
        ``post_forward`` puts them back on ``meta``), so tied weights are handled as in a normal forward pass. A
        head that is not offloaded is left alone.
        """
        if not self._offload_hooks or self._onloaded:
            self._onloaded += 1
            try:
                yield self
            finally:
                self._onloaded -= 1
            return
        for h in self._offload_hooks:
            h.pre_forward(self.head)
        self._onloaded = 1
        try:
            yield self
        finally:
            self._onloaded = 0
            for h in reversed(self._offload_hooks):
                h.post_forward(self.head, None)

    def hidden(self, input_ids_B_L: Tensor, attention_mask_B_L: Tensor) -> Tensor:
        """Final hidden states (after the final norm), shape (B, L, D), on the body's output device."""
        out = self.body(input_ids=input_ids_B_L, attention_mask=attention_mask_B_L, use_cache=False)
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]

    def _transform_(self, x: Tensor) -> Tensor:
        """Apply the architecture's output transform in place (scale, divide, soft-capping)."""
        if self.scale is not None:
            x.mul_(self.scale)
        if self.divide is not None:
            x.div_(self.divide)
        if self.softcap is not None:
            x.div_(self.softcap).tanh_().mul_(self.softcap)
        return x

    def _transform(self, x: Tensor) -> Tensor:
        """The output transform, out of place and differentiable."""
        if self.scale is not None:
            x = x * self.scale
        if self.divide is not None:
            x = x / self.divide
        if self.softcap is not None:
            x = torch.tanh(x / self.softcap) * self.softcap
        return x

    def _bias(self, v0: int, v1: int) -> Tensor | None:
        bias = getattr(self.head, "bias", None)
        return bias[v0:v1] if bias is not None else None

    def logits(self, hidden_C_D: Tensor, v0: int = 0, v1: int | None = None) -> Tensor:
        """Logits of ids [v0, v1) for ``hidden_C_D``, as a new (differentiable) tensor on ``hidden_C_D``'s device."""
        v1 = self.vocab_size if v1 is None else v1
        with self._weights():
            x = torch.nn.functional.linear(hidden_C_D.to(self.device), self.head.weight[v0:v1], self._bias(v0, v1))
        return self._transform(x).to(hidden_C_D.device)

    def logits_into(self, hidden_C_D: Tensor, out_C_V: Tensor, v0: int = 0) -> Tensor:
        """Write the logits of ids [v0, v0 + out_C_V.shape[1]) of ``hidden_C_D`` into ``out_C_V`` (no new (C, V)
        on ``out_C_V``'s device; a head on another device computes there and the tile is copied over)."""
        v1 = v0 + out_C_V.shape[1]
        with self._weights():
            w = self.head.weight[v0:v1]
            bias = self._bias(v0, v1)
            hidden = hidden_C_D.to(self.device)
            if hidden.dtype == out_C_V.dtype and bias is None and out_C_V.device == self.device:
                torch.mm(hidden, w.t(), out=out_C_V)
            else:
                out_C_V.copy_(torch.nn.functional.linear(hidden, w, bias))
        return self._transform_(out_C_V)

    def target_logits(self, hidden_C_D: Tensor, targets_C: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Logit of each row's target id as :meth:`logits_into` writes it into a ``dtype`` tile: (C,).

        One dot product per row (no (C, V) product), accumulated in at least float32, then rounded to the dtype the
        head's matrix product returns (bfloat16 for a bfloat16 model), cast to ``dtype`` and transformed there, the
        same steps a tile goes through. It is an *estimate* of the tile value: the two accumulation orders may round
        to neighbouring values (one unit in the last place), so the scorer uses it only as the rank anchor and takes
        every other number from the tiles.
        """
        home = hidden_C_D.device
        hidden, targets = hidden_C_D.to(self.device), targets_C.to(self.device)
        with self._weights():
            w = self.head.weight[targets]
            bias = getattr(self.head, "bias", None)
            bias_y = bias[targets] if bias is not None else None
        acc = torch.promote_types(torch.promote_types(hidden.dtype, w.dtype), torch.float32)
        out = (hidden.to(acc) * w.to(acc)).sum(dim=-1)
        if bias_y is not None:
            out = out + bias_y.to(acc)
        matmul_dtype = torch.promote_types(hidden.dtype, w.dtype)
        return self._transform_(out.to(matmul_dtype).to(dtype)).to(home)

    @torch.inference_mode()
    def check_parity(self, input_ids: Sequence[int], atol: float = 1e-3) -> float:
        """Max |body+head logits - model logits| on ``input_ids``; raises if above ``atol`` (relative to scale)."""
        ids = torch.tensor([list(input_ids)], device=self.input_device)
        mask = torch.ones_like(ids)
        ref = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits[0].float().to(self.device)
        h = self.hidden(ids, mask)[0]
        ours = self.logits_into(h, torch.empty(ref.shape, dtype=torch.float32, device=self.device))
        err = float((ours - ref).abs().max())
        if err > atol * max(1.0, float(ref.abs().max())):
            raise AlignmentError(
                f"body + LM head does not reproduce {type(self.model).__name__} logits (max abs diff {err:.3g}); "
                "this architecture applies an output transform drift does not know. Please report it."
            )
        return err


def gather_response_hidden(lm: LMHead, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                            offset: int = 0) -> Tensor:
    """Run ``lm``'s body on prompt+response rows; return the hidden states predicting each response token (N, D),
    on the LM head's device ``lm.device`` (a dispatched body may end on another device than its head).

    ``offset`` shifts which position is read (0 = correct; used only by the alignment self-check).
    """
    rows = [list(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
    ids, mask = pad(rows, 0, side="right", device=lm.input_device)
    hidden_B_L_D = lm.hidden(ids, mask)
    index_b, index_l = [], []
    for b, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        lo, hi = len(p) - 1, len(p) + len(r) - 2
        pos = np.clip(np.arange(lo, hi + 1) + offset, lo, hi)
        index_b.append(np.full(len(r), b))
        index_l.append(pos)
    ib = torch.as_tensor(np.concatenate(index_b), device=hidden_B_L_D.device)
    il = torch.as_tensor(np.concatenate(index_l), device=hidden_B_L_D.device)
    return hidden_B_L_D[ib, il].to(lm.device)


def _tile_stats(s_lm: LMHead, t_lm: LMHead, hidden_s: Tensor, hidden_t: Tensor, targets: Tensor, vocab_size: int,
                vocab_chunk: int, topk: int, temperature: float,
                buffers: tuple[Tensor, Tensor] | None) -> dict[str, Tensor]:
    """Full-vocabulary metrics of one chunk of positions, visiting the vocabulary in tiles."""
    def make(lm: LMHead, hidden: Tensor) -> m.LogitsFn:
        def fill(v0: int, v1: int, out: Tensor) -> Tensor:
            lm.logits_into(hidden, out, v0)
            return out.div_(temperature) if temperature != 1.0 else out
        return fill

    tile_dtype = buffers[0].dtype if buffers is not None else torch.float32
    anchor = t_lm.target_logits(hidden_t, targets, tile_dtype).to(targets.device)
    if temperature != 1.0:
        anchor.div_(temperature)
    return m.vocab_stats_tiled(make(s_lm, hidden_s), make(t_lm, hidden_t), targets, vocab_size,
                               rank_anchor_P=anchor, vocab_chunk=vocab_chunk, topk=topk, buffers=buffers)


def _batches(items: Sequence[ScoringItem], max_batch_tokens: int) -> list[list[int]]:
    """Group item indices (sorted by length) so that rows x longest input <= max_batch_tokens."""
    def width(i: int) -> int:
        it = items[i]
        return max(len(it.student_prompt_ids), len(it.teacher_prompt_ids)) + len(it.response_ids)

    order = sorted(range(len(items)), key=width)
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * width(i) > max_batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@torch.inference_mode()
def score_items(student: Any, teacher: Any, items: Sequence[ScoringItem], *, chunk_size: int = 1024,
                vocab_chunk: int = 2048, topk: int = 16, max_batch_tokens: int = 16384, vocab_size: int | None = None,
                temperature: float = 1.0, teacher_offset: int = 0, on_batch: Callable[[int], None] | None = None,
                on_tokens: Callable[[int], None] | None = None) -> list[dict[str, np.ndarray]]:
    """Score every response token of ``items`` with both models; return one dict of (T,) arrays per item.

    Args:
        student: the student causal LM (eval mode); the scoring buffers live on its LM head's device.
        teacher: the teacher causal LM (may be the same object: self-scoring). Either model may sit on its own
            device or be dispatched by accelerate over several devices with offloading; the scores are those of a
            one-device run.
        items: rollouts to score; responses of length 0 give empty arrays.
        chunk_size: positions per LM-head chunk.
        vocab_chunk: vocabulary ids per tile; memory of the head phase is O(chunk_size x vocab_chunk), and the
            LM-head weights are read once per chunk of positions.
        topk: k for ``topk_overlap`` and ``teacher_mass_student_topk``.
        max_batch_tokens: cap on rows x padded length per body forward pass.
        vocab_size: score over ids [0, vocab_size) only (shared vocabulary of padded embeddings); default both
            heads' width, which must then be equal.
        temperature: logits of both models are divided by it before normalization (1.0 = the models' own).
        teacher_offset: read the teacher's hidden state ``offset`` positions late (alignment self-check only).
        on_batch: called with the number of rollouts after each batch (progress bars).
        on_tokens: called after each chunk of positions with the number of response tokens it scored (token-level
            progress); the calls add up to the total number of response tokens of ``items``.

    Returns:
        Per item: the :data:`VOCAB_COLUMNS` plus the sampled-token metrics of :func:`derived_metrics`.
    """
    s_lm = LMHead(student)
    t_lm = s_lm if teacher is student else LMHead(teacher)
    if vocab_size is None:
        if s_lm.vocab_size != t_lm.vocab_size:
            raise AlignmentError(f"LM heads differ in width ({s_lm.vocab_size} vs {t_lm.vocab_size}); pass "
                                 "vocab_size= the shared vocabulary (drift.collect.guards.check_pair does this).")
        vocab_size = s_lm.vocab_size
    device = s_lm.device
    chunk = max(1, int(chunk_size))
    vc = max(1, min(int(vocab_chunk), vocab_size))
    buffers = (torch.empty((2, chunk, vc), device=device), torch.empty((2, chunk, vc), device=device))
    results: list[dict[str, np.ndarray] | None] = [None] * len(items)
    for batch in _batches(items, max_batch_tokens):
        its = [items[i] for i in batch if len(items[i].response_ids) > 0]
        for i in batch:
            if len(items[i].response_ids) == 0:
                results[i] = _empty_result()
        if not its:
            continue
        responses = [list(it.response_ids) for it in its]
        too_big = max(max(r) for r in responses)
        if too_big >= vocab_size:
            raise AlignmentError(f"response token id {too_big} is outside the scored vocabulary [0, {vocab_size}); "
                                 "the rollouts were not produced with this tokenizer.")
        hidden_s = gather_response_hidden(s_lm, [it.student_prompt_ids for it in its], responses)
        hidden_t = gather_response_hidden(t_lm, [it.teacher_prompt_ids for it in its], responses, teacher_offset)
        targets = torch.as_tensor(np.concatenate(responses), device=device)
        n = targets.shape[0]
        cols: dict[str, list[Tensor]] = {k: [] for k in VOCAB_COLUMNS}
        with ExitStack() as heads:  # offloaded heads come in once per batch, not once per tile
            heads.enter_context(s_lm.onloaded())
            heads.enter_context(t_lm.onloaded())
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                stats = _tile_stats(s_lm, t_lm, hidden_s[lo:hi], hidden_t[lo:hi], targets[lo:hi], vocab_size, vc,
                                    topk, temperature, buffers)
                for k in VOCAB_COLUMNS:
                    cols[k].append(stats[k].cpu())
                if on_tokens is not None:
                    on_tokens(hi - lo)
        flat = {k: torch.cat(v).numpy() for k, v in cols.items()}
        lengths = [len(r) for r in responses]
        derived = derived_metrics(flat["student_logprob"], flat["teacher_logprob"], lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        j = 0
        for i in batch:
            if results[i] is not None:
                continue
            a, b = starts[j], starts[j + 1]
            results[i] = {**{k: v[a:b] for k, v in flat.items()}, **{k: v[a:b] for k, v in derived.items()}}
            j += 1
        if on_batch is not None:
            on_batch(len(batch))
        del hidden_s, hidden_t
    return results  # type: ignore[return-value]


def derived_metrics(student_lp_N: np.ndarray, teacher_lp_N: np.ndarray,
                    lengths: Sequence[int]) -> dict[str, np.ndarray]:
    """Sampled-token metrics for concatenated rollouts of the given lengths, via the masked (B, L) functions.

    Returns flat (N,) arrays: advantage, k1, k3 (float32) and the exclusive prefix sums prefix_logratio,
    cum_abs_gap, cum_abs_gap_frac, student_prefix_logprob, teacher_prefix_logprob (float64).
    """
    lengths = list(lengths)
    b, width = len(lengths), max(lengths) if lengths else 0
    mask = torch.arange(width).unsqueeze(0) < torch.as_tensor(lengths).unsqueeze(1)
    s = torch.zeros((b, width), dtype=torch.float32)
    t = torch.zeros((b, width), dtype=torch.float32)
    s[mask] = torch.as_tensor(student_lp_N, dtype=torch.float32)
    t[mask] = torch.as_tensor(teacher_lp_N, dtype=torch.float32)
    out = {
        "advantage": m.advantage(s, t, mask),
        "k1": m.k1(s, t, mask),
        "k3": m.k3(s, t, mask),
        "prefix_logratio": m.prefix_logratio(s, t, mask),
        "cum_abs_gap": m.cum_abs_gap(s, t, mask),
        "cum_abs_gap_frac": m.cum_abs_gap_frac(s, t, mask),
        "student_prefix_logprob": m.exclusive_cumsum(s, mask),
        "teacher_prefix_logprob": m.exclusive_cumsum(t, mask),
    }
    return {k: v[mask].numpy() for k, v in out.items()}


def _empty_result() -> dict[str, np.ndarray]:
    f32 = np.zeros(0, dtype=np.float32)
    res = {k: f32 for k in VOCAB_COLUMNS}
    res.update({k: np.zeros(0, dtype=np.int64) for k in ("teacher_rank", "student_argmax", "teacher_argmax")})
    res.update({k: f32 for k in ("advantage", "k1", "k3")})
    res.update({k: np.zeros(0, dtype=np.float64) for k in ("prefix_logratio", "cum_abs_gap", "cum_abs_gap_frac",
                                                           "student_prefix_logprob", "teacher_prefix_logprob")})
    return res
