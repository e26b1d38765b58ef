"""Report sections computed from the token rows themselves: run metadata, per-position curves, direction tests,
fitted curves and per-rollout trajectories.

Each ``*_section(ctx)`` function gathers its numbers (through :mod:`drift.stats` and DuckDB), draws its figures with
:mod:`drift.report.plots` on fresh axes, and returns a :class:`~drift.report.render.Section`. The shared, expensive
part (bins with a cluster bootstrap, fits, direction tests) is gathered once in :func:`prepare` and kept on the
:class:`Context`: reloaded from ``drift fit``'s outputs where they exist, computed only for what they lack, and
every input recorded in :attr:`Context.inputs` as reloaded or computed.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from drift.report import plots
from drift.report.imported import note_absent
from drift.report.render import CodeBlock, FigureStore, Section, TableBlock, new_figure
from drift.stats.bins import pooled_rows
from drift.store import DriftDataset

__all__ = ["Context", "directions_section", "fits_section", "fmt_ci", "metadata_section", "positions_section",
           "prepare", "trajectories_section"]

log = logging.getLogger(__name__)

KEY = ("run_id", "step", "prompt_id", "sample_id")
KEY_SQL = ", ".join(KEY)


@dataclass
class Context:
    """What every section reads: the dataset, the config, the figure store and the shared statistics."""

    ds: DriftDataset
    cfg: Any  # drift.report.build.ReportConfig
    figures: FigureStore
    metrics: tuple[str, ...]
    fit_dir: Path | None = None
    probe_dir: Path | None = None
    train_dir: Path | None = None
    schedule_path: Path | None = None
    rel_table: pd.DataFrame | None = None  # bins by relative position, pooled and per length stratum
    abs_table: pd.DataFrame | None = None
    strata_labels: tuple[str, ...] = ()
    fits: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric -> fits.json-style entry (+ source)
    selections: dict[str, Any] = field(default_factory=dict)  # metric -> ModelSelection of the pooled cell
    directions: dict[str, Any] = field(default_factory=dict)  # metric -> DirectionResult of the pooled cell
    n_clusters: dict[str, int] = field(default_factory=dict)  # metric -> clusters of the pooled cell
    fit_points: dict[str, pd.DataFrame] = field(default_factory=dict)
    fit_by: dict[str, str] = field(default_factory=dict)
    strata_directions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    analysis: Any = None  # the probe's ProbeAnalysis (reloaded, or computed when the probe wrote none)
    inputs: list[dict[str, str]] = field(default_factory=list)  # what was reloaded, what computed (see note_input)
    support: Any = None  # drift.report.imported.Support: what the dataset can show (None: read it from ds)
    absent: dict[str, str] = field(default_factory=dict)  # metric -> why it is not drawn and what adds it

    def note_input(self, what: str, metrics: Any, status: str, source: str) -> None:
        """Record one input of the report: ``status`` is ``reloaded`` or ``computed``; ``source`` says from what."""
        names = ", ".join(metrics) if not isinstance(metrics, str) else metrics
        self.inputs.append({"input": what, "metrics": names or "—", "status": status, "from": source})


def fmt_ci(v: Any, lo: Any, hi: Any, spec: str = ".3g") -> str:
    """``v [lo, hi]`` (just ``v`` without a finite interval; an em dash without a value)."""
    def ok(x: Any) -> bool:
        return x is not None and isinstance(x, (int, float, np.floating)) and math.isfinite(float(x))

    if not ok(v):
        return "—"
    if ok(lo) and ok(hi):
        return f"{float(v):{spec}} [{float(lo):{spec}}, {float(hi):{spec}}]"
    return f"{float(v):{spec}}"


# ------------------------------------------------------------------------------------------------ prepare
@dataclass(frozen=True)
class StoredFit:
    """What ``drift fit`` wrote into a folder, as read back (nothing recomputed).

    Attributes:
        folder: the fit folder; by: its position axis (``rel``, ``abs``, ``abs_log``); bins: ``bins.parquet``;
        fits: ``fits.json`` (metric -> entry); config: the resolved ``FitConfig`` fields of ``config.json``;
        strata: its length-stratum labels (empty without ``--strata``).
    """

    folder: Path
    by: str
    bins: pd.DataFrame = field(repr=False)
    fits: dict[str, Any] = field(repr=False)
    config: dict[str, Any] = field(default_factory=dict)
    strata: tuple[str, ...] = ()

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metrics with both fits and bins."""
        have = set(self.bins["metric"])
        return tuple(m for m in self.fits if m in have)

    def strata_directions(self, metric: str) -> list[dict[str, Any]]:
        """``[{"stratum": label, **direction}]`` of the fit's length strata (in the headline's step and group)."""
        entry = self.fits[metric]
        head = entry.get("cell") or {}
        order = {s: i for i, s in enumerate(self.strata)}
        cells = [c for c in entry.get("cells") or () if c.get("stratum") != "all"
                 and c.get("group") == head.get("group", "all") and c.get("step") == head.get("step")]
        return [{"stratum": c["stratum"], **c["direction"]}
                for c in sorted(cells, key=lambda c: order.get(c["stratum"], len(order)))]


