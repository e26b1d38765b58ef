"""Analysis of a continuation probe: accuracy by prefix ratio, the gap, its direction, and reliability AUROCs.

Unit of resampling: the *cluster*, by default the **prompt** (``cluster="prompt"``; ``"rollout"`` is selectable).
The probe's cuts of one prompt are not independent: its rollouts share the prompt's difficulty, and their ratio-0
cuts are near-duplicates (the bare prompt, continued k times by the same models). Clusters are the distinct values
of :func:`drift.schema.cluster_key_columns` (``prompt_key`` when the rows carry it, else ``(run_id, prompt_id)``).
Every interval is a percentile interval of a cluster bootstrap following the protocol of
:mod:`drift.stats.bootstrap` (replicate i draws ``rng.integers(0, C, size=C)``), and the same resamples are shared
by every quantity of one analysis. Every output records ``cluster`` and ``n_clusters``; below ``min_clusters``
(default 10) the direction verdict is ``insufficient``.

- Accuracy at ratio r for a model: judged continuations that succeeded / judged continuations (rows whose
  ``success`` is null are left out), pooled: ``sum_c s_c / sum_c n_c``.
- Gap: teacher accuracy - student accuracy, bootstrapped jointly (both accuracies from the same resample).
- Direction: Spearman rho of teacher accuracy against the ratio with its cluster-bootstrap interval
  (:func:`drift.stats.direction.direction_from_stats`).
- AUROC: the label is the success of each *teacher continuation* at the cut (a cut whose k continuations had s
  successes contributes s positives and k - s negatives, all with the cut's predictor values; a fractional score y
  counts y positive and 1 - y negative). ``AUROC(s) = P(s_i > s_j | i success, j failure)``, ties 1/2.

Orientation. Every predictor is scored so that *higher means better supervision*, with the sign declared a priori
from what the method that uses it assumes (:data:`PREDICTORS`), never chosen from the data: ``-t/T`` (IW-OPD's
premise, §4: later tokens merit less budget), ``-C_t/C_T`` (IW-OPD's own weight ``1 + gamma (1 - C_t/C_T)``),
``-C_t``, ``+S_t`` (the ideal weight ``r_t^alpha = exp(alpha S_t)`` grows with S_t), ``+S_t/C_T``, ``-H_T`` (EOPD:
an uncertain teacher needs help), ``+top-k overlap``, ``-KL(pi_S || pi_T)``. AUROC > 0.5 means the declared
direction holds. When the interval lies below 0.5 the data prefer the *opposite* sign: that is reported as a finding
(``reversed``) and printed as the flipped score with ``1 - AUROC``, never as a bare AUROC < 0.5.

Per-rollout normalization. ``C_t/C_T`` (and ``S_t/C_T``) divide by the rollout's total ``C_T = sum_k |A_k|`` (the
code convention, as the token column ``cum_abs_gap_frac``), read from the probed dataset's tokens when available,
else approximated by the largest ``C_t`` among the rollout's cuts (recorded as ``normalizer``).

Comparing IW-OPD's signal with position (:func:`compare_scores`). Within one rollout ``C_t/C_T`` never decreases,
so it orders a rollout's cuts exactly like ``t/T``: a within-rollout AUROC ties by construction. Raw ``C_t`` wins
*between* prompts on difficulty alone (hard prompts accumulate |A| and fail everywhere). drift therefore compares

(a) **same prompt, different rollouts**: ``AUROC_sp(s) = sum_c W_c(s) / sum_c N_c`` over pairs (success i, failure
    j) of one prompt c from different rollouts (prompt difficulty cancels, while ``C_t/C_T`` and ``t/T`` can
    disagree because the rollouts drift at different places), prompts resampled;
(b) **pooled** over all cuts, per-rollout-normalized signals only, clusters resampled;

each with a *paired* bootstrap interval of the difference ``Delta = AUROC(candidate) - AUROC(reference)`` (both
AUROCs on the same replicate). Non-overlapping marginal intervals are not a test of a difference; this is.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drift.schema import CLUSTER_UNITS, ROLLOUT_KEY, cluster_key_columns
from drift.stats.bootstrap import percentile_interval, ratio_replicates, resample_counts
from drift.stats.direction import DirectionResult, direction_from_stats
from drift.store import DriftDataset, open_dataset

__all__ = ["DEFAULT_CLUSTER", "DEFAULT_MIN_CLUSTERS", "PREDICTORS", "Predictor", "ProbeAnalysis", "analyze",
           "auroc", "auroc_bootstrap", "compare_scores", "flip_text", "load_analysis"]

DEFAULT_CLUSTER = "prompt"
"""Resampling unit of the probe analysis (all rollouts of a prompt move together)."""

DEFAULT_MIN_CLUSTERS = 10
"""Fewer clusters than this: the direction verdict is ``insufficient`` (and ``recommend`` fits nothing)."""


@dataclass(frozen=True)
class Predictor:
    """A reliability predictor, oriented a priori so that a higher score means better supervision.

    Attributes:
        column: the value at the cut (a continuations column, or a derived one: ``cum_abs_gap_frac``,
            ``prefix_logratio_frac``).
        sign: +1 or -1; the score is ``sign * column``.
        score: how the score is written (e.g. ``-t/T``).
        flipped: how the opposite score is written (``+t/T``).
        why: the a priori reason for the sign (what the method using the signal assumes).
        normalized: divided per rollout (free of the prompt's |A| scale).
    """

    column: str
    sign: float
    score: str
    flipped: str
    why: str
    normalized: bool = False


PREDICTORS: dict[str, Predictor] = {
    "neg_rel_position": Predictor("rel_position", -1.0, "-t/T", "+t/T", "IW-OPD's premise (§4): later tokens merit "
                                  "less budget (the external-teacher direction)", normalized=True),
    "neg_cum_abs_gap_frac": Predictor("cum_abs_gap_frac", -1.0, "-C_t/C_T", "+C_t/C_T", "IW-OPD's own weight "
                                      "1 + gamma (1 - C_t/C_T) falls as |A| accumulates", normalized=True),
    "neg_cum_abs_gap": Predictor("cum_abs_gap", -1.0, "-C_t", "+C_t", "more accumulated |A| = more drift (raw: it "
                                 "also carries the prompt's difficulty, so it is context, not a decision signal)"),
    "prefix_logratio": Predictor("prefix_logratio", 1.0, "+S_t", "-S_t", "the ideal prefix weight "
                                 "r_t^alpha = exp(alpha S_t) grows with S_t (§4)"),
    "prefix_logratio_frac": Predictor("prefix_logratio_frac", 1.0, "+S_t/C_T", "-S_t/C_T", "S_t per rollout "
                                      "scale: a prefix the teacher finds relatively likely", normalized=True),
    "neg_teacher_entropy": Predictor("teacher_entropy", -1.0, "-H_T", "+H_T", "EOPD: an uncertain (high-entropy) "
                                     "teacher is the one that needs help"),
    "topk_overlap": Predictor("topk_overlap", 1.0, "+top-k overlap", "-top-k overlap", "teacher and student "
                              "agreeing on the top-k = less drift"),
    "neg_kl_reverse": Predictor("kl_reverse", -1.0, "-KL(S||T)", "+KL(S||T)", "a larger KL(pi_S || pi_T) at the "
                                "cut = more disagreement"),
}
"""Reported score -> its a priori orientation (a higher score should mean better supervision)."""

_SOURCE_COLUMNS = ("rel_position", "cum_abs_gap", "prefix_logratio", "teacher_entropy", "topk_overlap",
                   "kl_reverse")
_COMPARISONS: dict[str, tuple[str, str]] = {
    "iw_opd_vs_position": ("neg_cum_abs_gap_frac", "neg_rel_position"),
    "prefix_logratio_frac_vs_position": ("prefix_logratio_frac", "neg_rel_position"),
}
"""The paired comparisons of :attr:`ProbeAnalysis.comparisons`: name -> (candidate, reference) predictor keys."""


def flip_text(score: str, flipped: str, est: float, lo: float, hi: float) -> str:
    """An AUROC as printed: ``score a [lo, hi]``, or the flipped score with 1 - a when a < 0.5 (stated as such)."""
    if not math.isfinite(est):
        return f"{score} n/a"
    if est >= 0.5:
        return f"{score} {est:.3f} [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else f"{score} {est:.3f}"
    body = f"{flipped} {1 - est:.3f}" + (f" [{1 - hi:.3f}, {1 - lo:.3f}]" if math.isfinite(lo) else "")
    return f"{body} (flipped: the declared {score} scores {est:.3f})"


# ------------------------------------------------------------------------------------------------ AUROC
def _auc_groups(pos_b_G: np.ndarray, neg_b_G: np.ndarray) -> np.ndarray:
    """AUROC per row from positive / negative weights per score group (groups sorted by ascending score)."""
    below = np.cumsum(neg_b_G, axis=1) - neg_b_G
    num = (pos_b_G * (below + 0.5 * neg_b_G)).sum(axis=1)
    den = pos_b_G.sum(axis=1) * neg_b_G.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def auroc(scores: Sequence[float], labels: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """Mann-Whitney AUROC: P(score of a positive > score of a negative), ties 1/2; NaN without both classes.

    ``labels`` in [0, 1] (a fractional label y counts y positive, 1 - y negative); ``weights`` multiply both.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=float)
    _, g = np.unique(s, return_inverse=True)
    G = int(g.max()) + 1 if len(g) else 0
    pos = np.bincount(g, weights=w * y, minlength=G)[None, :]
    neg = np.bincount(g, weights=w * (1.0 - y), minlength=G)[None, :]
    return float(_auc_groups(pos, neg)[0])


