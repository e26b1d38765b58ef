"""Live recording inside training: the recorder on tiny models, the callback's schedule, and real TRL runs.

- The live recorder (no TRL): global RNG states, every module's train/eval flag and the tokenizer's sides are as
  before a recording; left- and right-padding tokenizers give the same rows; a complete step is never rewritten
  (an incomplete one is); the dataset names the student "live model at step N"; failures raise or warn.
- A real ``trl.DistillationTrainer`` run on the oracle world (2 optimizer steps, ``every=1``): datasets of steps
  0, 1, 2 whose student log-probs equal a re-scoring by the student *as it was at that step* (state_dict
  snapshots), not the initial one; ``drift fit`` reads them.
- Training unaffected: per-step losses of a seeded 3-step run with and without the callback are equal floats (and
  differ when the RNG restore is switched off, so the comparison can fail).
- Several processes (slow): ``torchrun --nproc-per-node 2`` on gloo; every rank samples its share, rank 0 writes
  one dataset, a failure on one rank reaches every rank. The worker is this module's ``__main__``.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from drift.errors import ConfigError, DriftError, DriftWarning, InputFormatError, ModelLoadError
from drift.integrations.live import LiveConfig, LiveRecorder, is_complete, step_dir
from drift.store import open_dataset
from tests.helpers import make_tiny_model, make_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
ORACLE = ROOT / "data" / "oracle"


# ----------------------------------------------------------------------------------------------- helpers
def write_prompts(path: Path, n: int = 3) -> Path:
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": " ".join(f"w{(7 * i + j) % 90}" for j in range(5))})
                            + "\n" for i in range(n)))
    return path


def make_recorder(tmp_path: Path, teacher: Any, *, out: str = "drift", n_prompts: int = 3, **kw: Any) -> LiveRecorder:
    cfg = LiveConfig(out=str(tmp_path / out), samples_per_prompt=2, max_new_tokens=6, chat_template="never", **kw)
    return LiveRecorder(teacher, write_prompts(tmp_path / "prompts.jsonl", n_prompts), cfg)


def draws() -> tuple[Any, ...]:
    return torch.rand(4).tolist(), np.random.rand(4).tolist(), random.random()


def reseed() -> None:
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)


def rollouts_and_logprobs(path: Path) -> tuple[list[list[int]], list[list[int]], list[np.ndarray]]:
    """(student prompt ids, response ids, stored student_logprob per rollout) of a dataset, rollout-aligned."""
    ds = open_dataset(path)
    ro = ds.to_pandas("rollouts")
    tok = ds.to_pandas("tokens").sort_values(["prompt_id", "sample_id", "position"])
    groups = {k: g["student_logprob"].to_numpy(np.float64) for k, g in tok.groupby(["prompt_id", "sample_id"])}
    prompts = [list(map(int, p)) for p in ro["student_prompt_ids"]]
    responses = [list(map(int, r)) for r in ro["response_ids"]]
    stored = [groups[(p, s)] for p, s in zip(ro["prompt_id"], ro["sample_id"], strict=True)]
    return prompts, responses, stored


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(max(np.max(np.abs(x - y)) for x, y in zip(a, b, strict=True) if len(x)))


# ------------------------------------------------------------------------------ the live recorder (no TRL)
def test_record_restores_rng_modes_and_tokenizer(tmp_path):
    student, teacher = make_tiny_model(0), make_tiny_model(1)
    tok = make_tiny_tokenizer()
    tok.padding_side, tok.truncation_side = "left", "left"
    student.train()
    student.model.layers[0].eval()  # a mixed state must survive, not just the top-level flag
    flags = {n: m.training for n, m in student.named_modules()}
    teacher_flags = {n: m.training for n, m in teacher.named_modules()}
    rec = make_recorder(tmp_path, teacher)
    reseed()
    expected = draws()

    reseed()
    assert rec.record(0, student, tok) == step_dir(tmp_path / "drift", 0)
    assert draws() == expected
    assert {n: m.training for n, m in student.named_modules()} == flags
    assert {n: m.training for n, m in teacher.named_modules()} == teacher_flags
    assert (tok.padding_side, tok.truncation_side) == ("left", "left")
    assert not hasattr(student, "drift_live")
    assert not (tmp_path / "drift" / ".live-tmp").exists()

    # the comparison can fail: drift's collector on its own does move the global generators
    from drift.collect.pipeline import collect

    reseed()
    collect(student.eval(), teacher, tok, rec.prompts, rec.collect_config(0, str(tmp_path / "plain"), None))
    assert draws() != expected


def test_padding_side_does_not_change_the_rows(tmp_path, tiny_pair):
    student, teacher = tiny_pair
    outs = []
    for side in ("left", "right"):
        tok = make_tiny_tokenizer()
        tok.padding_side = side
        rec = make_recorder(tmp_path, teacher, out=f"drift-{side}", n_prompts=4)
        outs.append(open_dataset(rec.record(5, student, tok)).to_pandas())
    assert len(outs[0]) > 0
    assert outs[0].drop(columns=["run_id", "prompt_key"]).equals(outs[1].drop(columns=["run_id", "prompt_key"]))


def test_dataset_names_the_live_model_and_its_step(tmp_path, tiny_pair, tiny_tokenizer):
    from drift.models import model_identity

    student, teacher = tiny_pair
    saved = tmp_path / "student-ckpt"
    student.save_pretrained(saved)
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(saved).eval()
    start = model_identity(loaded)
    assert start["fingerprint"] is not None
    rec = make_recorder(tmp_path, teacher, run_id="r1")
    ds = open_dataset(rec.record(7, loaded, tiny_tokenizer))
    ident = ds.config["models"]["student"]
    assert ident["source"] == "live model at step 7" and ident["fingerprint"] is None and ident["path"] is None
    assert ident["started_from"]["fingerprint"] == start["fingerprint"]
    assert ident["started_from"]["path"] == str(saved)
    assert ds.metadata["student"] == {"source": "live model at step 7", "fingerprint": None, "revision": None}
    assert ds.metadata["step"] == 7 and ds.metadata["run_id"] == "r1"
    tokens = ds.to_pandas()
    assert set(tokens["step"]) == {7} and set(tokens["run_id"]) == {"r1"}
    assert ds.config["live"]["step"] == 7 and ds.config["live"]["world_size"] == 1
    assert model_identity(loaded) == start  # the mark is gone after the recording


def test_same_step_same_rows_and_seeded_by_step(tmp_path, tiny_pair, tiny_tokenizer):
    student, teacher = tiny_pair
    a = open_dataset(make_recorder(tmp_path, teacher, out="a").record(3, student, tiny_tokenizer))
    b = open_dataset(make_recorder(tmp_path, teacher, out="b").record(3, student, tiny_tokenizer))
    c = open_dataset(make_recorder(tmp_path, teacher, out="c").record(4, student, tiny_tokenizer))
    cols = ["prompt_id", "sample_id", "position", "token_id", "student_logprob", "teacher_logprob"]
    assert a.to_pandas()[cols].equals(b.to_pandas()[cols])
    assert a.metadata["sampling"]["seed"] == b.metadata["sampling"]["seed"] != c.metadata["sampling"]["seed"]
    assert not a.to_pandas()[["token_id"]].equals(c.to_pandas()[["token_id"]])


def test_a_complete_step_is_never_rewritten_an_incomplete_one_is(tmp_path, tiny_pair, tiny_tokenizer):
    student, teacher = tiny_pair
    rec = make_recorder(tmp_path, teacher)
    dest = rec.record(0, student, tiny_tokenizer)
    before = {p: p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}
    assert rec.record(0, student, tiny_tokenizer) is None
    assert make_recorder(tmp_path, teacher).record(0, student, tiny_tokenizer) is None  # a resumed run
    assert {p: p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()} == before

    manifest = json.loads((dest / "manifest.json").read_text())
    (dest / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))  # a killed run's step
    assert not is_complete(dest)
    assert rec.record(0, student, tiny_tokenizer) == dest
    assert is_complete(dest) and open_dataset(dest).manifest["n_rollouts"] == 6


def test_failures_raise_first_then_warn(tmp_path, tiny_pair, tiny_tokenizer, monkeypatch):
    student, teacher = tiny_pair
    rec = make_recorder(tmp_path, teacher)
    with pytest.raises(DriftError, match="first recording"):
        rec.record(0, student)  # no tokenizer anywhere: the first recording stops the run
    assert rec.record(1, student, tiny_tokenizer) is not None

    import drift.collect.pipeline as pipeline

    def broken(*args: Any, **kwargs: Any) -> None:
        torch.rand(3)  # moves the RNG before failing: the restore must still happen
        raise RuntimeError("disk full")

    monkeypatch.setattr(pipeline, "collect", broken)
    student.train()
    reseed()
    expected = draws()
    reseed()
    with pytest.warns(DriftWarning, match="step 2 .* disk full"):
        assert rec.record(2, student, tiny_tokenizer) is None
    assert draws() == expected and student.training
    assert not step_dir(tmp_path / "drift", 2).exists() and not (tmp_path / "drift" / ".live-tmp").exists()
    student.eval()
    strict = make_recorder(tmp_path, teacher, out="strict", on_error="raise")
    strict.n_recordings = 1  # not the first
    with pytest.raises(DriftError, match="disk full"):
        strict.record(3, student, tiny_tokenizer)


def test_teacher_path_loads_on_the_students_device(tmp_path, tiny_pair, tiny_tokenizer):
    student, teacher = tiny_pair
    teacher.save_pretrained(tmp_path / "teacher")
    tiny_tokenizer.save_pretrained(tmp_path / "teacher")
    rec = make_recorder(tmp_path, str(tmp_path / "teacher"))
    ds = open_dataset(rec.record(0, student, tiny_tokenizer))
    assert ds.config["models"]["teacher"]["source"] == str(tmp_path / "teacher")
    assert ds.config["models"]["teacher"]["device"] == str(next(student.parameters()).device)
    loaded = rec.teacher_for(student)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), teacher.state_dict().values(),
                                                 strict=True))


def test_callback_schedule_and_validation(tmp_path, tiny_pair, tiny_tokenizer):
    from drift.integrations.trl import DriftCallback

    student, teacher = tiny_pair
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    cb = DriftCallback(teacher, prompts, tmp_path / "drift", every=2, samples_per_prompt=2, chat_template="never")
    args = SimpleNamespace(max_completion_length=5)

    def at(step: int) -> SimpleNamespace:
        return SimpleNamespace(global_step=step, max_steps=3, epoch=None)

    cb.on_train_begin(args, at(0), None, model=student, processing_class=tiny_tokenizer)
    for s in (1, 2, 3):
        cb.on_step_end(args, at(s), None, model=student, processing_class=tiny_tokenizer)
    cb.on_train_end(args, at(3), None, model=student, processing_class=tiny_tokenizer)
    cb.on_train_end(args, at(3), None, model=student, processing_class=tiny_tokenizer)  # never rewritten
    assert sorted(cb.recorder.written) == [0, 2, 3]
    assert sorted(p.name for p in cb.out.iterdir()) == ["step-000000", "step-000002", "step-000003"]
    ds = open_dataset(cb.out / "step-000003")
    assert ds.metadata["sampling"]["max_new_tokens"] == 5 and ds.to_pandas()["response_len"].max() <= 5
    assert ds.config["live"]["hook"] == "on_train_end"

    with pytest.raises(ConfigError, match="every"):
        DriftCallback(teacher, prompts, tmp_path / "x", every=0)
    with pytest.raises(ConfigError, match="unknown setting"):
        DriftCallback(teacher, prompts, tmp_path / "x", every=1, sample_per_prompt=3)
    with pytest.raises(InputFormatError):
        DriftCallback(teacher, tmp_path / "missing.jsonl", tmp_path / "x", every=1)
    with pytest.raises(ModelLoadError):
        DriftCallback(str(tmp_path / "no-teacher"), prompts, tmp_path / "x", every=1)


# ----------------------------------------------------------------------------------------- real TRL runs
def oracle_tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ORACLE / "student", padding_side="left")


def oracle_model(name: str) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(ORACLE / name, dtype=torch.float32)


def run_trl(out: Path, max_steps: int, callbacks: list[Any]) -> Any:
    """A seeded DistillationTrainer run on the oracle world, with the settings measured to work on CPU."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    from drift.collect.prompts import read_prompts

    train = Dataset.from_list([{"prompt": r.prompt} for r in read_prompts(ORACLE / "prompts" / "train.jsonl",
                                                                          limit=8)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' gradient_checkpointing rename
        args = DistillationConfig(output_dir=str(out / "trainer"), max_steps=max_steps,
                                  per_device_train_batch_size=2, learning_rate=3e-4, max_completion_length=16,
                                  beta=1.0, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none",
                                  save_strategy="no", logging_steps=1, seed=0, disable_tqdm=True)
        trainer = DistillationTrainer(model=oracle_model("student"), teacher_model=oracle_model("teacher"),
                                      args=args, train_dataset=train, processing_class=oracle_tokenizer(),
                                      callbacks=callbacks)
        trainer.train()
    return trainer


def oracle_callback(out: Path, **kw: Any) -> Any:
    from drift.integrations.trl import DriftCallback

    return DriftCallback(teacher=str(ORACLE / "teacher"), prompts=ORACLE / "prompts" / "heldout.jsonl",
                         out=out / "drift", every=1, samples_per_prompt=2, max_prompts=4,
                         world=ORACLE / "world.json", on_error="raise", **kw)


@pytest.fixture(scope="module")
def trl_run(tmp_path_factory):
    """2 optimizer steps of DistillationTrainer with the callback at every=1 and state_dict snapshots per step."""
    pytest.importorskip("trl")
    from transformers import TrainerCallback

    class Snapshots(TrainerCallback):
        def __init__(self) -> None:
            self.states: dict[int, dict[str, torch.Tensor]] = {}

        def take(self, state: Any, model: Any) -> None:
            self.states[state.global_step] = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.take(state, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.take(state, model)

    out = tmp_path_factory.mktemp("trl") / "run"
    cb, snaps = oracle_callback(out), Snapshots()
    t0 = time.perf_counter()
    trainer = run_trl(out, 2, [cb, snaps])
    wall = time.perf_counter() - t0
    print(f"[TRL run: 2 steps + 3 recordings in {wall:.1f} s; recordings {cb.recorder.seconds}]")
    return SimpleNamespace(out=out, cb=cb, snaps=snaps, trainer=trainer, wall=wall)


def test_trl_run_writes_a_dataset_per_step(trl_run):
    cb = trl_run.cb
    assert sorted(cb.recorder.written) == [0, 1, 2] and trl_run.trainer.state.global_step == 2
    assert sorted(p.name for p in (trl_run.out / "drift").iterdir()) == ["step-000000", "step-000001",
                                                                         "step-000002"]
    for step in (0, 1, 2):
        ds = open_dataset(step_dir(trl_run.out / "drift", step))
        assert ds.manifest["status"] == "complete" and ds.manifest["n_rollouts"] == 8
        tokens = ds.to_pandas()
        assert set(tokens["step"]) == {step} and ds.metadata["step"] == step
        assert tokens["response_len"].max() <= 16  # the trainer's max_completion_length
        assert "oracle_teacher_correct" in tokens
        ident = ds.config["models"]["student"]
        assert ident["source"] == f"live model at step {step}" and ident["fingerprint"] is None
        assert ident["started_from"]["path"] == str(ORACLE / "student")
    assert open_dataset(step_dir(trl_run.out / "drift", 0)).config["live"]["hook"] == "on_train_begin"
    assert open_dataset(step_dir(trl_run.out / "drift", 2)).config["live"]["hook"] == "on_step_end"


def test_trl_logprobs_are_the_student_at_that_step(trl_run):
    from drift.ingest.checks import sampled_logprobs

    def student_at(step: int) -> Any:
        model = oracle_model("student").eval()
        model.load_state_dict(trl_run.snaps.states[step])
        return model

    assert sorted(trl_run.snaps.states) == [0, 1, 2]
    for step in (0, 1, 2):
        prompts, responses, stored = rollouts_and_logprobs(step_dir(trl_run.out / "drift", step))
        diff = max_diff(stored, sampled_logprobs(student_at(step), prompts, responses))
        print(f"[step {step}: max |stored - re-scored by the step-{step} snapshot| = {diff:.2g}]")
        assert diff < 1e-4, step
    # ... and not the initial student's: the step-2 rollouts re-scored by the step-0 student differ clearly
    prompts, responses, stored = rollouts_and_logprobs(step_dir(trl_run.out / "drift", 2))
    initial = sampled_logprobs(student_at(0), prompts, responses)
    print(f"[step 2: max |stored - re-scored by the initial student| = {max_diff(stored, initial):.2g}]")
    assert max_diff(stored, initial) > 1e-2
    # the final snapshot is the trainer's model: nothing the callback did changed the weights
    final = trl_run.trainer.model.state_dict()
    assert all(torch.equal(final[k], v) for k, v in trl_run.snaps.states[2].items())


def test_drift_fit_reads_the_step_datasets(trl_run, tmp_path):
    from drift.cli import main

    for step in (0, 2):
        fit = tmp_path / f"fit-{step}"
        assert main(["fit", str(step_dir(trl_run.out / "drift", step)), "--metric", "kl_reverse,k3", "--out",
                     str(fit), "--n-boot", "50"]) == 0
        assert "kl_reverse" in json.loads((fit / "fits.json").read_text())


@pytest.mark.slow
def test_report_of_the_run_folder_draws_drift_over_training(trl_run, tmp_path):
    from drift.report import ReportConfig, build_report

    res = build_report(trl_run.out, ReportConfig(dataset=str(trl_run.out), out=str(tmp_path / "r.html"), n_boot=20,
                                                 svg=False, dpi=60, sample_rollouts=1))
    training = next(s for s in res.sections if s.id == "training")
    assert training.present and not training.missing and not training.error
    assert any("step 0" in f and "step 2" in f for f in training.findings)


def test_training_is_unaffected_by_the_callback(tmp_path, monkeypatch):
    def losses(trainer: Any) -> list[float]:
        return [h["loss"] for h in trainer.state.log_history if "loss" in h]

    bare = losses(run_trl(tmp_path / "bare", 3, []))
    cb = oracle_callback(tmp_path / "with")
    recorded = losses(run_trl(tmp_path / "with", 3, [cb]))
    assert len(bare) == 3 and sorted(cb.recorder.written) == [0, 1, 2, 3]
    assert recorded == bare  # float equality, step by step

    import drift.integrations.live as live

    monkeypatch.setattr(live, "restore_rng", lambda state: None)  # the comparison can fail
    unrestored = losses(run_trl(tmp_path / "unrestored", 3, [oracle_callback(tmp_path / "unrestored")]))
    print(f"[losses: bare {bare}, with the callback {recorded}, without the RNG restore {unrestored}]")
    assert unrestored != bare


# -------------------------------------------------------------------------------------- several processes
@pytest.mark.slow
def test_two_processes_record_one_dataset(tmp_path, tiny_pair):
    write_prompts(tmp_path / "prompts.jsonl", n=5)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "tests.integrations.test_trl", str(tmp_path)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    print(f"[torchrun, 2 processes: {time.perf_counter() - t0:.1f} s]")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ds = open_dataset(step_dir(tmp_path / "drift", 0))
    assert ds.config["live"]["world_size"] == 2 and ds.config["live"]["prompts_per_rank"] == [3, 2]
    assert sorted({p["rank"] for p in ds.manifest["parts"]}) == [0, 1]
    ro = ds.to_pandas("rollouts")
    assert sorted(ro["prompt_id"]) == sorted(f"p{i}" for i in range(5) for _ in range(2))
    from drift.ingest.checks import sampled_logprobs

    prompts, responses, stored = rollouts_and_logprobs(ds.root)
    assert max_diff(stored, sampled_logprobs(tiny_pair[0], prompts, responses)) < 1e-4
    reports = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["returned"] for r in reports] == [str(ds.root), None]
    assert all(r["warned"] and "rank 1: RuntimeError: rank 1 broke" in r["warned"] for r in reports)
    assert not step_dir(tmp_path / "drift", 1).exists() and not (tmp_path / "drift" / ".live-tmp").exists()


@pytest.mark.slow
def test_two_process_trl_run(tmp_path):
    pytest.importorskip("trl")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "tests.integrations.test_trl", str(tmp_path), "trl"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    print(f"[torchrun TRL, 2 processes, two 2-step runs: {time.perf_counter() - t0:.1f} s]")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"trl-rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["written"] for r in ranks] == [[0, 1, 2], []]  # rank 0 writes; both sample
    assert all(len(r["bare"]) == 2 and r["with"] == r["bare"] for r in ranks)  # training unaffected
    for step in (0, 1, 2):
        ds = open_dataset(step_dir(tmp_path / "with" / "drift", step))
        assert ds.config["live"]["prompts_per_rank"] == [2, 2] and ds.manifest["n_rollouts"] == 8
        assert sorted({p["rank"] for p in ds.manifest["parts"]}) == [0, 1] and ds.metadata["step"] == step


def _distributed_worker(folder: str) -> None:
    """One rank of the two-process test: record step 0, then step 1 with rank 1 failing (every rank must warn)."""
    torch.distributed.init_process_group("gloo")
    rank = torch.distributed.get_rank()
    torch.set_num_threads(1)
    tmp = Path(folder)
    cfg = LiveConfig(out=str(tmp / "drift"), samples_per_prompt=2, max_new_tokens=6, chat_template="never")
    rec = LiveRecorder(make_tiny_model(1), tmp / "prompts.jsonl", cfg)
    student, tok = make_tiny_model(0), make_tiny_tokenizer()
    returned = rec.record(0, student, tok)
    if rank == 1:
        def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("rank 1 broke")

        rec._collect_shard = broken  # type: ignore[method-assign]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec.record(1, student, tok)
    warned = [str(w.message) for w in caught if issubclass(w.category, DriftWarning)]
    (tmp / f"rank-{rank}.json").write_text(json.dumps({"returned": str(returned) if returned else None,
                                                       "warned": warned[0] if warned else None}))
    torch.distributed.destroy_process_group()


def _distributed_trl_worker(folder: str) -> None:
    """One rank of the two-process TRL run (accelerate's MULTI_CPU, gloo): a bare run, then one with the callback."""
    torch.set_num_threads(1)
    tmp = Path(folder)
    bare = run_trl(tmp / "bare", 2, [])
    cb = oracle_callback(tmp / "with")
    recorded = run_trl(tmp / "with", 2, [cb])
    rank = torch.distributed.get_rank()
    (tmp / f"trl-rank-{rank}.json").write_text(json.dumps({
        "world": torch.distributed.get_world_size(), "written": sorted(cb.recorder.written),
        "bare": [h["loss"] for h in bare.state.log_history if "loss" in h],
        "with": [h["loss"] for h in recorded.state.log_history if "loss" in h]}))


if __name__ == "__main__":
    if sys.argv[2:] == ["trl"]:
        _distributed_trl_worker(sys.argv[1])
    else:
        _distributed_worker(sys.argv[1])
