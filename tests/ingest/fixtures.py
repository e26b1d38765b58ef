"""Shared fixtures of the import tests: tiny saved models and rollouts with their exact log-probs.

Every format test writes its dump in the framework's real layout from these rollouts, imports it, and compares
the imported per-token values with the ones used to write it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.helpers import make_tiny_model, make_tiny_tokenizer


@dataclass
class Rollout:
    """One synthetic rollout: ids, the log-probs each model gives its response tokens, and labels."""

    prompt_id: str
    prompt_ids: list[int]
    response_ids: list[int]
    student_lp: np.ndarray
    teacher_lp: np.ndarray
    rollout_lp: np.ndarray
    reward: float
    finished: bool


def save_tiny_pair(root: Path) -> tuple[Path, Path]:
    """Save two different tiny models (with the tiny tokenizer) under ``root``; return (student, teacher) paths."""
    tok = make_tiny_tokenizer()
    paths = []
    for name, seed in (("student", 0), ("teacher", 1)):
        p = root / name
        if not (p / "config.json").exists():
            make_tiny_model(seed).save_pretrained(p)
            tok.save_pretrained(p)
        paths.append(p)
    return paths[0], paths[1]


def make_rollouts(student, teacher, rng: np.random.Generator, *, n_prompts: int = 4, samples: int = 2,
                  min_len: int = 3, max_len: int = 9) -> list[Rollout]:
    """Rollouts over ``n_prompts`` prompts x ``samples``: random word ids, log-probs from the two models (float64),
    a sampler log-prob that differs from the student's by small noise, random rewards."""
    from drift.ingest.checks import sampled_logprobs

    out = []
    for p in range(n_prompts):
        prompt = [1, *map(int, rng.integers(7, 103, size=int(rng.integers(2, 6))))]
        for _ in range(samples):
            n = int(rng.integers(min_len, max_len + 1))
            finished = bool(rng.random() < 0.5)
            resp = [*map(int, rng.integers(7, 103, size=n - 1)), 2 if finished else int(rng.integers(7, 103))]
            s = sampled_logprobs(student, [prompt], [resp])[0]
            t = sampled_logprobs(teacher, [prompt], [resp])[0]
            out.append(Rollout(f"p{p}", prompt, resp, s, t, s + rng.normal(0, 0.01, n), float(rng.random() < 0.5),
                               finished))
    return out
