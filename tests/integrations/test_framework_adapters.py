"""Where verl, slime and NeMo RL hand their batches to drift's Recorder: the adapters, against fakes of their batches.

None of the three frameworks is installed here: verl's release pins ``transformers < 5.11`` (drift needs >= 5), slime
and NeMo RL need Megatron and a Ray cluster. So each test builds the framework's batch object the way its source
builds it (commits in ``drift.integrations.{verl,slime,nemo_rl}``), from known per-token values with the framework's
real padding and alignment, and checks the adapter hands the Recorder exactly those prompt ids, response ids and
log-probs. A fake Recorder records the calls; one test per framework runs the real :class:`drift.record.Recorder`
and reads the dataset back.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from drift.errors import DriftWarning
from drift.integrations import nemo_rl as nemo_mod
from drift.integrations import slime as slime_mod
from drift.integrations import verl as verl_mod
from drift.integrations.nemo_rl import log_nemo_batch
from drift.integrations.slime import log_rollout, log_slime_samples, log_slime_train_data, postprocess_rollout_data
from drift.integrations.verl import log_verl_batch, verl_fields
from drift.record import Recorder
from drift.store import open_dataset

PAD = 0


# ------------------------------------------------------------------------------------------- the known rollouts


@dataclass
class Roll:
    """One rollout with known per-token values (response-long arrays)."""

    prompt: list[int]
    response: list[int]
    generated: np.ndarray  # False on tool tokens inside the response
    student: np.ndarray
    teacher: np.ndarray
    rollout: np.ndarray  # the sampler's value on generated tokens
    reward: float


def make_rolls() -> list[Roll]:
    """Two prompts x two samples, ragged; prompt 0 contains the pad id; rollout 3 is multi-turn (a tool span)."""
    prompts = [[5, PAD, 7, 9], [11, 12]]
    responses = [[21, 22, 23], [24, 25, 26, 27, 28], [31], [32, 33, 90, 91, 34, 35]]
    tool = {3: (2, 4)}  # rollout 3: tokens 2..3 are a tool message
    rolls = []
    for i, resp in enumerate(responses):
        j = np.arange(len(resp))
        student = (-(0.1 + 0.01 * i + 0.001 * j)).astype(np.float32)
        teacher = (student - 0.05 - 0.002 * j).astype(np.float32)
        gen = np.ones(len(resp), bool)
        if i in tool:
            gen[tool[i][0]:tool[i][1]] = False
        rolls.append(Roll(prompt=prompts[i // 2], response=resp, generated=gen, student=student, teacher=teacher,
                          rollout=(student + np.float32(0.0003)).astype(np.float32), reward=float(i) / 2))
    return rolls


def expected_rollout(r: Roll) -> np.ndarray:
    """The sampler's log-probs as recorded: the student's on tool tokens (the sampler scored none there)."""
    return np.where(r.generated, r.rollout, r.student).astype(np.float32)


class FakeRecorder:
    """Stands in for drift.record.Recorder: keeps every ``log`` call."""

    strict = False

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def log(self, step: int, prompt_ids: Any, response_ids: Any, student_logprobs: Any, teacher_logprobs: Any = None,
            **kwargs: Any) -> int:
        self.calls.append({"step": step, "prompt_ids": prompt_ids, "response_ids": response_ids,
                           "student_logprobs": student_logprobs, "teacher_logprobs": teacher_logprobs, **kwargs})
        return len(prompt_ids)


def check_call(call: dict[str, Any], rolls: list[Roll], *, teacher: bool = True, rollout: bool = True,
               loss_mask: list[np.ndarray] | None = None) -> None:
    """The call hands over exactly the rollouts' ids and aligned per-token values."""
    assert len(call["prompt_ids"]) == len(rolls)
    for i, r in enumerate(rolls):
        np.testing.assert_array_equal(call["prompt_ids"][i], r.prompt, err_msg=f"prompt {i}")
        np.testing.assert_array_equal(call["response_ids"][i], r.response, err_msg=f"response {i}")
        np.testing.assert_array_equal(call["student_logprobs"][i], r.student, err_msg=f"student {i}")
        if teacher:
            np.testing.assert_array_equal(call["teacher_logprobs"][i], r.teacher, err_msg=f"teacher {i}")
        if rollout:
            np.testing.assert_array_equal(call["rollout_logprobs"][i], expected_rollout(r), err_msg=f"rollout {i}")
        want_mask = r.generated if loss_mask is None else loss_mask[i]
        np.testing.assert_array_equal(call["loss_mask"][i], want_mask, err_msg=f"loss_mask {i}")
    if not teacher:
        assert call["teacher_logprobs"] is None