def load_fit(folder: Path | None) -> StoredFit | None:
    """Read ``fits.json``, ``bins.parquet`` and ``config.json`` of a ``drift fit`` folder (None when incomplete)."""
    if folder is None or not (folder / "fits.json").is_file() or not (folder / "bins.parquet").is_file():
        return None
    top = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    conf = dict(top.get("config") or {})
    return StoredFit(folder, str(conf.get("by", "rel")), pd.read_parquet(folder / "bins.parquet"),
                     json.loads((folder / "fits.json").read_text()), conf, tuple(top.get("strata") or ()))


def _reload_fits(ctx: Context, stored: StoredFit) -> list[str]:
    """Take fits, directions and fitted points of every report metric ``stored`` holds; returns those metrics."""
    from drift.stats import DirectionResult, ModelSelection

    done = []
    for metric in (m for m in ctx.metrics if m in stored.metrics):
        entry = stored.fits[metric]
        try:
            selection = ModelSelection.from_dict(entry)
        except (ValueError, KeyError) as exc:  # an edited or foreign fits.json: refit this metric here
            log.warning("report: %s/fits.json entry %s does not reload (%s); fitting it here", stored.folder,
                        metric, exc)
            continue
        ctx.selections[metric] = selection
        ctx.directions[metric] = DirectionResult.from_dict(entry["direction"])
        ctx.n_clusters[metric] = int(entry.get("n_clusters") or ctx.directions[metric].n_clusters)
        ctx.fits[metric] = {**entry, "source": f"{stored.folder.name}/fits.json"}
        ctx.fit_by[metric] = stored.by
        ctx.fit_points[metric] = pooled_rows(stored.bins, metric)
        if stored.strata:
            ctx.strata_directions[metric] = stored.strata_directions(metric)
        done.append(metric)
    return done


