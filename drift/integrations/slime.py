"""Record drift from inside slime: two hook functions slime loads by import path, plus the adapters they use.

Read from THUDM/slime at 624b824 (2026-08-21); slime needs Megatron and a Ray cluster, so the tests build fakes of
its objects. Two hooks see the per-token log-probs:

- ``--custom-rollout-log-function-path drift.integrations.slime.log_rollout`` (``slime/observability/
  rollout_metrics.py`` ``log_rollout_data``, called by ``RolloutManager.generate`` in ``slime/ray/rollout.py``):
  ``fn(rollout_id, args, samples, rollout_extra_metrics, rollout_time) -> bool`` (True skips slime's own logging;
  :func:`log_rollout` returns False). It runs once per rollout in the single rollout-manager process, *before* the
  samples become train data. ``samples`` is the flat ``list[Sample]`` (``slime/utils/types.py``): ``tokens`` =
  prompt + response ids, the last ``response_length`` of them the response; ``rollout_log_probs`` (SGLang's, the
  only student log-prob on this side; 0 on tool tokens); ``loss_mask`` (0 on tool tokens, None: all 1);
  ``status``; ``reward``. ``Sample.teacher_log_probs`` is still None here with ``--opd-type sglang``: slime's
  ``post_process_rewards`` (``slime/rollout/on_policy_distillation.py``) fills it later, from the teacher
  server's reply that ``reward_func`` stored in ``sample.reward``; :func:`slime_sample_inputs` reads the same reply
  the same way (``reward["meta_info"]["input_token_logprobs"][1:]``, last ``response_length`` entries; each entry
  ``[logprob, token_id, ...]``, checked against the response ids). With ``--opd-type megatron`` the teacher runs
  on the train side only: this hook then records the student alone.
- ``--rollout-data-postprocess-path drift.integrations.slime.postprocess_rollout_data`` (``slime/backends/
  megatron_utils/actor.py`` ``train_actor``): ``fn(args, rollout_id, rollout_data) -> None`` on every Megatron
  rank, after the ref / teacher / actor log-prob passes (slime's docs still show an older signature). This is the
  better place: ``rollout_data`` holds the rank's data-parallel share with ``log_probs`` (the trainer's forward of
  the student), ``teacher_log_probs`` (both OPD types), ``rollout_log_probs``, ``tokens``, ``response_lengths``,
  ``total_lengths``, ``loss_masks``, ``truncated``, ``local_raw_reward`` and ``partition`` (each sample's position
  in the rollout), response-long per sample, chunked by context parallelism. The hook does what slime's own
  ``save_debug_train_data`` does: the last pipeline stage's tensor-parallel rank 0 restores the context-parallel
  chunks with slime's ``restore_context_parallel_fields_to_cpu``, the data-parallel shards are gathered on the
  data-parallel source rank (``gather_object`` on the gloo group), and that rank records them in rollout order.

Both hooks record into ``$DRIFT_RECORD_DIR/rollout`` and ``$DRIFT_RECORD_DIR/train`` (step = ``rollout_id``), with
a module-level :class:`drift.record.Recorder` created at the first call (``DRIFT_RECORD_RUN_ID``: the run id,
default the folder's name; ``DRIFT_RECORD_TOKENIZER``: a tokenizer path for texts; ``DRIFT_RECORD_IF_EXISTS``:
``fail`` (default), ``overwrite`` or ``resume``; ``DRIFT_RECORD_TEACHER_ID``) and closed at exit. Unset
``DRIFT_RECORD_DIR`` records nothing. Logging problems warn once and never stop the run, with one exception: a
failure inside the train hook's context-parallel restore or data-parallel gather propagates, because catching it on
one rank would leave the others waiting in the collective.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from drift.errors import DriftWarning

__all__ = ["SLIME_COMMIT", "log_rollout", "log_slime_samples", "log_slime_train_data", "postprocess_rollout_data",
           "slime_sample_inputs", "slime_train_inputs"]

SLIME_COMMIT = "624b824a898ab0ec1fcb4d373004c7f3852bf515"
ENV_DIR = "DRIFT_RECORD_DIR"
_recorders: dict[str, Any] = {}
_warned: set[str] = set()
#: the train-side fields the hook reads (per sample, response-long unless noted)
_TRAIN_FIELDS = ("tokens", "response_lengths", "total_lengths", "loss_masks", "log_probs", "rollout_log_probs",
                 "teacher_log_probs", "ref_log_probs", "local_raw_reward", "truncated", "partition")


def _np(x: Any, kind: str) -> np.ndarray:
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        x = x.detach()
        x = (x.float() if kind == "float" else x).cpu().numpy()
    a = np.asarray(x, dtype=float if kind == "float" and not isinstance(x, np.ndarray) else None)
    return a.astype(np.float32 if kind == "float" else np.int64 if kind == "int" else bool, copy=False).reshape(-1)


def _field(s: Any, key: str) -> Any:
    return s.get(key) if isinstance(s, Mapping) else getattr(s, key, None)


def _status(s: Any) -> str | None:
    status = _field(s, "status")
    status = getattr(status, "value", status)
    return None if status is None else str(status)


def _number(v: Any) -> float | None:
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0:  # a 0-d tensor or numpy scalar
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    return float(v)


def _teacher_from_reward(reward: Any, tokens: np.ndarray, n: int, i: int) -> np.ndarray | None:
    """The OPD teacher's log-probs of the response from the SGLang reply ``reward_func`` stored as the reward."""
    meta = reward.get("meta_info") if isinstance(reward, Mapping) else None
    entries = meta.get("input_token_logprobs") if isinstance(meta, Mapping) else None
    if entries is None:
        return None
    if len(entries) != len(tokens):
        raise ValueError(f"sample {i}: the teacher reply scores {len(entries)} tokens but the sample has "
                         f"{len(tokens)} (prompt + response)")
    tail = entries[len(entries) - n:]
    ids = np.asarray([e[1] for e in tail], dtype=np.int64)
    if not np.array_equal(ids, tokens[len(tokens) - n:]):
        bad = int(np.argmax(ids != tokens[len(tokens) - n:]))
        raise ValueError(f"sample {i}: the teacher reply's token {len(tokens) - n + bad} is {int(ids[bad])}, the "
                         f"sample's is {int(tokens[len(tokens) - n + bad])}: not this sample's reply")
    return np.asarray([e[0] for e in tail], dtype=np.float32)


