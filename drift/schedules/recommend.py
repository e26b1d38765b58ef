"""Recommend a weight schedule from measured drift, with a rationale a person can check.

The recommendation is only as good as the evidence of *supervision quality* behind it; drift uses the strongest it
finds, in this order:

1. a continuation probe (``drift probe``): teacher continuation accuracy by prefix ratio, and per-cut signals
   against continuation success (:mod:`drift.probe.analysis`);
2. oracle labels (the oracle world's ``oracle_teacher_correct``: the teacher's argmax is the right next token);
3. none: then the paper's IW-OPD (gamma 0.5) is recommended as the default, and the rationale says there was no
   direct measurement to adapt it to.

Clusters. Every interval resamples ``--cluster`` units (default ``prompt``: a prompt's rollouts share its
difficulty); every output records ``cluster`` and ``n_clusters``.

Scores (higher = better supervision, orientation declared a priori): IW-OPD's own per-rollout signal
``-C_t/C_T`` (its weight is ``w_t = 1 + gamma (1 - C_t/C_T)``, ``C_t = sum_{k<t} |A_k|``) and the position curve's
``-t/T`` (``+t/T`` when the direction test says quality rises, since the fitted schedule then up-weights the end).
Raw ``-C_t`` is reported for context only: it wins between prompts on difficulty alone.

The comparison. Within one rollout ``C_t/C_T`` never decreases, so it orders tokens exactly like ``t/T``; the
decision uses ``Delta = AUROC(-C_t/C_T) - AUROC(position)`` over pairs from *different rollouts of the same prompt*
(prompt difficulty cancels) when at least ``--min-clusters`` prompts have such pairs, else over all pairs pooled,
with a **paired cluster-bootstrap interval** (both AUROCs on the same resample of prompts). The decision rule:

1. fewer than ``--min-clusters`` clusters → ``insufficient``: the documented default, no fitted schedule;
2. the Delta interval lies above 0 → ``iw_opd``;
3. the direction test says ``flat`` (its equivalence test: quality within the flat margin) → ``uniform``;
4. the direction is ``inconclusive`` (or ``insufficient``) → the default, with that reason;
5. the direction is ``falls``/``rises`` and the Delta interval lies below 0 → a **fitted** position schedule
   (the quality curve q(x), chosen by AIC among identified fits, becomes w(x) = 1 + gamma · q(x) / max q, clipped
   to [1, 1 + gamma]: OPD stays the floor); no usable fit → the default;
6. otherwise (the Delta interval contains 0) the comparison is ``inconclusive`` → the default.

The documented default is the paper's IW-OPD (gamma, code denominator): it has no fitted parameters and keeps OPD as
the floor. The one exception: when the direction test says quality *rises* (IW-OPD's premise contradicted), the
default is uniform OPD. Non-overlapping marginal AUROC intervals are never used as a test.

Everything the decision used is returned in :class:`Recommendation` and written beside the schedule.

A caller that already holds the evidence (``drift report``: the probe analysis it reloaded, the oracle metric's bins,
direction test and fits) passes it as :class:`Precomputed`, and nothing of it is computed again.
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
from drift.curves import get_family
from drift.errors import DatasetError, DatasetExistsError
from drift.schedules.base import Schedule
from drift.schedules.kinds import Fitted, Uniform, load
from drift.schedules.preview import decile_weights

__all__ = ["Precomputed", "RecommendConfig", "Recommendation", "recommend", "recommend_from_config"]

@dataclass(frozen=True)
class RecommendConfig:
    """``drift schedule recommend``: derive a schedule from a dataset (and its probe, when there is one)."""

    dataset: str = opt("", "a drift dataset folder (from drift collect / drift score)")
    out: str = opt("schedule.json", "where to write the recommended schedule spec (a rationale JSON goes beside)")
    probe: str | None = opt(None, "continuation-probe output folder (default: DATASET/probe when it exists)")
    gamma: float = opt(0.5, "bonus strength: weights lie in [1, 1 + gamma], so OPD stays the floor")
    bins: int = opt(20, "relative-position bins for the quality curve (oracle labels)")
    n_boot: int = opt(1000, "cluster-bootstrap resamples for intervals")
    cluster: str = opt("prompt", "resampling unit of every interval: prompt (all rollouts of a prompt together) or "
                                 "rollout", choices=("prompt", "rollout"))
    min_clusters: int = opt(10, "fewer clusters than this give 'insufficient' and the default schedule (no fit)")
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
        c.choice("cluster", self.cluster, ("prompt", "rollout"))
        c.check(isinstance(self.min_clusters, int) and self.min_clusters >= 1,
                f"min_clusters must be an integer >= 1, got {self.min_clusters!r}")
        c.positive("max_tokens", self.max_tokens)
        c.choice("signal", self.signal, ("auto", "position", "cumulative"))
        c.raise_if_any()


@dataclass(frozen=True)
class Precomputed:
    """Evidence a caller already computed, used by :func:`recommend` instead of computing it again.

    Attributes:
        analysis: the probe's :class:`~drift.probe.analysis.ProbeAnalysis` (e.g. reloaded with
            :func:`~drift.probe.analysis.load_analysis`); its cluster unit must be the config's. A reloaded one has
            no per-cut data: its stored AUROCs and paired comparison are used as written, and only a comparison it
            does not hold (position oriented ``+t/T`` when quality rises) is computed from the continuations.
        bins: a bins table holding ``oracle_teacher_correct`` by relative position (its pooled cell is the
            quality curve); with ``direction`` (a :class:`~drift.stats.DirectionResult`) and ``selection`` (a
            :class:`~drift.stats.ModelSelection`) of that pooled cell, and ``n_clusters`` behind them.
    """

    analysis: Any = None
    bins: Any = None
    direction: Any = None
    selection: Any = None
    n_clusters: int | None = None

    @property
    def oracle(self) -> bool:
        """Whether the oracle evidence (bins, direction and fits) is complete."""
        return self.bins is not None and self.direction is not None and self.selection is not None


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
    cluster: str = "prompt"
    n_clusters: int | None = None
    verdict: str | None = None

    @property
    def decile_weights(self) -> list[float]:
        """Mean weight per relative-position decile on a constant-|A| rollout of length 100."""
        return [float(v) for v in decile_weights(self.schedule)]

    def to_dict(self) -> dict[str, Any]:
        return {"schedule": self.schedule.to_dict(), "evidence": self.evidence, "quality": self.quality,
                "direction": self.direction, "fit": self.fit, "half_point": self.half_point,
                "signals": self.signals, "choice": self.choice, "decile_weights": self.decile_weights,
                "cluster": self.cluster, "n_clusters": self.n_clusters, "verdict": self.verdict,
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
    """The fitted quality curve q turned into w = 1 + gamma q / peak (affine in the curve's linear parameters, which
    the registry :data:`drift.curves.FAMILIES` declares)."""
    new = get_family(family).affine(params, gamma / peak, 1.0)
    return Fitted(family=family, params=new, x="rel", normalize="none", floor=1.0, ceiling=1.0 + gamma,
                  source=source)


def _num(v: Any) -> str:
    """A number for the rationale; n/a when a fit could not give it (e.g. an unidentified interval)."""
    return f"{v:.4g}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _fmt_ci(d: dict[str, Any], key: str = "auroc") -> str:
    return f"{d[key]:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"


def _signals(pos: np.ndarray, iw: np.ndarray, raw: np.ndarray | None, y: np.ndarray, prompt: np.ndarray,
             rollout: np.ndarray, cfg: RecommendConfig, rises: bool, extra: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """AUROCs of the position-curve score and IW-OPD's score, and their paired comparison.

    ``pos`` is ``t/T``, ``iw`` is ``C_t/C_T``, ``raw`` is ``C_t`` (context only). Scores are oriented so that
    higher = better supervision: IW-OPD's ``-C_t/C_T`` (its own weight); the position curve's ``-t/T``, or ``+t/T``
    when the direction test says quality rises (the fitted schedule then up-weights the end).
    """
    from drift.probe.analysis import auroc_bootstrap, compare_scores

    sign = 1.0 if rises else -1.0
    s_pos, s_iw = sign * pos, -iw
    cl = prompt if cfg.cluster == "prompt" else rollout
    C = int(cl.max()) + 1 if len(cl) else 0
    out: dict[str, Any] = {}
    for name, score, label, why in (
            ("position", s_pos, "+t/T" if rises else "-t/T", "the position curve's orientation ("
             + ("quality rises by the direction test" if rises else "declared a priori: IW-OPD's premise") + ")"),
            ("iw_opd", s_iw, "-C_t/C_T", "IW-OPD's weight 1 + gamma (1 - C_t/C_T), declared a priori"),
            *((("cumulative_raw", -raw, "-C_t", "raw, context only: it also carries the prompt's difficulty"),)
              if raw is not None else ())):
        est, lo, hi = auroc_bootstrap(score, y, cl, C, cfg.n_boot, cfg.seed)
        out[name] = {"auroc": est, "ci_low": lo, "ci_high": hi, "n": len(y), "n_clusters": C, "cluster": cfg.cluster,
                     "score": label, "orientation": why}
    out["comparison"] = {"candidate": "-C_t/C_T", "reference": out["position"]["score"],
                         **compare_scores(s_iw, s_pos, y, prompt=prompt, rollout=rollout, cluster=cfg.cluster,
                                          n_boot=cfg.n_boot, seed=cfg.seed)}
    if extra:
        for v in out.values():
            v.update(extra)
    return out


def _oracle_arrays(ds: Any, cfg: RecommendConfig) -> dict[str, np.ndarray | float]:
    """Token rows (sampled by whole prompts beyond ``max_tokens``): t/T, C_t/C_T, C_t, the label, prompt, rollout."""
    from drift.schema import cluster_key_sql

    con = ds.duckdb()
    names = {f.name for f in ds.dataset("tokens").schema}
    pk, rk = cluster_key_sql("prompt", names), cluster_key_sql("rollout", names)
    n_tokens = con.sql("SELECT count(*) FROM tokens").fetchall()[0][0]
    keep = min(1.0, cfg.max_tokens / max(n_tokens, 1))
    df = con.sql(f"""
        SELECT dense_rank() OVER (ORDER BY {pk}) - 1 AS p, dense_rank() OVER (ORDER BY {rk}) - 1 AS r,
               rel_position, cum_abs_gap_frac, cum_abs_gap, CAST(oracle_teacher_correct AS DOUBLE) AS y
        FROM tokens WHERE hash({pk}) % 1000000 < {int(keep * 1_000_000)}""").df()
    con.close()
    return {"pos": df["rel_position"].to_numpy(float), "iw": df["cum_abs_gap_frac"].to_numpy(float),
            "raw": df["cum_abs_gap"].to_numpy(float), "y": df["y"].to_numpy(float),
            "prompt": df["p"].to_numpy(np.int64), "rollout": df["r"].to_numpy(np.int64), "keep": keep}


def _n_clusters(ds: Any, unit: str) -> int:
    from drift.schema import cluster_key_sql

    names = {f.name for f in ds.dataset("tokens").schema}
    con = ds.duckdb()
    n = int(con.sql(f"SELECT count(DISTINCT {cluster_key_sql(unit, names)}) FROM tokens").fetchall()[0][0])
    con.close()
    return n


def _direction_test(rb: Any, metric: str, cfg: RecommendConfig) -> Any:
    """The direction test of ``metric`` with this config's resamples, seed and ``min_clusters``."""
    from drift.stats import direction_test

    return direction_test(rb, metric, n=cfg.n_boot, seed=cfg.seed, min_clusters=cfg.min_clusters)


