"""Record drift from inside NeMo RL's GRPO / on-policy-distillation loop: :func:`log_nemo_batch`.

Read from NVIDIA-NeMo/RL at 7ea279a (2026-08-22); NeMo RL needs Ray and Megatron / DTensor workers, so the tests
build fakes of its ``BatchedDataDict`` (a dict of tensors). In ``nemo_rl/algorithms/grpo.py`` (``grpo_train`` and
``async_grpo_train``) the training batch ``train_data`` is built from ``batched_message_log_to_flat_message`` and,
after the log-prob passes, holds (B = samples, S = prompt + response of the whole conversation, **right**-padded to
the batch maximum rounded up to ``make_sequence_length_divisible_by``):

- ``input_ids`` (B, S) padded with the pad id; ``input_lengths`` (B) the valid length;
- ``token_mask`` (B, S): ``token_loss_mask``, 1 on the assistant tokens generated in this rollout, 0 on the
  prompt, on tool / environment messages and on padding; ``sample_mask`` (B): ``loss_multiplier`` (0: the sample
  is excluded, e.g. overlong filtering);
- ``prev_logprobs`` (the trainer's forward of the policy: the student), ``generation_logprobs`` (vLLM's, 0 outside
  generated messages), ``reference_policy_logprobs``: all aligned with the tokens, **entry i is
  log p(input_ids[i] | input_ids[:i])** (``Policy.get_logprobs``: "the logprob of input token i is specified at
  position i"; entry 0 is 0).

On-policy distillation (``adv_estimator: opd``, ``OPDAdvantageEstimator`` in ``advantage_estimator.py``; async GRPO
with non-colocated teachers only) computes the teachers' log-probs at collection time
(``async_utils/trajectory_collector.py``: ``final_batch["teacher_reference_logprobs"]``, the same convention, over
the same ``message_log`` ids); ``async_grpo_train`` takes them from ``repeated_batch["teacher_reference_logprobs"]``
into the local ``trajectory_teacher_logprobs`` (padded to S by ``_pad_teacher_logprobs``) and passes them to
``compute_advantage(teacher_logprobs=...)``: they are **not** in ``train_data``, so pass them as
``teacher_logprobs=``. ``distillation.py`` (logit distillation) keeps only the teacher's top-k logits and no student
log-prob of the sampled token: nothing to record here (score its rollouts with drift instead).

The response recorded is the span from the first to the last position where ``token_mask`` is 1 (single-turn: the
generated answer; multi-turn: tool tokens inside the span are kept with ``loss_mask`` false and the sampler's
log-prob set to the student's), the prompt every token before it (the same rule as ``drift import nemo-rl``);
``loss_mask`` is ``token_mask AND sample_mask`` on the span. Samples without a generated token are skipped.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from drift.errors import DriftWarning

__all__ = ["NEMO_COMMIT", "log_nemo_batch", "nemo_log_inputs"]

NEMO_COMMIT = "7ea279abfbeb698b092856d0dab61e7cf39bc909"
TEACHER_KEY = "teacher_reference_logprobs"
_ALIASES = {"input_ids": ("input_ids", "token_ids"), "token_mask": ("token_mask", "token_loss_mask"),
            "sample_mask": ("sample_mask", "loss_multiplier")}
_warned: set[str] = set()


def _np(x: Any, kind: str) -> np.ndarray:
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        x = x.detach()
        x = (x.float() if kind == "float" else x).cpu().numpy()
    a = np.asarray(x)
    return a.astype(np.float32 if kind == "float" else np.int64 if kind == "int" else bool, copy=False)


def _key(batch: Mapping[str, Any], name: str, required: bool = True) -> Any:
    for k in _ALIASES.get(name, (name,)):
        if k in batch and batch[k] is not None:
            return batch[k]
    if required:
        raise ValueError(f"the batch has no {name!r} (found {sorted(map(str, batch))})")
    return None


def _full(x: Any, name: str, B: int, S: int) -> np.ndarray:
    """A (B, S') per-token tensor as float32 (B, S), zero-padded on the right (NeMo pads teachers to S later)."""
    a = _np(x, "float")
    if a.ndim != 2 or a.shape[0] != B or a.shape[1] > S:
        raise ValueError(f"{name} has shape {a.shape}, expected ({B}, <= {S}) like input_ids")
    return np.pad(a, ((0, 0), (0, S - a.shape[1]))) if a.shape[1] < S else a


def nemo_log_inputs(batch: Mapping[str, Any], *, teacher_logprobs: Any = None, teacher_key: str | None = TEACHER_KEY,
                    student_key: str = "prev_logprobs", rollout_key: str | None = "generation_logprobs",
                    rewards: Any = None) -> dict[str, Any]:
    """The arguments of :meth:`drift.record.Recorder.log` (all but ``step``) for one NeMo RL training batch.

    Args:
        batch: ``train_data`` (a ``BatchedDataDict`` or any mapping of (B, S) tensors; the flat-message names
            ``token_ids`` / ``token_loss_mask`` / ``loss_multiplier`` work too).
        teacher_logprobs: (B, S') teacher log-probs, token-aligned (async GRPO's ``trajectory_teacher_logprobs``);
            None: ``batch[teacher_key]`` when present (e.g. ``reference_policy_logprobs`` for a teacher loaded as
            the reference policy), else the student is recorded alone.
        teacher_key: where to look for the teacher in ``batch`` (None: nowhere).
        student_key: ``prev_logprobs`` (the trainer's forward), or ``generation_logprobs`` when the run skips it
            (``loss_fn.force_on_policy_ratio``: ``prev_logprobs`` is then all zeros).
        rollout_key: the sampler's log-probs (None: not recorded).
        rewards: (B) per-sample rewards (``repeated_batch["total_reward"]``), optional.

    Raises:
        ValueError: a key is missing, shapes disagree, a span starts at position 0, or the student log-probs are
            placeholders.
    """
    ids = _np(_key(batch, "input_ids"), "int")
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, S), got shape {ids.shape}")
    B, S = ids.shape
    lengths = _np(_key(batch, "input_lengths"), "int").reshape(-1)
    tmask = _np(_key(batch, "token_mask"), "bool")
    smask = _key(batch, "sample_mask", required=False)
    smask = np.ones(B, bool) if smask is None else _np(smask, "float").reshape(-1) != 0
    student = _full(_key(batch, student_key), student_key, B, S)
    if teacher_logprobs is None and teacher_key is not None and batch.get(teacher_key) is not None:
        teacher_logprobs = batch[teacher_key]
    teacher = None if teacher_logprobs is None else _full(teacher_logprobs, "teacher_logprobs", B, S)
    rollout = None
    if rollout_key is not None and rollout_key != student_key and batch.get(rollout_key) is not None:
        rollout = _full(batch[rollout_key], rollout_key, B, S)
    if lengths.shape != (B,) or tmask.shape != (B, S) or smask.shape != (B,):
        raise ValueError(f"input_lengths {lengths.shape}, token_mask {tmask.shape}, sample_mask {smask.shape} do "
                         f"not match input_ids {(B, S)}")
    reward = None if rewards is None else _np(rewards, "float").reshape(-1)
    if reward is not None and reward.shape != (B,):
        raise ValueError(f"rewards has {reward.size} values for {B} samples")
    out: dict[str, list[Any]] = {k: [] for k in ("prompt_ids", "response_ids", "student_logprobs",
                                                  "teacher_logprobs", "rollout_logprobs", "loss_mask", "reward")}
    for i in range(B):
        n = int(lengths[i])
        if not 0 <= n <= S:
            raise ValueError(f"sample {i}: input_lengths {n} outside 0..{S}")
        if tmask[i, n:].any():
            raise ValueError(f"sample {i}: token_mask is 1 past input_lengths {n} (padding)")
        on = np.flatnonzero(tmask[i, :n])
        if not on.size:
            continue
        a, b = int(on[0]), int(on[-1]) + 1
        if a == 0:
            raise ValueError(f"sample {i}: token_mask is 1 at position 0, so no prompt token precedes the response "
                             "(position 0 holds no log-prob in NeMo RL)")
        m = tmask[i, a:b]
        s = student[i, a:b]
        if b - a >= 4 and not s.any() and rollout is not None and rollout[i, a:b].any():
            raise ValueError(f"{student_key!r} is 0 on every response token of sample {i}: the run skipped the "
                             "trainer's forward (force_on_policy_ratio); pass student_key='generation_logprobs'")
        out["prompt_ids"].append(ids[i, :a])
        out["response_ids"].append(ids[i, a:b])
        out["student_logprobs"].append(s)
        out["teacher_logprobs"].append(None if teacher is None else teacher[i, a:b])
        if rollout is not None:
            r = rollout[i, a:b].copy()
            r[~m] = s[~m]  # tool tokens: vLLM scored none (0 there)
            out["rollout_logprobs"].append(r)
        out["loss_mask"].append(m & bool(smask[i]))
        out["reward"].append(None if reward is None else float(reward[i]))
    result: dict[str, Any] = dict(out)
    for k in ("teacher_logprobs", "rollout_logprobs", "reward"):
        if not out[k] or all(v is None for v in out[k]):
            result[k] = None
    return result