def recorded(path: Path) -> dict[tuple[int, ...], Any]:
    """A dataset's token rows per rollout (keyed by (step, response ids)), in position order."""
    tok = open_dataset(path).read("tokens").to_pandas().sort_values(["step", "prompt_key", "sample_id", "position"])
    return {(int(g["step"].iloc[0]), *map(int, g["token_id"])): g
            for _, g in tok.groupby(["step", "prompt_key", "sample_id"], sort=False)}


def check_recorded(path: Path, rolls: list[Roll], steps: list[int], *, student: str = "student",
                   loss_mask: list[np.ndarray] | None = None, rollout: bool = True) -> None:
    """Every rollout of every step is in the dataset with its own per-token values (advantage = T - S)."""
    got = recorded(path)
    assert len(got) == len(rolls) * len(steps)
    for step in steps:
        for i, r in enumerate(rolls):
            g = got[(step, *r.response)]
            np.testing.assert_allclose(g["student_logprob"], getattr(r, student), rtol=1e-6, err_msg=f"{i}")
            np.testing.assert_allclose(g["teacher_logprob"], r.teacher, rtol=1e-6, err_msg=f"{i}")
            np.testing.assert_allclose(g["advantage"], r.teacher - getattr(r, student), atol=1e-6)
            if rollout:
                np.testing.assert_allclose(g["rollout_logprob"], expected_rollout(r), rtol=1e-6)
            want = r.generated if loss_mask is None else loss_mask[i]
            np.testing.assert_array_equal(g["loss_mask"], want)


def prompt_value(k: int) -> float:
    """An arbitrary log-prob for prompt-side positions (never recorded: a misalignment would pick it up)."""
    return -3.0 - 0.01 * k


# ------------------------------------------------------------------------------------------------------ verl


@dataclass
class FakeDataProto:
    """verl.protocol.DataProto: ``.batch`` (a TensorDict; a dict of tensors here) and ``.non_tensor_batch``."""

    batch: dict[str, torch.Tensor]
    non_tensor_batch: dict[str, np.ndarray] = field(default_factory=dict)
    meta_info: dict[str, Any] = field(default_factory=dict)


def teacher_rows(r: Roll) -> tuple[np.ndarray, np.ndarray]:
    """verl's distillation teacher over prompt + response: row k scores token k + 1, a dummy last row."""
    seq = r.prompt + r.response
    p = len(r.prompt)
    vals = [r.teacher[k + 1 - p] if k + 1 >= p else prompt_value(k) for k in range(len(seq) - 1)] + [0.0]
    ids = [seq[k + 1] for k in range(len(seq) - 1)] + [0]
    return np.asarray(vals, np.float32), np.asarray(ids, np.int64)