def slime_sample_inputs(samples: list[Any], *, reward_key: str | None = None) -> dict[str, Any]:
    """The arguments of :meth:`drift.record.Recorder.log` (all but ``step``) for slime's rollout-side samples.

    Args:
        samples: ``Sample`` objects (or their ``to_dict()`` dicts), flat.
        reward_key: slime's ``--reward-key`` (a dict reward's entry to record); None: a numeric reward is recorded,
            a dict reward (e.g. the OPD teacher's reply) is not.

    Returns:
        ragged lists for the token inputs (``teacher_logprobs`` None when no sample carries a teacher), plus
        ``reward`` / ``finished`` / ``truncated`` lists.

    Raises:
        ValueError: a sample lacks rollout log-probs, lengths disagree, or some samples have a teacher and others not.
    """
    out: dict[str, list[Any]] = {k: [] for k in ("prompt_ids", "response_ids", "student_logprobs",
                                                  "teacher_logprobs", "loss_mask", "reward", "finished", "truncated")}
    for i, s in enumerate(samples):
        tokens = _field(s, "tokens")
        tokens = _np([] if tokens is None else tokens, "int")
        n = int(_field(s, "response_length") or 0)
        if n == 0:
            continue
        if not 0 < n < len(tokens):
            raise ValueError(f"sample {i}: response_length {n} but {len(tokens)} tokens (prompt + response)")
        student = _field(s, "rollout_log_probs")
        if student is None:
            raise ValueError(f"sample {i} has no rollout_log_probs (the SGLang log-probs slime keeps for every "
                             "generated token); nothing to record as the student")
        student = _np(student, "float")
        reward = _field(s, "reward")
        teacher = _field(s, "teacher_log_probs")
        teacher = _np(teacher, "float") if teacher is not None else _teacher_from_reward(reward, tokens, n, i)
        mask = _field(s, "loss_mask")
        for name, a in (("rollout_log_probs", student), ("teacher_log_probs", teacher), ("loss_mask", mask)):
            if a is not None and len(a) != n:
                raise ValueError(f"sample {i}: {name} has {len(a)} entries but response_length is {n}")
        if reward_key is not None and isinstance(reward, Mapping):
            reward = reward.get(reward_key)
        status = _status(s)
        out["prompt_ids"].append(tokens[:len(tokens) - n])
        out["response_ids"].append(tokens[len(tokens) - n:])
        out["student_logprobs"].append(student)
        out["teacher_logprobs"].append(teacher)
        out["loss_mask"].append(np.ones(n, bool) if mask is None else _np(mask, "bool"))
        out["reward"].append(_number(reward))
        out["finished"].append(None if status is None else status == "completed")
        out["truncated"].append(None if status is None else status == "truncated")
    have = [t is not None for t in out["teacher_logprobs"]]
    if any(have) and not all(have):
        raise ValueError(f"{have.count(False)} of {len(have)} samples carry no teacher log-probs (the others do)")
    if not all(have):
        out["teacher_logprobs"] = None  # type: ignore[assignment]
    for key in ("reward", "finished", "truncated"):
        if all(v is None for v in out[key]):
            out[key] = None  # type: ignore[assignment]
    return out