def prepare(ctx: Context) -> None:
    """Gather every metric's bins (relative and absolute, with length strata), fits and direction tests.

    What ``fit/`` holds is reloaded, never recomputed: its ``bins.parquet`` rows (on its position axis), its fits
    (:meth:`drift.stats.ModelSelection.from_dict`) and direction tests, and its length strata when it has them.
    Only what it lacks is computed here, once, the way ``drift fit`` does (:func:`drift.stats.aggregate_bins`,
    :func:`drift.stats.fit_bins`, :func:`drift.stats.direction_test`): every metric it does not hold, the other
    position axis, and the length strata of a fit made without ``--strata``. :attr:`Context.inputs` records which.
    """
    from drift.stats import BinSpec, aggregate_bins, direction_test, fit_bins

    if not ctx.metrics:  # nothing to bin (every requested metric is absent): the sections say why
        return
    cfg = ctx.cfg
    stored = load_fit(ctx.fit_dir)
    reloaded = _reload_fits(ctx, stored) if stored is not None else []
    axis = "abs" if stored is not None and stored.by != "rel" else "rel"
    tables: dict[str, list[pd.DataFrame]] = {"rel": [], "abs": []}
    if stored is not None and reloaded:
        src = f"{stored.folder.name}/bins.parquet"
        tables[axis].append(stored.bins[stored.bins["metric"].isin(reloaded)])
        ctx.note_input(f"{'relative' if axis == 'rel' else 'absolute'}-position bins", reloaded, "reloaded",
                       src + (" (with its length strata)" if stored.strata else ""))
        ctx.note_input("curve fits and direction tests", reloaded, "reloaded", f"{stored.folder.name}/fits.json")
    n_boot = max(cfg.n_boot, 50)
    strata = cfg.strata or None

    def strata_directions(rb: Any, metric: str) -> None:
        ctx.strata_directions[metric] = [
            {"stratum": label, **direction_test(rb, metric, n=n_boot, seed=cfg.seed, stratum=label).to_dict()}
            for label in rb.strata_labels]

    # relative bins (pooled and per stratum) of the metrics fit/ does not hold on that axis; fits of those it lacks
    todo = [m for m in ctx.metrics if not (m in reloaded and axis == "rel")]
    if todo:
        rb = aggregate_bins(ctx.ds, todo, BinSpec(by="rel", bins=cfg.bins, strata=strata, step="pool"))
        tables["rel"].append(rb.table(n_boot=cfg.n_boot, seed=cfg.seed))
        ctx.note_input("relative-position bins", todo, "computed", "tokens (cluster bootstrap, "
                       f"{cfg.n_boot} resamples)")
        fitted = [m for m in todo if m not in reloaded]
        for metric in fitted:
            errors = "cov" if cfg.n_boot >= 50 else "n_rollouts"
            sel = fit_bins(rb, metric, n_boot=n_boot, seed=cfg.seed, errors=errors)  # type: ignore[arg-type]
            direction = direction_test(rb, metric, n=n_boot, seed=cfg.seed)
            ctx.selections[metric], ctx.directions[metric] = sel, direction
            ctx.n_clusters[metric] = rb.n_clusters(metric)
            ctx.fits[metric] = {**sel.to_dict(), "direction": direction.to_dict(), "source": "computed",
                                "n_clusters": rb.n_clusters(metric), "cluster": rb.cluster}
            if direction.n_clusters < direction.min_clusters:  # as drift fit: no shape chosen from too few units
                ctx.fits[metric].update(selected=None, selection_note=f"{direction.n_clusters} clusters < "
                                        f"min_clusters {direction.min_clusters}")
            ctx.fit_points[metric] = pooled_rows(tables["rel"][-1], metric)
            ctx.fit_by[metric] = "rel"
        if fitted:
            ctx.note_input("curve fits and direction tests", fitted, "computed",
                           "relative bins above" + (" (not in fit/fits.json)" if stored is not None else ""))
        for metric in todo:
            if metric not in ctx.strata_directions:
                strata_directions(rb, metric)
    # length strata of reloaded relative bins made without --strata: only the strata cells (no pooled margins)
    bare = [m for m in reloaded if axis == "rel" and stored is not None and not stored.strata]
    if bare and strata:
        conf = stored.config if stored is not None else {}
        rb = aggregate_bins(ctx.ds, bare, BinSpec(by="rel", bins=int(conf.get("bins") or cfg.bins), strata=strata,
                                                  step="pool", margins=False,
                                                  cluster=conf.get("cluster") or "prompt",
                                                  min_clusters=int(conf.get("min_clusters") or 10)))
        tables["rel"].append(rb.table(n_boot=cfg.n_boot, seed=cfg.seed))
        for metric in bare:
            strata_directions(rb, metric)
        ctx.note_input("length-stratum bins and directions", bare, "computed",
                       f"tokens ({stored.folder.name if stored else 'fit'}/ was made without --strata)")
    # the other position axis
    todo = [m for m in ctx.metrics if not (m in reloaded and axis == "abs")]
    if todo:
        tables["abs"].append(aggregate_bins(ctx.ds, todo, BinSpec(by="abs", bins=cfg.bins, strata=strata,
                                                                  step="pool")).table(n_boot=cfg.n_boot,
                                                                                      seed=cfg.seed))
        ctx.note_input("absolute-position bins", todo, "computed", "tokens" + (
            " (fit/ holds relative bins only)" if reloaded and axis == "rel" else ""))
    ctx.rel_table = pd.concat(tables["rel"], ignore_index=True) if tables["rel"] else None
    ctx.abs_table = pd.concat(tables["abs"], ignore_index=True) if tables["abs"] else None
    if ctx.rel_table is not None:
        ctx.strata_labels = tuple(s for s in dict.fromkeys(ctx.rel_table["stratum"].astype(str)) if s != "all")


