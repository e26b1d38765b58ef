"""The ablation's pilot: seconds per run-step of the current trainer, and the step where uniform plateaus.

A pilot is a short ablation of ``uniform`` alone (``python -m scripts.reproduce_ablation --pilot --world W --out
P``: ``--pilot-seeds`` seeds x ``--steps`` steps, no drift collections) on the world the full ablation will run
on. :func:`pilot_summary` reads its folder and measures two things; the full ablation takes both with
``--steps-from P`` (:func:`steps_from_pilot`).

- **Seconds per run-step**: the pilot's wall time (model loading, runs, evaluations and analysis included)
  divided by its run-steps, with its worker count (for an interrupted pilot, whose ``parts/`` hold the finished
  runs, the runs' wall seconds spread over the workers); and the runs' own CPU seconds per run-step, which is
  what a run-step costs on a quiet machine (wall time also counts waiting for a core when the machine is shared).
- **The plateau**: held-out accuracy of uniform, every ``eval_every`` steps, pooled over seeds. For each
  evaluation step s with a full window [s, s + ``window``] inside the pilot, the within-seed OLS slope of
  accuracy on step over that window (each seed's own mean removed, so seeds' levels do not tilt it), per 100
  steps, with its 95% t interval (df = points - seeds - 1). The plateau is the first s whose interval's upper
  end is below ``tolerance``: over the next ``window`` steps accuracy rises by less than ``tolerance`` per 100
  steps. (A window to the pilot's end would not do: a long flat tail pulls the average slope under the
  tolerance well before the knee.) The ablation's steps
  are then ``ceil(plateau / (1 - tail_frac))`` rounded up to ``eval_every``, so its tail (the last ``tail_frac``
  of training, where final accuracy and the plateau claims are measured) lies past the measured plateau. When
  no s qualifies, the pilot was too short: steps = the pilot's steps, flagged ``reached: false``.
  ``plateau_from`` takes the plateau from another folder's uniform runs instead (e.g. the last full ablation on
  the same world, when the trainer changed only in speed), the seconds still from the pilot.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sstats

from drift.errors import DatasetExistsError

__all__ = ["PILOT_FILE", "pilot_summary", "plateau_scan", "read_runs", "steps_for_plateau", "steps_from_pilot"]

PILOT_FILE = "pilot.json"


def plateau_scan(metrics: pd.DataFrame, *, window: float) -> pd.DataFrame:
    """Within-seed OLS slope of held-out accuracy over [s, s + window] for every evaluation step s, per 100 steps.

    Args:
        metrics: one schedule's runs (columns ``seed``, ``step``, ``eval/accuracy``; NaN off evaluation steps).
        window: the window's length in steps; starts whose window would pass the last evaluation are skipped.

    Returns:
        One row per start step: ``from_step, to_step, slope, ci_low, ci_high, n_points`` (95% t interval).
    """
    ev = metrics.dropna(subset=["eval/accuracy"])[["seed", "step", "eval/accuracy"]]
    end = float(ev["step"].max()) if len(ev) else math.nan
    rows = []
    for s in sorted(ev["step"].unique()):
        if s + window > end:
            break
        w = ev[(ev["step"] >= s) & (ev["step"] <= s + window)]
        x = w["step"] - w.groupby("seed")["step"].transform("mean")
        y = w["eval/accuracy"] - w.groupby("seed")["eval/accuracy"].transform("mean")
        df = len(w) - w["seed"].nunique() - 1
        sxx = float((x * x).sum())
        if df < 1 or sxx == 0:
            continue
        slope = float((x * y).sum() / sxx)
        resid = y - slope * x
        se = math.sqrt(float((resid * resid).sum()) / df / sxx)
        half = float(sstats.t.ppf(0.975, df)) * se
        rows.append({"from_step": int(s), "to_step": int(s + window), "slope": 100 * slope,
                     "ci_low": 100 * (slope - half), "ci_high": 100 * (slope + half), "n_points": len(w)})
    return pd.DataFrame(rows, columns=["from_step", "to_step", "slope", "ci_low", "ci_high", "n_points"])


def steps_for_plateau(plateau: float, *, tail_frac: float, eval_every: int) -> int:
    """The shortest run whose tail (last ``tail_frac``) starts at or after ``plateau``, in whole evaluations.

    Example:
        >>> steps_for_plateau(120, tail_frac=0.2, eval_every=10)  # 120 / 0.8 = 150
        150
    """
    return int(math.ceil(plateau / (1.0 - tail_frac) / eval_every - 1e-9) * eval_every)


def read_runs(folder: str | Path) -> pd.DataFrame:
    """An ablation folder's metrics: ``metrics.parquet``, or the finished runs in ``parts/`` of an interrupted one."""
    folder = Path(folder)
    if (folder / "metrics.parquet").exists():
        return pd.read_parquet(folder / "metrics.parquet")
    parts = sorted((folder / "parts").glob("*.parquet"))
    if not parts:
        raise DatasetExistsError(f"{folder} has neither metrics.parquet nor finished runs in parts/; run the "
                                 f"pilot first (python -m scripts.reproduce_ablation --pilot --out {folder})")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def _uniform(metrics: pd.DataFrame, folder: Path) -> pd.DataFrame:
    uni = metrics[(metrics["schedule"] == "uniform") & (metrics["loss"] == "sampled")]
    if not len(uni):
        raise DatasetExistsError(f"{folder} holds no sampled-loss uniform runs; it is not a pilot")
    return uni


