"""The training loop on tiny random models (fast) and on the oracle world (held-out KL goes down)."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch

from drift.collect.config import ScoringOptions
from drift.collect.prompts import PromptRecord
from drift.errors import ConfigError
from drift.train import TrainConfig, lr_factor, train
from drift.train.evaluate import prompt_indices

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")

PATHS = {"student": "tiny-s", "teacher": "tiny-t", "prompts": "train", "heldout_prompts": "heldout"}


def _cfg(**kw) -> TrainConfig:
    base = {**PATHS, "out": "", "collect_at": (), "steps": 2, "prompts_per_step": 2, "samples_per_prompt": 2,
            "max_new_tokens": 6, "eval_prompts": 2, "eval_samples": 1, "lr": 1e-2,
            "scoring": ScoringOptions(progress=False)}
    return TrainConfig(**{**base, **kw})


def _prompts(n: int, prefix: str) -> list[PromptRecord]:
    return [PromptRecord(id=f"{prefix}{i}", prompt=f"w{i} w{i + 1} w{i + 2}", answer=f"w{i + 3}") for i in range(n)]


@pytest.fixture
def tiny(tiny_pair, tiny_tokenizer):
    student, teacher = tiny_pair
    return copy.deepcopy(student), teacher, tiny_tokenizer


class _Recording:
    """A schedule that records how it is called and returns a constant weight."""

    kind = "recording"

    def __init__(self, value: float) -> None:
        self.value, self.calls = value, []

    def weights(self, advantage, mask=None, *, teacher_logprob=None, step=None, total_steps=None):
        self.calls.append((step, total_steps, advantage.requires_grad, teacher_logprob is not None))
        return torch.full_like(advantage, self.value) * mask

    def to_dict(self):
        return {"kind": self.kind, "value": self.value}


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_all_zero_schedule_leaves_parameters_unchanged(tiny):
    student, teacher, tok = tiny
    before = _params(student)
    # weight decay and a large lr would move the weights if the optimizer stepped at all
    cfg = _cfg(weight_decay=0.5, steps=3)
    result = train(student, teacher, tok, _prompts(6, "t"), _prompts(2, "h"), {"kind": "vector", "values": [0.0]},
                   cfg)
    after = _params(student)
    assert all(torch.equal(before[n], after[n]) for n in before)
    rows = result.metrics[result.metrics.step > 0]
    assert (rows["optim/skipped"] == 1).all() and (rows["weight/max"] == 0).all()
    assert (rows["loss"] == 0).all()


def test_uniform_schedule_moves_parameters_and_logs_every_key(tiny):
    student, teacher, tok = tiny
    before = _params(student)
    schedule = _Recording(1.0)
    result = train(student, teacher, tok, _prompts(6, "t"), _prompts(2, "h"), schedule, _cfg(steps=3, eval_every=2))
    assert any(not torch.equal(before[n], p) for n, p in student.named_parameters())
    assert not any(p.requires_grad for p in student.parameters())  # frozen again after training
    # the 1-based step convention reaches the schedule; advantages arrive detached, teacher log-probs given
    assert schedule.calls == [(1, 3, False, True), (2, 3, False, True), (3, 3, False, True)]
    df = result.metrics
    assert df.step.tolist() == [0, 1, 2, 3]
    for key in ("loss", "adv/mean", "adv/abs_mean", "kl/k3_mean", "kl/k1_mean", "weight/mean", "weight/min",
                "weight/max", "length/mean", "length/max", "rollout/finished_frac", "optim/lr", "optim/grad_norm",
                "time/step"):
        assert df.loc[df.step > 0, key].notna().all(), key
    evals = df.dropna(subset=["eval/kl_mean"]).step.tolist()
    assert evals == [0, 2, 3]  # step 0, every eval_every, and the final step
    assert {"eval/accuracy", "eval/greedy_accuracy", "eval/k3_mean"} <= set(df.columns)
    assert (df.loc[df.step > 0, "optim/skipped"] == 0).all()


def test_weights_scale_the_loss(tiny_pair, tiny_tokenizer):
    student, teacher = tiny_pair
    losses = [train(copy.deepcopy(student), teacher, tiny_tokenizer, _prompts(4, "t"), _prompts(2, "h"),
                    _Recording(w), _cfg(steps=1)).metrics.loss.iloc[1] for w in (1.0, 0.5)]
    assert losses[1] == pytest.approx(0.5 * losses[0], rel=1e-6)  # same seed: same rollouts, half the weight


class _AdvantageSpy(_Recording):
    """Records the advantages the schedule sees."""

    def weights(self, advantage, mask=None, **kw):
        self.seen = advantage[mask.bool()].clone()
        return super().weights(advantage, mask, **kw)


def test_batch_mean_advantage_changes_the_loss_not_what_the_schedule_sees(tiny_pair, tiny_tokenizer):
    student, teacher = tiny_pair
    rows, seen = {}, {}
    for mode in ("token", "batch_mean"):
        spy = _AdvantageSpy(1.0)
        rows[mode] = train(copy.deepcopy(student), teacher, tiny_tokenizer, _prompts(4, "t"), _prompts(2, "h"), spy,
                           _cfg(steps=1, advantage=mode)).metrics.iloc[1]
        seen[mode] = spy.seen
    torch.testing.assert_close(seen["batch_mean"], seen["token"])  # same rollouts, the real per-token A_t
    assert seen["token"].std() > 0
    assert rows["batch_mean"]["adv/mean"] == pytest.approx(rows["token"]["adv/mean"])
    assert rows["batch_mean"]["loss"] != pytest.approx(rows["token"]["loss"])
    with pytest.raises(ConfigError, match="applies to the sampled loss only"):
        _cfg(loss="full_kl", advantage="batch_mean")
    with pytest.raises(ConfigError, match="advantage must be one of"):
        _cfg(advantage="mean")


def test_full_kl_loss_runs_and_reports_full_vocab_kl(tiny):
    student, teacher, tok = tiny
    before = _params(student)
    result = train(student, teacher, tok, _prompts(4, "t"), _prompts(2, "h"), None, _cfg(loss="full_kl", steps=1))
    row = result.metrics[result.metrics.step == 1].iloc[0]
    assert row["kl/full_mean"] > 0 and row["loss"] == pytest.approx(row["kl/full_mean"], rel=1e-5)  # w = 1
    assert any(not torch.equal(before[n], p) for n, p in student.named_parameters())


def test_same_seed_same_run(tiny_pair, tiny_tokenizer):
    student, teacher = tiny_pair
    runs = [train(copy.deepcopy(student), teacher, tiny_tokenizer, _prompts(6, "t"), _prompts(2, "h"), None,
                  _cfg(steps=2)).metrics for _ in range(2)]
    np.testing.assert_allclose(runs[0]["loss"].to_numpy(), runs[1]["loss"].to_numpy(), equal_nan=True)


def test_training_logprobs_match_the_inference_scorer_with_a_privileged_teacher_prompt(tiny_pair, rng):
    """Response token j is read at index P + j - 1 of each model's own input, as in drift.collect.scoring."""
    from drift.collect.scoring import ScoringItem, score_items
    from drift.train.loss import token_logprobs
    from drift.train.step import _Model

    student, teacher = tiny_pair
    s_prompts = [[1, 10, 11], [1, 12, 13, 14, 15]]
    t_prompts = [[1, 20, 21, 22, 23, 24, 10, 11], [1, 12]]  # other lengths than the student's
    responses = [rng.integers(7, 100, size=n).tolist() for n in (5, 3)]
    ref = score_items(student, teacher, [ScoringItem(*x) for x in zip(s_prompts, t_prompts, responses, strict=True)])
    targets = torch.as_tensor([t for r in responses for t in r])
    for model, prompts, key in ((student, s_prompts, "student_logprob"), (teacher, t_prompts, "teacher_logprob")):
        m = _Model(model, model.config.vocab_size)
        with torch.no_grad():
            ours = token_logprobs(m.response_hidden(prompts, responses), targets, m.logits, chunk_size=2)
        np.testing.assert_allclose(ours.numpy(), np.concatenate([r[key] for r in ref]), atol=1e-5)


