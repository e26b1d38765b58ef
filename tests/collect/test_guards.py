"""Tokenizer guards and the alignment self-check."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import drift.collect.scoring as scoring
from drift.collect.guards import alignment_self_check, check_pair
from drift.collect.scoring import ScoringItem
from drift.errors import AlignmentError, TokenizerMismatchError, TokenizerWarning
from tests.helpers import TINY_VOCAB, make_tiny_model, make_tiny_tokenizer


def test_identical_tokenizers_pass_silently(tiny_pair, tiny_tokenizer):
    student, teacher = tiny_pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = check_pair(student, teacher, tiny_tokenizer, make_tiny_tokenizer())
    assert rep.shared_vocab == TINY_VOCAB and rep.warnings == ()


def test_vocab_padding_warns_and_uses_shared_ids(tiny_tokenizer):
    student, teacher = make_tiny_model(0), make_tiny_model(1, vocab_size=TINY_VOCAB + 32)
    with pytest.warns(TokenizerWarning, match="vocabulary padding"):
        rep = check_pair(student, teacher, tiny_tokenizer)
    assert rep.shared_vocab == TINY_VOCAB and rep.teacher_vocab == TINY_VOCAB + 32


def test_different_tokenizers_stop_with_clear_error(tiny_pair, tiny_tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "</s>", "<unk>", *[f"x{i}" for i in range(99)]])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    other = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    with pytest.raises(TokenizerMismatchError, match=r"tokenizers differ.*same token ids"):
        check_pair(*tiny_pair, tiny_tokenizer, other)


def test_differing_eos_and_chat_template_warn(tiny_pair, tiny_tokenizer):
    other = make_tiny_tokenizer(chat_template="{{ messages[0]['content'] }}")
    other.eos_token = "<pad>"
    with pytest.warns(TokenizerWarning) as record:
        rep = check_pair(*tiny_pair, tiny_tokenizer, other)
    text = " ".join(str(w.message) for w in record)
    assert "EOS differs" in text and "chat templates differ" in text
    assert len(rep.warnings) == 2


def test_head_smaller_than_tokenizer_is_an_error(tiny_tokenizer):
    small = make_tiny_model(0, vocab_size=TINY_VOCAB - 10)
    with pytest.raises(TokenizerMismatchError, match="does not belong to this tokenizer"):
        check_pair(small, small, tiny_tokenizer)


def test_padding_rule_on_the_real_head_widths():
    from drift.collect.guards import check_head_rows

    check_head_rows("student", 151936, 151665)  # Qwen2.5 <= 3B
    check_head_rows("teacher", 152064, 151665)  # Qwen2.5 >= 7B: vocabulary padding, accepted
    with pytest.raises(TokenizerMismatchError, match="more than vocabulary padding"):
        check_head_rows("teacher", 49152, 133)  # SmolLM2's head against the oracle world's tokenizer
    check_head_rows("teacher", 133 + 1024, 133)  # max(1024, 1%) is the slack
    with pytest.raises(TokenizerMismatchError, match="more than vocabulary padding"):
        check_head_rows("teacher", 133 + 1025, 133)


def test_padded_head_warns_and_scores_but_a_foreign_head_stops(tiny_tokenizer):
    s, padded, wide = make_tiny_model(0), make_tiny_model(1, vocab_size=TINY_VOCAB + 25), \
        make_tiny_model(2, vocab_size=TINY_VOCAB + 1025)
    with pytest.warns(TokenizerWarning, match="vocabulary padding"):
        rep = check_pair(s, padded, tiny_tokenizer)
    assert rep.shared_vocab == TINY_VOCAB
    with pytest.raises(TokenizerMismatchError, match="more than vocabulary padding"):
        check_pair(s, wide, tiny_tokenizer)


def test_tokenizer_override_is_compared_with_each_models_own(tiny_pair, tiny_tokenizer):
    other = make_tiny_tokenizer()
    other.add_tokens(["zz_extra"])  # one more token: another vocabulary
    with pytest.raises(TokenizerMismatchError, match=r"override \(--tokenizer\) and teacher tokenizers differ"):
        check_pair(*tiny_pair, tiny_tokenizer, own_tokenizers={"student": tiny_tokenizer, "teacher": other})
    rep = check_pair(*tiny_pair, tiny_tokenizer, own_tokenizers={"student": make_tiny_tokenizer(), "teacher": None})
    assert rep.tokenizer_size == TINY_VOCAB


def _items(rng: np.random.Generator) -> list[ScoringItem]:
    return [ScoringItem([1, 9, 10], [1, 4, 12, 2, 9, 10], rng.integers(7, TINY_VOCAB, 12).tolist())
            for _ in range(4)]


@pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")
def test_self_check_passes_on_a_correct_scorer(tiny_pair, rng):
    rep = alignment_self_check(*tiny_pair, _items(rng), vocab_size=TINY_VOCAB)
    assert rep.self_max_kl < 1e-6 and rep.self_max_abs_advantage == 0.0
    assert rep.shifted_mean_abs_advantage > 1e-3
    assert set(rep.offset_teacher_logprob) == {-1, 0, 1}


def test_self_check_detects_a_one_token_teacher_shift(tiny_pair, rng, monkeypatch):
    """Simulate the classic bug: the teacher side is read one position late. The self-check must fire."""
    real = scoring.gather_response_hidden
    calls = {"n": 0}

    def buggy(lm, prompts, responses, offset=0):
        calls["n"] += 1
        teacher_side = calls["n"] % 2 == 0  # score_items gathers student, then teacher, per batch
        return real(lm, prompts, responses, offset + (1 if teacher_side else 0))

    monkeypatch.setattr(scoring, "gather_response_hidden", buggy)
    with pytest.raises(AlignmentError, match="self-check failed"):
        alignment_self_check(*tiny_pair, _items(rng), vocab_size=TINY_VOCAB)


def test_self_check_refuses_when_a_shift_would_be_invisible(tiny_tokenizer, rng):
    import torch

    flat = make_tiny_model(0)
    with torch.no_grad():  # a model whose output ignores its input: shifts are undetectable
        flat.lm_head.weight.zero_()
    with pytest.raises(AlignmentError, match="inconclusive"):
        alignment_self_check(flat, flat, _items(rng), vocab_size=TINY_VOCAB)


def test_stored_ids_are_checked_against_the_scoring_vocabulary(tiny_tokenizer):
    import warnings

    from drift.collect.guards import check_stored_tokenizer
    from drift.models import tokenizer_hash, vocab_hash

    ids = [7, 8, 9, 2]
    rows = [{"prompt_id": "a", "sample_id": 0, "response_ids": ids,
             "response_text": tiny_tokenizer.decode(ids, skip_special_tokens=False)}]
    same = {"vocab_hash": vocab_hash(tiny_tokenizer), "hash": tokenizer_hash(tiny_tokenizer)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_stored_tokenizer(same, tiny_tokenizer, rows, where="ds")  # identical: silent
    other = make_tiny_tokenizer()
    other.add_tokens(["zz_extra"])
    with pytest.raises(TokenizerMismatchError, match="vocabulary hash"):
        check_stored_tokenizer(same, other, rows, where="ds")
    # same vocabulary, another chat template (a later checkpoint): a warning, not an error
    retemplated = make_tiny_tokenizer(chat_template="{{ messages[0]['content'] }}")
    with pytest.warns(TokenizerWarning, match="chat template or special tokens changed"):
        check_stored_tokenizer(same, retemplated, rows, where="ds")
    # no recorded vocabulary hash: the stored ids must decode to the stored text
    with pytest.warns(TokenizerWarning, match="no vocabulary hash"):
        check_stored_tokenizer({}, tiny_tokenizer, rows, where="ds")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tests.helpers import TINY_CHAT_TEMPLATE

    shuffled = {t: (i * 7) % len(tiny_tokenizer) for t, i in tiny_tokenizer.get_vocab().items()}
    raw = Tokenizer(models.WordLevel(vocab=shuffled, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    foreign = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>")
    foreign.chat_template = TINY_CHAT_TEMPLATE
    with pytest.warns(TokenizerWarning), pytest.raises(TokenizerMismatchError, match="decode to"):
        check_stored_tokenizer({}, foreign, rows, where="ds")