def verl_padded(rolls: list[Roll], *, extra: int = 2, k: int = 1) -> FakeDataProto:
    """The legacy trainer's batch after the old-log-prob, reference and reward passes (AgentLoopWorker._postprocess:
    prompts left-padded, responses right-padded, attention_mask over both, response-aligned log-probs)."""
    B = len(rolls)
    P = max(len(r.prompt) for r in rolls) + extra
    R = max(len(r.response) for r in rolls) + extra
    prompts = torch.full((B, P), PAD, dtype=torch.int64)
    responses = torch.full((B, R), PAD, dtype=torch.int64)
    attn = torch.zeros((B, P + R), dtype=torch.int64)
    rmask = torch.zeros((B, R), dtype=torch.int64)
    old, ref, roll, scores = (torch.zeros((B, R)) for _ in range(4))
    t_full = torch.zeros((B, P + R, k))
    t_ids = torch.full((B, P + R, k), PAD, dtype=torch.int32)
    for i, r in enumerate(rolls):
        p, n = len(r.prompt), len(r.response)
        prompts[i, P - p:] = torch.tensor(r.prompt)
        responses[i, :n] = torch.tensor(r.response)
        attn[i, P - p:P + n] = 1
        rmask[i, :n] = torch.from_numpy(r.generated.astype(np.int64))
        old[i, :n], ref[i, :n] = torch.from_numpy(r.student), torch.from_numpy(r.teacher)
        roll[i, :n] = torch.from_numpy(np.where(r.generated, r.rollout, 0.0).astype(np.float32))
        scores[i, n - 1] = r.reward
        vals, ids = teacher_rows(r)
        t_full[i, P - p:P + n, 0], t_ids[i, P - p:P + n, 0] = torch.from_numpy(vals), torch.from_numpy(ids).int()
        if k > 1:
            t_full[i, P - p:P + n, 1:] = -9.0
    batch = {"prompts": prompts, "responses": responses, "attention_mask": attn, "response_mask": rmask,
             "input_ids": torch.cat([prompts, responses], dim=1), "old_log_probs": old, "ref_log_prob": ref,
             "rollout_log_probs": roll, "token_level_scores": scores, "teacher_logprobs": t_full,
             "teacher_ids": t_ids}
    uid = np.array(["u0", "u0", "u1", "u1"][:B], dtype=object)
    return FakeDataProto(batch=batch, non_tensor_batch={"uid": uid, "index": np.array([7, 7, 8, 8][:B])})


def nested(rows: list[Any], dtype: torch.dtype) -> torch.Tensor:
    return torch.nested.as_nested_tensor([torch.as_tensor(np.asarray(r), dtype=dtype) for r in rows],
                                         layout=torch.jagged)


def verl_v1(rolls: list[Roll]) -> dict[str, Any]:
    """The v1 trainer's ``tq.kv_batch_get`` result: per-sample jagged nested tensors without padding."""
    t = [teacher_rows(r) for r in rolls]
    return {"prompts": nested([r.prompt for r in rolls], torch.int64),
            "responses": nested([r.response for r in rolls], torch.int64),
            "response_mask": nested([r.generated.astype(np.int64) for r in rolls], torch.int64),
            "old_log_probs": nested([r.student for r in rolls], torch.float32),
            "ref_log_prob": nested([r.teacher for r in rolls], torch.float32),
            "rollout_log_probs": nested([np.where(r.generated, r.rollout, 0.0) for r in rolls], torch.float32),
            "rm_scores": nested([np.eye(len(r.response))[-1] * r.reward for r in rolls], torch.float32),
            "teacher_logprobs": nested([v[:, None] for v, _ in t], torch.float32),
            "teacher_ids": nested([i[:, None] for _, i in t], torch.int32),
            "uid": ["u0", "u0", "u1", "u1"][:len(rolls)]}


def test_verl_legacy_reference_teacher():
    """Fake DataProto (verl is not installed: its release pins transformers < 5.11): left-padded prompts, right-padded
    responses, a pad id inside a prompt, a multi-turn tool span; ref_log_prob as the teacher (G-OPD / IW-OPD)."""
    rolls = make_rolls()
    rec = FakeRecorder()
    n = log_verl_batch(rec, verl_padded(rolls), step=3, strict=True)
    assert n == 4 and len(rec.calls) == 1
    call = rec.calls[0]
    assert call["step"] == 3
    check_call(call, rolls)
    assert call["reward"] == [r.reward for r in rolls]
    assert "prompt_id" not in call  # prompts are keyed by their ids (verl's uid changes every draw)


def test_verl_distillation_teacher_is_shifted_onto_the_response():
    """Fake DataProto with verl's distillation teacher_logprobs (B, P + R, 1), row r scoring token r + 1 (the
    prompt_logprobs layout of verl/workers/rollout/vllm_rollout/utils.py); verl is not installed here."""
    rolls = make_rolls()
    rec = FakeRecorder()
    log_verl_batch(rec, verl_padded(rolls), step=1, teacher_key="teacher_logprobs", prompt_id_key="index",
                   teacher_id="T", strict=True)
    call = rec.calls[0]
    check_call(call, rolls)
    assert call["prompt_id"] == ["7", "7", "8", "8"] and call["teacher_id"] == "T"