# ----------------------------------------------------------------------------------------------- metadata
def _kv(pairs: list[tuple[str, Any]]) -> pd.DataFrame:
    rows = [(k, v if not isinstance(v, (dict, list)) else json.dumps(v)) for k, v in pairs
            if v is not None and v != ""]
    return pd.DataFrame(rows, columns=["setting", "value"])


def _short(text: Any, n: int = 400) -> str:
    s = str(text)
    return s if len(s) <= n else s[: n - 1] + "…"


def metadata_section(ctx: Context) -> Section:
    """Models, prompts, sampling, scoring and sizes of the dataset, and one example rollout."""
    ds = ctx.ds
    top = ds.config or {}
    c = top.get("config", {})
    meta = ds.metadata
    con = ds.duckdb()
    n_tokens, n_rollouts, n_prompts = con.sql(
        f"SELECT count(*), count(DISTINCT ({KEY_SQL})), count(DISTINCT prompt_id) FROM tokens").fetchall()[0]
    steps = [r[0] for r in con.sql("SELECT DISTINCT step FROM tokens ORDER BY step").fetchall()]
    lens = con.sql(f"""SELECT avg(T), min(T), quantile_cont(T, 0.5), max(T), avg(fin), avg(trunc)
        FROM (SELECT max(response_len) AS T, bool_or(finished)::DOUBLE AS fin, bool_or(truncated)::DOUBLE AS trunc
              FROM tokens GROUP BY {KEY_SQL})""").fetchall()[0]
    reward = con.sql(f"""SELECT avg(r), count(r) FROM (SELECT any_value(reward) AS r FROM tokens
                         GROUP BY {KEY_SQL})""").fetchall()[0]
    sec = Section("metadata", "Run metadata",
                  "What was measured: the student that sampled the responses, the teacher that scored them, the "
                  "prompts, the sampling settings and how much data the statistics below rest on.")
    models = []
    for role in ("student", "teacher"):
        m = top.get("models", {}).get(role) or meta.get(role) or {}
        if m and any(m.get(k) for k in ("source", "path", "class", "n_params", "fingerprint")):
            n_params = m.get("n_params")
            models.append({"role": role, "source": m.get("source") or m.get("path") or "—",
                           "class": m.get("class", "—"),
                           "parameters": f"{n_params:,}" if isinstance(n_params, int) else "—",
                           "vocab": m.get("vocab_size", "—"), "dtype / device": f"{m.get('dtype', '—')} / "
                           f"{m.get('device', '—')}", "fingerprint": m.get("fingerprint", "—")})
    if models:
        sec.blocks.append(TableBlock("Models", pd.DataFrame(models)))
    sampling = top.get("sampling") or meta.get("sampling") or {}
    tok = top.get("tokenizer") or {}
    world = top.get("world") or {}
    settings = [
        ("command", top.get("command")), ("prompts", c.get("prompts")), ("samples per prompt",
                                                                         sampling.get("samples_per_prompt")),
        ("max new tokens", sampling.get("max_new_tokens")), ("temperature", sampling.get("temperature")),
        ("top-p", sampling.get("top_p")), ("top-k", sampling.get("top_k")), ("seed", sampling.get("seed")),
        ("teacher system prompt", c.get("teacher_system_prompt")), ("chat template", c.get("chat_template")),
        ("verifier", c.get("verifier")), ("oracle world", world.get("name")),
        ("estimator support", meta.get("support")), ("top-k overlap k", meta.get("k")),
        ("scoring temperature", meta.get("score_temperature")),
        ("tokenizer", f"{tok.get('hash')} ({tok.get('size')} tokens, EOS {tok.get('eos')!r})" if tok else None),
        ("drift version", top.get("drift_version")), ("git SHA", top.get("git_sha")),
        ("torch", top.get("torch_version")), ("created", ds.manifest.get("created")),
        ("status", ds.manifest.get("status")),
    ]
    sec.blocks.append(TableBlock("Prompts, sampling and scoring", _kv(settings)))
    support = ctx.support
    if support is not None and support.imported:
        from drift.report.imported import support_blocks

        blocks, support_findings = support_blocks(support, top, ds.manifest)
        sec.blocks += blocks
    sizes = [("prompts", f"{n_prompts:,}"), ("rollouts", f"{n_rollouts:,}"), ("response tokens", f"{n_tokens:,}"),
             ("steps", ", ".join(str(s) for s in steps)),
             ("response length", f"mean {lens[0]:.1f}, min {lens[1]}, median {lens[2]:.0f}, max {lens[3]}"),
             ("finished (EOS) / truncated", f"{lens[4]:.1%} / {lens[5]:.1%}"),
             ("mean verifier reward", f"{reward[0]:.3f} over {reward[1]:,} rollouts" if reward[1] else None)]
    sec.blocks.append(TableBlock("Sizes", _kv(sizes)))
    sec.findings.append(f"{n_rollouts:,} rollouts from {n_prompts:,} prompts, {n_tokens:,} response tokens "
                        f"(mean length {lens[0]:.1f})" + (f", mean reward {reward[0]:.3f}" if reward[1] else ""))
    if support is not None and support.imported:
        sec.findings += support_findings
    if ds.files("rollouts"):
        ex = con.sql("SELECT prompt, response_text, reward, response_len FROM rollouts LIMIT 1").df()
        if len(ex):
            r = ex.iloc[0]
            none = "(no text: imported without a tokenizer; `drift import ... --tokenizer PATH` adds it)"
            prompt, text = (none if v is None else _short(v) for v in (r["prompt"], r["response_text"]))
            sec.blocks.append(CodeBlock("An example rollout", f"prompt:   {prompt}\nresponse: {text}\nlength "
                                        f"{r['response_len']}, reward {r['reward']}"))
    con.close()
    return sec


