"""The trainer's fast paths against the plain ones: shared-prefix teacher forcing, length groups, fast sampling."""

from __future__ import annotations

import copy
import itertools
import logging

import numpy as np
import pytest
import torch

from drift.collect.rollouts import sample_responses
from drift.collect.scoring import LMHead, gather_response_hidden
from drift.train.forward import TeacherForcing, length_groups, shared_prefix_hidden
from drift.train.loss import token_logprobs


def _cost(groups: list[list[int]], lengths: list[int], group_cost: int) -> int:
    return sum(len(g) * max(lengths[i] for i in g) + group_cost for g in groups)


def _brute_force(lengths: list[int], group_cost: int, max_groups: int) -> int:
    """Cheapest split of the sorted distinct lengths into at most max_groups contiguous runs, by enumeration."""
    distinct = sorted({n for n in lengths if n > 0})
    best = None
    for g in range(1, min(max_groups, len(distinct)) + 1):
        for cuts in itertools.combinations(range(1, len(distinct)), g - 1):
            bounds = [0, *cuts, len(distinct)]
            cost = 0
            for lo, hi in itertools.pairwise(bounds):
                members = [n for n in lengths if distinct[lo] <= n <= distinct[hi - 1]]
                cost += len(members) * distinct[hi - 1] + group_cost
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("trial", range(12))
def test_length_groups_is_the_cheapest_split(rng, trial):
    lengths = rng.integers(0, 40, size=int(rng.integers(1, 30))).tolist()
    group_cost, max_groups = int(rng.choice([0, 16, 64, 512])), int(rng.integers(1, 5))
    groups = length_groups(lengths, group_cost=group_cost, max_groups=max_groups)
    flat = sorted(i for g in groups for i in g)
    assert flat == [i for i, n in enumerate(lengths) if n > 0]  # every non-empty row once, empty rows left out
    assert len(groups) <= max_groups
    if flat:
        assert _cost(groups, lengths, group_cost) == _brute_force(lengths, group_cost, max_groups)
    else:
        assert groups == []


def test_one_long_row_gets_its_own_group():
    lengths = [30] * 60 + [64] * 4
    groups = length_groups(lengths)
    assert sorted(len(g) for g in groups) == [4, 60]


def test_many_distinct_lengths_use_candidate_cuts_and_cover_every_row(rng):
    lengths = rng.integers(1, 5000, size=2000).tolist()  # > 256 distinct lengths: approximate cuts
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(2000)) and 1 < len(groups) <= 4
    spans = [(min(lengths[i] for i in g), max(lengths[i] for i in g)) for g in groups]
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))  # groups are disjoint length ranges, in order
    assert _cost(groups, lengths, 512) < _cost([list(range(2000))], lengths, 512)


def _batch(rng, prompts: list[list[int]], samples: int, lengths: tuple[int, ...]) -> tuple[list, list]:
    rows = [p for p in prompts for _ in range(samples)]
    responses = [rng.integers(3, 100, size=int(rng.choice(lengths))).tolist() for _ in rows]
    return rows, responses


def _hidden_and_grad(model, fn, prompts, responses):
    model.zero_grad(set_to_none=True)
    lm = LMHead(model)
    hidden = fn(lm, prompts, responses)
    targets = torch.as_tensor([t for r in responses for t in r])
    lp = token_logprobs(hidden, targets, lambda h: lm.logits(h), chunk_size=7)
    (lp * torch.linspace(0.5, 1.5, len(lp))).sum().backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return hidden.detach(), grad


def test_shared_prefix_hidden_and_gradient_equal_the_padded_forward(tiny_pair, rng):
    model = copy.deepcopy(tiny_pair[0]).requires_grad_(True)
    prompts = [[1, 10, 11], [1, 12, 13, 14, 15, 16, 17], [1, 20], [1, 12, 13, 14, 15, 16, 17, 18, 19]]
    rows, responses = _batch(rng, prompts, 3, (1, 2, 5, 9, 23))
    responses[0] = [42]  # a one-token response: predicted by the prompt's last position only
    plain = _hidden_and_grad(model, gather_response_hidden, rows, responses)
    shared = _hidden_and_grad(model, shared_prefix_hidden, rows, responses)
    assert shared[0].shape == plain[0].shape == (sum(map(len, responses)), model.config.hidden_size)
    np.testing.assert_allclose(shared[0].numpy(), plain[0].numpy(), atol=2e-5)
    np.testing.assert_allclose(shared[1].numpy(), plain[1].numpy(), atol=2e-5, rtol=1e-4)