def log_nemo_batch(recorder: Any, batch: Mapping[str, Any], step: int, *, teacher_logprobs: Any = None,
                   teacher_key: str | None = TEACHER_KEY, student_key: str = "prev_logprobs",
                   rollout_key: str | None = "generation_logprobs", rewards: Any = None,
                   teacher_id: str | None = None, strict: bool = False) -> int:
    """Hand one NeMo RL training batch to ``recorder`` (a :class:`drift.record.Recorder`) as step ``step``.

    Call it after the advantages are computed, before ``policy.train`` (see docs/recording.md); ``step`` is the
    step NeMo RL logs (``step + 1`` in ``async_grpo_train``, ``total_steps + 1`` in ``grpo_train``). Arguments are
    those of :func:`nemo_log_inputs`, plus ``teacher_id`` (recorded with every rollout) and ``strict`` (raise on a
    batch the adapter cannot read; by default it warns once and records nothing, so training goes on).

    Returns:
        the number of rollouts the recorder accepted (0 after a problem).
    """
    strict = strict or bool(getattr(recorder, "strict", False))
    try:
        inputs = nemo_log_inputs(batch, teacher_logprobs=teacher_logprobs, teacher_key=teacher_key,
                                 student_key=student_key, rollout_key=rollout_key, rewards=rewards)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        if strict:
            raise
        kind = type(exc).__name__
        if kind not in _warned:
            _warned.add(kind)
            warnings.warn(f"drift: NeMo RL batch of step {step} not recorded ({kind}: {exc}); training continues, "
                          "further problems of this kind are not reported", DriftWarning, stacklevel=2)
        return 0
    if not inputs["prompt_ids"]:
        return 0
    args = [inputs.pop(k) for k in ("prompt_ids", "response_ids", "student_logprobs", "teacher_logprobs")]
    return int(recorder.log(step, *args, teacher_id=teacher_id, **{k: v for k, v in inputs.items() if v is not None}))