def _from_oracle(ds: Any, cfg: RecommendConfig, pre: Precomputed | None = None) -> dict[str, Any]:
    from drift.stats import BinSpec, aggregate_bins, fit_bins, half_point
    from drift.stats.bins import pooled_rows

    metric = "oracle_teacher_correct"
    if pre is not None and pre.oracle:
        table, direction, selection = pooled_rows(pre.bins, metric), pre.direction, pre.selection
    else:
        rb = aggregate_bins(ds.root, [metric], BinSpec(by="rel", bins=cfg.bins, step="pool", cluster=cfg.cluster,
                                                       min_clusters=cfg.min_clusters))
        table = pooled_rows(rb.table(n_boot=cfg.n_boot, seed=cfg.seed), metric)
        direction = _direction_test(rb, metric, cfg)
        selection = fit_bins(rb, metric, n_boot=cfg.n_boot, seed=cfg.seed)
    first, last = table.iloc[0], table.iloc[-1]
    quality = {"metric": metric, "label": "teacher argmax equals the oracle's next token",
               "x": "relative position t/T", "start": {k: float(first[k]) for k in ("mean", "ci_low", "ci_high")},
               "end": {k: float(last[k]) for k in ("mean", "ci_low", "ci_high")},
               "n_tokens": int(table["n_tokens"].sum()), "n_bins": len(table)}

    def signals(rises: bool) -> dict[str, Any]:
        a = _oracle_arrays(ds, cfg)
        extra = {"sampled_fraction": a["keep"]} if a["keep"] < 1.0 else None
        return _signals(a["pos"], a["iw"], a["raw"], a["y"], a["prompt"], a["rollout"], cfg, rises,  # type: ignore
                        extra)

    return {"evidence": "oracle", "quality": quality, "direction": direction, "selection": selection,
            "half_point": half_point(selection.best) if selection.best_name is not None else math.nan,
            "n_clusters": pre.n_clusters if pre is not None and pre.oracle and pre.n_clusters is not None
            else _n_clusters(ds, cfg.cluster), "signals": signals}