def _pooled_replicates(scores: Sequence[np.ndarray], labels: np.ndarray, cluster: np.ndarray, n_clusters: int,
                       n_boot: int, seed: int | np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pooled AUROC of each score and its cluster-bootstrap replicates on *shared* resamples.

    Returns ``(est_S, reps_b_S)``: replicate b of every score uses the same cluster counts ``w_b_C``, so the
    replicates of a difference are the differences of the replicates (a paired bootstrap).
    """
    from scipy import sparse

    y = np.asarray(labels, dtype=float)
    c = np.asarray(cluster, dtype=np.int64)
    mats = []
    for s in scores:
        _, g = np.unique(np.asarray(s, dtype=float), return_inverse=True)
        G = int(g.max()) + 1 if len(g) else 1
        mats.append((sparse.csr_matrix((y, (c, g)), shape=(n_clusters, G)),
                     sparse.csr_matrix((1.0 - y, (c, g)), shape=(n_clusters, G))))
    est = np.array([_auc_groups(np.asarray(p.sum(axis=0)), np.asarray(n.sum(axis=0)))[0] for p, n in mats])
    if n_boot == 0 or n_clusters == 0 or len(y) == 0:
        return est, np.empty((0, len(mats)))
    widest = max(p.shape[1] for p, _ in mats)
    block = max(1, min(256, 4_000_000 // widest))
    reps = []
    for w_b_C in resample_counts(n_clusters, n_boot, seed, block_elements=block * n_clusters):
        reps.append(np.stack([_auc_groups(np.asarray((p.T @ w_b_C.T).T), np.asarray((n.T @ w_b_C.T).T))
                              for p, n in mats], axis=1))
    return est, np.concatenate(reps)


def auroc_bootstrap(scores: np.ndarray, labels: np.ndarray, cluster: np.ndarray, n_clusters: int, n_boot: int,
                    seed: int | np.random.Generator = 0, ci: float = 0.95) -> tuple[float, float, float]:
    """AUROC with a cluster-bootstrap percentile interval: (estimate, ci_low, ci_high).

    Args:
        scores, labels: one entry per observation (labels in [0, 1]).
        cluster: the cluster index (0..n_clusters-1) of each observation (a prompt, or a rollout); clusters are
            resampled, observations follow their cluster.
        n_clusters: C, the number of clusters resampled (the same C as every other bootstrap of the analysis, so
            the resamples match when the seed does).
        n_boot, seed, ci: resamples, their seed (protocol of :func:`drift.stats.bootstrap.resample_counts`),
            interval level.
    """
    if len(np.asarray(scores)) == 0:
        return math.nan, math.nan, math.nan
    est, reps = _pooled_replicates([np.asarray(scores, float)], np.asarray(labels, float), cluster, n_clusters,
                                   n_boot, seed)
    if n_boot == 0:
        return float(est[0]), math.nan, math.nan
    lo, hi = percentile_interval(reps, ci)
    return float(est[0]), float(lo[0]), float(hi[0])


def _group_wins(scores: np.ndarray, labels: np.ndarray, group: np.ndarray, n_groups: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per group g: ``W_g = sum_{i, j in g} y_i (1 - y_j) ([s_i > s_j] + [s_i = s_j] / 2)`` and
    ``N_g = (sum_{i in g} y_i) (sum_{j in g} (1 - y_j))`` (every ordered pair, an observation with itself included:
    with 0/1 labels that pair weighs 0)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    g = np.asarray(group, dtype=np.int64)
    if len(s) == 0:
        return np.zeros(n_groups), np.zeros(n_groups)
    order = np.lexsort((s, g))
    s, y, g = s[order], y[order], g[order]
    new = np.r_[True, (g[1:] != g[:-1]) | (s[1:] != s[:-1])]
    level = np.cumsum(new) - 1
    lg = g[new]
    P = np.bincount(level, weights=y)
    N = np.bincount(level, weights=1.0 - y)
    cum = np.cumsum(N)
    first = np.r_[True, lg[1:] != lg[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(len(lg)), 0))
    base = np.where(start > 0, cum[start - 1], 0.0)
    below = cum - N - base
    W = np.bincount(lg, weights=P * (below + 0.5 * N), minlength=n_groups)
    Pg = np.bincount(lg, weights=P, minlength=n_groups)
    Ng = np.bincount(lg, weights=N, minlength=n_groups)
    return W, Pg * Ng


def _same_prompt_wins(score: np.ndarray, labels: np.ndarray, prompt: np.ndarray, n_prompts: int,
                      rollout: np.ndarray, n_rollouts: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W_c, N_c)`` per prompt over pairs from *different* rollouts of prompt c (all pairs minus same-rollout)."""
    Wp, Np = _group_wins(score, labels, prompt, n_prompts)
    Wr, Nr = _group_wins(score, labels, rollout, n_rollouts)
    owner = np.zeros(n_rollouts, dtype=np.int64)
    owner[np.asarray(rollout, np.int64)] = np.asarray(prompt, np.int64)
    W = Wp - np.bincount(owner, weights=Wr, minlength=n_prompts)
    N = Np - np.bincount(owner, weights=Nr, minlength=n_prompts)
    return np.maximum(W, 0.0), np.maximum(N, 0.0)


def _interval(est: float, reps: np.ndarray, ci: float) -> dict[str, Any]:
    if len(reps) == 0:
        return {"estimate": est, "ci_low": math.nan, "ci_high": math.nan}
    lo, hi = percentile_interval(reps[:, None], ci)
    return {"estimate": est, "ci_low": float(lo[0]), "ci_high": float(hi[0])}


def compare_scores(candidate: np.ndarray, reference: np.ndarray, labels: np.ndarray, *, prompt: np.ndarray,
                   rollout: np.ndarray, cluster: str = DEFAULT_CLUSTER, n_boot: int = 1000,
                   seed: int | np.random.Generator = 0, ci: float = 0.95) -> dict[str, Any]:
    """Paired comparison of two oriented scores as predictors of the same label (see the module docstring).

    Args:
        candidate, reference: oriented scores (higher = better supervision), one per observation.
        labels: the quality label in [0, 1].
        prompt: prompt index (0..P-1) of each observation; rollout: rollout index (0..R-1, each rollout inside
            one prompt).
        cluster: resampling unit of the *pooled* comparison (``prompt`` or ``rollout``); the same-prompt
            comparison always resamples prompts (each of its pairs lives inside one prompt).
        n_boot, seed, ci: bootstrap resamples, seed, interval level.

    Returns:
        ``{"same_prompt": {...}, "pooled": {...}, "within_rollout": {...}}``; the first two hold ``candidate``,
        ``reference`` (AUROC with interval) and ``difference`` (``Delta = AUROC(candidate) - AUROC(reference)``
        with its paired percentile interval), ``unit``, ``n_clusters`` (and for ``same_prompt``: ``n_pairs``, the
        pair weight, and ``n_prompts_with_pairs``); ``within_rollout`` holds the point AUROCs over pairs of one
        rollout (equal for two scores that order every rollout alike).
    """
    a = np.asarray(candidate, dtype=float)
    b = np.asarray(reference, dtype=float)
    y = np.asarray(labels, dtype=float)
    p = np.asarray(prompt, dtype=np.int64)
    r = np.asarray(rollout, dtype=np.int64)
    P = int(p.max()) + 1 if len(p) else 0
    R = int(r.max()) + 1 if len(r) else 0
    out: dict[str, Any] = {}

    # (a) same prompt, different rollouts: per-prompt win and pair sums, prompts resampled
    Wa, N = _same_prompt_wins(a, y, p, P, r, R)
    Wb, _ = _same_prompt_wins(b, y, p, P, r, R)
    with np.errstate(invalid="ignore", divide="ignore"):
        ea, eb = (float(W.sum() / N.sum()) if N.sum() > 0 else math.nan for W in (Wa, Wb))
    reps_a = reps_b = np.empty(0)
    if n_boot > 0 and P > 0 and N.sum() > 0:
        ra, rb = [], []
        for w_b_P in resample_counts(P, n_boot, seed):
            den = w_b_P @ N
            with np.errstate(invalid="ignore", divide="ignore"):
                ra.append(np.where(den > 0, (w_b_P @ Wa) / np.where(den > 0, den, 1.0), np.nan))
                rb.append(np.where(den > 0, (w_b_P @ Wb) / np.where(den > 0, den, 1.0), np.nan))
        reps_a, reps_b = np.concatenate(ra), np.concatenate(rb)
    out["same_prompt"] = {
        "candidate": _interval(ea, reps_a, ci), "reference": _interval(eb, reps_b, ci),
        "difference": _interval(ea - eb, reps_a - reps_b, ci), "unit": "prompt", "n_clusters": P,
        "n_prompts_with_pairs": int((N > 0).sum()), "n_pairs": float(N.sum())}

    # (b) pooled over every cut, the chosen clusters resampled
    cl = p if cluster == "prompt" else r
    C = P if cluster == "prompt" else R
    est, reps = _pooled_replicates([a, b], y, cl, C, n_boot, seed)
    diff = reps[:, 0] - reps[:, 1] if len(reps) else np.empty(0)
    out["pooled"] = {"candidate": _interval(float(est[0]), reps[:, 0] if len(reps) else np.empty(0), ci),
                     "reference": _interval(float(est[1]), reps[:, 1] if len(reps) else np.empty(0), ci),
                     "difference": _interval(float(est[0] - est[1]), diff, ci), "unit": cluster, "n_clusters": C}

    # within one rollout (for the record: ties by construction for signals monotone in t)
    Wra, Nr = _group_wins(a, y, r, R)
    Wrb, _ = _group_wins(b, y, r, R)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["within_rollout"] = {"candidate": float(Wra.sum() / Nr.sum()) if Nr.sum() > 0 else math.nan,
                                 "reference": float(Wrb.sum() / Nr.sum()) if Nr.sum() > 0 else math.nan,
                                 "n_pairs": float(Nr.sum())}
    for part in ("same_prompt", "pooled"):
        for k in ("candidate", "reference", "difference"):
            out[part][k] = {kk: float(vv) for kk, vv in out[part][k].items()}
    return out


# ------------------------------------------------------------------------------------------------ results
def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return v


_VERB = {"falls": "falls", "rises": "rises", "flat": "is flat", "inconclusive": "shows no clear direction",
         "insufficient": "cannot be judged (too few clusters)"}


@dataclass(frozen=True)
class ProbeAnalysis:
    """Results of :func:`analyze` (see the module docstring).

    Attributes:
        accuracy: one row per (ratio, model) with model in teacher, student, gap: ratio, model, accuracy, ci_low,
            ci_high, n_rollouts, n_clusters, n_continuations (for ``gap``: both models' counts added), cluster.
        aurocs: per predictor (keys of :data:`PREDICTORS`): auroc (of the declared score), ci_low, ci_high, n,
            n_pos, n_neg, n_clusters, column, sign, score, flipped, orientation (the a priori reason), reading
            (``agrees`` | ``reversed`` | ``undetermined``) and, when reversed, ``finding``.
        comparisons: per entry of ``_COMPARISONS``: the output of :func:`compare_scores`.
        direction: teacher accuracy vs ratio (Spearman rho, bootstrap interval, verdict).
        student_direction: the same for the student.
        gap_change: gap at the first ratio minus gap at the last, with its interval.
        n_rollouts, n_clusters, cluster, min_clusters, n_boot, ci, seed: what it was computed on and how.
        normalizer: where C_T came from (``tokens`` | ``column`` | ``max over cuts``).
        data: the judged teacher cuts with their oriented scores (``prompt``, ``rollout``, ``cluster`` indices and
            ``y``), for further paired comparisons (not written).
    """

    accuracy: pd.DataFrame
    aurocs: dict[str, dict[str, Any]]
    direction: DirectionResult
    student_direction: DirectionResult
    gap_change: dict[str, Any]
    n_rollouts: int
    n_boot: int
    ci: float
    seed: int
    ratios: tuple[float, ...] = field(default=())
    n_clusters: int = 0
    cluster: str = DEFAULT_CLUSTER
    min_clusters: int = DEFAULT_MIN_CLUSTERS
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    normalizer: str = ""
    data: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    @property
    def insufficient(self) -> bool:
        """Fewer clusters than ``min_clusters``: nothing here supports a verdict."""
        return self.n_clusters < self.min_clusters

    @property
    def teacher_sentence(self) -> str:
        """"teacher accuracy falls / rises / is flat / ... with the prefix ratio"."""
        verb = _VERB.get(self.direction.verdict, self.direction.verdict)
        return f"teacher accuracy {verb} with the prefix ratio"

    @property
    def reliability_sentence(self) -> str:
        """The direction of reliability by position, read off the ``-t/T`` AUROC interval (§9 item 12)."""
        a = self.aurocs.get("neg_rel_position", {})
        lo, hi = a.get("ci_low"), a.get("ci_high")
        if self.insufficient:
            return (f"reliability vs position: insufficient ({self.n_clusters} {self.cluster} clusters < "
                    f"{self.min_clusters})")
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            return "reliability vs position: undetermined (no interval)"
        if lo > 0.5:
            return "teacher reliability falls with position (external-teacher direction, as IW-OPD declares: -t/T)"
        if hi < 0.5:
            return ("teacher reliability rises with position (privileged self-teacher direction, as in PW-OPSD; "
                    "reversed from the declared -t/T)")
        return "teacher reliability shows no clear direction with position (AUROC interval contains 0.5)"

    def to_json(self) -> dict[str, Any]:
        """The content of ``auroc.json``."""
        level = round(self.ci * 100)
        return {
            "label": "success of each teacher continuation at the cut (per continuation; a cut with s of k "
                     "successes gives s positives and k - s negatives)",
            "orientation": "every score is declared a priori so that higher = better supervision; auroc is that "
                           "score's; reading 'reversed' = its interval lies below 0.5 (the data prefer the flipped "
                           "score, a finding)",
            "predictors": {k: _finite(dict(v)) for k, v in self.aurocs.items()},
            "comparisons": _finite(self.comparisons),
            "teacher_accuracy": self.teacher_sentence,
            "direction": self.direction.to_dict(),
            "student_direction": self.student_direction.to_dict(),
            "reliability_by_position": self.reliability_sentence,
            "gap_change": {k: _finite(v) for k, v in self.gap_change.items()},
            "checks": {"teacher_accuracy_falls": self.direction.verdict == "falls",
                       "gap_first_gt_last": bool(self.gap_change.get("estimate") is not None
                                                 and self.gap_change["estimate"] > 0),
                       "gap_first_gt_last_ci": bool(self.gap_change.get("ci_low") is not None
                                                    and self.gap_change["ci_low"] > 0)},
            "bootstrap": {"unit": self.cluster, "n_boot": self.n_boot, "ci": self.ci, "level": f"{level}%",
                          "seed": self.seed},
            "cluster": self.cluster, "n_clusters": self.n_clusters, "min_clusters": self.min_clusters,
            "insufficient": self.insufficient, "n_rollouts": self.n_rollouts, "normalizer": self.normalizer,
            "ratios": list(self.ratios),
        }

    def write(self, out: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``OUT/accuracy.parquet`` and ``OUT/auroc.json``; returns their paths."""
        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        acc, js = root / "accuracy.parquet", root / "auroc.json"
        tmp = root / ".accuracy.parquet.tmp"
        self.accuracy.to_parquet(tmp, index=False)
        os.replace(tmp, acc)
        tmp = root / ".auroc.json.tmp"
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, js)
        return acc, js

    def summary(self) -> str:
        """A readable table (ratio, teacher, student, gap with intervals), the direction, AUROCs, comparisons."""
        level = f"{round(self.ci * 100)}%"

        def cell(row: dict[str, Any], signed: bool) -> str:
            f = "{:+.3f}" if signed else "{:.3f}"
            if not np.isfinite(row["accuracy"]):
                return "n/a"
            if not (np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"])):
                return f.format(row["accuracy"])
            return f"{f.format(row['accuracy'])} [{f.format(row['ci_low'])}, {f.format(row['ci_high'])}]"

        rows = {(float(r["ratio"]), r["model"]): r for r in self.accuracy.to_dict("records")}
        lines = [f"continuation accuracy by prefix ratio ({self.n_rollouts} rollouts in {self.n_clusters} "
                 f"{self.cluster} clusters, {level} {self.cluster}-bootstrap intervals):",
                 f"{'ratio':>6}  {'teacher':<24}{'student':<24}gap (teacher - student)"]
        for r in self.ratios:
            t, s, g = (cell(rows[(r, m)], m == "gap") for m in ("teacher", "student", "gap"))
            lines.append(f"{r:>6.2f}  {t:<24}{s:<24}{g}")
        if self.insufficient:
            lines.append(f"INSUFFICIENT: {self.n_clusters} {self.cluster} clusters < --min-clusters "
                         f"{self.min_clusters}; no verdict")
        d = self.direction
        lines.append(f"{self.teacher_sentence}: Spearman rho {d.rho:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}]")
        g = self.gap_change
        if g.get("estimate") is not None and math.isfinite(g["estimate"]):
            lines.append(f"gap at ratio {g['first_ratio']:g} minus gap at ratio {g['last_ratio']:g}: "
                         f"{g['estimate']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]")
        lines.append(f"AUROC of reliability predictors vs teacher continuation success (pooled cuts, {level} "
                     "intervals; each score oriented a priori so that higher = better supervision):")
        for a in self.aurocs.values():
            if a["auroc"] is None or not math.isfinite(a["auroc"]):
                lines.append(f"  {a['score']:<16} n/a (n={a['n']}, {a['n_pos']:g} successes, {a['n_neg']:g} "
                             "failures)")
                continue
            text = flip_text(a["score"], a["flipped"], a["auroc"], a["ci_low"], a["ci_high"])
            note = "  REVERSED: the data prefer the flipped sign" if a["reading"] == "reversed" else ""
            lines.append(f"  {text}  (n={a['n']}){note}")
        for name, cmp in self.comparisons.items():
            cand, ref = (PREDICTORS[k].score for k in _COMPARISONS[name])
            for part, what in (("same_prompt", "same prompt, different rollouts"), ("pooled", "pooled")):
                c = cmp[part]
                dd = c["difference"]
                if not math.isfinite(dd["estimate"]):
                    lines.append(f"  {cand} vs {ref} ({what}): n/a")
                    continue
                lines.append(f"  {cand} minus {ref} ({what}, paired {c['unit']} bootstrap): "
                             f"{dd['estimate']:+.3f} [{dd['ci_low']:+.3f}, {dd['ci_high']:+.3f}]")
        lines.append(self.reliability_sentence)
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ analyze
def _load(continuations: pd.DataFrame | DriftDataset | str | os.PathLike[str]
          ) -> tuple[pd.DataFrame, DriftDataset | None]:
    if isinstance(continuations, pd.DataFrame):
        return continuations, None
    ds = continuations if isinstance(continuations, DriftDataset) else open_dataset(continuations)
    names = {f.name for f in ds.dataset("continuations").schema}
    cols = [c for c in ("run_id", "step", "prompt_id", "sample_id", "prompt_key", "ratio", "model", "success",
                        *_SOURCE_COLUMNS) if c in names]
    return ds.to_pandas("continuations", columns=cols), ds


def _source_totals(probe: DriftDataset) -> pd.DataFrame | None:
    """Per rollout of the probed dataset: ``C_T = sum |A|`` and ``prompt_key`` (None when it cannot be found)."""
    cands: list[Path] = []
    recorded = (probe.config.get("dataset") or {}).get("path") if isinstance(probe.config.get("dataset"),
                                                                             dict) else None
    if recorded:
        cands.append(Path(recorded))
    cands.append(probe.root.parent)
    for root in cands:
        if not (root / "tokens").is_dir() or root.resolve() == probe.root.resolve():
            continue
        try:
            src = open_dataset(root)
            names = {f.name for f in src.dataset("tokens").schema}
            con = src.duckdb()
            keys = ", ".join(ROLLOUT_KEY)
            pk = ", any_value(prompt_key) AS prompt_key" if "prompt_key" in names else ""
            df = con.sql(f"SELECT {keys}, sum(abs(advantage)) AS total_abs_gap{pk} FROM tokens "
                         f"GROUP BY {keys}").df()
            con.close()
            return df
        except Exception:  # a missing or foreign source only costs the exact normalizer
            continue
    return None


def _with_normalized(df: pd.DataFrame, totals: pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """Add ``cum_abs_gap_frac`` = C_t/C_T and ``prefix_logratio_frac`` = S_t/C_T (and ``prompt_key`` when known)."""
    df = df.copy()
    how = "column"
    if "cum_abs_gap_frac" not in df.columns:
        if "cum_abs_gap" not in df.columns:
            df["cum_abs_gap_frac"] = np.nan
            return df, "none"
        total = None
        if totals is not None:
            on = [c for c in ROLLOUT_KEY if c in df.columns and c in totals.columns]
            extra = ["prompt_key"] if "prompt_key" in totals.columns and "prompt_key" not in df.columns else []
            t = totals[[*on, "total_abs_gap", *extra]].copy()
            for c in on:
                t[c] = t[c].astype(df[c].dtype)
            merged = df[on].merge(t, on=on, how="left")
            if merged["total_abs_gap"].notna().all():
                total = merged["total_abs_gap"].to_numpy(float)
                for c in extra:
                    df[c] = merged[c].to_numpy()
                how = "tokens"
        if total is None:
            key = [c for c in ROLLOUT_KEY if c in df.columns]
            total = df.groupby(key, dropna=False)["cum_abs_gap"].transform("max").to_numpy(float)
            how = "max over cuts"
        c = df["cum_abs_gap"].to_numpy(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            df["cum_abs_gap_frac"] = np.where(total > 0, c / np.where(total > 0, total, 1.0), 0.0)
            if "prefix_logratio" in df.columns:
                s = df["prefix_logratio"].to_numpy(float)
                df["prefix_logratio_frac"] = np.where(total > 0, s / np.where(total > 0, total, 1.0), 0.0)
        df.loc[df["cum_abs_gap"].isna(), "cum_abs_gap_frac"] = np.nan
    if "prefix_logratio_frac" not in df.columns:
        df["prefix_logratio_frac"] = np.nan
    return df, how


def _factorize(df: pd.DataFrame, cols: Iterable[str]) -> tuple[np.ndarray, int]:
    key = df[list(cols)].astype(str).agg("\x1f".join, axis=1) if len(df) else pd.Series([], dtype=str)
    codes, uniques = pd.factorize(key, sort=True)
    return np.asarray(codes, dtype=np.int64), len(uniques)


def analyze(continuations: pd.DataFrame | DriftDataset | str | os.PathLike[str], *, n_boot: int = 1000,
            ci: float = 0.95, seed: int = 0, cluster: str | None = None, min_clusters: int | None = None,
            totals: pd.DataFrame | None = None) -> ProbeAnalysis:
    """Accuracy by ratio with intervals, the gap, its direction, the predictor AUROCs and the paired comparisons.

    Args:
        continuations: the probe's ``continuations`` rows (a DataFrame, the probe dataset, or its folder).
        n_boot: cluster-bootstrap resamples (0: point estimates only); ci: interval level; seed: bootstrap seed.
        cluster: resampling unit, ``prompt`` (default) or ``rollout``; None: the probe's recorded ``cluster``
            setting when there is one, else ``prompt``.
        min_clusters: below this many clusters the direction is ``insufficient`` (None: the probe's recorded
            setting, else :data:`DEFAULT_MIN_CLUSTERS`).
        totals: per rollout (``ROLLOUT_KEY`` columns) ``total_abs_gap`` = C_T (and optionally ``prompt_key``);
            default: read from the probed dataset when it can be found.
    """
    df, ds = _load(continuations)
    recorded = (ds.config.get("config") or {}) if ds is not None else {}
    cluster = cluster or recorded.get("cluster") or DEFAULT_CLUSTER
    min_clusters = int(min_clusters if min_clusters is not None else recorded.get("min_clusters")
                       or DEFAULT_MIN_CLUSTERS)
    if cluster not in CLUSTER_UNITS:
        raise ValueError(f"cluster must be one of {CLUSTER_UNITS}, got {cluster!r}")
    if totals is None and ds is not None:
        totals = _source_totals(ds)
    df, normalizer = _with_normalized(df, totals)
    ratios = tuple(sorted(float(r) for r in df["ratio"].unique()))
    B = len(ratios)
    rkey = [c for c in ROLLOUT_KEY if c in df.columns]
    rollout, R = _factorize(df, rkey)
    prompt, P = _factorize(df, cluster_key_columns("prompt", df.columns))
    clus, C = (prompt, P) if cluster == "prompt" else (rollout, R)
    col = np.searchsorted(np.asarray(ratios), df["ratio"].to_numpy(float))
    judged = df["success"].notna().to_numpy()
    succ = df["success"].fillna(0.0).to_numpy(float)
    model = df["model"].to_numpy(str)

    sums = np.zeros((C, 2 * B))
    counts = np.zeros((C, 2 * B))
    seen = np.zeros((R, 2 * B), dtype=bool)
    for m, label in enumerate(("teacher", "student")):
        sel = (model == label) & judged
        np.add.at(sums, (clus[sel], col[sel] + m * B), succ[sel])
        np.add.at(counts, (clus[sel], col[sel] + m * B), 1.0)
        seen[rollout[sel], col[sel] + m * B] = True
    tot = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.where(tot > 0, sums.sum(axis=0) / np.where(tot > 0, tot, 1.0), np.nan)
    gap_est = est[:B] - est[B:]
    if n_boot > 0 and C > 0:
        reps = ratio_replicates(sums, counts, n_boot, seed)
        lo, hi = percentile_interval(reps, ci)
        gap_reps = reps[:, :B] - reps[:, B:]
        glo, ghi = percentile_interval(gap_reps, ci)
        change_reps = gap_reps[:, 0] - gap_reps[:, -1]
        clo, chi = percentile_interval(change_reps[:, None], ci)
    else:
        lo = hi = np.full(2 * B, np.nan)
        glo = ghi = np.full(B, np.nan)
        clo = chi = np.array([np.nan])
    n_clu = (counts > 0).sum(axis=0)
    n_roll = seen.sum(axis=0)
    records = []
    for b, r in enumerate(ratios):
        for m, label in enumerate(("teacher", "student")):
            j = b + m * B
            records.append({"ratio": r, "model": label, "accuracy": est[j], "ci_low": lo[j], "ci_high": hi[j],
                            "n_rollouts": int(n_roll[j]), "n_clusters": int(n_clu[j]),
                            "n_continuations": int(tot[j])})
        both = (seen[:, b] & seen[:, b + B])
        both_c = (counts[:, b] > 0) & (counts[:, b + B] > 0)
        records.append({"ratio": r, "model": "gap", "accuracy": gap_est[b], "ci_low": glo[b], "ci_high": ghi[b],
                        "n_rollouts": int(both.sum()), "n_clusters": int(both_c.sum()),
                        "n_continuations": int(tot[b] + tot[b + B])})
    accuracy = pd.DataFrame.from_records(records, columns=["ratio", "model", "accuracy", "ci_low", "ci_high",
                                                           "n_rollouts", "n_clusters", "n_continuations"])
    accuracy["accuracy"] = accuracy["accuracy"].astype(float)
    accuracy["cluster"] = cluster

    x = np.asarray(ratios)
    kw = {"method": "bootstrap", "n": n_boot, "seed": seed, "alpha": round(1 - ci, 12), "n_rollouts": R,
          "cluster": cluster}
    # insufficient below min_clusters prompts (the test counts the clusters that hold data)
    direction = direction_from_stats(sums[:, :B], counts[:, :B], x, min_clusters=min_clusters,
                                     metric="teacher_accuracy", **kw)
    student_direction = direction_from_stats(sums[:, B:], counts[:, B:], x, min_clusters=min_clusters,
                                             metric="student_accuracy", **kw)
    gap_change = {"first_ratio": ratios[0] if ratios else None, "last_ratio": ratios[-1] if ratios else None,
                  "estimate": float(gap_est[0] - gap_est[-1]) if B else None,
                  "ci_low": float(clo[0]), "ci_high": float(chi[0])}

    teacher = (model == "teacher") & judged
    data = pd.DataFrame({"prompt": prompt[teacher], "rollout": rollout[teacher], "cluster": clus[teacher],
                         "y": succ[teacher], "ratio": df["ratio"].to_numpy(float)[teacher]})
    aurocs: dict[str, dict[str, Any]] = {}
    insufficient = min_clusters > C
    for name, pred in PREDICTORS.items():
        raw = df[pred.column].to_numpy(float) if pred.column in df else np.full(len(df), np.nan)
        vals = pred.sign * raw
        data[name] = vals[teacher]
        ok = teacher & np.isfinite(vals)
        y = succ[ok]
        est_a, lo_a, hi_a = (auroc_bootstrap(vals[ok], y, clus[ok], C, n_boot, seed, ci) if ok.any()
                             else (math.nan, math.nan, math.nan))
        reading = ("undetermined" if not (math.isfinite(lo_a) and math.isfinite(hi_a)) or insufficient
                   else "agrees" if lo_a > 0.5 else "reversed" if hi_a < 0.5 else "undetermined")
        entry = {"auroc": est_a, "ci_low": lo_a, "ci_high": hi_a, "n": int(ok.sum()), "n_pos": float(y.sum()),
                 "n_neg": float((1 - y).sum()), "n_clusters": len(np.unique(clus[ok])),
                 "n_rollouts": len(np.unique(rollout[ok])), "column": pred.column,
                 "sign": "-" if pred.sign < 0 else "+", "score": pred.score, "flipped": pred.flipped,
                 "orientation": f"{pred.score}, declared a priori: {pred.why}", "normalized": pred.normalized,
                 "reading": reading}
        if reading == "reversed":
            entry["finding"] = (f"reversed: the declared {pred.score} scores {est_a:.3f}; the data prefer "
                                f"{pred.flipped} (AUROC {1 - est_a:.3f} [{1 - hi_a:.3f}, {1 - lo_a:.3f}])")
        aurocs[name] = entry

    comparisons: dict[str, dict[str, Any]] = {}
    for name, (cand, ref) in _COMPARISONS.items():
        ok = np.isfinite(data[cand].to_numpy(float)) & np.isfinite(data[ref].to_numpy(float))
        if not ok.any():
            continue
        sub = data[ok]
        comparisons[name] = {"candidate": PREDICTORS[cand].score, "reference": PREDICTORS[ref].score,
                             **compare_scores(sub[cand].to_numpy(float), sub[ref].to_numpy(float),
                                              sub["y"].to_numpy(float), prompt=sub["prompt"].to_numpy(),
                                              rollout=sub["rollout"].to_numpy(), cluster=cluster, n_boot=n_boot,
                                              seed=seed, ci=ci)}
    return ProbeAnalysis(accuracy, aurocs, direction, student_direction, gap_change, R, n_boot, ci, seed, ratios,
                         n_clusters=C, cluster=cluster, min_clusters=min_clusters, comparisons=comparisons,
                         normalizer=normalizer, data=data)


# ------------------------------------------------------------------------------------------------ reload
def load_analysis(folder: str | os.PathLike[str]) -> ProbeAnalysis:
    """Reload the analysis ``drift probe`` wrote (``accuracy.parquet`` and ``auroc.json``), computing nothing.

    The inverse of :meth:`ProbeAnalysis.write`: every number comes from the files (nulls, the written form of
    non-finite values, come back as NaN). The per-cut scores (``data``) are not written, so the loaded analysis has
    ``data=None``; a caller that needs them (a new paired comparison) must run :func:`analyze`.

    Args:
        folder: the probe folder (``DATASET/probe``), which holds ``accuracy.parquet`` and ``auroc.json``.

    Raises:
        FileNotFoundError: a file is missing (re-run ``drift probe``, or :func:`analyze` the continuations).
    """
    root = Path(folder)
    acc, js = root / "accuracy.parquet", root / "auroc.json"
    for path in (acc, js):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `drift probe` again (it writes accuracy.parquet and "
                                    "auroc.json), or analyze the continuations with drift.probe.analysis.analyze")
    meta = json.loads(js.read_text())

    def nan(v: Any) -> Any:
        if v is None:
            return math.nan
        if isinstance(v, dict):
            return {k: nan(x) for k, x in v.items()}
        return v

    boot = meta.get("bootstrap") or {}
    return ProbeAnalysis(
        accuracy=pd.read_parquet(acc), aurocs={k: nan(v) for k, v in (meta.get("predictors") or {}).items()},
        direction=DirectionResult.from_dict(meta["direction"]),
        student_direction=DirectionResult.from_dict(meta["student_direction"]),
        gap_change={k: nan(v) for k, v in (meta.get("gap_change") or {}).items()},
        n_rollouts=int(meta.get("n_rollouts") or 0), n_boot=int(boot.get("n_boot") or 0),
        ci=float(boot.get("ci") or 0.95), seed=int(boot.get("seed") or 0),
        ratios=tuple(float(r) for r in meta.get("ratios") or ()), n_clusters=int(meta.get("n_clusters") or 0),
        cluster=str(meta.get("cluster") or DEFAULT_CLUSTER),
        min_clusters=int(meta.get("min_clusters") or DEFAULT_MIN_CLUSTERS),
        comparisons=nan(meta.get("comparisons") or {}), normalizer=str(meta.get("normalizer") or ""), data=None)