def test_verl_distillation_refusals():
    """Fake DataProto (no verl install): a top-k teacher (K > 1) and unshifted teacher rows are refused with a clear
    error under strict, and by default warn once and record nothing (training goes on)."""
    rolls = make_rolls()
    rec = FakeRecorder()
    with pytest.raises(ValueError, match="top-2"):
        log_verl_batch(rec, verl_padded(rolls, k=2), 1, teacher_key="teacher_logprobs", strict=True)
    bad = verl_padded(rolls)
    bad.batch["teacher_ids"] = torch.roll(bad.batch["teacher_ids"], 1, dims=1)  # row r holding token r
    with pytest.raises(ValueError, match="not aligned"):
        log_verl_batch(rec, bad, 1, teacher_key="teacher_logprobs", strict=True)
    verl_mod._warned.clear()
    with pytest.warns(DriftWarning, match="not recorded"):
        assert log_verl_batch(rec, bad, 1, teacher_key="teacher_logprobs") == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert log_verl_batch(rec, bad, 2, teacher_key="teacher_logprobs") == 0  # warned once only
    assert rec.calls == []


def test_verl_v1_nested_batch():
    """Fake TensorDict of jagged nested tensors, as verl's v1 trainer gets from the TransferQueue (verl not installed):
    response-aligned student / reference and the full-sequence distillation teacher give the same rows."""
    rolls = make_rolls()
    assert verl_fields() == ["prompts", "responses", "response_mask", "old_log_probs", "ref_log_prob", "rm_scores"]
    assert "teacher_ids" in verl_fields(teacher_key="teacher_logprobs", rollout=True)
    for key in ("ref_log_prob", "teacher_logprobs"):
        rec = FakeRecorder()
        log_verl_batch(rec, verl_v1(rolls), step=2, teacher_key=key, strict=True)
        check_call(rec.calls[0], rolls)
        np.testing.assert_allclose(rec.calls[0]["reward"], [r.reward for r in rolls])


def test_verl_real_recorder(tmp_path: Path):
    """The real Recorder behind the adapter, on a fake verl DataProto (verl is not installed here): the dataset holds
    the rollouts' tokens, log-probs and advantage = teacher - student at the right positions."""
    rolls = make_rolls()
    with Recorder(tmp_path / "verl", strict=True) as rec:
        assert log_verl_batch(rec, verl_padded(rolls), step=5) == 4
    check_recorded(tmp_path / "verl", rolls, [5])
    rollouts = open_dataset(tmp_path / "verl").read("rollouts").to_pandas()
    assert sorted(rollouts["reward"]) == sorted(r.reward for r in rolls)


# ------------------------------------------------------------------------------------------------------ slime


class Status(Enum):
    """slime.utils.types.Sample.Status."""

    COMPLETED = "completed"
    TRUNCATED = "truncated"


@dataclass
class FakeSample:
    """slime.utils.types.Sample: the fields the rollout hook reads."""

    tokens: list[int]
    response_length: int
    rollout_log_probs: list[float] | None = None
    loss_mask: list[int] | None = None
    reward: Any = None
    status: Status = Status.COMPLETED
    teacher_log_probs: list[float] | None = None
    index: int | None = None


def opd_reply(r: Roll) -> dict[str, Any]:
    """What slime.rollout.on_policy_distillation.reward_func stores as the reward: SGLang's reply scoring
    prompt + response (entry 0 has no log-prob)."""
    seq = r.prompt + r.response
    p = len(r.prompt)
    entries = [[None, seq[0], None]] + [[float(r.teacher[k - p]) if k >= p else prompt_value(k), seq[k], None]
                                        for k in range(1, len(seq))]
    return {"text": "", "meta_info": {"input_token_logprobs": entries, "finish_reason": {"type": "length"}}}