def _stored_signals(analysis: Any) -> dict[str, Any]:
    """The signals of a reloaded probe analysis, as :func:`_signals` would give them for ``-t/T``: its stored
    AUROCs and its paired comparison of -C_t/C_T with -t/T (the same comparison, written by ``drift probe``)."""
    out: dict[str, Any] = {}
    for name, key in (("position", "neg_rel_position"), ("iw_opd", "neg_cum_abs_gap_frac"),
                      ("cumulative_raw", "neg_cum_abs_gap")):
        a = analysis.aurocs.get(key)
        if a is not None:
            out[name] = {"auroc": a["auroc"], "ci_low": a["ci_low"], "ci_high": a["ci_high"], "n": a["n"],
                         "n_clusters": a["n_clusters"], "cluster": analysis.cluster, "score": a["score"],
                         "orientation": a["orientation"], "normalizer": analysis.normalizer,
                         "source": "probe analysis (reloaded)"}
    out["comparison"] = dict(analysis.comparisons["iw_opd_vs_position"])
    return out


def _from_probe(path: Path, ds: Any, cfg: RecommendConfig, analysis: Any = None) -> dict[str, Any]:
    from drift.probe.analysis import analyze
    from drift.stats import fit_all, half_point

    if analysis is None:
        analysis = analyze(path, n_boot=cfg.n_boot, seed=cfg.seed, cluster=cfg.cluster,
                           min_clusters=cfg.min_clusters)
    elif analysis.cluster != cfg.cluster:
        raise ValueError(f"the precomputed probe analysis resamples {analysis.cluster!r} clusters but the config "
                         f"says cluster={cfg.cluster!r}; pass a RecommendConfig with cluster={analysis.cluster!r}")
    acc = analysis.accuracy[analysis.accuracy["model"] == "teacher"].sort_values("ratio")
    x, y = acc["ratio"].to_numpy(float), acc["accuracy"].to_numpy(float)
    sigma = np.maximum((acc["ci_high"] - acc["ci_low"]).to_numpy(float) / 3.92, 1e-3)
    ok = np.isfinite(y) & np.isfinite(sigma)
    models = ["exponential", "logistic", "linear", "hinge"] + (["power"] if x.min() > 0 else [])
    # the accuracies' errors come from the probe's cluster bootstrap: the fit's intervals and selection know R
    selection = fit_all(x[ok], y[ok], models=models, sigma=sigma[ok], absolute_sigma=True,
                        n_clusters=analysis.n_clusters or None, min_clusters=cfg.min_clusters)
    quality = {"metric": "teacher continuation accuracy", "label": "a teacher continuation from the cut verifies",
               "x": "prefix ratio", "start": {k: float(acc.iloc[0][k]) for k in ("accuracy", "ci_low", "ci_high")},
               "end": {k: float(acc.iloc[-1][k]) for k in ("accuracy", "ci_low", "ci_high")},
               "n_continuations": int(acc["n_continuations"].sum()), "n_ratios": len(acc)}

    def signals(rises: bool) -> dict[str, Any]:
        d = analysis.data
        if d is None and not rises and "iw_opd_vs_position" in analysis.comparisons and \
                {"neg_rel_position", "neg_cum_abs_gap_frac"} <= set(analysis.aurocs):
            return _stored_signals(analysis)
        if d is None:  # reloaded, and the comparison it holds is not the one needed: the per-cut scores, once
            if not (path / "continuations").is_dir():
                raise DatasetError(f"{path} holds no continuations/ folder to compare +t/T with -C_t/C_T on")
            d = analyze(path, n_boot=0, cluster=analysis.cluster, min_clusters=analysis.min_clusters).data
            assert d is not None
        d = d[np.isfinite(d["neg_rel_position"]) & np.isfinite(d["neg_cum_abs_gap_frac"])]
        raw = -d["neg_cum_abs_gap"].to_numpy(float)
        return _signals(-d["neg_rel_position"].to_numpy(float), -d["neg_cum_abs_gap_frac"].to_numpy(float),
                        raw if np.isfinite(raw).all() else None, d["y"].to_numpy(float), d["prompt"].to_numpy(),
                        d["rollout"].to_numpy(), cfg, rises, {"normalizer": analysis.normalizer})

    return {"evidence": "probe", "quality": quality, "direction": analysis.direction, "selection": selection,
            "half_point": half_point(selection.best) if selection.best_name is not None else math.nan,
            "n_clusters": analysis.n_clusters, "signals": signals}


