"""Record drift from inside verl's PPO trainer: :func:`log_verl_batch` hands one training batch to a Recorder.

Read from verl-project/verl at 1dda039 (2026-08-22; release v0.9.0 has the same layout), not installed here (verl's
release pins ``transformers < 5.11``), so the tests build fakes of its batch objects:

- **Legacy trainer** (``trainer.use_v1=false``, ``verl/trainer/ppo/ray_trainer.py`` ``RayPPOTrainer.fit``): a
  ``DataProto`` whose ``.batch`` TensorDict holds padded tensors built by ``AgentLoopWorker._postprocess``
  (``verl/experimental/agent_loop/agent_loop.py``): ``prompts`` (B, P) **left**-padded, ``responses`` (B, R)
  right-padded, ``attention_mask`` (B, P + R) marking the valid tokens of both, ``response_mask`` (B, R) 1 on the
  tokens the model generated (0 on tool tokens and padding), ``rollout_log_probs`` (B, R, the sampler's, with
  ``rollout.calculate_log_probs``); the old-log-prob pass adds ``old_log_probs`` (B, R, the trainer's forward of the
  policy that sampled: the student), the reference pass ``ref_log_prob`` (B, R: the teacher in G-OPD / IW-OPD
  setups that put the teacher in the reference slot). Both are response-aligned by ``no_padding_2_padding``:
  entry j scores ``responses[:, j]``. ``.non_tensor_batch`` holds numpy arrays (``uid`` per prompt draw,
  ``index`` from the dataset's ``extra_info``, ``request_id``).
- **v1 trainer** (the default since 0.9: ``trainer.use_v1=true``, ``verl/trainer/ppo/v1/trainer_base.py``): the
  batch lives in a TransferQueue; ``tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
  select_fields=verl_fields(...))`` returns a TensorDict of per-sample **jagged nested** tensors without padding:
  ``prompts`` (P_i), ``responses`` / ``response_mask`` / ``rollout_log_probs`` / ``old_log_probs`` /
  ``ref_log_prob`` (R_i, response-aligned by ``response_from_nested``), ``rm_scores`` (R_i, the reward on the last
  token).
- **Distillation** (``distillation.enabled``): the agent loop stores the teacher's ``teacher_logprobs`` and
  ``teacher_ids`` over the **whole sequence**, shape (P + R, K) (padded: left by the prompt's padding, right by the
  response's), from vLLM / SGLang ``prompt_logprobs`` with entry 0 dropped and a dummy row appended
  (``verl/workers/rollout/vllm_rollout/utils.py`` ``extract_prompt_logprobs``): row r scores token r + 1, so the
  teacher's log-prob of response token j is row P + j - 1 (verl's own losses read it with the same one-token
  shift). K = 1 for the estimator losses (k1, k3, ...: the realized token, ``teacher_ids[..., 0]`` equals it); the
  top-k losses store the teacher's K best tokens instead, which do not hold the realized token's log-prob: refused.

The response recorded is every valid response token (``attention_mask``; in v1 the whole nested row), tool tokens of
multi-turn rollouts included (their log-probs come from the same forwards); the sampler's log-prob is the student's
there (the sampler scored only generated tokens). Rows with an empty response are skipped.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from drift.errors import DriftWarning

__all__ = ["VERL_COMMIT", "log_verl_batch", "verl_fields", "verl_log_inputs"]

VERL_COMMIT = "1dda039b9c6311889a9c9a26040677e1254814f9"
DISTILL_TEACHER_KEY = "teacher_logprobs"
_REWARD_KEYS = ("token_level_scores", "rm_scores")
_warned: set[str] = set()


def verl_fields(*, student_key: str = "old_log_probs", teacher_key: str = "ref_log_prob",
                rollout: bool = False, reward: bool = True) -> list[str]:
    """The TransferQueue fields :func:`log_verl_batch` reads in verl's v1 trainer (``select_fields``).

    Args:
        student_key, teacher_key: as for :func:`log_verl_batch`.
        rollout: also fetch ``rollout_log_probs`` (only with ``actor_rollout_ref.rollout.calculate_log_probs``).
        reward: also fetch ``rm_scores`` (present when a reward was computed).
    """
    fields = ["prompts", "responses", "response_mask", student_key, teacher_key]
    if teacher_key == DISTILL_TEACHER_KEY:
        fields.append("teacher_ids")
    return fields + (["rollout_log_probs"] if rollout else []) + (["rm_scores"] if reward else [])


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _np(x: Any, kind: str) -> np.ndarray:
    """A (padded) tensor or array as numpy: one device-to-host copy (floats as float32, ids as int64)."""
    if _is_tensor(x):
        x = x.detach()
        x = x.float() if kind == "float" else x
        x = x.cpu().numpy()
    a = np.asarray(x)
    return a.astype(np.float32 if kind == "float" else np.int64 if kind == "int" else bool, copy=False)


def _rows(x: Any, kind: str, name: str) -> list[np.ndarray]:
    """One array per sample from a jagged nested tensor (v1) or a list of rows."""
    if _is_tensor(x) and getattr(x, "is_nested", False):
        offsets = _np(x.offsets(), "int")
        return np.split(_np(x.values(), kind), offsets[1:-1])
    if isinstance(x, (list, tuple)):
        return [_np(r, kind) for r in x]
    raise ValueError(f"{name}: expected a nested tensor or a list of per-sample rows, got {type(x).__name__}")


def _get(table: Any, key: str, what: str) -> Any:
    try:
        if key in table:
            return table[key]
    except TypeError:
        pass
    keys = sorted(map(str, table.keys())) if hasattr(table, "keys") else "?"
    raise ValueError(f"the batch has no {key!r} ({what}); it holds {keys}")


def _has(table: Any, key: str | None) -> bool:
    try:
        return key is not None and key in table
    except TypeError:
        return False


def _as_list(x: Any) -> list[Any]:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def _teacher_rows(full: list[np.ndarray], ids: list[np.ndarray] | None, prompts: list[np.ndarray],
                  responses: list[np.ndarray]) -> list[np.ndarray]:
    """The distillation teacher's full-sequence rows shifted onto the response: row P + j - 1 scores token j."""
    out = []
    for i, (t, p, r) in enumerate(zip(full, prompts, responses, strict=True)):
        if t.ndim == 2 and t.shape[1] != 1:
            raise ValueError(f"{DISTILL_TEACHER_KEY!r} holds the teacher's top-{t.shape[1]} list per position (a "
                             "top-k distillation loss), not the realized token's log-prob; record with an estimator "
                             "loss (k1, k3, ...: K = 1) or score the rollouts with drift")
        t = t.reshape(len(t), -1)[:, 0] if t.ndim == 2 else t
        if len(t) != len(p) + len(r):
            raise ValueError(f"sample {i}: {DISTILL_TEACHER_KEY!r} has {len(t)} rows but prompt + response hold "
                             f"{len(p) + len(r)} tokens")
        out.append(t[len(p) - 1:len(p) + len(r) - 1])
        if ids is not None:
            got = ids[i].reshape(len(ids[i]), -1)[:, 0][len(p) - 1:len(p) + len(r) - 1]
            if not np.array_equal(got, r):
                bad = int(np.argmax(got != r))
                raise ValueError(f"sample {i}: teacher_ids row {len(p) + bad - 1} holds token {int(got[bad])} but "
                                 f"response token {bad} is {int(r[bad])}: the teacher's rows are not aligned")
    return out


