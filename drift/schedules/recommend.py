"""Recommend a weight schedule from measured drift, with a rationale a person can check.

The recommendation is only as good as the evidence of *supervision quality* behind it; drift uses the strongest it
finds, in this order:

1. a continuation probe (``drift probe``): teacher continuation accuracy by prefix ratio, and the AUROC of
   per-token signals against continuation success;
2. oracle labels (the oracle world's ``oracle_teacher_correct``: the teacher's argmax is the right next token);
3. none: then the paper's IW-OPD (gamma 0.5) is recommended as the default, and the rationale says there was no
   direct measurement to adapt it to.

With evidence, the steps are:

- **direction**: does quality fall, rise or stay flat along the response (Spearman with a rollout-bootstrap
  interval)? Flat → ``uniform`` (no position effect to correct).
- **which signal**: position (oriented by the direction) versus the per-rollout cumulative discrepancy that IW-OPD
  uses (−C_t, or −C_t/C_T with oracle labels), each scored by its AUROC against the quality label with a rollout
  bootstrap interval. When the cumulative signal's interval lies above position's, the boundary between reliable
  and unreliable supervision moves per rollout and a fixed position curve cannot follow it → ``iw_opd``.
- otherwise a **fitted** position schedule: the quality curve q(x) (five families, AIC) becomes
  w(x) = 1 + gamma · q(x) / max q, clipped to [1, 1 + gamma]: OPD stays the floor (the paper's ablation: "with OPD
  blend" beats "only"), and where quality halves, the bonus halves.

Everything the decision used is returned in :class:`Recommendation` and written beside the schedule.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drift.config import Checks, opt, save_config
from drift.errors import DatasetError, DatasetExistsError
from drift.schedules.base import Schedule
from drift.schedules.kinds import Fitted, Uniform, load
from drift.schedules.preview import decile_weights

__all__ = ["RecommendConfig", "Recommendation", "recommend", "recommend_from_config"]

_AFFINE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # family: (parameters scaled and shifted, parameters only scaled); the rest (tau, x0, s, b of power) unchanged
    "exponential": (("c",), ("a",)),
    "power": (("c",), ("a",)),
    "logistic": (("c",), ("a",)),
    "linear": (("a",), ("b",)),
    "hinge": (("a",), ("b1", "b2")),
}


@dataclass(frozen=True)
class RecommendConfig:
    """``drift schedule recommend``: derive a schedule from a dataset (and its probe, when there is one)."""

    dataset: str = opt("", "a drift dataset folder (from drift collect / drift score)")
    out: str = opt("schedule.json", "where to write the recommended schedule spec (a rationale JSON goes beside)")
    probe: str | None = opt(None, "continuation-probe output folder (default: DATASET/probe when it exists)")
    gamma: float = opt(0.5, "bonus strength: weights lie in [1, 1 + gamma], so OPD stays the floor")
    bins: int = opt(20, "relative-position bins for the quality curve (oracle labels)")
    n_boot: int = opt(1000, "rollout-bootstrap resamples for intervals")
    seed: int = opt(0, "bootstrap seed")
    max_tokens: int = opt(2_000_000, "token rows read for the signal AUROCs (rollouts are sampled beyond this)")
    signal: str = opt("auto", "auto: let the AUROCs choose; position: force a fitted position curve; cumulative: "
                              "force IW-OPD (for comparisons)", choices=("auto", "position", "cumulative"))
    force: bool = opt(False, "overwrite an existing --out file")

    def __post_init__(self) -> None:
        c = Checks("RecommendConfig")
        c.check(bool(self.dataset), "dataset is required")
        c.positive("gamma", self.gamma)
        c.in_range("bins", self.bins, 2, 200)
        c.positive("n_boot", self.n_boot)
        c.positive("max_tokens", self.max_tokens)
        c.choice("signal", self.signal, ("auto", "position", "cumulative"))
        c.raise_if_any()


@dataclass(frozen=True)
class Recommendation:
    """A recommended schedule and the evidence behind it (all plain numbers, JSON-able via :meth:`to_dict`)."""

    schedule: Schedule
    evidence: str
    quality: dict[str, Any] = field(default_factory=dict)
    direction: dict[str, Any] | None = None
    fit: dict[str, Any] | None = None
    half_point: float | None = None
    signals: dict[str, dict[str, Any]] = field(default_factory=dict)
    choice: str = ""
    rationale: tuple[str, ...] = ()

    @property
    def decile_weights(self) -> list[float]:
        """Mean weight per relative-position decile on a constant-|A| rollout of length 100."""
        return [float(v) for v in decile_weights(self.schedule)]

    def to_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.to_dict(), "evidence": self.evidence, "quality": self.quality,
                "direction": self.direction, "fit": self.fit, "half_point": self.half_point,
                "signals": self.signals, "choice": self.choice, "decile_weights": self.decile_weights,
                "rationale": list(self.rationale)}

    def report(self) -> str:
        """The rationale as readable lines, ending with the weights per decile."""
        lines = [*self.rationale, "", f"schedule: {self.schedule.describe()}", "mean weight per relative-position "
                 "decile (constant |A|, length 100):"]
        lines.append("  " + "  ".join(f"{10 * i}-{10 * i + 10}%: {w:.3f}" for i, w in enumerate(self.decile_weights)))
        return "\n".join(lines)


def _iw(gamma: float) -> Schedule:
    return load({"kind": "iw_opd", "gamma": gamma, "use_abs": True, "denominator": "code"})


def _blend(family: str, params: dict[str, float], gamma: float, peak: float, source: dict[str, Any]) -> Schedule:
    """The fitted quality curve q turned into w = 1 + gamma q / peak (affine in the curve's linear parameters)."""
    shifted, scaled = _AFFINE[family]
    scale = gamma / peak
    new = {k: float(v) for k, v in params.items()}
    for k in scaled:
        new[k] = scale * new[k]
    for k in shifted:
        new[k] = scale * new[k] + 1.0
    return Fitted(family=family, params=new, x="rel", normalize="none", floor=1.0, ceiling=1.0 + gamma,
                  source=source)


def _num(v: Any) -> str:
    """A number for the rationale; n/a when a fit could not give it (e.g. an unidentified interval)."""
    return f"{v:.4g}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _fmt_ci(d: dict[str, Any], key: str = "auroc") -> str:
    return f"{d[key]:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"


def _oracle_signals(ds: Any, cfg: RecommendConfig, falls: bool) -> dict[str, dict[str, Any]]:
    """AUROC of position and of IW-OPD's -C_t/C_T against the oracle label, rollout bootstrap intervals."""
    from drift.probe.analysis import auroc_bootstrap

    con = ds.duckdb()
    n_rollouts, n_tokens = con.sql("SELECT count(DISTINCT (run_id, step, prompt_id, sample_id)), count(*) "
                                   "FROM tokens").fetchall()[0]
    keep = min(1.0, cfg.max_tokens / max(n_tokens, 1))
    df = con.sql(f"""
        SELECT dense_rank() OVER (ORDER BY run_id, step, prompt_id, sample_id) - 1 AS r, rel_position,
               cum_abs_gap_frac, CAST(oracle_teacher_correct AS DOUBLE) AS y
        FROM tokens WHERE hash(run_id, step, prompt_id, sample_id) % 1000000 < {int(keep * 1_000_000)}""").df()
    n_r = int(df["r"].max()) + 1 if len(df) else 0
    out = {}
    sign = -1.0 if falls else 1.0
    for name, score in (("position", sign * df["rel_position"].to_numpy()),
                        ("cumulative_gap", -df["cum_abs_gap_frac"].to_numpy())):
        est, lo, hi = auroc_bootstrap(score, df["y"].to_numpy(), df["r"].to_numpy(), n_r, cfg.n_boot, cfg.seed)
        out[name] = {"auroc": est, "ci_low": lo, "ci_high": hi, "n": len(df), "n_rollouts": n_r}
    out["position"]["score"] = "-t/T" if falls else "+t/T"
    out["cumulative_gap"]["score"] = "-C_t/C_T (IW-OPD's signal)"
    if keep < 1.0:
        for v in out.values():
            v["sampled_fraction"] = keep
    del n_rollouts
    return out


def _from_oracle(ds: Any, cfg: RecommendConfig) -> dict[str, Any]:
    from drift.stats import BinSpec, aggregate_bins, direction_test, fit_bins, half_point

    metric = "oracle_teacher_correct"
    rb = aggregate_bins(ds.root, [metric], BinSpec(by="rel", bins=cfg.bins, step="pool"))
    table = rb.table(n_boot=cfg.n_boot, seed=cfg.seed)
    table = table[(table["metric"] == metric) & (table["stratum"] == "all") & (table["group"] == "all")]
    direction = direction_test(rb, metric, n=cfg.n_boot, seed=cfg.seed)
    selection = fit_bins(rb, metric, n_boot=cfg.n_boot, seed=cfg.seed)
    first, last = table.iloc[0], table.iloc[-1]
    quality = {"metric": metric, "label": "teacher argmax equals the oracle's next token",
               "x": "relative position t/T", "start": {k: float(first[k]) for k in ("mean", "ci_low", "ci_high")},
               "end": {k: float(last[k]) for k in ("mean", "ci_low", "ci_high")},
               "n_tokens": int(table["n_tokens"].sum()), "n_bins": len(table)}
    return {"evidence": "oracle", "quality": quality, "direction": direction, "selection": selection,
            "half_point": half_point(selection.best) if selection.converged else math.nan,
            "signals": (lambda: _oracle_signals(ds, cfg, direction.verdict != "rises"))}


def _from_probe(path: Path, cfg: RecommendConfig) -> dict[str, Any]:
    from drift.probe.analysis import analyze
    from drift.stats import fit_all, half_point

    analysis = analyze(path, n_boot=cfg.n_boot, seed=cfg.seed)
    acc = analysis.accuracy[analysis.accuracy["model"] == "teacher"].sort_values("ratio")
    x, y = acc["ratio"].to_numpy(float), acc["accuracy"].to_numpy(float)
    sigma = np.maximum((acc["ci_high"] - acc["ci_low"]).to_numpy(float) / 3.92, 1e-3)
    models = ["exponential", "logistic", "linear", "hinge"] + (["power"] if x.min() > 0 else [])
    selection = fit_all(x, y, models=models, sigma=sigma, absolute_sigma=True)
    falls = analysis.direction.verdict != "rises"
    pos = dict(analysis.aurocs["rel_position"])
    if falls:  # orient: the score that should predict success
        pos = {**pos, "auroc": 1 - pos["auroc"], "ci_low": 1 - pos["ci_high"], "ci_high": 1 - pos["ci_low"]}
    gap = dict(analysis.aurocs["neg_cum_abs_gap"])
    signals = {"position": {**pos, "score": "-t/T" if falls else "+t/T"},
               "cumulative_gap": {**gap, "score": "-C_t (cumulative |A| before the cut)"}}
    quality = {"metric": "teacher continuation accuracy", "label": "a teacher continuation from the cut verifies",
               "x": "prefix ratio", "start": {k: float(acc.iloc[0][k]) for k in ("accuracy", "ci_low", "ci_high")},
               "end": {k: float(acc.iloc[-1][k]) for k in ("accuracy", "ci_low", "ci_high")},
               "n_continuations": int(acc["n_continuations"].sum()), "n_ratios": len(acc)}
    return {"evidence": "probe", "quality": quality, "direction": analysis.direction, "selection": selection,
            "half_point": half_point(selection.best) if selection.converged else math.nan,
            "signals": (lambda: signals)}


def recommend(dataset: str | os.PathLike[str], config: RecommendConfig | None = None) -> Recommendation:
    """Recommend a schedule for ``dataset`` (see the module docstring for the decision rules)."""
    from drift.store import open_dataset

    cfg = config or RecommendConfig(dataset=str(dataset))
    ds = open_dataset(dataset)
    probe_dir = Path(cfg.probe) if cfg.probe else Path(dataset) / "probe"
    names = {f.name for f in ds.dataset("tokens").schema}
    if (probe_dir / "continuations").is_dir():
        found = _from_probe(probe_dir, cfg)
    elif cfg.probe:
        raise DatasetError(f"--probe {cfg.probe} holds no continuations/ folder; run `drift probe` first.")
    elif "oracle_teacher_correct" in names:
        found = _from_oracle(ds, cfg)
    else:
        sched = _iw(cfg.gamma)
        return Recommendation(
            schedule=sched, evidence="none", choice="iw_opd (default)",
            rationale=("evidence: none. This dataset has no continuation probe and no oracle labels, so drift "
                       "cannot measure supervision quality by position here.",
                       f"recommendation: the paper's IW-OPD (gamma {cfg.gamma}, code denominator), which adapts "
                       "per rollout from the cumulative |A| and keeps OPD as the floor.",
                       "to base this on measurements, run `drift probe DATASET` and recommend again."))
    direction = found["direction"]
    quality = found["quality"]
    key = "accuracy" if "accuracy" in quality["start"] else "mean"
    lines = [f"evidence: {found['evidence']} — supervision quality = {quality['metric']} "
             f"({quality['label']}), by {quality['x']}.",
             f"quality {quality['start'][key]:.3f} [{quality['start']['ci_low']:.3f}, "
             f"{quality['start']['ci_high']:.3f}] at the start, {quality['end'][key]:.3f} "
             f"[{quality['end']['ci_low']:.3f}, {quality['end']['ci_high']:.3f}] at the end; direction: "
             f"{direction.verdict} (Spearman rho {direction.rho:+.3f}, interval [{direction.ci_low:+.3f}, "
             f"{direction.ci_high:+.3f}]).", ]
    selection = found["selection"]
    fit = selection.best.to_dict() if selection.converged else None
    half = found["half_point"]
    if fit is not None:
        params = ", ".join(f"{k} = {_num(v)} [{_num(fit['ci_low'].get(k))}, {_num(fit['ci_high'].get(k))}]"
                           for k, v in fit["params"].items())
        lines.append(f"best curve by AIC: {fit['model']} ({params}); quality is halfway between its start and "
                     f"end values at {half:.3f}" if math.isfinite(half) else
                     f"best curve by AIC: {fit['model']} ({params}); no halfway crossing")
    if direction.verdict == "flat":
        sched: Schedule = Uniform()
        choice = "uniform"
        lines.append("decision: quality shows no position trend (its interval includes 0), so there is nothing "
                     "position-dependent to correct: keep uniform OPD.")
        signals: dict[str, dict[str, Any]] = {}
    else:
        signals = found["signals"]()
        pos, cum = signals["position"], signals["cumulative_gap"]
        lines.append(f"signals (AUROC against the quality label, rollout-bootstrap 95% interval): position "
                     f"{pos['score']} {_fmt_ci(pos)}; cumulative discrepancy {cum['score']} {_fmt_ci(cum)}.")
        cumulative_wins = cum["ci_low"] > pos["ci_high"] and cum["auroc"] > 0.5
        if cfg.signal == "cumulative" or (cfg.signal == "auto" and cumulative_wins):
            sched, choice = _iw(cfg.gamma), "iw_opd"
            lines.append("decision: the per-rollout cumulative discrepancy predicts supervision quality better than "
                         "position (intervals do not overlap), so the reliable/unreliable boundary moves per "
                         f"rollout: IW-OPD (gamma {cfg.gamma}) follows it, a fixed position curve cannot."
                         if cfg.signal == "auto" else "decision: IW-OPD forced by --signal cumulative.")
        elif fit is None:
            sched, choice = _iw(cfg.gamma), "iw_opd (no converged fit)"
            lines.append("decision: no curve family converged on the quality curve, so no position schedule can be "
                         f"fitted; falling back to IW-OPD (gamma {cfg.gamma}).")
        else:
            peak = float(np.max(selection.best.predict(np.linspace(0.0, 1.0, 201))))
            if not (math.isfinite(peak) and peak > 0):
                raise DatasetError("the fitted quality curve has no positive maximum on [0, 1]; cannot normalize")
            source = {"dataset": str(dataset), "evidence": found["evidence"], "metric": quality["metric"],
                      "fit": {k: fit[k] for k in ("model", "params", "aic")}, "quality_peak": peak,
                      "gamma": cfg.gamma}
            sched, choice = _blend(fit["model"], fit["params"], cfg.gamma, peak, source), "fitted"
            why = ("position predicts quality at least as well as the cumulative discrepancy, so"
                   if cfg.signal == "auto" else "a position curve is forced by --signal position;")
            lines.append(f"decision: {why} the fitted curve becomes the schedule: w(t/T) = 1 + {cfg.gamma} "
                         f"q(t/T) / {peak:.3f}, clipped to [1, {1 + cfg.gamma}] (OPD stays the floor).")
    if direction.verdict == "rises":
        lines.append("note: quality RISES along the response here (the privileged self-teacher pattern of PW-OPSD, "
                     "opposite to IW-OPD's premise); IW-OPD would up-weight the wrong end.")
    return Recommendation(schedule=sched, evidence=found["evidence"], quality=quality, direction=direction.to_dict(),
                          fit=fit, half_point=half if math.isfinite(half) else None, signals=signals, choice=choice,
                          rationale=tuple(lines))


def recommend_from_config(cfg: RecommendConfig) -> tuple[Recommendation, Path, Path]:
    """Run :func:`recommend` and write ``cfg.out`` (the spec) and ``<out stem>.recommendation.json`` beside it."""
    out = Path(cfg.out)
    if out.exists() and not cfg.force:
        raise DatasetExistsError(f"{out} exists; pass --force to overwrite it or choose another --out")
    rec = recommend(cfg.dataset, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    rec.schedule.save(out)
    sidecar = out.with_name(out.stem + ".recommendation.json")
    save_config(cfg, sidecar, recommendation=json.loads(json.dumps(rec.to_dict(), default=_json_default)))
    return rec, out, sidecar


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)
