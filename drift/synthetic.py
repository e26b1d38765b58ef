"""Synthetic drift datasets from known curves: the ground truth for recovery, coverage and scale tests.

:func:`synthetic_tokens` makes token rows in the drift schema (every column filled and mutually consistent: ``k1 =
-advantage``, exclusive prefix sums, ``rel_position = t / T``...) where one *target* metric follows a known curve of
position plus rollout-level and token-level noise::

    metric[r, t] = curve(x_t; params) + u_r + e_rt,    u_r ~ N(0, rollout_sd^2),  e_rt ~ N(0, token_sd^2)

with ``x_t = (t + 0.5) / T`` (``x="rel"``) or ``x_t = t + 0.5`` (``x="abs"``): the token's slot centre, the abscissa
that :mod:`drift.stats.bins` reports as ``x``. Response lengths are uniform integers in ``length_range`` (both ends
included); a rollout of maximal length counts as truncated.

The other metric columns are plausible random values (``realistic=True``) or all zeros (``realistic=False``, still
consistent, and compressing to almost nothing for scale benchmarks). The target column is written last, so pick a
leaf metric (``kl_reverse``, ``student_entropy``, ...) or a new column name; overwriting ``advantage`` would break
the consistency of ``k1``/``k3``/prefix sums.

:func:`true_bin_means` gives the exact population value of each bin's pooled mean for such data, which is what a
bootstrap interval should cover.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa

from drift.curves import evaluate_curve
from drift.schema import ROLLOUT_KEY, ROLLOUT_SCHEMA, TOKEN_COLUMNS, make_prompt_key
from drift.store import DatasetWriter, DriftDataset, IfExists, open_dataset

__all__ = [
    "NOISE_KINDS",
    "clustered_bin_stats",
    "synthetic_tokens",
    "token_tables",
    "true_bin_means",
    "write_synthetic_dataset",
]

_TOKEN_TYPES = {c.name: c.type for c in TOKEN_COLUMNS}
_ROLLOUT_KEY = list(ROLLOUT_KEY)


def _exclusive_cumsum(v_N: np.ndarray, starts_R: np.ndarray, rollout_N: np.ndarray) -> np.ndarray:
    """Per-rollout exclusive prefix sums of a flat token array (rollouts contiguous)."""
    v = v_N.astype(np.float64)
    c = np.cumsum(v)
    base_R = c[starts_R] - v[starts_R]
    return c - v - base_R[rollout_N]


def synthetic_tokens(family: str, params: Mapping[str, float], *, n_rollouts: int = 200,
                     length_range: tuple[int, int] = (32, 256), rollout_sd: float = 0.2, token_sd: float = 0.5,
                     x: Literal["rel", "abs"] = "rel", seed: int = 0, metric: str = "kl_reverse",
                     step: int = 0, run_id: str = "synthetic", samples_per_prompt: int = 4,
                     rollout_offset: int = 0, realistic: bool = True) -> pd.DataFrame:
    """Token rows whose ``metric`` follows ``family(x; params)`` plus rollout and token noise (see module docs).

    Args:
        family: a curve of :mod:`drift.curves` (``exponential``, ``power``, ``logistic``, ``linear``, ``hinge``).
        params: its parameters, e.g. ``{"a": 1.0, "tau": 0.2, "c": 0.3}``.
        n_rollouts: number of rollouts R.
        length_range: (min, max) response length, both included.
        rollout_sd: sd of the per-rollout random offset u_r (what makes tokens of a rollout correlated).
        token_sd: sd of the independent per-token noise.
        x: the curve's abscissa, relative ``(t + 0.5) / T`` or absolute ``t + 0.5``.
        seed: seed of everything random.
        metric: the target column (a schema column is cast to its schema type; another name adds a float64 column).
        step, run_id: identity columns.
        samples_per_prompt: rollouts per prompt id (``sample_id`` runs 0..k-1).
        rollout_offset: first rollout index (keeps ids unique when generating a dataset in several parts).
        realistic: random plausible values in the other metric columns (else zeros).

    Returns:
        A DataFrame with every token column of :data:`drift.schema.TOKEN_SCHEMA` (plus ``metric`` if new), rollouts
        contiguous and positions in order.
    """
    lo, hi = int(length_range[0]), int(length_range[1])
    if not 1 <= lo <= hi:
        raise ValueError(f"length_range must satisfy 1 <= min <= max, got {length_range}")
    if n_rollouts < 1:
        raise ValueError(f"n_rollouts must be >= 1, got {n_rollouts}")
    if x not in ("rel", "abs"):
        raise ValueError(f"x must be 'rel' or 'abs', got {x!r}")
    rng = np.random.default_rng(seed)
    R = int(n_rollouts)
    T_R = rng.integers(lo, hi + 1, size=R)
    N = int(T_R.sum())
    starts_R = np.cumsum(T_R) - T_R
    r_N = np.repeat(np.arange(R), T_R)
    t_N = np.arange(N) - starts_R[r_N]
    T_N = T_R[r_N]
    xc = (t_N + 0.5) / T_N if x == "rel" else t_N + 0.5
    u_R = rng.normal(0.0, rollout_sd, size=R)
    target = evaluate_curve(family, xc, dict(params)) + u_R[r_N] + rng.normal(0.0, token_sd, size=N)

    if realistic:
        s32 = (-rng.exponential(0.6, size=N)).astype(np.float32)
        t32 = np.minimum(s32 + rng.normal(-0.3, 0.7, size=N), 0.0).astype(np.float32)
        kl_rev = rng.gamma(2.0, 0.2, size=N)
        kl_fwd = kl_rev * rng.uniform(0.6, 1.6, size=N)
        h_s, h_t = rng.gamma(2.0, 0.5, size=N), rng.gamma(2.0, 0.5, size=N)
        rank = rng.geometric(0.55, size=N) - 1
        agree = rng.random(N) < 0.7
        overlap = rng.integers(4, 17, size=N) / 16.0
        token_id = rng.integers(3, 50_000, size=N)
    else:
        s32 = t32 = np.zeros(N, dtype=np.float32)
        kl_rev = kl_fwd = h_s = h_t = overlap = np.zeros(N)
        rank = token_id = np.zeros(N, dtype=np.int64)
        agree = np.ones(N, dtype=bool)
    adv = (t32 - s32).astype(np.float32)
    d = np.clip(adv.astype(np.float64), -20.0, 20.0)
    k3 = np.minimum(np.exp(d) - d - 1.0, 10.0)
    abs_gap = np.abs(adv.astype(np.float64))
    cum_abs = _exclusive_cumsum(abs_gap, starts_R, r_N)
    total_R = np.add.reduceat(abs_gap, starts_R)
    total_N = total_R[r_N]
    frac = np.divide(cum_abs, total_N, out=np.zeros(N), where=total_N > 0)
    finished_R = hi > T_R
    reward_R = (rng.random(R) < 0.5).astype(np.float64)
    # drawn after everything else, so the other columns stay what they were before these two columns existed
    if realistic:
        other_id = (token_id + rng.integers(1, 50_000, size=N)) % 50_000
        teacher_argmax = np.where(rank == 0, token_id, other_id)
        mass = overlap * rng.uniform(0.5, 1.0, size=N)
    else:
        teacher_argmax, mass = token_id, np.zeros(N)
    rollout_ids = np.arange(R) + int(rollout_offset)
    prompt_R = np.array([f"p{i // samples_per_prompt:07d}" for i in rollout_ids], dtype=object)

    cols: dict[str, Any] = {
        "run_id": np.full(N, run_id, dtype=object),
        "step": np.full(N, step, dtype=np.int64),
        "prompt_id": prompt_R[r_N],
        "sample_id": (rollout_ids % samples_per_prompt)[r_N].astype(np.int64),
        "prompt_key": np.array([make_prompt_key(run_id, p) for p in prompt_R], dtype=object)[r_N],
        "position": t_N.astype(np.int32),
        "response_len": T_N.astype(np.int32),
        "rel_position": t_N / T_N,
        "token_id": token_id.astype(np.int32),
        "student_logprob": s32,
        "teacher_logprob": t32,
        "advantage": adv,
        "k1": (-adv).astype(np.float32),
        "k3": k3.astype(np.float32),
        "kl_reverse": kl_rev.astype(np.float32),
        "kl_forward": kl_fwd.astype(np.float32),
        "student_entropy": h_s.astype(np.float32),
        "teacher_entropy": h_t.astype(np.float32),
        "teacher_rank": rank.astype(np.int32),
        "teacher_top1": rank == 0,
        "argmax_agree": agree,
        "topk_overlap": overlap.astype(np.float32),
        "teacher_argmax": teacher_argmax.astype(np.int32),
        "teacher_mass_student_topk": mass.astype(np.float32),
        "prefix_logratio": _exclusive_cumsum(adv, starts_R, r_N),
        "cum_abs_gap": cum_abs,
        "cum_abs_gap_frac": frac,
        "student_prefix_logprob": _exclusive_cumsum(s32, starts_R, r_N),
        "teacher_prefix_logprob": _exclusive_cumsum(t32, starts_R, r_N),
        "finished": finished_R[r_N],
        "truncated": ~finished_R[r_N],
        "reward": reward_R[r_N],
    }
    if metric in _TOKEN_TYPES:
        cols[metric] = target.astype(_TOKEN_TYPES[metric].to_pandas_dtype())
    else:
        cols[metric] = target
    return pd.DataFrame(cols)


NOISE_KINDS: tuple[str, ...] = ("iid", "ar", "walk")


def clustered_bin_stats(n_prompts: int, rollouts_per_prompt: int = 4, n_bins: int = 20, *,
                        family: str = "linear", params: Mapping[str, float] | None = None, icc: float = 0.0,
                        rollout_sd: float = 0.3, noise: str = "iid", token_sd: float = 0.5, phi: float = 0.9,
                        length_range: tuple[int, int] = (20, 80), seed: int | np.random.Generator = 0,
                        ) -> dict[str, np.ndarray]:
    """Per-prompt and per-rollout, per-bin sufficient statistics of simulated tokens (no DataFrame: fast).

    The calibration generator (``scripts/calibrate_stats.py``, ``tests/stats/test_calibration.py``). Token ``t`` of
    rollout ``r`` of prompt ``p`` (length ``T`` uniform on ``length_range``, relative bins of ``t / T``)::

        y[p, r, t] = curve(x_t) + u_p + v_r + e_rt,    x_t = (t + 0.5) / T,
        u_p ~ N(0, icc * rollout_sd^2),  v_r ~ N(0, (1 - icc) * rollout_sd^2)

    so two rollouts of one prompt have intercepts correlated ``icc`` (the intra-prompt correlation), and ``e`` is
    token noise of sd ``token_sd``: ``"iid"``; ``"ar"``, a stationary AR(1) with coefficient ``phi`` within the
    rollout; or ``"walk"``, a zero-drift random walk ``e_t = sum_{s<=t} a_s`` with ``a ~ N(0, token_sd^2)`` (like
    the prefix log-ratio S_t with mean-zero advantages: the true bin means stay ``curve(x)``, the errors are
    strongly correlated along the response).

    Returns:
        ``{"sums": K x B, "counts": K x B}`` per prompt (the cluster), ``{"rollout_sums", "rollout_counts"}``
        (R x B, one row per rollout) and ``"truth"`` (B), the population bin means (:func:`true_bin_means`).
    """
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    if not 0.0 <= icc <= 1.0:
        raise ValueError(f"icc must be in [0, 1], got {icc}")
    from scipy.signal import lfilter

    params = dict(params or {"a": 1.0, "b": 0.0})
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    K, m, B = int(n_prompts), int(rollouts_per_prompt), int(n_bins)
    R = K * m
    lo, hi = int(length_range[0]), int(length_range[1])
    T_R = rng.integers(lo, hi + 1, size=R)
    t_RT = np.arange(hi)[None, :]
    valid = t_RT < T_R[:, None]
    E = rng.normal(0.0, token_sd, size=(R, hi))
    if noise == "ar":
        E[:, 0] /= math.sqrt(1.0 - phi ** 2)  # stationary start
        E = lfilter([1.0], [1.0, -phi], E, axis=1) * math.sqrt(1.0 - phi ** 2)  # marginal sd token_sd
    elif noise == "walk":
        E = np.cumsum(E, axis=1)
    u_K = rng.normal(0.0, math.sqrt(icc) * rollout_sd, size=K)
    v_R = rng.normal(0.0, math.sqrt(1.0 - icc) * rollout_sd, size=R)
    x_RT = (t_RT + 0.5) / T_R[:, None]
    y = evaluate_curve(family, np.where(valid, x_RT, 0.5), params) + (np.repeat(u_K, m) + v_R)[:, None] + E
    b_RT = np.minimum(np.floor((t_RT / T_R[:, None]) * B), B - 1).astype(np.int64)
    idx = (np.arange(R)[:, None] * B + b_RT)[valid]
    r_sums = np.bincount(idx, weights=y[valid], minlength=R * B).reshape(R, B)
    r_counts = np.bincount(idx, minlength=R * B).reshape(R, B).astype(np.float64)
    from drift.stats.bins import BinSpec

    truth = true_bin_means(family, params, BinSpec(bins=B), length_range=(lo, hi))
    return {"sums": r_sums.reshape(K, m, B).sum(axis=1), "counts": r_counts.reshape(K, m, B).sum(axis=1),
            "rollout_sums": r_sums, "rollout_counts": r_counts, "truth": truth}


def true_bin_means(family: str, params: Mapping[str, float], spec: Any, *, length_range: tuple[int, int],
                   x: Literal["rel", "abs"] = "rel") -> np.ndarray:
    """Population value of each bin's pooled token mean for :func:`synthetic_tokens` data.

    The pooled mean of bin b is ``sum_r s_rb / sum_r n_rb``; with lengths uniform on ``length_range`` and noise of
    mean zero independent of length it converges to ``sum_T sum_{t in b} curve(x_t) / sum_T n_b(T)``, computed
    here exactly. ``spec`` is a :class:`drift.stats.BinSpec`; absolute bins take ``max_position`` = the longest
    length when the spec leaves it open. NaN marks bins no token can reach.
    """
    lo, hi = int(length_range[0]), int(length_range[1])
    edges = spec.edges() if spec.by == "rel" else spec.edges(hi)
    B = len(edges) - 1
    num, den = np.zeros(B), np.zeros(B)
    for T in range(lo, hi + 1):
        t = np.arange(T)
        if spec.by == "rel":
            b = np.minimum(np.floor((t / T) * B), B - 1).astype(int)
        else:
            t = t[t < edges[-1]]
            b = np.searchsorted(edges, t, side="right") - 1
        xc = (t + 0.5) / T if x == "rel" else t + 0.5
        np.add.at(num, b, evaluate_curve(family, xc, dict(params)))
        np.add.at(den, b, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def token_tables(df: pd.DataFrame) -> tuple[pa.Table, pa.Table]:
    """``(rollouts, tokens)`` arrow tables in the drift schema from token rows (one rollout row per rollout)."""
    df = df.sort_values([*_ROLLOUT_KEY, "position"], kind="stable") if not _is_sorted(df) else df
    tokens = pa.Table.from_pandas(df, preserve_index=False)
    target = pa.schema([pa.field(f.name, _TOKEN_TYPES.get(f.name, f.type)) for f in tokens.schema])
    tokens = tokens.cast(target)
    key = df[_ROLLOUT_KEY]
    first = ~key.duplicated().to_numpy()
    starts = np.flatnonzero(first)
    heads = df.iloc[starts]
    n = len(starts)
    offsets = pa.array(np.r_[starts, len(df)].astype(np.int32))
    response_ids = pa.ListArray.from_arrays(offsets, pa.array(df["token_id"].to_numpy(np.int32)))
    prompt_ids = pa.array([[1, 2, 3]] * n, type=pa.list_(pa.int32()))
    rollouts = pa.table({
        "run_id": pa.array(heads["run_id"].astype(str).tolist(), pa.string()),
        "step": pa.array(heads["step"].to_numpy(np.int64)),
        "prompt_id": pa.array(heads["prompt_id"].astype(str).tolist(), pa.string()),
        "sample_id": pa.array(heads["sample_id"].to_numpy(np.int64)),
        "prompt_key": pa.array((heads["prompt_key"].astype(str).tolist() if "prompt_key" in heads else
                                [make_prompt_key(str(r), str(p)) for r, p in zip(heads["run_id"], heads["prompt_id"],
                                                                                 strict=True)]), pa.string()),
        "prompt": pa.array([f"synthetic prompt {p}" for p in heads["prompt_id"]], pa.string()),
        "teacher_prompt": pa.nulls(n, pa.string()),
        "student_prompt_ids": prompt_ids,
        "teacher_prompt_ids": prompt_ids,
        "response_ids": response_ids.cast(pa.list_(pa.int32())),
        "response_text": pa.array([""] * n, pa.string()),
        "response_len": pa.array(heads["response_len"].to_numpy(np.int32)),
        "finished": pa.array(heads["finished"].to_numpy(bool)),
        "truncated": pa.array(heads["truncated"].to_numpy(bool)),
        "reward": pa.array(heads["reward"].to_numpy(np.float64)),
        "answer": pa.nulls(n, pa.string()),
    }, schema=ROLLOUT_SCHEMA)
    return rollouts, tokens


def _is_sorted(df: pd.DataFrame) -> bool:
    pos = df["position"].to_numpy()
    new = np.r_[True, pos[1:] == 0]
    return bool(np.all(pos[1:][~new[1:]] == pos[:-1][~new[1:]] + 1))


def write_synthetic_dataset(path: str | os.PathLike[str], frames: pd.DataFrame | Iterable[pd.DataFrame], *,
                            rollouts_per_part: int | None = None, if_exists: IfExists = "fail",
                            config: Mapping[str, Any] | None = None,
                            metadata: Mapping[str, Any] | None = None) -> DriftDataset:
    """Write token frames as a complete drift dataset (tokens and matching rollouts parts) via DatasetWriter.

    Args:
        path: output folder.
        frames: one DataFrame (split into parts of ``rollouts_per_part`` rollouts, default one part) or an iterable
            of DataFrames, one part each (generate big datasets part by part with ``rollout_offset``).
        if_exists: ``fail``, ``overwrite`` or ``resume`` (see :class:`~drift.store.DatasetWriter`).
        config: stored under ``config.json["config"]`` (default ``{"synthetic": True}``).
        metadata: parquet key-value metadata.
    """
    if isinstance(frames, pd.DataFrame):
        frames = _split(frames, rollouts_per_part)
    writer = DatasetWriter(path, if_exists=if_exists, config={"config": dict(config or {"synthetic": True})},
                           metadata=dict(metadata or {"synthetic": True}))
    index = -1
    for index, frame in enumerate(frames):
        rollouts, tokens = token_tables(frame)
        writer.write_part(index, rollouts, tokens)
    writer.close("complete")
    if index < 0:
        raise ValueError("no frames to write")
    return open_dataset(path)


def _split(df: pd.DataFrame, rollouts_per_part: int | None) -> list[pd.DataFrame]:
    if not rollouts_per_part:
        return [df]
    codes = df.groupby(_ROLLOUT_KEY, sort=False, observed=True).ngroup().to_numpy()
    part = codes // int(rollouts_per_part)
    return [df[part == p] for p in np.unique(part)]