def verl_log_inputs(batch: Any, *, teacher_key: str = "ref_log_prob", student_key: str = "old_log_probs",
                    rollout_key: str | None = "rollout_log_probs", prompt_id_key: str | None = None,
                    reward: bool = True) -> dict[str, Any]:
    """The arguments of :meth:`drift.record.Recorder.log` (all but ``step``) for one verl batch.

    Args:
        batch: a legacy-trainer ``DataProto`` (padded ``.batch`` + ``.non_tensor_batch``) or the v1 trainer's
            TensorDict of nested tensors from ``tq.kv_batch_get`` (any mapping of those works).
        teacher_key: the teacher's log-probs: ``ref_log_prob`` (the reference slot, response-aligned) or
            ``teacher_logprobs`` (verl's distillation path, full-sequence, K = 1).
        student_key: the student's log-probs (response-aligned): ``old_log_probs`` (the trainer's forward; equal
            to ``rollout_log_probs`` in rollout-correction bypass mode).
        rollout_key: the sampler's log-probs, used when the batch holds them (None: never).
        prompt_id_key: a non-tensor column naming the prompt (e.g. ``index`` from the dataset's ``extra_info``);
            None: drift keys prompts by a hash of their token ids (verl's ``uid`` changes every draw).
        reward: record the rollout reward (``token_level_scores`` or ``rm_scores`` summed over the response).

    Returns:
        ragged lists (one numpy array per rollout) for the token inputs (``loss_mask`` = ``response_mask`` on the
        valid response tokens, when the batch has it), plus ``prompt_id`` / ``reward`` lists.

    Raises:
        ValueError: a key is missing, shapes disagree, or the teacher's rows are not aligned with the response.
    """
    legacy = hasattr(batch, "batch") and hasattr(batch, "non_tensor_batch")
    tensors, extra = (batch.batch, batch.non_tensor_batch) if legacy else (batch, batch)
    raw = {"prompts": _get(tensors, "prompts", "prompt token ids"),
           "responses": _get(tensors, "responses", "response token ids"),
           "student": _get(tensors, student_key, "student log-probs"),
           "teacher": _get(tensors, teacher_key, "teacher log-probs")}
    full_teacher = teacher_key == DISTILL_TEACHER_KEY
    has_rollout = _has(tensors, rollout_key)
    if has_rollout:
        raw["rollout"] = tensors[rollout_key]
    if _has(tensors, "response_mask"):
        raw["generated"] = tensors["response_mask"]
    if full_teacher and _has(tensors, "teacher_ids"):
        raw["teacher_ids"] = tensors["teacher_ids"]
    reward_key = next((k for k in _REWARD_KEYS if _has(tensors, k)), None) if reward else None
    if reward_key is not None:
        raw["reward"] = tensors[reward_key]
    kinds = {"prompts": "int", "responses": "int", "teacher_ids": "int", "generated": "bool"}

    p = raw["prompts"]
    if (_is_tensor(p) and getattr(p, "is_nested", False)) or isinstance(p, (list, tuple)):
        rows = {k: _rows(v, kinds.get(k, "float"), k) for k, v in raw.items()}  # v1: one row per sample
    else:
        rows = _padded_rows(tensors, raw, kinds, full_teacher)
    prompts, responses = rows["prompts"], rows["responses"]
    n = len(prompts)
    teacher = (_teacher_rows(rows["teacher"], rows.get("teacher_ids"), prompts, responses) if full_teacher
               else rows["teacher"])
    for name, got in (("responses", responses), (student_key, rows["student"]), (teacher_key, teacher)):
        if len(got) != n:
            raise ValueError(f"{name} holds {len(got)} samples but prompts holds {n}")
    for i in range(n):
        if not len(prompts[i]):
            raise ValueError(f"sample {i} has an empty prompt (verl needs at least one prompt token)")
        for name, arr in ((student_key, rows["student"][i]), (teacher_key, teacher[i])):
            if len(arr) != len(responses[i]):
                raise ValueError(f"sample {i}: {name} has {len(arr)} entries for {len(responses[i])} response tokens")
    student = rows["student"]
    rollout = None
    if has_rollout:
        rollout = []
        for i, r in enumerate(rows["rollout"]):
            r = r.copy()
            if "generated" in rows:  # tool tokens: the sampler scored none, verl stores 0
                off = ~rows["generated"][i][:len(r)]
                r[off] = student[i][off]
            rollout.append(r)
    keep = [i for i in range(n) if len(responses[i])]
    prompt_ids = [str(v) for v in _as_list(extra[prompt_id_key])] if prompt_id_key is not None else None
    if prompt_id_key is not None and len(prompt_ids) != n:  # type: ignore[arg-type]
        raise ValueError(f"{prompt_id_key!r} holds {len(prompt_ids)} values for {n} samples")  # type: ignore[arg-type]
    out: dict[str, Any] = {
        "prompt_ids": [prompts[i] for i in keep], "response_ids": [responses[i] for i in keep],
        "student_logprobs": [student[i] for i in keep], "teacher_logprobs": [teacher[i] for i in keep]}
    if rollout is not None:
        out["rollout_logprobs"] = [rollout[i] for i in keep]
    if "generated" in rows:
        out["loss_mask"] = [rows["generated"][i] for i in keep]
    if prompt_ids is not None:
        out["prompt_id"] = [prompt_ids[i] for i in keep]
    if reward_key is not None:
        out["reward"] = [float(rows["reward"][i].sum()) for i in keep]
    return out


