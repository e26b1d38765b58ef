"""drift.record.Recorder: derived columns against a naive per-token loop on every input layout, parts per step,
prompt keys, a killed trainer, the logging-problem path, student-only and bf16 input, and `drift fit` on the result."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from drift.errors import DatasetExistsError, DriftWarning
from drift.record import Recorder
from drift.schema import make_prompt_key
from drift.store import open_dataset

REPO = Path(__file__).resolve().parents[2]
DERIVED = ("advantage", "k1", "k3", "prefix_logratio", "cum_abs_gap", "cum_abs_gap_frac", "student_prefix_logprob",
           "teacher_prefix_logprob", "position", "rel_position", "response_len")


def naive(s: list[float], t: list[float] | None) -> dict[str, list[float]]:
    """Every derived column of one sequence, token by token, written from the definitions (not drift's code)."""
    n = len(s)
    out: dict[str, list[float]] = {k: [] for k in DERIVED}
    total = sum(abs(t[i] - s[i]) for i in range(n)) if t is not None else 0.0
    S = C = SP = TP = 0.0
    for i in range(n):
        out["position"].append(i)
        out["rel_position"].append(i / n)
        out["response_len"].append(n)
        out["student_prefix_logprob"].append(SP)
        SP += s[i]
        if t is None:
            continue
        a = t[i] - s[i]  # the OPD advantage, teacher minus student
        d = min(max(a, -20.0), 20.0)
        out["advantage"].append(a)
        out["k1"].append(-a)
        out["k3"].append(min(max(math.exp(d) - d - 1.0, 0.0), 10.0))
        out["prefix_logratio"].append(S)  # exclusive: tokens before i
        out["cum_abs_gap"].append(C)
        out["cum_abs_gap_frac"].append(C / total if total > 0 else 0.0)
        out["teacher_prefix_logprob"].append(TP)
        S += a
        C += abs(a)
        TP += t[i]
    return out


def make_sequences(rng: np.random.Generator, n: int = 5, *, teacher: bool = True) -> list[dict]:
    """Sequences of varied lengths: prompt ids, response ids and float32 log-probs."""
    seqs = []
    for i in range(n):
        length = int(rng.integers(1, 12))
        s = (-rng.random(length) * 4).astype(np.float32)
        t = (s - rng.normal(0, 1.5, length)).clip(max=0).astype(np.float32) if teacher else None
        seqs.append({"prompt": [1, *rng.integers(7, 100, size=int(rng.integers(1, 5))).tolist()],
                     "response": rng.integers(7, 100, size=length).tolist(), "s": s, "t": t, "pid": f"q{i}"})
    return seqs


def pad(seqs: list[dict], layout: str, rng: np.random.Generator) -> dict:
    """The sequences as (B, L) tensors with a mask: right padding, left padding, or holes (valid tokens spread over
    the row in order, padding in between)."""
    B = len(seqs)
    L = max(len(q["response"]) for q in seqs) + (4 if layout == "holes" else 0)
    ids = torch.full((B, L), 0, dtype=torch.long)
    s = torch.full((B, L), -99.0)  # garbage at padding: must never be read
    t = torch.full((B, L), 7.0)
    mask = torch.zeros((B, L), dtype=torch.bool)
    for b, q in enumerate(seqs):
        n = len(q["response"])
        if layout == "right":
            cols = np.arange(n)
        elif layout == "left":
            cols = np.arange(L - n, L)
        else:
            cols = np.sort(rng.choice(L, size=n, replace=False))
        cols_t = torch.as_tensor(cols)
        ids[b, cols_t] = torch.as_tensor(q["response"])
        s[b, cols_t] = torch.as_tensor(q["s"])
        if q["t"] is not None:
            t[b, cols_t] = torch.as_tensor(q["t"])
        mask[b, cols_t] = True
    return {"response_ids": ids, "student": s, "teacher": t, "mask": mask}


def check_against_naive(out: Path, seqs: list[dict], *, teacher: bool = True) -> None:
    tokens = open_dataset(out).read("tokens").to_pandas()
    assert len(tokens) == sum(len(q["response"]) for q in seqs)
    for q in seqs:
        rows = tokens[tokens.prompt_id == q["pid"]].sort_values("position")
        assert rows.token_id.tolist() == q["response"]
        np.testing.assert_array_equal(rows.student_logprob.to_numpy(), q["s"])
        ref = naive([float(x) for x in q["s"]], None if q["t"] is None else [float(x) for x in q["t"]])
        for col, values in ref.items():
            if not values:
                assert col not in tokens.columns, col
                continue
            np.testing.assert_allclose(rows[col].to_numpy(np.float64), values, rtol=1e-5, atol=1e-5, err_msg=col)
        if teacher:
            np.testing.assert_array_equal(rows.teacher_logprob.to_numpy(), q["t"])


@pytest.mark.parametrize("layout", ["ragged", "right", "left", "holes"])
def test_derived_columns_equal_a_naive_loop(tmp_path, rng, layout):
    seqs = make_sequences(rng, 6)
    prompts = [q["prompt"] for q in seqs]
    pids = [q["pid"] for q in seqs]
    out = tmp_path / "rec"
    with Recorder(out, strict=True) as rec:
        if layout == "ragged":
            n = rec.log(3, prompts, [q["response"] for q in seqs], [q["s"].tolist() for q in seqs],
                        [torch.as_tensor(q["t"]) for q in seqs], prompt_id=pids)
        else:
            p = pad(seqs, layout, rng)
            n = rec.log(3, prompts, p["response_ids"], p["student"], p["teacher"], mask=p["mask"], prompt_id=pids)
    assert n == len(seqs)
    check_against_naive(out, seqs)
    ds = open_dataset(out)
    assert ds.manifest["status"] == "complete"
    assert set(ds.read("tokens", columns=["step"]).column("step").to_pylist()) == {3}
    meta = ds.metadata
    assert meta["support"] == "sampled" and meta["has_teacher"] is True and meta["source_format"] == "record"


def test_ragged_mask_selects_within_sequences(tmp_path, rng):
    seqs = make_sequences(rng, 3)
    keep = [rng.random(len(q["response"]) + 2) < 0.6 for q in seqs]
    full = []  # each sequence with two junk tokens, spread where the mask is false
    for q, k in zip(seqs, keep, strict=True):
        k[:] = False
        k[np.sort(rng.choice(len(k), size=len(q["response"]), replace=False))] = True
        ids, s, t = np.full(len(k), 5), np.full(len(k), -50.0, np.float32), np.full(len(k), -50.0, np.float32)
        ids[k], s[k], t[k] = q["response"], q["s"], q["t"]
        full.append((ids, s, t))
    out = tmp_path / "rec"
    with Recorder(out, strict=True) as rec:
        rec.log(0, [q["prompt"] for q in seqs], [f[0] for f in full], [f[1] for f in full], [f[2] for f in full],
                mask=[k.tolist() for k in keep], prompt_id=[q["pid"] for q in seqs])
    check_against_naive(out, seqs)


def test_one_part_per_step_and_token_budget(tmp_path, rng):
    out = tmp_path / "rec"
    seqs = make_sequences(rng, 4)
    args = ([q["prompt"] for q in seqs], [q["response"] for q in seqs], [q["s"] for q in seqs],
            [q["t"] for q in seqs])
    with Recorder(out, strict=True) as rec:
        for step in (0, 0, 1, 2, 2, 2):  # two batches of step 0 share a part
            rec.log(step, *args)
    ds = open_dataset(out)
    parts = ds.manifest["parts"]
    assert [p["step"] for p in parts] == [0, 1, 2] and [p["n_batches"] for p in parts] == [2, 1, 3]
    for p in parts:
        assert set(pq.read_table(out / p["tokens"], columns=["step"]).column("step").to_pylist()) == {p["step"]}
        assert set(pq.read_table(out / p["rollouts"], columns=["step"]).column("step").to_pylist()) == {p["step"]}
    roll = ds.read("rollouts").to_pandas()
    # sample ids count the rollouts of a prompt within a step, across batches
    assert sorted(roll[roll.step == 2].groupby("prompt_key").sample_id.apply(list).iloc[0]) == [0, 1, 2]
    assert ds.manifest["record"]["n_batches"] == 6 and ds.manifest["record"]["n_dropped_batches"] == 0

    budget = tmp_path / "budget"
    n_tok = sum(len(q["response"]) for q in seqs)
    with Recorder(budget, strict=True, max_buffer_tokens=n_tok) as rec:  # every batch fills the budget
        for _ in range(3):
            rec.log(5, *args)
    parts = open_dataset(budget).manifest["parts"]
    assert [p["step"] for p in parts] == [5, 5, 5]
    assert sorted(open_dataset(budget).read("rollouts").column("sample_id").to_pylist()) == [0] * 4 + [1] * 4 + \
        [2] * 4


def test_prompt_key_filled(tmp_path, rng):
    seqs = make_sequences(rng, 4)
    prompts = [[1, 10, 11], [1, 10, 11], [1, 12], [1, 10, 11]]
    # the same prompts, left-padded in a tensor with a prompt mask
    padded = torch.zeros((4, 5), dtype=torch.long)
    pmask = torch.zeros((4, 5), dtype=torch.bool)
    for i, p in enumerate(prompts):
        padded[i, 5 - len(p):] = torch.as_tensor(p)
        pmask[i, 5 - len(p):] = True
    out = tmp_path / "rec"
    with Recorder(out, run_id="run", strict=True) as rec:
        rec.log(0, prompts, [q["response"] for q in seqs], [q["s"] for q in seqs], [q["t"] for q in seqs])
        rec.log(1, padded, [q["response"] for q in seqs], [q["s"] for q in seqs], [q["t"] for q in seqs],
                prompt_mask=pmask)
        rec.log(2, prompts, [q["response"] for q in seqs], [q["s"] for q in seqs], [q["t"] for q in seqs],
                prompt_id="shared")
    roll = open_dataset(out).read("rollouts").to_pandas()
    tokens = open_dataset(out).read("tokens", columns=["step", "prompt_key"]).to_pandas()
    assert tokens.prompt_key.notna().all()
    for step in (0, 1):
        keys = roll[roll.step == step].prompt_key.tolist()
        assert keys == [make_prompt_key("run", None, p) for p in prompts]
        assert keys[0] == keys[1] == keys[3] != keys[2]
    assert set(roll[roll.step == 2].prompt_key) == {"run/id:shared"}
    assert roll[roll.step == 1].student_prompt_ids.apply(list).tolist() == prompts


KILLED = """
import os, signal, sys
import numpy as np
from drift.record import Recorder
rec = Recorder(sys.argv[1], strict=True)
rng = np.random.default_rng(0)
for step in range(4):
    s = [(-rng.random(5)).astype(np.float32) for _ in range(3)]
    rec.log(step, [[1, 2]] * 3, [[7, 8, 9, 10, 11]] * 3, s, [x - 0.5 for x in s])
print("logged", flush=True)
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)  # step 3 is still buffered
# "exit": the trainer forgot close(); the interpreter exits normally
"""


@pytest.mark.parametrize("how", ["kill", "exit"])
def test_killed_trainer_leaves_readable_parts(tmp_path, how):
    out = tmp_path / "rec"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED), str(out), how], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    assert "logged" in proc.stdout, proc.stderr
    ds = open_dataset(out)
    tokens = ds.read("tokens")
    if how == "kill":
        assert proc.returncode != 0
        assert ds.manifest["status"] == "running"
        assert sorted(set(tokens.column("step").to_pylist())) == [0, 1, 2]
    else:
        assert proc.returncode == 0, proc.stderr
        assert ds.manifest["status"] == "interrupted"  # closed at exit, the buffered step written
        assert sorted(set(tokens.column("step").to_pylist())) == [0, 1, 2, 3]
    assert tokens.num_rows == 15 * len(set(tokens.column("step").to_pylist()))
    assert ds.verify() == []