def test_shared_prefix_hidden_with_distinct_prompts_and_unordered_repeats(tiny_pair, rng):
    model = tiny_pair[1]
    rows = [[1, 5, 6, 7], [1, 8], [1, 5, 6, 7], [1, 9, 9, 9, 9, 9], [1, 8]]  # repeats that are not adjacent
    responses = [rng.integers(3, 100, size=n).tolist() for n in (4, 12, 1, 7, 3)]
    with torch.no_grad():
        np.testing.assert_allclose(shared_prefix_hidden(LMHead(model), rows, responses).numpy(),
                                   gather_response_hidden(LMHead(model), rows, responses).numpy(), atol=2e-5)


def test_teacher_forcing_falls_back_when_the_shared_path_disagrees(tiny_pair, rng, monkeypatch, caplog):
    import drift.train.forward as fwd

    model = tiny_pair[0]
    rows, responses = _batch(rng, [[1, 10, 11], [1, 12, 13]], 2, (3, 6))
    good = TeacherForcing(LMHead(model))
    with torch.no_grad():
        good.hidden(rows, responses)
    assert good.mode == "shared"

    real = fwd.shared_prefix_hidden
    monkeypatch.setattr(fwd, "shared_prefix_hidden", lambda lm, p, r: real(lm, p, r) + 0.1)
    bad = TeacherForcing(LMHead(model))
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="drift.train.forward"):
        out = bad.hidden(rows, responses)
        ref = gather_response_hidden(LMHead(model), rows, responses)
    assert bad.mode == "plain" and "plain forward" in caplog.text
    torch.testing.assert_close(out, ref)


def _gqa_model():
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return AutoModelForCausalLM.from_config(cfg).eval()


def _sliding_model():
    from transformers import AutoModelForCausalLM, MistralConfig

    torch.manual_seed(4)
    cfg = MistralConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=4,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.mark.parametrize("which", ["tiny", "gqa", "sliding"])
@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_shared_prompt_samples_equal_plain_generate(tiny_pair, which, temperature, top_p):
    model = {"tiny": lambda: tiny_pair[0], "gqa": _gqa_model, "sliding": _sliding_model}[which]()
    prompts = [[1, 10, 11], [1, 12, 13, 14, 15, 16], [1, 20, 21, 22]]
    rows = [p for p in prompts for _ in range(4)] + [[1, 30, 31, 32, 33]]  # repeats and one distinct row
    kw = {"stop_ids": [2], "pad_id": 0, "max_new_tokens": 12, "temperature": temperature, "top_p": top_p,
          "batch_size": 8, "seed": 11}
    plain = sample_responses(model, rows, **kw)
    fast = sample_responses(model, rows, share_prompts=True, **kw)
    assert fast == plain
    assert sample_responses(model, [[1]] * 3, share_prompts=True, **kw) == sample_responses(model, [[1]] * 3, **kw)


@pytest.mark.parametrize(("which", "fast"), [("tiny", True), ("gqa", True), ("sliding", False)])
def test_fast_paths_are_taken_only_for_plain_full_attention_caches(tiny_pair, rng, which, fast):
    from drift.collect.rollouts import _shared_prefill

    model = {"tiny": lambda: tiny_pair[0], "gqa": _gqa_model, "sliding": _sliding_model}[which]()
    rows, responses = _batch(rng, [[1, 10, 11], [1, 12, 13, 14]], 2, (2, 5))
    with torch.inference_mode():
        assert bool(_shared_prefill(model, rows, 0, torch.device("cpu"))) is fast
    forcing = TeacherForcing(LMHead(model))
    with torch.no_grad():
        out = forcing.hidden(rows, responses)
        torch.testing.assert_close(out, gather_response_hidden(LMHead(model), rows, responses), atol=2e-5, rtol=1e-4)
    assert forcing.mode == ("shared" if fast else "plain")
