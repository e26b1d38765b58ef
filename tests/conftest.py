"""Shared fixtures: offline mode, a seeded RNG that prints its seed, tiny models, the oracle world."""

from __future__ import annotations

import os
import zlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A numpy Generator seeded from the test name; the seed is printed so a failure can be replayed."""
    seed = zlib.crc32(request.node.nodeid.encode())
    print(f"[rng seed {seed}]")
    return np.random.default_rng(seed)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


from tests.helpers import make_tiny_model, make_tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="module")
def tiny_pair():
    """(student, teacher): two different tiny random models sharing the tiny tokenizer's ids."""
    return make_tiny_model(0), make_tiny_model(1)
