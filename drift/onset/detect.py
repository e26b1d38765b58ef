"""Divergence onset: where a rollout leaves the teacher's support, from the teacher's scores alone.

The signal. Every token ``y_t`` of a rollout gets a per-token *surprise* ``x_t`` (in the signal's own unit):

    surprisal  x_t = -log pi_T(y_t | x_T, y_<t)                (nats; any support with a teacher: the default)
    rank       x_t = log(1 + rank_T(y_t))                       (needs the teacher's ranking: support full/topk)
    excess     x_t = -log pi_T(y_t | ...) - H(pi_T(. | ...))    (surprisal above the teacher's own entropy; full)

Tokens with a null signal (a null column, ``teacher_rank = -1`` = unknown in imports, or ``loss_mask`` false, e.g.
tool output) are skipped: they leave the statistic as it is.

The detector is Page's one-sided CUSUM over positions:

    S_{-1} = 0,   S_t = max(0, S_{t-1} + x_t - k),   alarm a = min{t : S_t > h},
    onset = 1 + max{t' < a : S_{t'} = 0}   (0 when S never returned to 0 before the alarm)

that is, the onset is the start of the excursion that crossed ``h``: a single token with ``x_t > k + h`` fires at
once and is its own onset (a spike: the first wrong token under a near-certain teacher), a sustained shift of the
mean of ``x`` above ``k`` accumulates and is dated back to where it began. ``S_t - S_{t-1} = x_t - k`` is the
log-likelihood ratio of "``y_t`` was drawn off the teacher, from a sampler that gives every token probability
``e^{-k}``" against "``y_t`` was drawn from the teacher" for the surprisal signal, so ``k`` is the surprisal at which
a token is as likely off-support as on it and ``h`` the evidence (nats) needed to call the rollout off-support.
Closed form, used here: with ``C_t = sum_{s<=t} (x_s - k)`` and ``C_{-1} = 0``, ``S_t = C_t - min_{-1<=s<=t} C_s``.

Calibration (:func:`calibrate`, each value can instead be fixed). ``k`` and ``h`` are set from the dataset's own
in-support tokens, the *reference*: the tokens before each rollout's onset (every token of a rollout without one).

* ``k = max(k_min, q_{k_quantile}(reference x))``: increments are negative for all but ``1 - k_quantile`` of
  in-support tokens, so the statistic hugs 0 on the teacher's support however unsure the teacher is there.
* ``h = max(h_min, q_{1 - alpha}(max_t S_t))`` over ``n_null`` null rollouts whose lengths are drawn from the
  dataset's and whose tokens are drawn i.i.d. from the reference: a rollout that never leaves the support alarms
  with probability about ``alpha`` (i.i.d. tokens are an approximation; runs of unsure tokens make it larger).
* The reference depends on the onsets, so the two are iterated. Round 0 has no onsets yet (its reference is every
  token, off-support ones included), so it starts from the most sensitive detector the floors allow: ``h = h_min``
  and a contamination-robust ``k = max(k_min, median + robust_z * 1.4826 * MAD)`` of all tokens. Every later round
  recomputes ``k`` and ``h`` from the reference its predecessor's onsets define, until the onsets stop changing or
  ``rounds`` is reached (:attr:`Calibration.converged`). Starting sensitive matters: a reference still holding the
  off-support tokens would set ``k`` among them, miss the rollouts that hold them, and keep them in the reference.

The floors ``k_min`` and ``h_min`` (signal units) keep a teacher that is near-certain on its support (every
in-support surprisal ~1e-3 nats, so that quantiles alone would put ``k`` and ``h`` near 0) from alarming on noise.
With the defaults (1 and 4 nats) a lone token fires when the teacher gives it probability below ``e^{-5} = 0.7%``,
and two in a row when below ``e^{-3} = 5%`` each; ``h_min = 4`` is evidence of ``e^4 = 55 : 1``. The floors decide on
the oracle world (:mod:`drift.worlds`); on a teacher that is often unsure, ``k`` comes from the quantile. The
i.i.d. null understates the false alarms of a reference censored at the onsets (its tail is what the excursions
removed), which is one reason ``h`` has a floor above the quantile's typical value; ``docs/onset.md`` gives the
measured rates.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from drift.errors import DatasetError, SchemaError
from drift.schema import ROLLOUT_KEY

__all__ = [
    "SIGNALS",
    "SIGNAL_COLUMNS",
    "Calibration",
    "CusumResult",
    "calibrate",
    "cusum",
    "detect_onsets",
    "first_nontop",
    "null_max_statistic",
    "padded",
    "token_signal",
]

log = logging.getLogger(__name__)

SIGNALS: tuple[str, ...] = ("surprisal", "rank", "excess")
"""Per-token surprise signals (module docstring)."""

SIGNAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "surprisal": ("teacher_logprob",),
    "rank": ("teacher_rank",),
    "excess": ("teacher_logprob", "teacher_entropy"),
}
"""The token columns each signal needs."""

_MAX_CELLS = 4_000_000  # padded rollouts x positions per chunk (32 MB of float64)


# ------------------------------------------------------------------------------------------------ signal
def token_signal(tokens: pd.DataFrame, signal: str = "surprisal") -> np.ndarray:
    """The per-token surprise ``x_N`` of ``signal`` (formulas in the module docstring); NaN = skipped token.

    Args:
        tokens: token rows with the columns of :data:`SIGNAL_COLUMNS` ``[signal]`` (``loss_mask`` is honoured
            when present: false -> NaN).
        signal: one of :data:`SIGNALS`.

    Raises:
        SchemaError: a column the signal needs is missing.
    """
    if signal not in SIGNALS:
        raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
    missing = [c for c in SIGNAL_COLUMNS[signal] if c not in tokens.columns]
    if missing:
        raise SchemaError("token table", [f"missing column {c!r} (needed by the {signal!r} signal)" for c in missing])
    if signal == "surprisal":
        x_N = -tokens["teacher_logprob"].to_numpy(np.float64, na_value=np.nan)
    elif signal == "rank":
        rank_N = tokens["teacher_rank"].to_numpy(np.float64, na_value=np.nan)
        x_N = np.log1p(np.where(rank_N >= 0, rank_N, np.nan))  # -1 = unknown rank (imports): skipped
    else:
        x_N = (-tokens["teacher_logprob"].to_numpy(np.float64, na_value=np.nan)
               - tokens["teacher_entropy"].to_numpy(np.float64, na_value=np.nan))
    if "loss_mask" in tokens.columns:
        x_N = np.where(tokens["loss_mask"].to_numpy(bool, na_value=True), x_N, np.nan)
    x_N[~np.isfinite(x_N)] = np.nan
    return x_N


def padded(x_N: np.ndarray, rollout_N: np.ndarray, position_N: np.ndarray, n_rollouts: int,
           width: int | None = None) -> np.ndarray:
    """``x`` as a rollouts x positions matrix ``x_R_L`` (NaN where a rollout has no token at a position)."""
    width = int(position_N.max()) + 1 if width is None else int(width)
    out = np.full((int(n_rollouts), max(width, 1)), np.nan)
    out[rollout_N, position_N] = x_N
    return out


# ------------------------------------------------------------------------------------------------ CUSUM
@dataclass(frozen=True)
class CusumResult:
    """Per-rollout outcome of :func:`cusum` (``-1`` where a rollout never alarms).

    Attributes:
        onset: start of the excursion that crossed ``h``, one per rollout (``-1``: no alarm).
        alarm: first position with ``S_t > h`` (``-1``: no alarm).
        score: ``S`` at the alarm, else the largest ``S`` reached (0 for a rollout without tokens).
    """

    onset: np.ndarray
    alarm: np.ndarray
    score: np.ndarray


def _cusum_block(x_R_L: np.ndarray, k: float, h: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    inc = np.nan_to_num(x_R_L - k, nan=0.0)  # a skipped token leaves S unchanged
    C = np.cumsum(inc, axis=1)
    stat = C - np.minimum(np.minimum.accumulate(C, axis=1), 0.0)  # S_t = C_t - min(C_{-1} = 0, C_0..C_t)
    over = stat > h
    fired = over.any(axis=1)
    alarm = np.where(fired, over.argmax(axis=1), -1)
    L = stat.shape[1]
    before = (stat == 0.0) & (np.arange(L)[None, :] < alarm[:, None])
    last_zero = np.where(before.any(axis=1), L - 1 - before[:, ::-1].argmax(axis=1), -1)
    onset = np.where(fired, last_zero + 1, -1)
    rows = np.arange(len(stat))
    score = np.where(fired, stat[rows, np.maximum(alarm, 0)], stat.max(axis=1, initial=0.0))
    return onset, alarm, score


def cusum(x_R_L: np.ndarray, k: float, h: float) -> CusumResult:
    """Page's CUSUM of every row of ``x_R_L`` (module docstring): onset, alarm and deciding score per rollout.

    Args:
        x_R_L: per-token signal, one row per rollout, column = position; NaN = no token / skipped.
        k: reference value (signal units): tokens with ``x < k`` pull the statistic towards 0.
        h: decision threshold (signal units).
    """
    R = x_R_L.shape[0]
    onset, alarm, score = np.full(R, -1), np.full(R, -1), np.zeros(R)
    step = max(1, _MAX_CELLS // max(1, x_R_L.shape[1]))
    for lo in range(0, R, step):
        o, a, s = _cusum_block(x_R_L[lo: lo + step], float(k), float(h))
        onset[lo: lo + step], alarm[lo: lo + step], score[lo: lo + step] = o, a, s
    return CusumResult(onset, alarm, score)


def null_max_statistic(reference: np.ndarray, lengths: np.ndarray, k: float, *, n_null: int = 2000,
                       seed: int = 0) -> np.ndarray:
    """``max_t S_t`` of ``n_null`` null rollouts: lengths drawn from ``lengths``, tokens i.i.d. from ``reference``."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, dtype=np.int64)
    T = rng.choice(lengths, size=n_null)
    width = max(1, int(T.max()))
    out = np.empty(n_null)
    step = max(1, _MAX_CELLS // width)
    for lo in range(0, n_null, step):
        n = min(step, n_null - lo)
        x = rng.choice(reference, size=(n, width))
        x[np.arange(width)[None, :] >= T[lo: lo + n, None]] = np.nan
        inc = np.nan_to_num(x - k, nan=0.0)
        C = np.cumsum(inc, axis=1)
        out[lo: lo + n] = (C - np.minimum(np.minimum.accumulate(C, axis=1), 0.0)).max(axis=1)
    return out


# ------------------------------------------------------------------------------------------------ calibration
@dataclass(frozen=True)
class Calibration:
    """The ``k`` and ``h`` a detection used, and how they were found (JSON-safe via :meth:`to_dict`).

    Attributes:
        k, h: the reference value and threshold (signal units).
        k_source, h_source: ``fixed`` (given), ``quantile`` (from the reference), or ``floor`` (``k_min`` /
            ``h_min`` won).
        rounds: calibration rounds run; ``converged``: the onsets of the last two rounds were identical.
        n_reference: in-support tokens of the final reference; ``reference_quantiles``: its 50/90/95/99% points.
        null_alarm_rate: share of the null rollouts with ``max S > h`` (about ``alpha`` unless a floor won).
    """

    k: float
    h: float
    k_source: str
    h_source: str
    rounds: int
    converged: bool
    n_reference: int
    reference_quantiles: dict[str, float]
    null_alarm_rate: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _reference(x_R_L: np.ndarray, onset_R: np.ndarray) -> np.ndarray:
    cols = np.arange(x_R_L.shape[1])[None, :]
    keep = np.where(onset_R[:, None] >= 0, cols < onset_R[:, None], True)
    ref = x_R_L[keep]
    return ref[np.isfinite(ref)]


def calibrate(x_R_L: np.ndarray, lengths_R: np.ndarray, *, k: float | None = None, h: float | None = None,
              k_quantile: float = 0.95, k_min: float = 1.0, h_min: float = 4.0, alpha: float = 0.05,
              robust_z: float = 3.0, n_null: int = 2000, rounds: int = 5, seed: int = 0,
              ) -> tuple[Calibration, CusumResult]:
    """Find ``k`` and ``h`` from the dataset's in-support tokens (module docstring) and detect with them.

    Args:
        x_R_L: the padded signal (:func:`padded`).
        lengths_R: response lengths (null rollouts take theirs from these).
        k, h: fixed values (None = calibrate).
        k_quantile: quantile of the reference signal that sets ``k``.
        k_min, h_min: floors of ``k`` and ``h``.
        alpha: target share of alarms among null rollouts (sets ``h``).
        robust_z: round 0's ``k`` is ``median + robust_z * 1.4826 * MAD`` of all tokens (robust to the
            off-support tokens the reference will exclude).
        n_null: null rollouts simulated per round.
        rounds: most calibration rounds (each re-estimates the reference from the previous onsets).
        seed: seed of the null simulation.

    Returns:
        The calibration and the detection made with it.
    """
    lengths_R = np.asarray(lengths_R, dtype=np.int64)
    lengths_R = lengths_R[lengths_R > 0] if (lengths_R > 0).any() else np.ones(1, dtype=np.int64)
    every = x_R_L[np.isfinite(x_R_L)]
    if every.size == 0:
        every = np.zeros(1)
    med = float(np.median(every))
    k_now = k if k is not None else max(k_min, med + robust_z * 1.4826 * float(np.median(np.abs(every - med))))
    reference = every
    result: CusumResult | None = None
    converged, n_rounds, null_rate, h_now = False, 0, 0.0, h_min
    for r in range(max(1, rounds)):
        n_rounds = r + 1
        if r > 0 and k is None:
            k_now = max(k_min, float(np.quantile(reference, k_quantile)))
        if r == 0 and h is None:  # the reference is all tokens yet: start from the most sensitive detector
            h_now = h_min
        else:
            null = null_max_statistic(reference, lengths_R, k_now, n_null=n_null, seed=seed + r)
            h_now = h if h is not None else max(h_min, float(np.quantile(null, 1.0 - alpha)))
            null_rate = float(np.mean(null > h_now))
        new = cusum(x_R_L, k_now, h_now)
        if result is not None and np.array_equal(new.onset, result.onset):
            result, converged = new, True
            break
        result = new
        if k is not None and h is not None:
            converged = True
            break
        reference = _reference(x_R_L, result.onset)
        if reference.size == 0:
            reference = every
    assert result is not None
    qs = np.quantile(reference, [0.5, 0.9, 0.95, 0.99]) if reference.size else np.zeros(4)
    cal = Calibration(
        k=float(k_now), h=float(h_now),
        k_source="fixed" if k is not None else ("floor" if k_now <= k_min else "quantile"),
        h_source="fixed" if h is not None else ("floor" if h_now <= h_min else "quantile"),
        rounds=n_rounds, converged=converged, n_reference=int(reference.size),
        reference_quantiles={f"q{round(100 * p)}": float(v) for p, v in zip((0.5, 0.9, 0.95, 0.99), qs,
                                                                                strict=True)},
        null_alarm_rate=null_rate)
    return cal, result


# ------------------------------------------------------------------------------------------------ frames
def _rollout_index(tokens: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct rollouts of ``tokens`` (key and response_len, in order of first appearance) and each row's
    rollout index."""
    key = list(ROLLOUT_KEY)
    codes = tokens.groupby(key, sort=False, dropna=False).ngroup().to_numpy(np.int64)
    first = np.unique(codes, return_index=True)[1]
    rollouts = tokens[key].iloc[first].reset_index(drop=True)
    if "response_len" in tokens.columns:
        rollouts["response_len"] = tokens["response_len"].to_numpy()[first]
    else:
        rollouts["response_len"] = pd.Series(tokens["position"].to_numpy()).groupby(codes).max().to_numpy() + 1
    return rollouts, np.asarray(codes)


def detect_onsets(tokens: pd.DataFrame, *, signal: str = "surprisal", **calibration: float | int | None,
                  ) -> tuple[pd.DataFrame, Calibration]:
    """Onsets of every rollout in a token frame: one row per rollout, and the calibration used.

    Args:
        tokens: token rows with the rollout key, ``position``, ``response_len`` and the signal's columns.
        signal: one of :data:`SIGNALS`.
        **calibration: keyword arguments of :func:`calibrate` (``k``, ``h``, ``alpha``, ...).

    Returns:
        ``(onsets, calibration)``; ``onsets`` has the rollout key, ``response_len``, ``onset_position`` (nullable
        Int32), ``alarm_position`` (nullable Int32) and ``onset_score`` (float64).
    """
    rollouts, r_N = _rollout_index(tokens)
    x_N = token_signal(tokens, signal)
    pos = tokens["position"].to_numpy(np.int64)
    if (pos < 0).any():
        raise SchemaError("token table", [f"column 'position' holds {int((pos < 0).sum())} negative value(s)"])
    dup = pd.MultiIndex.from_arrays([r_N, pos]).duplicated()
    if dup.any():
        raise DatasetError(f"the token rows hold {int(dup.sum())} repeated (run_id, step, prompt_id, sample_id, "
                           "position) key(s); each rollout's token must appear once (merge or deduplicate the parts)")
    x_R_L = padded(x_N, r_N, pos, len(rollouts))
    cal, res = calibrate(x_R_L, rollouts["response_len"].to_numpy(np.int64), **calibration)  # type: ignore[arg-type]
    out = rollouts.copy()
    out["step"] = out["step"].astype(np.int64)
    out["sample_id"] = out["sample_id"].astype(np.int64)
    out["response_len"] = out["response_len"].astype(np.int32)
    out["onset_position"] = pd.array(np.where(res.onset >= 0, res.onset, 0), dtype="Int32")
    out.loc[res.onset < 0, "onset_position"] = pd.NA
    out["alarm_position"] = pd.array(np.where(res.alarm >= 0, res.alarm, 0), dtype="Int32")
    out.loc[res.alarm < 0, "alarm_position"] = pd.NA
    out["onset_score"] = res.score.astype(np.float64)
    return out, cal


def first_nontop(tokens: pd.DataFrame, keys: pd.DataFrame | None = None) -> np.ndarray:
    """The naive rule, for comparison: per rollout, the first position whose token is not the teacher's argmax
    (``teacher_rank > 0``), ``-1`` if none; in the order of ``keys`` (default: first appearance in ``tokens``)."""
    if "teacher_rank" not in tokens.columns:
        raise SchemaError("token table", ["missing column 'teacher_rank' (needed by the naive first-non-top rule)"])
    rollouts, r_N = _rollout_index(tokens)
    off = tokens["teacher_rank"].to_numpy(np.float64, na_value=0.0) > 0
    pos = np.where(off, tokens["position"].to_numpy(np.int64), np.iinfo(np.int64).max)
    first = pd.Series(pos).groupby(r_N).min().reindex(range(len(rollouts))).to_numpy()
    first = np.where(first == np.iinfo(np.int64).max, -1, first)
    if keys is None:
        return first
    lookup = pd.Series(first, index=pd.MultiIndex.from_frame(rollouts[list(ROLLOUT_KEY)]))
    return lookup.reindex(pd.MultiIndex.from_frame(keys[list(ROLLOUT_KEY)])).fillna(-1).to_numpy(np.int64)