def slime_samples(rolls: list[Roll], *, opd: bool = True) -> list[FakeSample]:
    return [FakeSample(tokens=r.prompt + r.response, response_length=len(r.response),
                       rollout_log_probs=np.where(r.generated, r.rollout, 0.0).astype(np.float32).tolist(),
                       loss_mask=r.generated.astype(int).tolist(), index=i,
                       reward=opd_reply(r) if opd else r.reward,
                       teacher_log_probs=None if opd else r.teacher.tolist(),
                       status=Status.TRUNCATED if i == 1 else Status.COMPLETED) for i, r in enumerate(rolls)]


def test_slime_rollout_samples_opd_sglang():
    """Fake slime Samples (slime needs Megatron + Ray) as the rollout log hook sees them under --opd-type sglang:
    teacher_log_probs still None, the teacher's SGLang reply in sample.reward. The student is the sampler's."""
    rolls = make_rolls()
    rec = FakeRecorder()
    assert log_slime_samples(rec, slime_samples(rolls), step=4, strict=True) == 4
    call = rec.calls[0]
    as_sampled = [Roll(r.prompt, r.response, r.generated, np.where(r.generated, r.rollout, 0.0).astype(np.float32),
                       r.teacher, r.rollout, r.reward) for r in rolls]  # SGLang's log-probs, 0 on tool tokens
    check_call(call, as_sampled, rollout=False)
    assert "rollout_logprobs" not in call  # the student already is the sampler here
    assert call["truncated"] == [False, True, False, False] and call["finished"] == [True, False, True, True]
    assert "reward" not in call  # a dict reward (the teacher's reply) is no reward


def test_slime_rollout_samples_as_dicts_and_refusals():
    """Fake Sample.to_dict() dicts with teacher_log_probs set and numeric rewards (no slime install); a reply for other
    tokens is refused; some samples with a teacher and some without is refused."""
    rolls = make_rolls()
    dicts = [{**s.__dict__, "status": s.status.value} for s in slime_samples(rolls, opd=False)]
    rec = FakeRecorder()
    log_slime_samples(rec, dicts, step=0, strict=True)
    np.testing.assert_array_equal(np.concatenate(rec.calls[0]["teacher_logprobs"]),
                                  np.concatenate([r.teacher for r in rolls]))
    assert rec.calls[0]["reward"] == [r.reward for r in rolls]
    wrong = slime_samples(rolls)
    wrong[0].reward["meta_info"]["input_token_logprobs"][-1][1] = 999
    with pytest.raises(ValueError, match="not this sample's reply"):
        log_slime_samples(rec, wrong, 0, strict=True)
    mixed = slime_samples(rolls)
    mixed[2].reward = 1.0
    with pytest.raises(ValueError, match="carry no teacher"):
        log_slime_samples(rec, mixed, 0, strict=True)


def slime_train_shards(rolls: list[Roll]) -> list[dict[str, Any]]:
    """Two data-parallel shards of train-side rollout_data (lists of per-sample tensors, CP-restored), samples out of
    rollout order (``partition``)."""
    shards = []
    for positions in ([2, 0], [3, 1]):
        rs = [rolls[p] for p in positions]
        shards.append({"tokens": [torch.tensor(r.prompt + r.response) for r in rs],
                       "response_lengths": [len(r.response) for r in rs],
                       "total_lengths": [len(r.prompt) + len(r.response) for r in rs],
                       "loss_masks": [torch.from_numpy(r.generated.astype(np.int32)) for r in rs],
                       "log_probs": [torch.from_numpy(r.student) for r in rs],
                       "teacher_log_probs": [torch.from_numpy(r.teacher) for r in rs],
                       "rollout_log_probs": [torch.from_numpy(np.where(r.generated, r.rollout, 0.0)) for r in rs],
                       "local_raw_reward": [r.reward for r in rs], "truncated": [0 for _ in rs],
                       "partition": positions})
    return shards


