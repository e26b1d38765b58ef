"""One logged batch -> validated :class:`~drift.ingest.records.ImportedRollout` objects for the recorder."""

from __future__ import annotations

from typing import Any

import numpy as np

from drift.ingest.records import ImportedRollout
from drift.record.inputs import Ragged, per_sequence, ragged

__all__ = ["batch_rollouts", "prompt_keys"]


def batch_rollouts(step: int, prompt_ids: Any, response_ids: Any, student_logprobs: Any, teacher_logprobs: Any, *,
                   mask: Any, prompt_mask: Any, rollout_logprobs: Any, loss_mask: Any, reward: Any, prompt_id: Any,
                   sample_id: Any, teacher_id: Any, teacher_revision: Any, finished: Any, truncated: Any,
                   run_id: str, eos_id: int | None, has_teacher: bool | None) -> list[ImportedRollout]:
    """Validate one batch of :meth:`drift.record.Recorder.log` and turn it into rollouts (vectorized: nothing here
    loops over tokens; per sequence, only the prompt key is hashed, once per distinct prompt).

    Args:
        step ... truncated: as in :meth:`~drift.record.Recorder.log`.
        run_id: the recorder's run id (part of the prompt key).
        eos_id: the tokenizer's EOS id (a response ending with it is ``finished`` unless given); None: unknown.
        has_teacher: whether the dataset holds teacher log-probs (None: this is the first batch).

    Raises:
        ValueError: listing every problem of the batch (lengths, shapes, non-finite or positive log-probs, a
            teacher given or missing unlike the first batch).
    """
    resp = ragged(response_ids, mask, "int", "response_ids")
    n = len(resp.lengths)
    per_token: dict[str, Ragged] = {"student_logprobs": ragged(student_logprobs, mask, "float",
                                                               "student_logprobs")}
    for name, value, kind in (("teacher_logprobs", teacher_logprobs, "float"),
                              ("rollout_logprobs", rollout_logprobs, "float"), ("loss_mask", loss_mask, "bool")):
        if value is not None:
            per_token[name] = ragged(value, mask, kind, name)
    problems = []
    for name, r in per_token.items():
        if len(r.lengths) != n:
            problems.append(f"{name} holds {len(r.lengths)} sequences but response_ids holds {n}")
        elif not np.array_equal(r.lengths, resp.lengths):
            i = int(np.flatnonzero(r.lengths != resp.lengths)[0])
            problems.append(f"{name}[{i}] has {int(r.lengths[i])} valid tokens but response_ids[{i}] has "
                            f"{int(resp.lengths[i])}")
        elif name != "loss_mask" and r.values.size:
            bad = ~np.isfinite(r.values)
            if bad.any():
                problems.append(f"{name} holds {int(bad.sum())} non-finite value(s)")
            elif r.values.max() > 1e-3:
                problems.append(f"{name} holds positive values (max {float(r.values.max()):.3g}); log-probs "
                                "are <= 0 (is this a KL or an advantage instead?)")
    prompts = ragged(prompt_ids, prompt_mask, "int", "prompt_ids")
    if len(prompts.lengths) != n:
        problems.append(f"prompt_ids holds {len(prompts.lengths)} sequences but response_ids holds {n}")
    if has_teacher is not None and ("teacher_logprobs" in per_token) != has_teacher:
        problems.append("teacher_logprobs given for this batch but not for the first one" if not has_teacher else
                        "teacher_logprobs is None for this batch but the first one had teacher log-probs")
    seq = {name: per_sequence(value, n, name) for name, value in (
        ("reward", reward), ("prompt_id", prompt_id), ("sample_id", sample_id), ("teacher_id", teacher_id),
        ("teacher_revision", teacher_revision), ("finished", finished), ("truncated", truncated))}
    if problems:
        raise ValueError(f"step {step}: " + "; ".join(problems))
    if n == 0:
        return []
    if seq["finished"] is None and eos_id is not None:
        ends = resp.offsets[1:] - 1
        last = np.where(resp.lengths > 0, resp.values[np.maximum(ends, 0)] if resp.values.size else -1, -1)
        seq["finished"] = (last == eos_id).tolist()
    split = {name: r.rows() for name, r in per_token.items()}
    responses, prompt_rows = resp.rows(), prompts.rows()
    pids = [None if p is None else str(p) for p in seq["prompt_id"]] if seq["prompt_id"] else [None] * n
    keys = prompt_keys(run_id, pids, prompt_rows)

    def at(name: str, i: int) -> Any:
        values = seq.get(name)
        return None if values is None else values[i]

    def tok(name: str, i: int) -> np.ndarray | None:
        rows = split.get(name)
        return None if rows is None else rows[i]

    rows = [ImportedRollout(
        prompt_ids=prompt_rows[i], response_ids=responses[i], student_logprob=split["student_logprobs"][i],
        teacher_logprob=tok("teacher_logprobs", i), rollout_logprob=tok("rollout_logprobs", i),
        loss_mask=tok("loss_mask", i), step=step, prompt_id=pids[i],
        sample_id=None if at("sample_id", i) is None else int(at("sample_id", i)),
        reward=None if at("reward", i) is None else float(at("reward", i)),
        finished=None if at("finished", i) is None else bool(at("finished", i)),
        truncated=None if at("truncated", i) is None else bool(at("truncated", i)),
        teacher_id=None if at("teacher_id", i) is None else str(at("teacher_id", i)),
        teacher_revision=None if at("teacher_revision", i) is None else str(at("teacher_revision", i)),
        prompt_key=keys[i], source=f"step {step}, sequence {i}") for i in range(n)]
    return rows


def prompt_keys(run_id: str, pids: list[str | None], prompts: list[np.ndarray]) -> list[str]:
    """:func:`~drift.schema.make_prompt_key` per sequence, hashed once per distinct prompt of the batch."""
    from drift.schema import make_prompt_key

    cache: dict[Any, str] = {}
    out = []
    for pid, p in zip(pids, prompts, strict=True):
        k = ("id", pid) if pid not in (None, "") else ("ids", p.tobytes())
        key = cache.get(k)
        if key is None:
            key = cache[k] = make_prompt_key(run_id, pid, p.tolist())
        out.append(key)
    return out