def _padded_rows(tensors: Any, raw: dict[str, Any], kinds: dict[str, str],
                 full_teacher: bool) -> dict[str, list[np.ndarray]]:
    """The legacy trainer's padded (B, L) tensors cut into per-sample rows with ``attention_mask``."""
    arrays = {k: _np(v, kinds.get(k, "float")) for k, v in raw.items()}
    B, P = arrays["prompts"].shape
    R = arrays["responses"].shape[1]
    attn = _np(_get(tensors, "attention_mask", "valid prompt + response tokens"), "bool")
    if attn.shape != (B, P + R):
        raise ValueError(f"attention_mask has shape {attn.shape} but prompts + responses are {(B, P + R)}")
    pmask, rmask = attn[:, :P], attn[:, P:]
    for k, a in arrays.items():
        want = (B, P + R) if k in ("teacher", "teacher_ids") and full_teacher else (B, P) if k == "prompts" else (
            B, R)
        if a.shape[:2] != want:
            raise ValueError(f"{k!r} has shape {a.shape}, expected {want} (+ a K axis for the distillation teacher)")
    rows: dict[str, list[np.ndarray]] = {"prompts": [arrays["prompts"][i][pmask[i]] for i in range(B)]}
    valid = np.concatenate([pmask, rmask], axis=1)
    for k, a in arrays.items():
        if k == "prompts":
            continue
        m = valid if a.shape[1] == P + R and k in ("teacher", "teacher_ids") else rmask
        rows[k] = [a[i][m[i]] for i in range(B)]
    return rows