def test_slime_train_side_shards():
    """Fake train-side rollout_data shards (slime's Megatron actor cannot run here): trainer log_probs as the student,
    teacher_log_probs, loss_masks; samples come back in rollout order across data-parallel shards."""
    rolls = make_rolls()
    rec = FakeRecorder()
    assert log_slime_train_data(rec, slime_train_shards(rolls), step=6, strict=True) == 4
    check_call(rec.calls[0], rolls)
    assert rec.calls[0]["reward"] == [r.reward for r in rolls]
    short = slime_train_shards(rolls)
    short[0]["log_probs"][1] = short[0]["log_probs"][1][:2]  # a context-parallel chunk
    with pytest.raises(ValueError, match="context-parallel"):
        log_slime_train_data(rec, short, 6, strict=True)


def test_slime_hooks_real_recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Both slime hooks, as slime calls them (fake Samples / shards: no slime install), with DRIFT_RECORD_DIR set:
    real Recorders write DIR/rollout and DIR/train; the rollout hook returns False (slime keeps its logging)."""
    rolls = make_rolls()
    monkeypatch.setenv("DRIFT_RECORD_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(slime_mod, "_recorders", {})
    monkeypatch.setattr(slime_mod, "_megatron_shards", lambda data: slime_train_shards(rolls))
    args = type("Args", (), {"reward_key": None, "hf_checkpoint": "/ckpt/student", "rollout_temperature": 1.0})()
    for rid in (0, 1):
        assert log_rollout(rid, args, slime_samples(rolls), {}, 1.0) is False
        postprocess_rollout_data(args, rid, {})
    for side in ("rollout", "train"):
        slime_mod._recorders[side].close()
        sampled = [Roll(r.prompt, r.response, r.generated, np.where(r.generated, r.rollout, 0.0).astype(np.float32),
                        r.teacher, r.rollout, r.reward) for r in rolls]
        check_recorded(tmp_path / "run" / side, rolls if side == "train" else sampled, [0, 1],
                       rollout=side == "train")
        tok = open_dataset(tmp_path / "run" / side).read("tokens").to_pandas()
        assert all(k.startswith("run/") for k in tok["prompt_key"])


def test_slime_train_hook_without_megatron(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The real train hook where Megatron is absent (as here, and on a misconfigured cluster): it warns once and
    returns instead of raising into slime's training step; without DRIFT_RECORD_DIR it does nothing at all."""
    if importlib.util.find_spec("megatron") is not None:
        pytest.skip("megatron is installed")
    monkeypatch.setattr(slime_mod, "_warned", set())
    monkeypatch.delenv("DRIFT_RECORD_DIR", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert postprocess_rollout_data(None, 0, {}) is None
    monkeypatch.setenv("DRIFT_RECORD_DIR", str(tmp_path))
    with pytest.warns(DriftWarning, match="needs Megatron"):
        assert postprocess_rollout_data(None, 0, {}) is None
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------- NeMo RL


def nemo_batch(rolls: list[Roll], *, trailing: int = 2, multiple: int = 8) -> tuple[dict[str, Any], torch.Tensor]:
    """NeMo RL's train_data after the log-prob passes, and async GRPO's trajectory_teacher_logprobs: arrays over
    prompt + response, right-padded to a multiple of ``multiple``; entry i scores token i (entry 0 is 0); rollout 3
    ends with an environment message (token_mask 0, after the last generated token); sample 1 is excluded."""
    seqs, spans = [], []
    for i, r in enumerate(rolls):
        tail = [77] * trailing if i == 3 else []
        seqs.append(r.prompt + r.response + tail)
        spans.append((len(r.prompt), len(r.prompt) + len(r.response)))
    longest = max(map(len, seqs))
    S = -(-longest // multiple) * multiple
    B = len(rolls)
    ids = torch.full((B, S), PAD, dtype=torch.int64)
    tmask = torch.zeros((B, S), dtype=torch.int64)
    prev, gen, ref = (torch.zeros((B, S)) for _ in range(3))
    teacher = torch.zeros((B, longest))  # padded to max(S_i) only: the adapter pads it like _pad_teacher_logprobs
    for i, (r, seq, (a, b)) in enumerate(zip(rolls, seqs, spans, strict=True)):
        ids[i, :len(seq)] = torch.tensor(seq)
        tmask[i, a:b] = torch.from_numpy(r.generated.astype(np.int64))
        other = torch.tensor([prompt_value(k) for k in range(len(seq))])
        other[0] = 0.0
        prev[i, :len(seq)], teacher[i, :len(seq)], ref[i, :len(seq)] = other, other - 1, other - 2
        prev[i, a:b], teacher[i, a:b] = torch.from_numpy(r.student), torch.from_numpy(r.teacher)
        gen[i, a:b] = torch.from_numpy(np.where(r.generated, r.rollout, 0.0).astype(np.float32))
    batch = {"input_ids": ids, "input_lengths": torch.tensor([len(s) for s in seqs]), "token_mask": tmask,
             "sample_mask": torch.tensor([1.0, 0.0, 1.0, 1.0]), "prev_logprobs": prev,
             "generation_logprobs": gen, "reference_policy_logprobs": ref, "advantages": torch.zeros((B, S))}
    return batch, teacher


def nemo_loss_masks(rolls: list[Roll]) -> list[np.ndarray]:
    return [r.generated & (i != 1) for i, r in enumerate(rolls)]


def test_nemo_opd_batch():
    """Fake BatchedDataDict (a dict of tensors; NeMo RL needs Ray + Megatron workers): token-aligned arrays, so the
    response's log-probs are entries a..b-1 with no shift; the teacher comes from async GRPO's local variable."""
    rolls = make_rolls()
    batch, teacher = nemo_batch(rolls)
    rec = FakeRecorder()
    assert log_nemo_batch(rec, batch, step=7, teacher_logprobs=teacher, rewards=torch.tensor([r.reward for r in rolls]),
                          strict=True) == 4
    call = rec.calls[0]
    check_call(call, rolls, loss_mask=nemo_loss_masks(rolls))
    assert call["reward"] == [r.reward for r in rolls] and call["step"] == 7


def test_nemo_teacher_in_batch_and_refusals():
    """Fake BatchedDataDict (no NeMo RL install): the teacher found under a batch key (teacher_reference_logprobs, as
    repeated_batch holds it); no teacher records the student alone; placeholder prev_logprobs and a span at position 0
    are refused."""
    rolls = make_rolls()
    batch, teacher = nemo_batch(rolls)
    rec = FakeRecorder()
    log_nemo_batch(rec, {**batch, "teacher_reference_logprobs": teacher}, 1, strict=True)
    check_call(rec.calls[0], rolls, loss_mask=nemo_loss_masks(rolls))
    log_nemo_batch(rec, batch, 2, strict=True)
    check_call(rec.calls[1], rolls, teacher=False, loss_mask=nemo_loss_masks(rolls))
    zeros = {**batch, "prev_logprobs": torch.zeros_like(batch["prev_logprobs"])}
    with pytest.raises(ValueError, match="force_on_policy_ratio"):
        log_nemo_batch(rec, zeros, 3, strict=True)
    at0 = {**batch, "token_mask": batch["token_mask"].clone()}
    at0["token_mask"][0, 0] = 1
    with pytest.raises(ValueError, match="position 0"):
        log_nemo_batch(rec, at0, 3, strict=True)
    nemo_mod._warned.clear()
    with pytest.warns(DriftWarning, match="not recorded"):
        assert log_nemo_batch(rec, {"input_ids": batch["input_ids"]}, 4) == 0
    assert len(rec.calls) == 2


def test_nemo_real_recorder(tmp_path: Path):
    """The real Recorder behind log_nemo_batch on a fake BatchedDataDict (NeMo RL is not installed): every span token
    is recorded with its own entry's log-probs; the trailing environment message and the padding are not."""
    rolls = make_rolls()
    batch, teacher = nemo_batch(rolls)
    with Recorder(tmp_path / "nemo", strict=True) as rec:
        log_nemo_batch(rec, batch, step=1, teacher_logprobs=teacher)
    check_recorded(tmp_path / "nemo", rolls, [1], loss_mask=nemo_loss_masks(rolls))
    tok = open_dataset(tmp_path / "nemo").read("tokens").to_pandas()
    assert len(tok) == sum(len(r.response) for r in rolls) and 77 not in set(tok["token_id"])