def test_prompt_order_is_seeded_epochs():
    steps = [prompt_indices(10, 4, seed=3, step=k) for k in range(1, 6)]
    flat = [i for s in steps for i in s]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    assert prompt_indices(10, 4, seed=3, step=2) == steps[1]
    assert prompt_indices(10, 4, seed=4, step=1) != steps[0]


def test_lr_factor_warmup_then_constant_or_cosine():
    c = _cfg(steps=10, warmup_steps=2)
    assert [lr_factor(k, c) for k in (1, 2, 3, 10)] == [0.5, 1.0, 1.0, 1.0]
    cos = _cfg(steps=10, warmup_steps=2, lr_schedule="cosine")
    values = [lr_factor(k, cos) for k in range(1, 11)]
    assert values[2] == 1.0 and all(a > b for a, b in itertools.pairwise(values[2:])) and 0 < values[-1] < 0.05


def test_config_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as err:
        TrainConfig(student="", steps=0, collect_at=("soon",), loss="forward")
    text = str(err.value)
    for needle in ("student is required", "steps must be > 0", "collect_at", "loss must be one of"):
        assert needle in text
    with pytest.raises(ConfigError, match="collect_at needs an output folder"):
        TrainConfig(**PATHS, out="")


@pytest.fixture(scope="module")
def toy_setup():
    from drift.train import load_setup

    return load_setup(TrainConfig(preset="toy", out="", collect_at=()))