def log_verl_batch(recorder: Any, batch: Any, step: int, *, teacher_key: str = "ref_log_prob",
                   student_key: str = "old_log_probs", rollout_key: str | None = "rollout_log_probs",
                   prompt_id_key: str | None = None, teacher_id: str | None = None, reward: bool = True,
                   strict: bool = False) -> int:
    """Hand one verl training batch to ``recorder`` (a :class:`drift.record.Recorder`) as step ``step``.

    Call it once the student and teacher log-probs are in the batch: in the legacy ``RayPPOTrainer.fit`` right after
    ``batch = compute_advantage(...)``; in the v1 trainer at the top of ``_update_actor`` (see docs/recording.md).
    Arguments are those of :func:`verl_log_inputs`, plus:

    Args:
        recorder: the Recorder (anything with its ``log`` method).
        step: the training step (``self.global_steps``).
        teacher_id: the teacher's name, recorded with every rollout.
        strict: raise on a batch the adapter cannot read; by default it warns once (:class:`DriftWarning`) and
            records nothing, so a logging problem never stops training.

    Returns:
        the number of rollouts the recorder accepted (0 after a problem).
    """
    strict = strict or bool(getattr(recorder, "strict", False))
    try:
        inputs = verl_log_inputs(batch, teacher_key=teacher_key, student_key=student_key, rollout_key=rollout_key,
                                 prompt_id_key=prompt_id_key, reward=reward)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        if strict:
            raise
        _warn_once(f"drift: verl batch of step {step} not recorded: {exc}", type(exc).__name__)
        return 0
    if not inputs["prompt_ids"]:
        return 0
    return int(recorder.log(step, inputs.pop("prompt_ids"), inputs.pop("response_ids"),
                            inputs.pop("student_logprobs"), inputs.pop("teacher_logprobs"), teacher_id=teacher_id,
                            **inputs))


def _warn_once(message: str, kind: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message + " (further problems of this kind are not reported)", DriftWarning, stacklevel=3)
