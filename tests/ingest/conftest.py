"""Fixtures of the import tests: the saved tiny student/teacher pair and the loaded models."""

from __future__ import annotations

import pytest

from tests.ingest.fixtures import save_tiny_pair


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(student path, teacher path, student model, teacher model): two different tiny models, saved once."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("models")
    s, t = save_tiny_pair(root)
    return s, t, AutoModelForCausalLM.from_pretrained(s).eval(), AutoModelForCausalLM.from_pretrained(t).eval()