def _toy_run(setup, steps: int, eval_every: int, eval_prompts: int):
    from drift.train import run_training

    cfg = TrainConfig(preset="toy", out="", collect_at=(), steps=steps, eval_every=eval_every,
                      eval_prompts=eval_prompts, eval_samples=2, scoring=ScoringOptions(progress=False))
    df = run_training({"kind": "uniform"}, 0, cfg, setup=setup)
    ev = df.dropna(subset=["eval/kl_mean"]).set_index("step")
    print(ev[["eval/kl_mean", "eval/k3_mean", "eval/accuracy", "eval/greedy_accuracy"]].to_string())
    return df, ev


def test_oracle_world_heldout_kl_goes_down_in_20_steps(toy_setup):
    """Uniform OPD at the default lr (1e-4) on the toy preset: held-out KL about halves in 20 steps."""
    before = {n: p.detach().clone() for n, p in toy_setup.student.named_parameters()}
    _, ev = _toy_run(toy_setup, steps=20, eval_every=20, eval_prompts=32)
    assert ev.loc[20, "eval/kl_mean"] < 0.75 * ev.loc[0, "eval/kl_mean"]
    # run_training trains a copy: the shared setup's student is untouched
    assert all(torch.equal(p, before[n]) for n, p in toy_setup.student.named_parameters())


@pytest.mark.slow
def test_oracle_world_learning_curve_100_steps(toy_setup):
    """~50 s on one CPU thread: held-out KL falls by > 70 % and sampled accuracy rises by > 0.3."""
    df, ev = _toy_run(toy_setup, steps=100, eval_every=20, eval_prompts=64)
    assert ev.loc[100, "eval/kl_mean"] < 0.3 * ev.loc[0, "eval/kl_mean"]
    assert ev.loc[100, "eval/accuracy"] > ev.loc[0, "eval/accuracy"] + 0.3
    assert math.isfinite(df["loss"].dropna().iloc[-1])


def test_toy_preset_fills_paths_and_sizes_but_keeps_explicit_values():
    from drift.train import resolve_preset

    cfg = resolve_preset(TrainConfig(preset="toy", collect_at=(), max_new_tokens=32))
    assert cfg.prompts.endswith("train.jsonl") and cfg.heldout_prompts.endswith("heldout.jsonl")
    assert cfg.world.endswith("world.json") and cfg.scoring.num_threads == 1
    assert cfg.max_new_tokens == 32  # given explicitly, so the preset's 64 does not apply
    assert resolve_preset(TrainConfig(preset="toy", collect_at=())).max_new_tokens == 64


class _Capture:
    """An optimizer stand-in that records the (clipped) gradients it is asked to apply and changes nothing."""

    def __init__(self, params) -> None:
        self.params, self.param_groups, self.grads = list(params), [{"lr": 0.0}], []

    def step(self) -> None:
        self.grads.append(torch.cat([p.grad.flatten() for p in self.params]))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None


@pytest.mark.parametrize("samples", [1, 3])
def test_a_step_equals_the_minimal_reference_loop_of_the_benchmark(tiny_pair, tiny_tokenizer, samples):
    """drift's step (fast sampling, shared-prefix teacher forcing) computes the loss and gradient of
    benchmarks/bench_train.py's plain loop (HF generate, full forwards + log_softmax gather, sampled loss)."""
    from benchmarks.bench_train import Reference
    from drift import schedules
    from drift.train.step import prepare_step

    student, teacher = tiny_pair
    cfg = _cfg(prompts_per_step=3, samples_per_prompt=samples, max_new_tokens=8)
    ours, theirs = copy.deepcopy(student).requires_grad_(True), copy.deepcopy(student).requires_grad_(True)
    run = prepare_step(ours, teacher, tiny_tokenizer, _prompts(5, "t"), schedules.load({"kind": "uniform"}), cfg)
    ref = Reference(theirs, teacher, [p.student_ids for p in run.train_prompts], cfg, run.gen["stop_ids"],
                    run.gen["pad_id"])
    run.optimizer, ref.optimizer = _Capture(ours.parameters()), _Capture(theirs.parameters())
    for step in (1, 2, 3):
        row, loss = run(step), ref(step)
        assert row["loss"] == pytest.approx(loss, abs=1e-5)
    for g_ours, g_ref in zip(run.optimizer.grads, ref.optimizer.grads, strict=True):
        torch.testing.assert_close(g_ours, g_ref, atol=1e-6, rtol=1e-4)