# ----------------------------------------------------------------------------------------------- positions
def positions_section(ctx: Context) -> Section:
    """Each metric by relative and by absolute position, with bootstrap bands and response-length strata."""
    strata = ", ".join(ctx.strata_labels) or "none"
    sec = Section("positions", "Metrics by position",
                  "Each point is the mean of a metric over all tokens in one position bin, pooled over rollouts; "
                  "the band is a 95% interval from a cluster bootstrap (whole prompts are resampled by default: "
                  "the rollouts of a prompt share its difficulty, and the tokens of a rollout are correlated). "
                  "Left: relative position t/T; right: absolute position in "
                  "tokens. A late position exists only in long rollouts, so each panel also splits rollouts by "
                  f"response length (strata: {strata}); the dashed black line pools all lengths.")
    if not note_absent(ctx, sec):
        return sec
    for metric in ctx.metrics:
        fig, axes = new_figure(2, 1)
        plots.plot_metric_by_position(ctx.rel_table, metric, ax=axes[0, 0])
        axes[0, 0].set_title(f"{metric} by relative position", fontsize="medium")
        plots.plot_metric_by_position(ctx.abs_table, metric, ax=axes[0, 1])
        axes[0, 1].set_title(f"{metric} by absolute position", fontsize="medium")
        rel, absolute = pooled_rows(ctx.rel_table, metric), pooled_rows(ctx.abs_table, metric)
        unit = str(rel["cluster"].iloc[0]) if "cluster" in rel and len(rel) else "rollout"
        k = ctx.n_clusters.get(metric)
        clusters = f", {k} {unit} clusters" if k is not None else ""
        sec.blocks.append(ctx.figures.add(fig, f"position_{metric}", metric,
                                          f"{len(rel)} relative and {len(absolute)} absolute bins{clusters}; "
                                          f"95% {unit}-bootstrap bands"))
    return sec


