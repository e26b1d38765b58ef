"""Analysis of a continuation probe: accuracy by prefix ratio, the gap, its direction, and reliability AUROCs.

Unit of resampling: the *rollout*. Every interval is a percentile interval of a rollout-level (cluster) bootstrap
following the protocol of :mod:`drift.stats.bootstrap` (replicate i draws ``rng.integers(0, R, size=R)``), and the
same resamples are shared by every quantity: teacher and student accuracy, their gap, the direction test and the
AUROCs are all computed on one set of resampled rollouts.

- Accuracy at ratio r for a model: judged continuations that succeeded / judged continuations (rows whose
  ``success`` is null are left out), pooled over rollouts: ``sum_r s_r / sum_r n_r``.
- Gap: teacher accuracy - student accuracy, bootstrapped jointly (both accuracies from the same resample).
- Direction: Spearman rho of teacher accuracy against the ratio with its bootstrap interval
  (:func:`drift.stats.direction.direction_from_stats`): ``falls`` / ``rises`` when the interval excludes 0.
- AUROC: the label is the success of each *teacher continuation* at the cut (per continuation, no threshold: a cut
  whose k continuations had s successes contributes s positives and k - s negatives, all with the cut's predictor
  values; a fractional score y counts y positive and 1 - y negative). The AUROC of a score is the Mann-Whitney
  probability that a random success has a higher score than a random failure, ties counted 1/2 (equal to the
  rank-sum formula with mid-ranks, :func:`scipy.stats.rankdata`). Scores: ``rel_position``, ``-C_t``, ``-S_t``,
  ``teacher_entropy``, ``topk_overlap``, ``kl_reverse``, each as stated (AUROC < 0.5 means the opposite orientation
  predicts success). All cuts, every ratio included, are pooled.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drift.stats.bootstrap import percentile_interval, ratio_replicates, resample_counts
from drift.stats.direction import DirectionResult, direction_from_stats
from drift.store import DriftDataset, open_dataset

__all__ = ["PREDICTORS", "ProbeAnalysis", "analyze", "auroc", "auroc_bootstrap"]

PREDICTORS: dict[str, tuple[str, float, str]] = {
    "rel_position": ("rel_position", 1.0, "AUROC > 0.5: teacher continuations from later cuts succeed more, i.e. "
                     "reliability rises with position (the privileged self-teacher direction, PW-OPSD); < 0.5: it "
                     "falls with position (the external-teacher direction, IW-OPD)"),
    "neg_cum_abs_gap": ("cum_abs_gap", -1.0, "score -C_t; AUROC > 0.5: less accumulated |A| before the cut goes "
                        "with teacher success"),
    "neg_prefix_logratio": ("prefix_logratio", -1.0, "score -S_t; AUROC > 0.5: a larger -S_t (the teacher finds the "
                            "prefix less likely than the student does) goes with teacher success"),
    "teacher_entropy": ("teacher_entropy", 1.0, "AUROC > 0.5: a more uncertain teacher at the cut goes with "
                        "success"),
    "topk_overlap": ("topk_overlap", 1.0, "AUROC > 0.5: more top-k agreement of teacher and student at the cut goes "
                     "with success"),
    "kl_reverse": ("kl_reverse", 1.0, "AUROC > 0.5: a larger KL(pi_S || pi_T) at the cut goes with success"),
}
"""Reported score -> (token column, sign, what AUROC > 0.5 means)."""

_KEY = ["run_id", "prompt_id", "sample_id"]


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


def auroc_bootstrap(scores: np.ndarray, labels: np.ndarray, rollout: np.ndarray, n_rollouts: int, n_boot: int,
                    seed: int | np.random.Generator = 0, ci: float = 0.95) -> tuple[float, float, float]:
    """AUROC with a rollout-bootstrap percentile interval: (estimate, ci_low, ci_high).

    Args:
        scores, labels: one entry per observation (labels in [0, 1]).
        rollout: the rollout index (0..n_rollouts-1) of each observation; rollouts are resampled, observations
            follow their rollout.
        n_rollouts: R, the number of rollouts resampled (the same R as every other bootstrap of the probe, so
            the resamples match when the seed does).
        n_boot, seed, ci: resamples, their seed (protocol of :func:`drift.stats.bootstrap.resample_counts`),
            interval level.
    """
    from scipy import sparse

    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    r = np.asarray(rollout, dtype=np.int64)
    _, g = np.unique(s, return_inverse=True)
    G = int(g.max()) + 1 if len(g) else 0
    if G == 0:
        return math.nan, math.nan, math.nan
    pos_R_G = sparse.csr_matrix((y, (r, g)), shape=(n_rollouts, G))
    neg_R_G = sparse.csr_matrix((1.0 - y, (r, g)), shape=(n_rollouts, G))
    ones = np.ones((1, n_rollouts))
    est = float(_auc_groups(np.asarray((pos_R_G.T @ ones.T).T), np.asarray((neg_R_G.T @ ones.T).T))[0])
    if n_boot == 0:
        return est, math.nan, math.nan
    reps = []
    for w_b_R in resample_counts(n_rollouts, n_boot, seed, block_elements=max(1, 64 * n_rollouts)):
        reps.append(_auc_groups(np.asarray((pos_R_G.T @ w_b_R.T).T), np.asarray((neg_R_G.T @ w_b_R.T).T)))
    lo, hi = percentile_interval(np.concatenate(reps)[:, None], ci)
    return est, float(lo[0]), float(hi[0])


# ------------------------------------------------------------------------------------------------ results
def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


@dataclass(frozen=True)
class ProbeAnalysis:
    """Results of :func:`analyze` (see the module docstring).

    Attributes:
        accuracy: one row per (ratio, model) with model in teacher, student, gap: ratio, model, accuracy, ci_low,
            ci_high, n_rollouts, n_continuations (for ``gap``: both models' counts added).
        aurocs: per score (keys of :data:`PREDICTORS`): auroc, ci_low, ci_high, n, n_pos, n_neg, n_rollouts,
            column, sign, orientation.
        direction: teacher accuracy vs ratio (Spearman rho, bootstrap interval, verdict).
        student_direction: the same for the student.
        gap_change: gap at the first ratio minus gap at the last, with its interval.
        n_rollouts, n_boot, ci, seed: what it was computed on and how.
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

    @property
    def teacher_sentence(self) -> str:
        """"teacher accuracy falls / rises / is flat with the prefix ratio"."""
        verb = {"falls": "falls", "rises": "rises", "flat": "is flat"}[self.direction.verdict]
        return f"teacher accuracy {verb} with the prefix ratio"

    @property
    def reliability_sentence(self) -> str:
        """The direction of reliability by position, read off the rel_position AUROC interval (§9 item 12)."""
        a = self.aurocs.get("rel_position", {})
        lo, hi = a.get("ci_low"), a.get("ci_high")
        if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
            return "reliability vs position: undetermined (no interval)"
        if hi < 0.5:
            return "teacher reliability falls with position (external-teacher direction, as in IW-OPD)"
        if lo > 0.5:
            return "teacher reliability rises with position (privileged self-teacher direction, as in PW-OPSD)"
        return "teacher reliability shows no clear direction with position (AUROC interval contains 0.5)"

    def to_json(self) -> dict[str, Any]:
        """The content of ``auroc.json``."""
        level = round(self.ci * 100)
        return {
            "label": "success of each teacher continuation at the cut (per continuation; a cut with s of k "
                     "successes gives s positives and k - s negatives)",
            "predictors": {k: {kk: _finite(vv) for kk, vv in v.items()} for k, v in self.aurocs.items()},
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
            "bootstrap": {"unit": "rollout", "n_boot": self.n_boot, "ci": self.ci, "level": f"{level}%",
                          "seed": self.seed},
            "n_rollouts": self.n_rollouts, "ratios": list(self.ratios),
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
        """A readable table (ratio, teacher, student, gap with intervals), the direction and the AUROCs."""
        level = f"{round(self.ci * 100)}%"

        def cell(row: dict[str, Any], signed: bool) -> str:
            f = "{:+.3f}" if signed else "{:.3f}"
            if not np.isfinite(row["accuracy"]):
                return "n/a"
            if not (np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"])):
                return f.format(row["accuracy"])
            return f"{f.format(row['accuracy'])} [{f.format(row['ci_low'])}, {f.format(row['ci_high'])}]"

        rows = {(float(r["ratio"]), r["model"]): r for r in self.accuracy.to_dict("records")}
        lines = [f"continuation accuracy by prefix ratio ({self.n_rollouts} rollouts, {level} rollout-bootstrap "
                 f"intervals):", f"{'ratio':>6}  {'teacher':<24}{'student':<24}gap (teacher - student)"]
        for r in self.ratios:
            t, s, g = (cell(rows[(r, m)], m == "gap") for m in ("teacher", "student", "gap"))
            lines.append(f"{r:>6.2f}  {t:<24}{s:<24}{g}")
        d = self.direction
        lines.append(f"{self.teacher_sentence}: Spearman rho {d.rho:+.3f} [{d.ci_low:+.3f}, {d.ci_high:+.3f}]")
        g = self.gap_change
        if g.get("estimate") is not None and math.isfinite(g["estimate"]):
            lines.append(f"gap at ratio {g['first_ratio']:g} minus gap at ratio {g['last_ratio']:g}: "
                         f"{g['estimate']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]")
        lines.append(f"AUROC of reliability predictors vs teacher continuation success (pooled cuts, {level} "
                     "intervals):")
        names = {"rel_position": "rel_position", "neg_cum_abs_gap": "-C_t", "neg_prefix_logratio": "-S_t",
                 "teacher_entropy": "teacher_entropy", "topk_overlap": "topk_overlap", "kl_reverse": "kl_reverse"}
        for key, a in self.aurocs.items():
            if a["auroc"] is None or not math.isfinite(a["auroc"]):
                lines.append(f"  {names[key]:<16} n/a (n={a['n']}, {a['n_pos']:g} successes, {a['n_neg']:g} "
                             "failures)")
            else:
                lines.append(f"  {names[key]:<16} {a['auroc']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]  "
                             f"(n={a['n']})")
        lines.append(self.reliability_sentence)
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ analyze
def _load(continuations: pd.DataFrame | DriftDataset | str | os.PathLike[str]) -> pd.DataFrame:
    if isinstance(continuations, pd.DataFrame):
        return continuations
    ds = continuations if isinstance(continuations, DriftDataset) else open_dataset(continuations)
    cols = ["run_id", "prompt_id", "sample_id", "ratio", "model", "success",
            *sorted({c for c, _, _ in PREDICTORS.values()})]
    return ds.to_pandas("continuations", columns=cols)


def analyze(continuations: pd.DataFrame | DriftDataset | str | os.PathLike[str], *, n_boot: int = 1000,
            ci: float = 0.95, seed: int = 0) -> ProbeAnalysis:
    """Accuracy by ratio with intervals, the gap, its direction and the predictor AUROCs of a probe.

    Args:
        continuations: the probe's ``continuations`` rows (a DataFrame, the probe dataset, or its folder).
        n_boot: rollout-bootstrap resamples (0: point estimates only); ci: interval level; seed: bootstrap seed.
    """
    df = _load(continuations)
    ratios = tuple(sorted(float(r) for r in df["ratio"].unique()))
    B = len(ratios)
    key = df["run_id"].astype(str) + "\x1f" + df["prompt_id"].astype(str) + "\x1f" + df["sample_id"].astype(str)
    rollout, uniques = pd.factorize(key, sort=True)
    R = len(uniques)
    col = np.searchsorted(np.asarray(ratios), df["ratio"].to_numpy(float))
    judged = df["success"].notna().to_numpy()
    succ = df["success"].fillna(0.0).to_numpy(float)
    model = df["model"].to_numpy(str)

    sums = np.zeros((R, 2 * B))
    counts = np.zeros((R, 2 * B))
    for m, label in enumerate(("teacher", "student")):
        sel = (model == label) & judged
        np.add.at(sums, (rollout[sel], col[sel] + m * B), succ[sel])
        np.add.at(counts, (rollout[sel], col[sel] + m * B), 1.0)
    tot = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.where(tot > 0, sums.sum(axis=0) / np.where(tot > 0, tot, 1.0), np.nan)
    gap_est = est[:B] - est[B:]
    if n_boot > 0 and R > 0:
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
    n_roll = (counts > 0).sum(axis=0)
    records = []
    for b, r in enumerate(ratios):
        for m, label in enumerate(("teacher", "student")):
            j = b + m * B
            records.append({"ratio": r, "model": label, "accuracy": est[j], "ci_low": lo[j], "ci_high": hi[j],
                            "n_rollouts": int(n_roll[j]), "n_continuations": int(tot[j])})
        both = (counts[:, b] > 0) & (counts[:, b + B] > 0)
        records.append({"ratio": r, "model": "gap", "accuracy": gap_est[b], "ci_low": glo[b], "ci_high": ghi[b],
                        "n_rollouts": int(both.sum()), "n_continuations": int(tot[b] + tot[b + B])})
    accuracy = pd.DataFrame.from_records(records, columns=["ratio", "model", "accuracy", "ci_low", "ci_high",
                                                           "n_rollouts", "n_continuations"])
    accuracy["accuracy"] = accuracy["accuracy"].astype(float)

    method = "bootstrap" if n_boot > 0 else "permutation"
    n_dir = n_boot if n_boot > 0 else 1000
    x = np.asarray(ratios)
    direction = direction_from_stats(sums[:, :B], counts[:, :B], x, method=method, n=n_dir, seed=seed,
                                     alpha=round(1 - ci, 12), metric="teacher_accuracy")
    student_direction = direction_from_stats(sums[:, B:], counts[:, B:], x, method=method, n=n_dir, seed=seed,
                                             alpha=round(1 - ci, 12), metric="student_accuracy")
    gap_change = {"first_ratio": ratios[0] if ratios else None, "last_ratio": ratios[-1] if ratios else None,
                  "estimate": float(gap_est[0] - gap_est[-1]) if B else None,
                  "ci_low": float(clo[0]), "ci_high": float(chi[0])}

    teacher = (model == "teacher") & judged
    aurocs: dict[str, dict[str, Any]] = {}
    for name, (column, sign, note) in PREDICTORS.items():
        vals = df[column].to_numpy(float) * sign if column in df else np.full(len(df), np.nan)
        ok = teacher & np.isfinite(vals)
        y = succ[ok]
        est_a, lo_a, hi_a = (auroc_bootstrap(vals[ok], y, rollout[ok], R, n_boot, seed, ci) if ok.any()
                             else (math.nan, math.nan, math.nan))
        aurocs[name] = {"auroc": est_a, "ci_low": lo_a, "ci_high": hi_a, "n": int(ok.sum()),
                        "n_pos": float(y.sum()), "n_neg": float((1 - y).sum()),
                        "n_rollouts": len(np.unique(rollout[ok])), "column": column,
                        "sign": "-" if sign < 0 else "+", "orientation": note}
    return ProbeAnalysis(accuracy, aurocs, direction, student_direction, gap_change, R, n_boot, ci, seed, ratios)
