"""Chunked scoring equals a naive full-logits implementation; alignment by response position."""

from __future__ import annotations

import numpy as np
import pytest

from drift.collect.reference import naive_score_item
from drift.collect.scoring import LMHead, ScoringItem, score_items
from drift.errors import AlignmentError
from tests.helpers import TINY_VOCAB, make_tiny_model

KEYS_ATOL = 1e-5


def _items(rng: np.random.Generator, n: int = 7, privileged: bool = False) -> list[ScoringItem]:
    out = []
    for _ in range(n):
        sp = [1, *rng.integers(7, TINY_VOCAB, rng.integers(1, 6)).tolist()]
        tp = [1, *rng.integers(7, TINY_VOCAB, rng.integers(1, 12)).tolist()] if privileged else sp
        resp = rng.integers(2, TINY_VOCAB, rng.integers(1, 25)).tolist()
        out.append(ScoringItem(sp, tp, resp))
    return out


def _near_ties(teacher, it, **kw) -> np.ndarray:
    """Per position, how many other ids have a teacher logit within 1e-5 of the target's (rank is ambiguous there:
    float32 logits of the same id differ by an ulp between a dot product and a matrix product)."""
    import torch

    ids = torch.tensor([list(it.teacher_prompt_ids) + list(it.response_ids)])
    logits = teacher(input_ids=ids).logits[0].float()[:, : kw.get("vocab_size")] / kw.get("temperature", 1.0)
    p = len(it.teacher_prompt_ids)
    rows = logits[p - 1: p - 1 + len(it.response_ids)]
    y = torch.as_tensor(list(it.response_ids))
    close = (rows - rows.gather(1, y[:, None])).abs() <= 1e-5
    return (close.sum(1) - 1).numpy()


def _assert_matches_naive(student, teacher, items, results, **kw) -> None:
    for it, res in zip(items, results, strict=True):
        ref = naive_score_item(student, teacher, it, **kw)
        assert len(res["student_logprob"]) == len(it.response_ids)
        for key, want in ref.items():
            if key == "teacher_rank":  # exact except at float32 near-ties, which are counted and allowed
                assert (np.abs(np.asarray(res[key]) - want) <= _near_ties(teacher, it, **kw)).all()
                continue
            np.testing.assert_allclose(np.asarray(res[key], dtype=np.float64), want, atol=KEYS_ATOL, rtol=0,
                                       err_msg=key)


@pytest.mark.parametrize(("chunk_size", "vocab_chunk"), [(1, 1), (3, 17), (7, 64), (64, 4096)])
@pytest.mark.parametrize("max_batch_tokens", [20, 100_000])
def test_chunked_equals_naive_with_padding_and_unequal_lengths(tiny_pair, rng, chunk_size, vocab_chunk,
                                                               max_batch_tokens):
    student, teacher = tiny_pair
    items = _items(rng)
    res = score_items(student, teacher, items, chunk_size=chunk_size, vocab_chunk=vocab_chunk,
                      max_batch_tokens=max_batch_tokens)
    _assert_matches_naive(student, teacher, items, res)


def test_privileged_teacher_prompt_aligns_on_response_tokens(tiny_pair, rng):
    student, teacher = tiny_pair
    items = _items(rng, privileged=True)
    assert any(len(i.teacher_prompt_ids) != len(i.student_prompt_ids) for i in items)
    res = score_items(student, teacher, items, chunk_size=5)
    _assert_matches_naive(student, teacher, items, res)


def test_temperature_and_topk_are_applied(tiny_pair, rng):
    student, teacher = tiny_pair
    items = _items(rng, n=3)
    res = score_items(student, teacher, items, temperature=0.7, topk=4)
    _assert_matches_naive(student, teacher, items, res, temperature=0.7, topk=4)


def test_self_scoring_is_zero_everywhere(tiny_pair, rng):
    student, _ = tiny_pair
    items = _items(rng)
    for res in score_items(student, student, items, chunk_size=4, vocab_chunk=20):
        assert np.abs(res["kl_reverse"]).max() == 0.0  # identical tiles: D = 0 and log Z_s = log Z_t exactly
        assert np.abs(res["kl_forward"]).max() == 0.0
        assert np.abs(res["advantage"]).max() == 0.0
        assert np.abs(res["cum_abs_gap"]).max() == 0.0


def test_kl_is_never_negative(tiny_pair, rng):
    student, teacher = tiny_pair
    for res in score_items(student, teacher, _items(rng, n=10)):
        assert (res["kl_reverse"] >= 0).all() and (res["kl_forward"] >= 0).all() and (res["k3"] >= 0).all()


def test_shifted_teacher_is_visible(tiny_pair, rng):
    student, _ = tiny_pair
    items = [it for it in _items(rng) if len(it.response_ids) > 2]
    shifted = score_items(student, student, items, teacher_offset=1)
    assert np.mean(np.concatenate([np.abs(r["advantage"]) for r in shifted])) > 1e-3


def test_empty_response_gives_empty_arrays(tiny_pair):
    student, teacher = tiny_pair
    res = score_items(student, teacher, [ScoringItem([1, 8], [1, 8], []), ScoringItem([1, 9], [1, 9], [10, 11])])
    assert len(res[0]["kl_reverse"]) == 0 and len(res[1]["kl_reverse"]) == 2


def test_vocab_padding_scores_over_shared_ids(rng):
    student, teacher = make_tiny_model(0), make_tiny_model(1, vocab_size=TINY_VOCAB + 25)
    items = _items(rng, n=4)
    with pytest.raises(AlignmentError, match="shared vocabulary"):
        score_items(student, teacher, items)
    res = score_items(student, teacher, items, vocab_size=TINY_VOCAB)
    _assert_matches_naive(student, teacher, items, res, vocab_size=TINY_VOCAB)


def test_token_outside_vocabulary_is_an_error(tiny_pair):
    student, teacher = tiny_pair
    with pytest.raises(AlignmentError, match="outside the scored vocabulary"):
        score_items(student, teacher, [ScoringItem([1], [1], [TINY_VOCAB + 3])])


def test_lm_head_parity_detects_unknown_output_transform():
    model = make_tiny_model(3)
    head = LMHead(model)
    assert head.check_parity([1, 8, 9, 10]) < 1e-4
    model.config.final_logit_softcapping = 0.5  # Llama ignores it, our head would apply it: must be caught
    with pytest.raises(AlignmentError, match="does not reproduce"):
        LMHead(model).check_parity([1, 8, 9, 10])