# ---------------------------------------------------------------------------------------------- directions
def directions_section(ctx: Context) -> Section:
    """Does each metric rise, fall or stay flat along the response? Pooled and per length stratum."""
    sec = Section("directions", "Direction tests",
                  "Spearman's rho between bin position (relative) and bin mean, tested against its null "
                  "distribution under the data's own error structure (a cluster bootstrap that resamples whole "
                  "prompts): the metric rises or falls when p < 0.05; it is flat only when the interval of (last − "
                  "first quintile mean) lies within ±10% of the overall mean, inconclusive otherwise, and "
                  "insufficient with fewer than 10 clusters. "
                  "drift measures the direction instead of assuming it: per-token KL is often flat and noisy while "
                  "cumulative quantities climb, and privileged self-teachers can reverse the trend.")
    if not note_absent(ctx, sec, short=True):
        return sec
    rows, forest = [], []
    for metric in ctx.metrics:
        d = ctx.fits[metric]["direction"]
        head = pooled_rows(ctx.rel_table, metric)
        first, last = head.iloc[0], head.iloc[-1]
        per = "; ".join(f"{s['stratum']}: {s['verdict']} ({s['rho']:+.2f})" if s["rho"] is not None else
                        f"{s['stratum']}: {s['verdict']}" for s in ctx.strata_directions.get(metric, []))
        p_text = d.get("p_text") or (f"p={d['p_value']:.3g}" if d.get("p_value") is not None else "—")
        rows.append({"metric": metric, "verdict": d["verdict"], "Spearman rho [95%]":
                     fmt_ci(d["rho"], d["ci_low"], d["ci_high"], "+.3f"), "p": p_text,
                     "clusters": d.get("n_clusters", "—"),
                     "first bin": fmt_ci(first["mean"], first["ci_low"], first["ci_high"]),
                     "last bin": fmt_ci(last["mean"], last["ci_low"], last["ci_high"]),
                     "by length stratum": per or "—", "source": ctx.fits[metric]["source"]})
        forest.append({"label": f"{metric} (all)", **d})
        forest += [{"label": f"{metric} {s['stratum']}", **s} for s in ctx.strata_directions.get(metric, [])]
        sel = ctx.fits[metric].get("selected")
        note = ctx.fits[metric].get("selection_note")
        why = f" ({d['reason']})" if d.get("reason") and d["verdict"] in ("insufficient", "inconclusive") else ""
        sec.findings.append(f"{metric} {d['verdict']}{why} along the response (Spearman rho "
                            f"{fmt_ci(d['rho'], d['ci_low'], d['ci_high'], '+.2f')}); best-fitting curve: "
                            f"{sel or (f'none selected: {note}' if note else 'none converged')}")
    sec.blocks.append(TableBlock("Direction of each metric (relative bins)", pd.DataFrame(rows)))
    fig, axes = new_figure(1, 1, width=7.0, height=max(2.5, 0.32 * len(forest) + 1.0))
    plots.plot_directions(pd.DataFrame(forest), ax=axes[0, 0])
    sec.blocks.append(ctx.figures.add(fig, "directions", "Direction tests",
                                      "dots: Spearman rho; bars: 95% null-centred cluster-bootstrap interval"))
    return sec


# ---------------------------------------------------------------------------------------------------- fits
def _selection_table(entry: dict[str, Any]) -> pd.DataFrame:
    models = entry.get("models", {})
    ok = {n: m for n, m in models.items() if m.get("converged") and m.get("aic") is not None}
    best = min((float(m["aic"]) for m in ok.values()), default=math.nan)
    weights = {n: math.exp(-0.5 * (float(m["aic"]) - best)) for n, m in ok.items()}
    total = sum(weights.values()) or math.nan
    rows = []
    for name, m in sorted(models.items(), key=lambda kv: (not kv[1].get("converged"),
                                                          float(kv[1].get("aic") or math.inf))):
        params = "; ".join(f"{p} = {fmt_ci(v, (m.get('ci_low') or {}).get(p), (m.get('ci_high') or {}).get(p), '.4g')}"
                           for p, v in (m.get("params") or {}).items()) if m.get("converged") else \
            _short(m.get("message", ""), 120)
        rows.append({"model": name + (" ✓" if name == entry.get("selected") else ""),
                     "formula": m.get("formula", ""), "k": m.get("n_params", "—"),
                     "AIC": f"{m['aic']:.1f}" if name in ok else "—",
                     "ΔAIC": f"{float(m['aic']) - best:.1f}" if name in ok else "—",
                     "Akaike weight": f"{weights[name] / total:.3f}" if name in ok else "—",
                     "BIC": f"{m['bic']:.1f}" if name in ok and m.get("bic") is not None else "—",
                     "parameters [95% CI]": params})
    return pd.DataFrame(rows)


