"""What a schedule does to one rollout: weights along a synthetic constant-|A| response, by decile."""

from __future__ import annotations

import numpy as np

from drift.schedules.base import Schedule

__all__ = ["SYNTHETIC_ADVANTAGE", "SYNTHETIC_LENGTH", "SYNTHETIC_TEACHER_LOGPROB", "decile_weights", "weight_profile"]

SYNTHETIC_LENGTH = 100
SYNTHETIC_ADVANTAGE = -1.0  # |A| = 1 everywhere; the teacher a little less sure than the student, as usual
SYNTHETIC_TEACHER_LOGPROB = -1.0


def weight_profile(schedule: Schedule, *, length: int = SYNTHETIC_LENGTH, step: int | None = None,
                   total_steps: int | None = None) -> np.ndarray:
    """Weights of one synthetic rollout of ``length`` tokens with A_t = -1 and log pi_T(y_t) = -1 everywhere."""
    adv = np.full((1, length), SYNTHETIC_ADVANTAGE)
    teacher = np.full((1, length), SYNTHETIC_TEACHER_LOGPROB)
    kw = {"step": step, "total_steps": total_steps} if schedule.needs_step else {}
    return np.asarray(schedule.weights(adv, teacher_logprob=teacher, **kw), dtype=float)[0]


def decile_weights(schedule: Schedule, *, length: int = SYNTHETIC_LENGTH, step: int | None = None,
                   total_steps: int | None = None) -> np.ndarray:
    """Mean weight in each tenth of the synthetic rollout (10 values, first decile first)."""
    w = weight_profile(schedule, length=length, step=step, total_steps=total_steps)
    edges = np.linspace(0, length, 11).round().astype(int)
    return np.array([w[edges[i]: edges[i + 1]].mean() for i in range(10)])