def slime_train_inputs(shards: list[Mapping[str, Any]], *, teacher_key: str = "teacher_log_probs",
                       student_key: str | None = None) -> dict[str, Any]:
    """The arguments of :meth:`drift.record.Recorder.log` for slime's train-side ``rollout_data`` shards.

    Args:
        shards: the data-parallel shards of one rollout (each a ``rollout_data`` dict with full-length, i.e.
            context-parallel-restored, per-sample fields); their samples are recorded in rollout order
            (``partition``).
        teacher_key: the teacher's field: ``teacher_log_probs`` (``--use-opd``) or ``ref_log_probs`` (a teacher
            loaded as the reference model); a shard without it records the student alone.
        student_key: ``log_probs`` (the trainer's forward) or ``rollout_log_probs``; None: ``log_probs`` when the
            shards hold it (slime skips that forward under ``--use-rollout-logprobs``), else ``rollout_log_probs``.

    Raises:
        ValueError: a field is missing or its length disagrees with ``response_lengths``.
    """
    rows: list[tuple[Any, dict[str, Any]]] = []
    if student_key is None:
        student_key = "log_probs" if all(s.get("log_probs") is not None for s in shards) else "rollout_log_probs"
    has_teacher = all(s.get(teacher_key) is not None for s in shards)
    for d, shard in enumerate(shards):
        for key in ("tokens", "response_lengths", student_key):
            if shard.get(key) is None:
                raise ValueError(f"shard {d} has no {key!r} (found {sorted(map(str, shard))})")
        lengths = [int(v) for v in _np(shard["response_lengths"], "int")]
        order = shard.get("partition")
        for j, n in enumerate(lengths):
            tokens = _np(shard["tokens"][j], "int")
            if n == 0:
                continue
            if not 0 < n < len(tokens):
                raise ValueError(f"shard {d} sample {j}: response_lengths {n} but {len(tokens)} tokens")
            row: dict[str, Any] = {"prompt_ids": tokens[:len(tokens) - n], "response_ids": tokens[len(tokens) - n:]}
            for name, key, kind in (("student_logprobs", student_key, "float"),
                                    ("teacher_logprobs", teacher_key if has_teacher else None, "float"),
                                    ("rollout_logprobs", "rollout_log_probs" if student_key != "rollout_log_probs"
                                     and all(s.get("rollout_log_probs") is not None for s in shards) else None,
                                     "float"), ("loss_mask", "loss_masks", "bool")):
                if key is None or shard.get(key) is None:
                    continue
                a = _np(shard[key][j], kind)
                if len(a) != n:
                    cp = " (context-parallel chunk? restore it first)" if len(a) < n else ""
                    raise ValueError(f"shard {d} sample {j}: {key!r} has {len(a)} entries but response_lengths is "
                                     f"{n}{cp}")
                row[name] = a
            if "rollout_logprobs" in row and "loss_mask" in row:  # tool tokens: SGLang stores 0 there
                off = ~row["loss_mask"]
                row["rollout_logprobs"][off] = row["student_logprobs"][off]
            reward = shard.get("local_raw_reward")
            row["reward"] = _number(reward[j]) if reward is not None else None
            trunc = shard.get("truncated")
            row["truncated"] = None if trunc is None else bool(_np(trunc[j], "int")[0])
            rows.append((order[j] if order is not None else (d, j), row))
    rows.sort(key=lambda r: r[0])
    keys = ["prompt_ids", "response_ids", "student_logprobs", "teacher_logprobs", "rollout_logprobs", "loss_mask",
            "reward", "truncated"]
    out: dict[str, Any] = {}
    for k in keys:
        values = [r.get(k) for _, r in rows]
        out[k] = None if all(v is None for v in values) else values
    for k in ("prompt_ids", "response_ids", "student_logprobs"):
        out[k] = out[k] or []
    return out