def fits_section(ctx: Context) -> Section:
    """Five curve families fitted to each metric's bin means, compared by AIC."""
    sec = Section("fits", "Fitted curves and model selection",
                  "Five curve families (exponential, power, logistic, linear, hinge) are fitted to the bin means "
                  "with the bootstrap covariance of the means as errors, and compared by AIC (lower is better; "
                  "ΔAIC > 2 is a meaningful difference, the Akaike weight the relative support). The selected "
                  "curve is drawn thick. A curve describes the shape; the direction test above says whether there "
                  "is a trend at all.")
    if not note_absent(ctx, sec, short=True):
        return sec
    for metric in ctx.metrics:
        entry = ctx.fits[metric]
        by = ctx.fit_by.get(metric, "rel")
        fig, axes = new_figure(1, 1, width=6.0, height=3.8)
        ax = axes[0, 0]
        # "" (not None): below min_clusters nothing is selected, so no curve is drawn as the chosen one
        chosen = entry.get("selected") or ("" if entry.get("selection_note") else None)
        plots.plot_fitted_curves(ctx.fit_points.get(metric), entry.get("models", {}), selected=chosen, ax=ax)
        ax.set(xlabel={"rel": "relative position t/T"}.get(by, "position t (tokens)"), ylabel=f"mean {metric}")
        ax.set_title(f"{metric}: fitted families", fontsize="medium")
        sec.blocks.append(ctx.figures.add(fig, f"fit_{metric}", f"{metric}: fitted curves",
                                          f"fits from {entry['source']}"))
        sec.blocks.append(TableBlock(f"{metric}: model selection", _selection_table(entry)))
    return sec