def test_logging_problems_warn_once_and_never_raise(tmp_path, rng):
    seqs = make_sequences(rng, 3)
    good = ([q["prompt"] for q in seqs], [q["response"] for q in seqs], [q["s"] for q in seqs],
            [q["t"] for q in seqs])
    out = tmp_path / "rec"
    rec = Recorder(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert rec.log(0, *good) == 3
        short = [q["s"][:-1] for q in seqs]
        assert rec.log(0, good[0], good[1], short, good[3]) == 0  # mismatched lengths
        assert rec.log(1, good[0], good[1], [np.full(len(q["s"]), np.nan) for q in seqs], good[3]) == 0
        assert rec.log(1, good[0], good[1], good[2], None) == 0  # the first batch had a teacher
        assert rec.log(1, good[0][:2], good[1], good[2], good[3]) == 0  # 2 prompts for 3 responses
        assert rec.log(1, good[0], torch.zeros(3), good[2], good[3]) == 0  # no batch dimension
        assert rec.log(2, *good) == 3
        rec.close()
    drift_warnings = [w for w in caught if issubclass(w.category, DriftWarning)]
    assert len(drift_warnings) == 1
    assert "Training continues" in str(drift_warnings[0].message)
    assert "student_logprobs[0] has" in str(drift_warnings[0].message)
    assert rec.n_dropped_batches == 5 and rec.n_batches == 2
    ds = open_dataset(out)
    assert ds.manifest["status"] == "complete"
    assert ds.manifest["record"]["n_dropped_batches"] == 5
    assert [e["step"] for e in ds.manifest["record"]["errors"]] == [0, 1, 1, 1, 1]
    assert sorted(set(ds.read("tokens").column("step").to_pylist())) == [0, 2]

    with pytest.raises(ValueError, match="valid tokens"):
        Recorder(tmp_path / "strict", strict=True).log(0, good[0], good[1], short, good[3])


def test_unwritable_folder_warns_and_strict_raises(tmp_path, rng):
    seqs = make_sequences(rng, 2)
    args = ([q["prompt"] for q in seqs], [q["response"] for q in seqs], [q["s"] for q in seqs],
            [q["t"] for q in seqs])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    rec = Recorder(blocker / "rec")  # its parent is a file: nothing can be created there
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            assert rec.log(step, *args) == 2  # accepted; the writes fail when the step changes
        rec.flush()
        rec.close()
    assert len([w for w in caught if issubclass(w.category, DriftWarning)]) == 1
    assert rec.n_dropped_batches == 3 and rec.closed

    strict = Recorder(blocker / "strict", strict=True)
    strict.log(0, *args)
    with pytest.raises(OSError):
        strict.flush()


def test_existing_folder_and_resume(tmp_path, rng):
    seqs = make_sequences(rng, 2)
    args = ([q["prompt"] for q in seqs], [q["response"] for q in seqs], [q["s"] for q in seqs],
            [q["t"] for q in seqs])
    out = tmp_path / "rec"
    with Recorder(out, strict=True) as rec:
        rec.log(0, *args, prompt_id="p")
    with pytest.raises(DatasetExistsError):
        Recorder(out)
    with Recorder(out, if_exists="resume", strict=True) as rec:  # e.g. restarted from a checkpoint
        rec.log(0, *args, prompt_id="p")
        rec.log(1, *args, prompt_id="p")
    ds = open_dataset(out)
    assert ds.manifest["status"] == "complete" and len(ds.manifest["parts"]) == 3
    roll = ds.read("rollouts").to_pandas()
    assert sorted(roll[roll.step == 0].sample_id) == [0, 1, 2, 3]  # continued, not reused


def test_student_only_and_optional_columns(tmp_path, rng):
    seqs = make_sequences(rng, 4, teacher=False)
    out = tmp_path / "rec"
    prompts, resp, s = [q["prompt"] for q in seqs], [q["response"] for q in seqs], [q["s"] for q in seqs]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Recorder(out, strict=True) as rec:
            rec.log(0, prompts, resp, s, None, rollout_logprobs=[x - 0.01 for x in s], reward=[0.0, 1.0, 0.5, None],
                    prompt_id=[q["pid"] for q in seqs])
            rec.log(1, prompts, resp, s, prompt_id=[q["pid"] for q in seqs], teacher_id="T")  # no rollout lp
    messages = [str(w.message) for w in caught if issubclass(w.category, DriftWarning)]
    assert len(messages) == 1 and "teacher_id given at step 1" in messages[0]
    ds = open_dataset(out)
    assert ds.metadata["has_teacher"] is False and ds.config["has_teacher"] is False
    tokens = ds.read("tokens").to_pandas()
    assert "teacher_logprob" not in tokens.columns and "advantage" not in tokens.columns
    assert "teacher_id" not in tokens.columns  # the first part had none
    step0 = tokens[tokens.step == 0]
    for q in seqs:
        rows = step0[step0.prompt_id == q["pid"]].sort_values("position")
        ref = naive([float(x) for x in q["s"]], None)
        np.testing.assert_allclose(rows.student_prefix_logprob, ref["student_prefix_logprob"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rows.rollout_logprob, q["s"] - 0.01, rtol=1e-6)
    assert tokens[tokens.step == 1].rollout_logprob.isna().all()  # filled with nulls
    rewards = ds.read("rollouts").to_pandas().query("step == 0").reward.tolist()
    assert rewards[:3] == [0.0, 1.0, 0.5] and math.isnan(rewards[3])


def test_bf16_tensors_and_tokenizer(tmp_path, tiny_tokenizer, rng):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    B, L = 3, 6
    ids = torch.randint(7, 100, (B, L))
    ids[0, -1] = tiny_tokenizer.eos_token_id  # finished
    s = (-torch.rand(B, L) * 3).to(device, torch.bfloat16)
    t = (-torch.rand(B, L) * 3).to(device, torch.bfloat16)
    prompts = [[1, 10], [1, 11], [1, 12]]
    out = tmp_path / "rec"
    with Recorder(out, tokenizer=tiny_tokenizer, metadata={"student": "tiny", "lr": 1e-5}, strict=True) as rec:
        rec.log(0, prompts, ids.to(device), s, t, mask=torch.ones(B, L, dtype=torch.bool, device=device))
    ds = open_dataset(out)
    tokens = ds.read("tokens").to_pandas()
    np.testing.assert_array_equal(tokens.student_logprob.to_numpy(), s.float().cpu().reshape(-1).numpy())
    np.testing.assert_array_equal(tokens.teacher_logprob.to_numpy(), t.float().cpu().reshape(-1).numpy())
    roll = ds.read("rollouts").to_pandas()
    assert roll.finished.tolist() == [True, False, False]
    assert roll.response_text[0] == tiny_tokenizer.decode(ids[0].tolist(), skip_special_tokens=False)
    from drift.models import tokenizer_hash, vocab_hash

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"] == "record" and cfg["run_id"] == "rec" and cfg["support"] == "sampled"
    assert cfg["metadata"] == {"student": "tiny", "lr": 1e-5}
    assert cfg["tokenizer"]["hash"] == tokenizer_hash(tiny_tokenizer)
    assert cfg["tokenizer"]["vocab_hash"] == vocab_hash(tiny_tokenizer) == ds.metadata["vocab_hash"]


def test_drift_fit_reads_a_recorded_dataset(tmp_path, rng):
    from drift.cli import main

    out = tmp_path / "rec"
    with Recorder(out, strict=True) as rec:
        for step in range(2):
            seqs = make_sequences(rng, 24)
            rec.log(step, [q["prompt"] for q in seqs], [q["response"] for q in seqs], [q["s"] for q in seqs],
                    [q["t"] for q in seqs], prompt_id=[f"p{i % 12}" for i in range(24)])
    fit = tmp_path / "fit"
    assert main(["fit", str(out), "--metric", "k3", "--out", str(fit), "--n-boot", "50", "--bins", "4"]) == 0
    fits = json.loads((fit / "fits.json").read_text())
    assert "k3" in json.dumps(fits)


def test_context_manager_records_a_failed_run(tmp_path, rng):
    seqs = make_sequences(rng, 2)
    args = ([q["prompt"] for q in seqs], [q["response"] for q in seqs], [q["s"] for q in seqs],
            [q["t"] for q in seqs])
    out = tmp_path / "rec"
    with pytest.raises(RuntimeError, match="diverged"), Recorder(out) as rec:
        rec.log(0, *args)
        raise RuntimeError("loss diverged")
    ds = open_dataset(out)
    assert ds.manifest["status"] == "failed" and "diverged" in ds.manifest["training_error"]
    assert ds.read("tokens").num_rows == sum(len(q["response"]) for q in seqs)  # the buffered step was written
    with pytest.warns(DriftWarning, match="after close"):
        assert rec.log(1, *args) == 0