def _log(recorder: Any, step: int, inputs: dict[str, Any], teacher_id: str | None) -> int:
    if not inputs["prompt_ids"]:
        return 0
    args = [inputs.pop(k) for k in ("prompt_ids", "response_ids", "student_logprobs", "teacher_logprobs")]
    kwargs = {k: v for k, v in inputs.items() if v is not None}
    return int(recorder.log(step, *args, teacher_id=teacher_id, **kwargs))


def log_slime_samples(recorder: Any, samples: list[Any], step: int, *, reward_key: str | None = None,
                      teacher_id: str | None = None, strict: bool = False) -> int:
    """Record slime's rollout-side samples (see :func:`slime_sample_inputs`) as step ``step``.

    Returns:
        the number of rollouts the recorder accepted (0 after a problem, which warns once unless ``strict``).
    """
    return _guarded(lambda: _log(recorder, step, slime_sample_inputs(samples, reward_key=reward_key), teacher_id),
                    strict or bool(getattr(recorder, "strict", False)), f"slime rollout {step}")


def log_slime_train_data(recorder: Any, shards: list[Mapping[str, Any]], step: int, *,
                         teacher_key: str = "teacher_log_probs", student_key: str | None = None,
                         teacher_id: str | None = None, strict: bool = False) -> int:
    """Record slime's train-side ``rollout_data`` shards (see :func:`slime_train_inputs`) as step ``step``."""
    return _guarded(lambda: _log(recorder, step, slime_train_inputs(shards, teacher_key=teacher_key,
                                                                    student_key=student_key), teacher_id),
                    strict or bool(getattr(recorder, "strict", False)), f"slime train data of rollout {step}")


def _guarded(fn: Callable[[], int], strict: bool, what: str) -> int:
    try:
        return fn()
    except Exception as exc:
        if strict:
            raise
        _warn_once(type(exc).__name__, f"drift: {what} not recorded ({type(exc).__name__}: {exc}); training "
                   "continues, further problems of this kind are not reported")
        return 0