def pilot_summary(folder: str | Path, *, tolerance: float, tail_frac: float, window: float = 80.0,
                  plateau_from: str | Path | None = None) -> dict[str, Any]:
    """Measure a pilot folder (``metrics.parquet`` or ``parts/``, ``config.json``, optional ``timing.json``).

    Args:
        folder: the pilot (a uniform-only ablation).
        tolerance: accuracy per 100 steps below which the slope's upper bound means "flat".
        tail_frac: the ablation's tail fraction (its steps put the tail past the plateau).
        window: steps per slope window of :func:`plateau_scan`.
        plateau_from: another ablation folder whose uniform runs give the plateau (default: the pilot's).

    Returns:
        A JSON-safe dict: ``world``, ``seeds``, ``steps``, ``run_steps``, ``workers``, ``wall_s``,
        ``seconds_per_run_step`` (wall / run-steps at ``workers``), ``cpu_seconds_per_run_step``, the ``scan``
        rows of :func:`plateau_scan`, ``plateau_step`` (None when not reached), ``reached``, ``tolerance`` and
        the ablation ``steps`` (:func:`steps_for_plateau`), and ``rule`` (the criterion in words).
    """
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise DatasetExistsError(f"{folder} has no config.json: run the pilot first (python -m "
                                 f"scripts.reproduce_ablation --pilot --out {folder})")
    saved = json.loads((folder / "config.json").read_text())
    cfg = saved.get("config", saved)  # drift.config.save_config nests the fields under "config"
    uni = _uniform(read_runs(folder), folder)
    steps = int(uni["step"].max())
    seeds = int(uni["seed"].nunique())
    run_steps = steps * seeds
    workers = int(cfg.get("workers", 1))
    per_run = uni.groupby("seed")
    cpu = float(per_run["cpu_s"].first().sum()) if "cpu_s" in uni else math.nan
    if (folder / "timing.json").exists():
        timing = json.loads((folder / "timing.json").read_text())
        wall, workers, wall_how = float(timing["wall_s"]), int(timing.get("workers", workers)), "whole pilot"
    else:  # interrupted: the finished runs' own wall time, spread over the workers (loading not included)
        wall, wall_how = float(per_run["wall_s"].first().sum()) / workers, "finished runs / workers"
    source = Path(plateau_from) if plateau_from else folder
    curves = uni if source == folder else _uniform(read_runs(source), source)
    scan = plateau_scan(curves, window=window)
    hit = scan[scan["ci_high"] < tolerance]
    plateau = int(hit["from_step"].iloc[0]) if len(hit) else None
    eval_every = int(cfg.get("eval_every", 10))
    curve_steps = int(curves["step"].max())
    chosen = (steps_for_plateau(plateau, tail_frac=tail_frac, eval_every=eval_every) if plateau is not None
              else curve_steps)
    curve_seeds = int(curves["seed"].nunique())
    return {
        "folder": str(folder), "world": cfg.get("world", "data/oracle"), "seeds": seeds, "steps": steps,
        "run_steps": run_steps, "workers": workers, "wall_s": wall, "wall_measured_as": wall_how,
        "seconds_per_run_step": wall / run_steps,
        "cpu_seconds_per_run_step": cpu / run_steps if np.isfinite(cpu) else math.nan,
        "plateau_from": str(source), "plateau_seeds": curve_seeds, "plateau_steps": curve_steps,
        "scan": scan.to_dict(orient="records"), "plateau_step": plateau, "reached": plateau is not None,
        "tolerance": tolerance, "window": window, "tail_frac": tail_frac, "ablation_steps": chosen,
        "rule": (f"plateau = first evaluation step s whose within-seed OLS slope of held-out accuracy over "
                 f"[s, s + {window:g}] (uniform, {curve_seeds} seeds of {source}) has a 95% upper bound below "
                 f"{tolerance:g} per 100 steps; ablation steps = ceil(plateau / (1 - {tail_frac:g})) rounded up to "
                 f"{eval_every}, so the tail lies past the plateau"
                 + ("" if plateau is not None else "; NOT REACHED: steps = the curves' length")),
    }


def steps_from_pilot(folder: str | Path) -> dict[str, Any]:
    """Read ``pilot.json`` from a pilot folder (written by the pilot run; see :func:`pilot_summary`)."""
    path = Path(folder) / PILOT_FILE
    if not path.exists():
        raise DatasetExistsError(f"{path} does not exist; run the pilot first (python -m scripts.reproduce_ablation "
                                 f"--pilot --out {folder})")
    return json.loads(path.read_text())
