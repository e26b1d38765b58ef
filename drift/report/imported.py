"""What the report says about a dataset that drift did not score itself (``drift import``), and the sampler-vs-trainer
section.

An imported dataset holds only what its source format really contains: parquet metadata ``support`` says ``full``
(drift scored it), ``topk`` (the teacher's top-k list) or ``sampled`` (log-probs of the sampled token only), and
``has_teacher`` whether any teacher log-prob is there (:mod:`drift.schema`: :data:`~drift.schema.FULL_VOCAB_COLUMNS`,
:data:`~drift.schema.TOPK_COLUMNS`, :data:`~drift.schema.TEACHER_COLUMNS`). The report draws what exists and says,
in the section that would have shown it, what is absent and the command that adds it (:func:`~drift.schema.
support_hint`, the import's ``missing_analyses``); nothing is dropped silently.

- :func:`choose_metrics`: the metrics to draw. Requested ones that the support cannot give are set aside with their
  hint (an unknown column still stops the report); the defaults ``kl_reverse``, ``teacher_top1`` fall back to the
  sampled-token estimate ``k1`` (the single-sample estimate of the same reverse KL), and a dataset without a
  teacher falls back to ``student_logprob``.
- :func:`support_blocks`: the metadata section's account of the import (support, source format, files, checks)
  and of what it cannot show.
- :func:`sampler_section`: where the source kept the inference engine's log-prob of each sampled token
  (``rollout_logprob``) next to the trainer's (``student_logprob``), their gap
  ``Δ_t = student_logprob − rollout_logprob = log(π_trainer(y_t) / π_sampler(y_t))`` by relative position (a
  figure of three panels and a table): its mean, its mean absolute value, and the share of tokens whose importance
  ratio ``exp(Δ_t)`` lies outside the clip band ``|exp(Δ_t) − 1| > ε`` (``--clip-band``, default 0.2), each with a
  prompt-cluster bootstrap interval. Tokens with ``loss_mask`` false (not trained on, e.g. tool output) and tokens
  without a sampler log-prob are left out. The quantities are computed per token by DuckDB
  (``open_tokens(..., derived=...)``), never materialized.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from drift.errors import DatasetError
from drift.report import plots
from drift.report.render import Section, TableBlock, TextBlock, new_figure
from drift.schema import FULL_VOCAB_COLUMNS, TEACHER_COLUMNS, TOPK_COLUMNS, support_hint

__all__ = ["SAMPLER_METRICS", "SUBSTITUTES", "Support", "absent_block", "choose_metrics", "note_absent",
           "sampler_metrics_sql", "sampler_section", "support_blocks"]

SUBSTITUTES: Mapping[str, str] = {"kl_reverse": "k1"}
"""A default metric the support cannot give -> the sampled-token column drawn in its place."""
_SUBSTITUTE_WHY = {"k1": "k1 = student_logprob − teacher_logprob of the sampled token, whose mean over the "
                         "student's own samples estimates the same reverse KL (noisier, one sample per position)"}
NO_TEACHER_FALLBACK = "student_logprob"
"""Drawn when no default metric exists (a dataset without teacher log-probs)."""

SAMPLER_METRICS: tuple[str, ...] = ("trainer_minus_sampler", "abs_trainer_minus_sampler", "outside_clip")
"""Derived per-token columns of the sampler section (see the module docstring)."""

_SAMPLER_SOURCES = ("slime `--dump-details` (rollout_log_probs; `drift import slime DIR`), NeMo RL "
                    "(generation_logprobs; `drift import nemo-rl LOG_DIR`), or the generic records' "
                    "`rollout_logprobs` (`drift import tokens FILE`), or `Recorder.log(..., rollout_logprobs=...)` "
                    "when recording during training")


@dataclass(frozen=True)
class Support:
    """What a dataset can show: its support, whether it holds a teacher, where it came from, and its columns.

    Attributes:
        support: ``full``, ``topk`` or ``sampled`` (``full`` when the metadata has none: drift collect / score).
        has_teacher: the dataset holds teacher log-probs.
        source_format: the ``drift import`` source (``slime``, ``tokens``, ...); None when drift scored it.
        teacher_source: where the teacher log-probs came from (the import's note), if recorded.
        missing: the import's sentences on what it cannot show and the command that adds it.
        columns: the token columns present.
    """

    support: str = "full"
    has_teacher: bool = True
    source_format: str | None = None
    teacher_source: str | None = None
    missing: tuple[str, ...] = ()
    columns: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, metadata: Mapping[str, Any], columns: Iterable[str]) -> Support:
        """Read it from a dataset's drift metadata (``DriftDataset.metadata``) and its token column names."""
        return cls(support=str(metadata.get("support") or "full"), has_teacher=bool(metadata.get("has_teacher", True)),
                   source_format=metadata.get("source_format"), teacher_source=metadata.get("teacher_source"),
                   missing=tuple(metadata.get("missing_analyses") or ()), columns=frozenset(columns))

    @property
    def imported(self) -> bool:
        """Written by ``drift import`` (or limited in what it holds, whatever wrote it)."""
        return self.source_format is not None or self.support != "full" or not self.has_teacher

    def hint(self, column: str) -> str | None:
        """Why ``column`` is absent and the command that adds it (:func:`drift.schema.support_hint`), or None."""
        if column in self.columns:
            return None
        return support_hint(column, self.support, teacher=self.has_teacher)

    def limits(self) -> list[str]:
        """What this dataset cannot show, each with the command that adds it: the import's own sentences, else one
        per absent column that its support explains."""
        if self.missing:
            return list(self.missing)
        absent = [c for c in (*TEACHER_COLUMNS, *FULL_VOCAB_COLUMNS, *TOPK_COLUMNS) if c not in self.columns]
        return [h for h in dict.fromkeys(self.hint(c) for c in absent) if h]


def choose_metrics(requested: Sequence[str], defaults: Sequence[str], support: Support,
                   where: str = "the dataset") -> tuple[tuple[str, ...], dict[str, str]]:
    """(metrics to draw, {absent metric: why and how to add it}).

    Requested metrics are kept when present; one the support cannot give is set aside with its hint; an unknown
    column raises :class:`~drift.errors.DatasetError` (as before imports existed). Without a request, the defaults
    present are drawn, an absent one the support explains is replaced by :data:`SUBSTITUTES` (when present) and
    noted, and a dataset with none of them draws :data:`NO_TEACHER_FALLBACK`.
    """
    names = support.columns
    absent: dict[str, str] = {}
    if requested:
        unknown = [m for m in requested if m not in names and support.hint(m) is None]
        if unknown:
            raise DatasetError(f"--metrics names columns {where} does not have: {', '.join(unknown)}")
        absent = {m: str(support.hint(m)) for m in requested if m not in names}
        return tuple(m for m in requested if m in names), absent
    chosen: list[str] = []
    for m in defaults:
        if m in names:
            chosen.append(m)
            continue
        hint = support.hint(m)
        if hint is None:  # e.g. oracle_teacher_correct outside an oracle world: not expected, not noted
            continue
        sub = SUBSTITUTES.get(m)
        if sub is not None and sub in names:
            chosen.append(sub)
            hint += f". Drawn in its place: {_SUBSTITUTE_WHY.get(sub, sub)}"
        absent[m] = hint
    chosen = list(dict.fromkeys(chosen))
    if not chosen and NO_TEACHER_FALLBACK in names:
        chosen = [NO_TEACHER_FALLBACK]
    return tuple(chosen), absent


def note_absent(ctx: Any, sec: Section, short: bool = False) -> bool:
    """Note the metrics ``ctx`` cannot show in ``sec``; False (and ``sec.missing`` set) when none is left to draw."""
    note = absent_block(ctx.absent, short=short)
    if ctx.metrics:
        if note is not None:
            sec.blocks.append(note)
        return True
    sec.missing = ("no metric to draw: " + "; ".join(f"{m}: {h}" for m, h in ctx.absent.items())
                   if ctx.absent else "no metric to draw (pass --metrics)")
    return False


def absent_block(absent: Mapping[str, str], *, short: bool = False) -> TextBlock | None:
    """The note on metrics this dataset cannot show (None when there are none); ``short``: refer to the positions
    section instead of repeating the hints."""
    if not absent:
        return None
    if short:
        return TextBlock((f"Not in this dataset: {', '.join(absent)} (why, and the command that adds them, under "
                          "\"Metrics by position\").",))
    return TextBlock(tuple(f"{m}: not in this dataset: {hint}" for m, hint in absent.items()), bullets=True)


def support_blocks(support: Support, config: Mapping[str, Any], manifest: Mapping[str, Any]) -> tuple[list[Any],
                                                                                                     list[str]]:
    """The metadata section's blocks and findings on an imported dataset: its source and what it cannot show."""
    src = dict(config.get("source") or {})
    cfg = dict(config.get("config") or {})
    tok = config.get("tokenizer") or {}
    rows = [("support", f"{support.support} (full: drift scored both models over the vocabulary; topk: the "
                        "teacher's top-k list; sampled: log-probs of the sampled token only)"),
            ("source format", support.source_format or "—"), ("source path", src.get("path") or cfg.get("path")),
            ("files", f"{len(src['files'])}: {', '.join(src['files'][:5])}" + (" …" if len(src["files"]) > 5 else "")
             if src.get("files") else None),
            ("teacher log-probs", f"yes ({support.teacher_source})" if support.has_teacher and support.teacher_source
             else "yes" if support.has_teacher else "none in the source"),
            ("student (re-score check)", cfg.get("student")), ("teacher", cfg.get("teacher")),
            ("teacher id / revision", " / ".join(str(v) for v in (cfg.get("teacher_id"), cfg.get("teacher_revision"))
                                                 if v) or None),
            ("tokenizer", tok.get("source") if isinstance(tok, Mapping) else None)]
    rows += [(f"note: {k}", v) for k, v in dict(src.get("notes") or {}).items()]
    blocks: list[Any] = [TableBlock("Import source and support",
                                    pd.DataFrame([(k, str(v)) for k, v in rows if v not in (None, "")],
                                                 columns=["setting", "value"]))]
    checks = {**dict(config.get("checks") or {}), **dict(manifest.get("checks") or {})}
    if checks:
        crow = [{"check": name, "verdict": str(c.get("verdict", "—")) if isinstance(c, Mapping) else str(c),
                 "details": "; ".join(f"{k} {_num(v)}" for k, v in c.items() if k != "verdict")
                 if isinstance(c, Mapping) else ""} for name, c in checks.items()]
        blocks.append(TableBlock("Import checks", pd.DataFrame(crow),
                                 "sign: mean k1 = student − teacher log-prob on the student's own samples (>= 0 "
                                 "expected); student / teacher: re-score of a sample of rollouts against the imported "
                                 "log-probs (median |Δ| < tolerance)"))
    limits = support.limits()
    if limits:
        blocks += [TextBlock(("What this dataset cannot show, and the command that adds it:",)),
                   TextBlock(tuple(limits), bullets=True)]
    origin = ("recorded during training (drift.record.Recorder)" if support.source_format == "record" else
              f"imported from {support.source_format} logs" if support.source_format else "not scored by drift")
    finding = f"support {support.support!r} ({origin}" + ("" if support.has_teacher else ", no teacher log-probs") + ")"
    findings = [finding + (": not in this dataset: " + " | ".join(limits) if limits else "")]
    return blocks, findings


def _ci(row: Any, spec: str) -> str:
    """``mean [ci_low, ci_high]`` of a bins-table row."""
    from drift.report.sections import fmt_ci

    return fmt_ci(row["mean"], row["ci_low"], row["ci_high"], spec)


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# ------------------------------------------------------------------------------------------------- sampler
def sampler_metrics_sql(columns: Iterable[str], clip_band: float) -> dict[str, str]:
    """DuckDB expressions of :data:`SAMPLER_METRICS` over the token columns (loss-masked tokens give NULL)."""
    diff = "(CAST(student_logprob AS DOUBLE) - CAST(rollout_logprob AS DOUBLE))"
    if "loss_mask" in set(columns):
        diff = f"(CASE WHEN loss_mask THEN {diff} END)"
    return {"trainer_minus_sampler": diff, "abs_trainer_minus_sampler": f"abs({diff})",
            # CASE, not least(): least() skips NULLs, and a masked token must stay NULL (not counted)
            "outside_clip": f"CASE WHEN {diff} > 50 THEN true ELSE abs(exp({diff}) - 1) > {float(clip_band)!r} END"}


def sampler_section(ctx: Any) -> Section:
    """Sampler-vs-trainer log-prob of the sampled token by relative position (see the module docstring)."""
    from drift.stats import BinSpec, aggregate_bins, direction_test
    from drift.stats.bins import pooled_rows
    from drift.stats.reader import open_tokens

    eps = float(ctx.cfg.clip_band)
    sec = Section("sampler", "Sampler vs trainer log-probs",
                  "The inference engine that sampled the responses (vLLM, SGLang) and the trainer that computed the "
                  "loss give the same token different log-probs (kernels, precision, batch shapes). Δ_t = "
                  "student_logprob − rollout_logprob is log(π_trainer / π_sampler) of the sampled token; its "
                  "exponential is the importance ratio an off-policy correction (TIS, MIS) uses, and a token is "
                  f"outside the clip band when |exp(Δ_t) − 1| > {eps:g}. Each point is the mean over the tokens of a "
                  "relative-position bin, with a 95% prompt-cluster bootstrap interval.")
    support = ctx.support
    if "rollout_logprob" not in support.columns:
        sec.missing = (f"not in this dataset: the sampler's log-probs (rollout_logprob); the "
                       f"{support.source_format or 'source'} logs hold none. They come with dumps that keep the "
                       f"inference engine's log-prob next to the trainer's: {_SAMPLER_SOURCES}.")
        return sec
    if "student_logprob" not in support.columns:
        sec.missing = "not in this dataset: the trainer-side student_logprob to compare rollout_logprob with."
        return sec
    cfg = ctx.cfg
    src = open_tokens(ctx.ds, derived=sampler_metrics_sql(support.columns, eps))
    metrics = list(SAMPLER_METRICS)
    con = src.connect()
    n_all, n_used = con.sql("SELECT count(*), count(trainer_minus_sampler) FROM tokens").fetchall()[0]
    con.close()
    if not n_used:
        sec.missing = ("not in this dataset: rollout_logprob is empty (null) on every trained-on token, so there is "
                       "no sampler log-prob to compare.")
        return sec
    n_boot = cfg.n_boot
    rb = aggregate_bins(src, metrics, BinSpec(by="rel", bins=cfg.bins, step="pool"))
    table = rb.table(n_boot=n_boot, seed=cfg.seed)
    overall = aggregate_bins(src, metrics, BinSpec(by="rel", bins=1, step="pool")).table(n_boot=n_boot,
                                                                                        seed=cfg.seed)
    ctx.note_input("sampler-vs-trainer bins", metrics, "computed", f"tokens: student_logprob − rollout_logprob "
                   f"per token ({n_boot} prompt-cluster resamples)")
    # signed gap (a bias of one engine), its size |Δ_t| (mismatch of either sign: a signed mean can cancel), and
    # the share an importance-ratio clip would touch; all three by relative position with cluster-bootstrap bands
    fig, axes = new_figure(3, 1, width=4.6)
    plots.plot_metric_by_position(table, "trainer_minus_sampler", ax=axes[0, 0], strata=False)
    axes[0, 0].axhline(0.0, color="0.5", lw=0.8, ls=":")
    axes[0, 0].set(ylabel="mean Δ_t = trainer − sampler log-prob (nats)")
    axes[0, 0].set_title("trainer − sampler log-prob", fontsize="medium")
    plots.plot_metric_by_position(table, "abs_trainer_minus_sampler", ax=axes[0, 1], strata=False)
    axes[0, 1].set(ylabel="mean |Δ_t| (nats)")
    axes[0, 1].set_title("its size |Δ_t|", fontsize="medium")
    plots.plot_metric_by_position(table, "outside_clip", ax=axes[0, 2], strata=False)
    axes[0, 2].set(ylabel=f"share with |exp(Δ_t) − 1| > {eps:g}")
    axes[0, 2].set_title(f"share outside the ±{eps:g} clip band", fontsize="medium")
    k = rb.n_clusters("trainer_minus_sampler")
    sec.blocks.append(ctx.figures.add(fig, "sampler_mismatch", "Sampler vs trainer log-prob by relative position",
                                      f"{n_used:,} tokens with both log-probs, {k} prompt clusters; 95% "
                                      "prompt-bootstrap bands; the sampler − trainer gap is −Δ_t (same |Δ_t|)"))
    pooled = {m: pooled_rows(table, m).set_index("bin") for m in metrics}
    rows = [{"relative position": f"{r['bin_left']:.2f}–{r['bin_right']:.2f}", "mean Δ [95%]": _ci(r, "+.3g"),
             "mean |Δ| [95%]": _ci(pooled["abs_trainer_minus_sampler"].loc[b], ".3g"),
             f"outside ±{eps:g} [95%]": _ci(pooled["outside_clip"].loc[b], ".2%"),
             "tokens": int(r["n_tokens"]), "prompts": int(r["n_clusters"])}
            for b, r in pooled["trainer_minus_sampler"].iterrows()]
    sec.blocks.append(TableBlock("Trainer − sampler log-prob by relative position", pd.DataFrame(rows),
                                 f"Δ = student_logprob − rollout_logprob; outside = |exp(Δ) − 1| > {eps:g}"))
    summary = {m: pooled_rows(overall, m).iloc[0] for m in metrics}
    d = direction_test(rb, "abs_trainer_minus_sampler", n=max(n_boot, 50), seed=cfg.seed)
    left = n_all - n_used
    masked = "loss_mask" in support.columns
    srows = [("tokens compared", f"{n_used:,} of {n_all:,}" + (f" ({left:,} left out: not trained on (loss_mask) "
                                                                 "or no sampler log-prob)" if left else "")),
             ("mean Δ", _ci(summary["trainer_minus_sampler"], "+.3g")),
             ("mean |Δ|", _ci(summary["abs_trainer_minus_sampler"], ".3g")),
             (f"share outside ±{eps:g}", _ci(summary["outside_clip"], ".2%")),
             ("|Δ| along the response", f"{d.verdict} (Spearman rho "
                                        f"{_ci({'mean': d.rho, 'ci_low': d.ci_low, 'ci_high': d.ci_high}, '+.2f')})")]
    sec.blocks.append(TableBlock("Over all tokens", pd.DataFrame(srows, columns=["quantity", "value [95%]"]),
                                 "intervals: prompt-cluster bootstrap" + ("; tokens with loss_mask false are left "
                                                                          "out" if masked else "")))
    steps = _per_step(src, metrics, cfg, eps)
    if steps is not None:
        sec.blocks.append(steps)
    share = pooled["outside_clip"]
    worst = share.loc[share["mean"].idxmax()]  # the first bin with the largest share
    where = (f"most at relative position {worst['bin_left']:.2f}–{worst['bin_right']:.2f}: {worst['mean']:.2%}"
             if worst["mean"] > 0 else "none in any bin")
    sec.findings.append(f"trainer − sampler log-prob: mean {_ci(summary['trainer_minus_sampler'], '+.3g')} nats, "
                        f"mean |Δ| {summary['abs_trainer_minus_sampler']['mean']:.3g}; "
                        f"{summary['outside_clip']['mean']:.2%} of {n_used:,} tokens outside the ±{eps:g} clip band "
                        f"({where}); |Δ| {d.verdict} along the response")
    return sec


def _per_step(src: Any, metrics: list[str], cfg: Any, eps: float) -> TableBlock | None:
    """The mismatch per training step, when the dataset holds several."""
    from drift.stats import BinSpec, aggregate_bins

    con = src.connect()
    sql = "SELECT count(DISTINCT step) FROM tokens WHERE trainer_minus_sampler IS NOT NULL"
    n_steps = con.sql(sql).fetchall()[0][0]
    con.close()
    if n_steps < 2:
        return None
    t = aggregate_bins(src, metrics, BinSpec(by="rel", bins=1, step="each", margins=False)).table(
        n_boot=cfg.n_boot, seed=cfg.seed)
    rows = []
    for step in sorted(int(s) for s in t["step"].dropna().unique()):
        r = {m: t[(t["metric"] == m) & (t["step"] == step)].iloc[0] for m in metrics}
        rows.append({"step": step,
                     "mean Δ [95%]": _ci(r["trainer_minus_sampler"], "+.3g"),
                     "mean |Δ|": f"{r['abs_trainer_minus_sampler']['mean']:.3g}",
                     f"outside ±{eps:g} [95%]": _ci(r["outside_clip"], ".2%"),
                     "tokens": int(r["trainer_minus_sampler"]["n_tokens"])})
    return TableBlock("Per training step", pd.DataFrame(rows), "a mismatch that grows over training is a sampler / "
                      "trainer divergence worth correcting (importance ratios, or matching numerics)")