def _warn_once(kind: str, message: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(message, DriftWarning, stacklevel=3)


def _recorder(side: str, args: Any) -> Any:
    """The module-level Recorder of ``side`` (``rollout`` / ``train``), created at the first call; None when
    ``DRIFT_RECORD_DIR`` is unset."""
    if side in _recorders:
        return _recorders[side]
    root = os.environ.get(ENV_DIR)
    if not root:
        _recorders[side] = None
        return None
    from drift.record import Recorder

    tokenizer = None
    if os.environ.get("DRIFT_RECORD_TOKENIZER"):
        from drift.models import load_tokenizer

        tokenizer = load_tokenizer(os.environ["DRIFT_RECORD_TOKENIZER"])
    metadata = {"source": f"slime {side} hook", "slime_commit_read": SLIME_COMMIT,
                **{k: getattr(args, a) for k, a in (("student", "hf_checkpoint"), ("temperature",
                   "rollout_temperature"), ("opd_type", "opd_type"), ("teacher", "opd_teacher_load"))
                   if isinstance(getattr(args, a, None), (str, int, float))}}
    _recorders[side] = Recorder(Path(root) / side, run_id=os.environ.get("DRIFT_RECORD_RUN_ID") or Path(root).name,
                                tokenizer=tokenizer, metadata=metadata,
                                if_exists=os.environ.get("DRIFT_RECORD_IF_EXISTS", "fail"))
    return _recorders[side]


def log_rollout(rollout_id: int, args: Any, samples: list[Any], rollout_extra_metrics: Any = None,
                rollout_time: Any = None) -> bool:
    """slime's ``--custom-rollout-log-function-path`` hook: record the rollout's samples, keep slime's logging.

    Returns:
        False, so slime still logs its own rollout metrics.
    """
    try:
        rec = _recorder("rollout", args)
    except Exception as exc:  # e.g. the folder exists: one warning, the run goes on
        _recorders["rollout"] = None
        _warn_once("recorder", f"drift: no Recorder for slime's rollout hook ({type(exc).__name__}: {exc})")
        return False
    if rec is not None:
        log_slime_samples(rec, samples, int(rollout_id), reward_key=getattr(args, "reward_key", None),
                          teacher_id=os.environ.get("DRIFT_RECORD_TEACHER_ID"))
    return False


def _megatron_shards(rollout_data: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """This rollout's data-parallel shards, CP-restored on CPU, on the writer rank (None on every other rank).

    Mirrors slime's ``save_debug_train_data``: every rank of the last pipeline stage with tensor-parallel rank 0
    enters the context-parallel restore and the data-parallel gather, whatever happens on the others.
    """
    import torch
    from megatron.core import mpu
    from slime.backends.megatron_utils.cp_utils import all_gather_with_cp
    from slime.observability.train_data_utils import restore_context_parallel_fields_to_cpu

    if not mpu.is_pipeline_last_stage(ignore_virtual=True) or mpu.get_tensor_model_parallel_rank() != 0:
        return None
    local = {k: rollout_data[k] for k in _TRAIN_FIELDS if rollout_data.get(k) is not None}
    cp_rank = mpu.get_context_parallel_rank()
    local = restore_context_parallel_fields_to_cpu(local, all_gather_with_cp, keep_restored=cp_rank == 0)
    if cp_rank != 0:
        return None
    dp_size = mpu.get_data_parallel_world_size(with_context_parallel=False)
    src = mpu.get_data_parallel_src_rank(with_context_parallel=False)
    if dp_size == 1:
        return [local]
    rank = torch.distributed.get_rank()
    shards: list[Any] | None = [None] * dp_size if rank == src else None
    torch.distributed.gather_object(local, shards, dst=src,
                                    group=mpu.get_data_parallel_group_gloo(with_context_parallel=False))
    return shards if rank == src else None


def postprocess_rollout_data(args: Any, rollout_id: int, rollout_data: Mapping[str, Any]) -> None:
    """slime's ``--rollout-data-postprocess-path`` hook: record the trainer-side log-probs of this rollout."""
    if not os.environ.get(ENV_DIR):
        return
    try:  # an import error hits every rank alike; any later failure must surface (a caught one would hang the
        shards = _megatron_shards(rollout_data)  # ranks still waiting in the collectives)
    except ImportError as exc:
        _warn_once("import", f"drift: slime's train hook needs Megatron and slime's own modules ({exc}); nothing "
                   "recorded")
        return
    if shards is None:
        return
    try:
        rec = _recorder("train", args)
    except Exception as exc:
        _recorders["train"] = None
        _warn_once("recorder", f"drift: no Recorder for slime's train hook ({type(exc).__name__}: {exc})")
        return
    if rec is not None:
        log_slime_train_data(rec, shards, int(rollout_id), teacher_id=os.environ.get("DRIFT_RECORD_TEACHER_ID"))