def _diff_text(part: dict[str, Any]) -> str:
    d = part["difference"]
    return f"{d['estimate']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def _primary(cmp: dict[str, Any], min_clusters: int) -> tuple[str, dict[str, Any]]:
    """The comparison the decision uses: same prompt / different rollouts when at least ``min_clusters`` prompts
    hold such pairs (prompt difficulty cancels there), else the pooled one."""
    sp = cmp["same_prompt"]
    if sp["n_prompts_with_pairs"] >= min_clusters and math.isfinite(sp["difference"]["ci_low"]):
        return "same-prompt", sp
    return "pooled", cmp["pooled"]


def _default(cfg: RecommendConfig, why: str, rises: bool = False) -> tuple[Schedule, str, str]:
    """The documented default when the evidence cannot decide: IW-OPD (the paper's default), or uniform when the
    direction test says quality *rises* (IW-OPD's premise is then contradicted)."""
    if rises:
        return Uniform(), f"uniform (default: {why})", (f"decision: {why}; quality rises along the response, which "
                                                       "contradicts IW-OPD's premise, so the default is uniform OPD.")
    return _iw(cfg.gamma), f"iw_opd (default: {why})", (f"decision: {why}, so no schedule is fitted: the documented "
                                                        f"default is the paper's IW-OPD (gamma {cfg.gamma}), which "
                                                        "needs no fitted parameters and keeps OPD as the floor.")


