"""GPU tier: the CUDA path of chunked scoring (float32 parity, bfloat16 sanity). Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drift.collect.reference import naive_score_item
from drift.collect.scoring import ScoringItem, score_items
from tests.helpers import TINY_VOCAB, make_tiny_model

pytestmark = pytest.mark.gpu


def _items(rng: np.random.Generator) -> list[ScoringItem]:
    return [ScoringItem([1, *rng.integers(7, TINY_VOCAB, 3).tolist()], [1, *rng.integers(7, TINY_VOCAB, 6).tolist()],
                        rng.integers(2, TINY_VOCAB, int(rng.integers(5, 60))).tolist()) for _ in range(6)]


def test_cuda_float32_matches_cpu_naive(rng):
    cpu = [make_tiny_model(0), make_tiny_model(1)]
    gpu = [make_tiny_model(0).cuda(), make_tiny_model(1).cuda()]
    items = _items(rng)
    got = score_items(*gpu, items, chunk_size=7)
    for it, res in zip(items, got, strict=True):
        ref = naive_score_item(*cpu, it)
        for key in ("student_logprob", "teacher_logprob", "kl_reverse", "kl_forward", "student_entropy",
                    "prefix_logratio", "cum_abs_gap"):
            np.testing.assert_allclose(np.asarray(res[key], np.float64), ref[key], atol=1e-4, err_msg=key)


def test_cuda_bfloat16_is_sane(rng):
    s = make_tiny_model(0).to("cuda", torch.bfloat16)
    t = make_tiny_model(1).to("cuda", torch.bfloat16)
    items = _items(rng)
    for res in score_items(s, t, items, chunk_size=16):
        assert np.isfinite(res["kl_reverse"]).all() and (res["kl_reverse"] >= 0).all()
    same_prompt = [ScoringItem(it.student_prompt_ids, it.student_prompt_ids, it.response_ids) for it in items]
    for res in score_items(s, s, same_prompt):
        assert np.abs(res["kl_reverse"]).max() == 0.0 and np.abs(res["advantage"]).max() == 0.0