# ------------------------------------------------------------------------------------------- trajectories
def _sample_rollouts(con: Any, k: int) -> pd.DataFrame:
    """``k`` rollouts spread over the response-length range (shortest to longest), deterministic."""
    keys = con.sql(f"""SELECT {KEY_SQL}, max(response_len) AS T FROM tokens GROUP BY {KEY_SQL}
                       ORDER BY T, {KEY_SQL}""").df()
    if len(keys) == 0:
        return keys
    idx = np.unique(np.round(np.linspace(len(keys) // 4, len(keys) - 1, min(k, len(keys)))).astype(int))
    return keys.iloc[idx].reset_index(drop=True)


_TRAJECTORY_COLUMNS = ("student_logprob", "teacher_logprob", "student_prefix_logprob", "teacher_prefix_logprob",
                       "prefix_logratio", "cum_abs_gap", "cum_abs_gap_frac")


def trajectories_section(ctx: Context) -> Section:
    """Prefix log-likelihoods and cumulative gap along sample rollouts, with their summaries over all rollouts."""
    sec = Section("trajectories", "Trajectories of sample rollouts",
                  "Per-rollout prefix sums (exclusive, over k < t). LLs_t and LLt_t are the student's and the "
                  "teacher's log-likelihood of the prefix; S_t = LLt_t − LLs_t = Σ A_k is their log-ratio. The "
                  "student sampled these tokens, so its own prefix probability decays smoothly; if the teacher's "
                  "falls faster, S_t keeps falling and the prefix drifts away from what the teacher would write. "
                  "C_t = Σ |A_k| is the cumulative gap that IW-OPD down-weights by.")
    if ctx.support is not None:
        lacking = [c for c in _TRAJECTORY_COLUMNS if c not in ctx.support.columns]
        if lacking:
            hint = ctx.support.hint(lacking[0]) or "the dataset lacks them"
            sec.missing = f"not in this dataset: {', '.join(lacking)}: {hint}"
            return sec
    con = ctx.ds.duckdb()
    picked = _sample_rollouts(con, ctx.cfg.sample_rollouts)
    con.register("picked", picked)
    tokens = con.sql(f"""SELECT t.{KEY_SQL.replace(', ', ', t.')}, t.position, t.rel_position, t.response_len,
               t.student_prefix_logprob, t.teacher_prefix_logprob, t.prefix_logratio, t.cum_abs_gap,
               t.cum_abs_gap_frac FROM tokens t JOIN picked USING ({KEY_SQL})
               ORDER BY t.response_len, {', '.join('t.' + k for k in KEY)}, t.position""").df()
    summary = con.sql(f"""
        WITH r AS (SELECT {KEY_SQL}, position,
                          student_prefix_logprob + student_logprob AS lls,
                          teacher_prefix_logprob + teacher_logprob AS llt, prefix_logratio AS s,
                          min(prefix_logratio) OVER (PARTITION BY {KEY_SQL} ORDER BY position
                                                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS low
                   FROM tokens),
             per AS (SELECT arg_max(lls, position) AS lls_T, arg_max(llt, position) AS llt_T,
                            max(s - low) AS rebound, min(s) AS s_min FROM r GROUP BY {KEY_SQL})
        -- near-monotone: S_t falls overall and never climbs back more than 10% of its largest drop
        SELECT median(llt_T / lls_T) FILTER (WHERE lls_T < 0), median(lls_T), median(llt_T),
               avg(CASE WHEN s_min < 0 AND rebound <= 0.1 * (-s_min) THEN 1.0 ELSE 0.0 END),
               avg(CASE WHEN llt_T < lls_T THEN 1.0 ELSE 0.0 END), count(*) FROM per""").fetchall()[0]
    con.close()
    groups = list(tokens.groupby(list(KEY), sort=False))
    ncols = 2 if len(groups) > 1 else 1
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = new_figure(ncols, nrows, width=5.0, height=3.2)
    for i, (key, g) in enumerate(groups):
        ax = axes[i // ncols, i % ncols]
        plots.plot_prefix_loglik(g, ax=ax)
        ax.set_title(f"{key[2]} / sample {key[3]} (step {key[1]}, T = {len(g)})", fontsize="small")
    for j in range(len(groups), nrows * ncols):
        axes[j // ncols, j % ncols].set_visible(False)
    sec.blocks.append(ctx.figures.add(fig, "prefix_loglik", "Prefix log-likelihoods of sample rollouts",
                                      "rollouts picked across the response-length range (from the lower quartile "
                                      "to the longest)"))
    fig, axes = new_figure(2, 1)
    plots.plot_cumulative_gap(tokens, ax=axes[0, 0])
    axes[0, 0].set_title("cumulative gap C_t", fontsize="medium")
    plots.plot_cumulative_gap(tokens, ax=axes[0, 1], relative=True)
    axes[0, 1].set_title("normalized C_t / C_T (IW-OPD's signal)", fontsize="medium")
    sec.blocks.append(ctx.figures.add(fig, "cumulative_gap", "Cumulative gap of sample rollouts",
                                      "above the diagonal: the discrepancy is front-loaded in that rollout"))
    ratio, lls, llt, mono, steeper, n = summary
    rows = [("rollouts", f"{n:,}"),
            ("median final LLs_T (student)", f"{lls:.2f}" if lls is not None else None),
            ("median final LLt_T (teacher)", f"{llt:.2f}" if llt is not None else None),
            ("median ratio LLt_T / LLs_T", f"{ratio:.2f}" if ratio is not None else None),
            ("teacher prefix less likely than student's at the end", f"{steeper:.1%}" if steeper is not None
             else None),
            ("S_t near-monotone decreasing (never climbs back > 10% of its drop)", f"{mono:.1%}"
             if mono is not None else None)]
    sec.blocks.append(TableBlock("Over all rollouts", _kv(rows), "final = the whole response's log-likelihood"))
    if ratio is not None:
        sec.findings.append(f"the teacher's prefix log-likelihood ends {ratio:.2f}× the student's (median over "
                            f"{n:,} rollouts); S_t falls near-monotonically in {mono or 0:.0%} of rollouts")
    return sec