def recommend(dataset: str | os.PathLike[str], config: RecommendConfig | None = None, *,
              precomputed: Precomputed | None = None) -> Recommendation:
    """Recommend a schedule for ``dataset`` (see the module docstring for the decision rule).

    Args:
        dataset: the drift dataset folder.
        config: the :class:`RecommendConfig` (default: all defaults for ``dataset``).
        precomputed: evidence the caller already holds (:class:`Precomputed`), used instead of computing it.
    """
    from drift.store import open_dataset

    cfg = config or RecommendConfig(dataset=str(dataset))
    ds = open_dataset(dataset)
    probe_dir = Path(cfg.probe) if cfg.probe else Path(dataset) / "probe"
    names = {f.name for f in ds.dataset("tokens").schema}
    given = precomputed.analysis if precomputed is not None else None
    if given is not None or (probe_dir / "continuations").is_dir():
        found = _from_probe(probe_dir, ds, cfg, given)
    elif cfg.probe:
        raise DatasetError(f"--probe {cfg.probe} holds no continuations/ folder; run `drift probe` first.")
    elif "oracle_teacher_correct" in names:
        found = _from_oracle(ds, cfg, precomputed)
    else:
        sched = _iw(cfg.gamma)
        return Recommendation(
            schedule=sched, evidence="none", choice="iw_opd (default)", cluster=cfg.cluster,
            rationale=("evidence: none. This dataset has no continuation probe and no oracle labels, so drift "
                       "cannot measure supervision quality by position here.",
                       f"recommendation: the paper's IW-OPD (gamma {cfg.gamma}, code denominator), which adapts "
                       "per rollout from the cumulative |A| and keeps OPD as the floor.",
                       "to base this on measurements, run `drift probe DATASET` and recommend again."))
    direction = found["direction"]
    quality = found["quality"]
    n_clusters = int(found["n_clusters"])
    verdict = "insufficient" if n_clusters < cfg.min_clusters else str(direction.verdict)
    key = "accuracy" if "accuracy" in quality["start"] else "mean"
    lines = [f"evidence: {found['evidence']} — supervision quality = {quality['metric']} "
             f"({quality['label']}), by {quality['x']}; {n_clusters} {cfg.cluster} clusters "
             f"(--min-clusters {cfg.min_clusters}).",
             f"quality {quality['start'][key]:.3f} [{quality['start']['ci_low']:.3f}, "
             f"{quality['start']['ci_high']:.3f}] at the start, {quality['end'][key]:.3f} "
             f"[{quality['end']['ci_low']:.3f}, {quality['end']['ci_high']:.3f}] at the end; direction: "
             f"{verdict} (Spearman rho {direction.rho:+.3f}, interval [{direction.ci_low:+.3f}, "
             f"{direction.ci_high:+.3f}]).", ]
    selection = found["selection"]
    fit = selection.best.to_dict() if selection.best_name is not None else None
    half = found["half_point"]
    signals: dict[str, Any] = {}
    sched: Schedule
    if verdict == "insufficient":
        fit, half = None, math.nan
        sched, choice, why = _default(cfg, f"insufficient evidence ({n_clusters} {cfg.cluster} clusters < "
                                           f"--min-clusters {cfg.min_clusters})")
        lines.append(why)
        return Recommendation(schedule=sched, evidence=found["evidence"], quality=quality,
                              direction={**direction.to_dict(), "verdict": verdict}, fit=None, half_point=None,
                              signals={}, choice=choice, rationale=tuple(lines), cluster=cfg.cluster,
                              n_clusters=n_clusters, verdict=verdict)
    if fit is not None:
        params = ", ".join(f"{k} = {_num(v)} [{_num(fit['ci_low'].get(k))}, {_num(fit['ci_high'].get(k))}]"
                           for k, v in fit["params"].items())
        lines.append(f"best curve by AIC: {fit['model']} ({params}); quality is halfway between its start and "
                     f"end values at {half:.3f}" if math.isfinite(half) else
                     f"best curve by AIC: {fit['model']} ({params}); no halfway crossing")
    rises = verdict == "rises"
    signals = found["signals"](rises)
    pos, iw = signals["position"], signals["iw_opd"]
    cmp = signals["comparison"]
    which, prim = _primary(cmp, cfg.min_clusters)
    signals["comparison"]["decision_uses"] = which
    raw = signals.get("cumulative_raw")
    lines.append(f"signals (AUROC against the quality label, higher = better supervision, {cfg.cluster}-bootstrap "
                 f"95% intervals): position {pos['score']} {_fmt_ci(pos)}; IW-OPD {iw['score']} {_fmt_ci(iw)}"
                 + (f"; raw {raw['score']} {_fmt_ci(raw)} (context only: it also ranks prompts by difficulty)"
                    if raw is not None else "") + ".")
    lines.append(f"paired difference AUROC(-C_t/C_T) - AUROC({pos['score']}): same prompt, different rollouts "
                 f"{_diff_text(cmp['same_prompt'])} ({cmp['same_prompt']['n_prompts_with_pairs']} prompts with "
                 f"pairs); pooled {_diff_text(cmp['pooled'])}; the decision uses the {which} interval.")
    lo, hi = prim["difference"]["ci_low"], prim["difference"]["ci_high"]
    iw_wins = math.isfinite(lo) and lo > 0
    pos_wins = math.isfinite(hi) and hi < 0
    fit_ok = fit is not None
    if cfg.signal == "cumulative":
        sched, choice = _iw(cfg.gamma), "iw_opd"
        lines.append("decision: IW-OPD forced by --signal cumulative.")
    elif cfg.signal == "auto" and iw_wins:
        sched, choice = _iw(cfg.gamma), "iw_opd"
        lines.append(f"decision: the {which} interval of the difference lies above 0, so IW-OPD's per-rollout "
                     f"C_t/C_T predicts supervision quality better than position: the reliable/unreliable boundary "
                     f"moves per rollout, IW-OPD (gamma {cfg.gamma}) follows it, a fixed position curve cannot.")
    elif cfg.signal == "auto" and verdict == "flat":
        sched, choice = Uniform(), "uniform"
        lines.append("decision: the equivalence test says quality is flat along the response (within the margin), "
                     "and C_t/C_T does not beat position, so there is nothing position-dependent to correct: keep "
                     "uniform OPD.")
    elif cfg.signal == "auto" and verdict not in ("rises", "falls"):
        sched, choice, why = _default(cfg, f"the direction is {verdict} (neither a trend nor flatness is shown)")
        lines.append(why)
    elif cfg.signal == "auto" and not pos_wins:
        sched, choice, why = _default(cfg, f"the comparison is inconclusive (the {which} interval of the "
                                           "difference contains 0)", rises=rises)
        lines.append(why)
    elif not fit_ok:
        sched, choice, why = _default(cfg, "no curve family gave a usable fit of the quality curve", rises=rises)
        lines.append(why)
    else:
        # on [0, 1], a family evaluated only where defined (a power law at x <= 0 takes its first fitted bin's value)
        peak = float(np.max(selection.best.predict_on_domain(np.linspace(0.0, 1.0, 201))))
        if not (math.isfinite(peak) and peak > 0):
            raise DatasetError("the fitted quality curve has no positive maximum on [0, 1]; cannot normalize")
        source = {"dataset": str(dataset), "evidence": found["evidence"], "metric": quality["metric"],
                  "fit": {k: fit[k] for k in ("model", "params", "aic")}, "quality_peak": peak,  # type: ignore
                  "gamma": cfg.gamma}
        sched, choice = _blend(fit["model"], fit["params"], cfg.gamma, peak, source), "fitted"  # type: ignore
        why = (f"the {which} interval of the difference lies below 0 (position predicts quality better than "
               "C_t/C_T), so" if cfg.signal == "auto" else "a position curve is forced by --signal position;")
        lines.append(f"decision: {why} the fitted curve becomes the schedule: w(t/T) = 1 + {cfg.gamma} "
                     f"q(t/T) / {peak:.3f}, clipped to [1, {1 + cfg.gamma}] (OPD stays the floor).")
    if rises:
        lines.append("note: quality RISES along the response here (the privileged self-teacher pattern of PW-OPSD, "
                     "opposite to IW-OPD's premise); IW-OPD would up-weight the wrong end.")
    if iw["auroc"] is not None and math.isfinite(iw["auroc"]) and iw["ci_high"] < 0.5:
        lines.append("finding: IW-OPD's declared orientation (-C_t/C_T) is reversed by the data (its AUROC interval "
                     "lies below 0.5).")
    return Recommendation(schedule=sched, evidence=found["evidence"], quality=quality,
                          direction={**direction.to_dict(), "verdict": verdict}, fit=fit,
                          half_point=half if math.isfinite(half) else None, signals=signals, choice=choice,
                          rationale=tuple(lines), cluster=cfg.cluster, n_clusters=n_clusters, verdict=verdict)


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
