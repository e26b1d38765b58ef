"""A noisy synthetic world with planted change points: the ground truth for the onset detector.

The teacher is often unsure on clean tokens, so the naive rule "the first token the teacher does not rank first"
fires early, while the student's leaving the support is a *change in the distribution* of the teacher's log-prob of
the sampled token at a planted position ``tau``:

* before ``tau`` (clean), each token is, independently, *confident* (prob. ``1 - p_unsure``): rank 0, surprisal
  ``-log U(0.9, 1)``; or *unsure* (prob. ``p_unsure``): surprisal ``~ Gamma(2, unsure_scale)`` nats (mean
  ``2 * unsure_scale``), rank 0 below ``log 2`` nats (teacher probability above 1/2), else uniform in 1..4;
* from ``tau`` on (off-support), each token is, independently, off the support with prob. ``p_off``: surprisal
  ``off_shift + Gamma(2, off_scale)``, rank log-uniform in 5..2000; else it is drawn as a clean token.

``tau`` is uniform in ``[tau_min, T - 4]`` for a share ``p_change`` of rollouts; the others never leave. The first
off-support token may come after ``tau`` (with prob. ``(1 - p_off)^j`` at ``tau + j``), and clean tokens reach
off-support surprisals now and then (a Gamma tail), so no detector can be exact. Every other token column is
consistent with the teacher log-probs (advantage, k1, k3, prefix sums) via :func:`drift.synthetic.synthetic_tokens`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from drift.synthetic import synthetic_tokens

__all__ = ["noisy_onset_tokens"]


def _exclusive(v_N: np.ndarray, starts_R: np.ndarray, r_N: np.ndarray) -> np.ndarray:
    c = np.cumsum(v_N)
    return c - v_N - (c - v_N)[starts_R][r_N]


def noisy_onset_tokens(n_rollouts: int = 400, *, length_range: tuple[int, int] = (24, 64), p_change: float = 0.7,
                       tau_min: int = 4, p_unsure: float = 0.4, unsure_scale: float = 0.6, p_off: float = 0.8,
                       off_shift: float = 3.0, off_scale: float = 1.5, seed: int = 0,
                       run_id: str = "noisy") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Token rows of the noisy world (module docstring) and the truth.

    Returns:
        ``(tokens, truth)``: ``tokens`` in the drift token schema (rollouts contiguous, positions in order);
        ``truth`` one row per rollout with the rollout key and ``tau`` (-1 when the rollout never leaves).
    """
    rng = np.random.default_rng(seed)
    df = synthetic_tokens("linear", {"a": 0.0, "b": 0.0}, n_rollouts=n_rollouts, length_range=length_range,
                          seed=seed + 1, run_id=run_id, metric="synthetic_target")
    df = df.drop(columns="synthetic_target")
    T_N = df["response_len"].to_numpy(np.int64)
    t_N = df["position"].to_numpy(np.int64)
    starts_R = np.flatnonzero(t_N == 0)
    T_R = T_N[starts_R]
    R, N = len(starts_R), len(df)
    r_N = np.repeat(np.arange(R), T_R)
    change_R = rng.random(R) < p_change
    tau_R = np.where(change_R, [rng.integers(tau_min, max(tau_min + 1, T - 3)) for T in T_R], -1)
    after_N = (tau_R[r_N] >= 0) & (t_N >= tau_R[r_N])

    unsure = rng.random(N) < p_unsure
    s_N = np.where(unsure, rng.gamma(2.0, unsure_scale, size=N), -np.log(rng.uniform(0.9, 1.0, size=N)))
    rank_N = np.where(unsure & (s_N > np.log(2.0)), rng.integers(1, 5, size=N), 0)
    off = after_N & (rng.random(N) < p_off)
    s_N = np.where(off, off_shift + rng.gamma(2.0, off_scale, size=N), s_N)
    rank_N = np.where(off, np.exp(rng.uniform(np.log(5), np.log(2000), size=N)).astype(np.int64), rank_N)

    t32 = (-s_N).astype(np.float32)
    s32 = df["student_logprob"].to_numpy(np.float32)
    adv = (t32 - s32).astype(np.float32)
    d = np.clip(adv.astype(np.float64), -20.0, 20.0)
    abs_gap = np.abs(adv.astype(np.float64))
    cum = _exclusive(abs_gap, starts_R, r_N)
    total = np.add.reduceat(abs_gap, starts_R)[r_N]
    df["teacher_logprob"] = t32
    df["advantage"] = adv
    df["k1"] = (-adv).astype(np.float32)
    df["k3"] = np.minimum(np.exp(d) - d - 1.0, 10.0).astype(np.float32)
    df["prefix_logratio"] = _exclusive(adv.astype(np.float64), starts_R, r_N)
    df["cum_abs_gap"] = cum
    df["cum_abs_gap_frac"] = np.divide(cum, total, out=np.zeros(N), where=total > 0)
    df["teacher_prefix_logprob"] = _exclusive(t32.astype(np.float64), starts_R, r_N)
    df["teacher_rank"] = rank_N.astype(np.int32)
    df["teacher_top1"] = rank_N == 0
    truth = df.iloc[starts_R][["run_id", "step", "prompt_id", "sample_id"]].reset_index(drop=True)
    truth["tau"] = tau_R
    return df, truth
