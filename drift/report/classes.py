"""The report's "Token classes" section: the headline metric by position, split by what kind of token it is.

A rollout's tokens are not alike: where the teacher is sure (low entropy) its log-ratio is a sharp signal, where it
hesitates the signal is weak, and a token the student itself found unlikely was a tail draw. The section bins the
first report metric by relative position within each derived token class of :mod:`drift.stats.classes`
(``teacher_entropy_zone``, ``low_student_logprob``, and ``teacher_mass_zone`` when the dataset has
``teacher_mass_student_topk``), through :func:`drift.stats.aggregate_bins` with ``group_by=(class,)`` and the same
cluster bootstrap as every other section (a class splits tokens; clusters stay prompts), and draws one panel per
class with its intervals, plus a table: each class value's share of tokens, first and last bin with intervals and
the direction test. The zone cut points are printed, so the zones can be audited.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from drift.report.imported import note_absent
from drift.report.render import Section, TableBlock, TextBlock, new_figure
from drift.stats.bins import cell_rows, pooled_cell

__all__ = ["classes_section", "plot_metric_by_class"]

log = logging.getLogger(__name__)

TITLE = "Token classes"


def plot_metric_by_class(table: pd.DataFrame, metric: str, name: str, *, ax: Any = None,
                         labels: tuple[Any, ...] = ()) -> Any:
    """Mean of ``metric`` per position bin for each value of token class ``name``, with bootstrap bands.

    Args:
        table: a bins table grouped by ``name`` (``group`` values ``name=value``; :meth:`RolloutBins.table`).
        metric: the metric; name: the class (e.g. ``teacher_entropy_zone``).
        labels: the values in drawing order (default: as they appear); the pooled curve is drawn dashed.
    """
    import matplotlib

    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    d = table[table["metric"] == metric]
    groups = [g for g in dict.fromkeys(d["group"]) if g.startswith(f"{name}=")]
    order = {f"{name}={v}": i for i, v in enumerate(labels)}
    groups.sort(key=lambda g: order.get(g, len(order)))
    colors = [matplotlib.colormaps["plasma"](v) for v in np.linspace(0.1, 0.8, max(len(groups), 1))]
    for g, color in zip(groups, colors, strict=False):
        part = cell_rows(d, pooled_cell(d, group=g))
        x = ((part["bin_left"] + part["bin_right"]) / 2).to_numpy(float)
        ax.plot(x, part["mean"].to_numpy(float), marker="o", ms=2.5, color=color, label=g.split("=", 1)[1])
        ax.fill_between(x, part["ci_low"].to_numpy(float), part["ci_high"].to_numpy(float), color=color, alpha=0.15,
                        lw=0)
    pooled = cell_rows(d, pooled_cell(d))
    ax.plot(((pooled["bin_left"] + pooled["bin_right"]) / 2).to_numpy(float), pooled["mean"].to_numpy(float), "k--",
            lw=1.2, label="all tokens")
    ax.set(xlabel="relative position t/T", ylabel=f"mean {metric}")
    ax.legend(fontsize="x-small", title=name, title_fontsize="x-small")
    return ax


def _fmt(v: Any, lo: Any, hi: Any) -> str:
    from drift.report.sections import fmt_ci

    return fmt_ci(v, lo, hi)


def classes_section(ctx: Any) -> Section:
    """The first report metric by relative position within each token class (see the module docstring)."""
    from drift.stats import BinSpec, aggregate_bins, direction_test
    from drift.stats.classes import TOKEN_CLASSES

    sec = Section("classes", TITLE,
                  "The same per-position mean as above, computed separately for each kind of token: by the "
                  "teacher's entropy (quantile zones: low = the teacher is sure), by whether the student found its "
                  "own sampled token unlikely (student log-prob below ln 0.1), and by the teacher's probability "
                  "mass on the student's top-k when the dataset has it. Bands are 95% intervals of the same "
                  "cluster bootstrap (whole prompts resampled: a class splits tokens, not prompts); the dashed "
                  "line pools all tokens. A class whose curve differs from the others carries a different signal.")
    if not note_absent(ctx, sec, short=True):
        return sec
    columns = set(ctx.support.columns) if ctx.support is not None else {f.name for f in ctx.ds.dataset("tokens")
                                                                        .schema}
    names = [n for n, c in TOKEN_CLASSES.items() if c.column in columns]
    lacking = [f"{n} (needs {c.column})" for n, c in TOKEN_CLASSES.items() if c.column not in columns]
    if not names:
        sec.missing = f"no token class can be computed: {'; '.join(lacking)}"
        return sec
    metric = ctx.metrics[0]
    cfg = ctx.cfg
    n_boot = max(int(cfg.n_boot), 50)
    fig, axes = new_figure(len(names), 1, width=4.6, height=3.4)
    rows, cuts = [], []
    for j, name in enumerate(names):
        rb = aggregate_bins(ctx.ds, [metric], BinSpec(by="rel", bins=cfg.bins, step="pool", group_by=(name,)))
        table = rb.table(n_boot=n_boot, seed=cfg.seed)
        (cls,) = rb.classes
        cuts.append(cls.describe())
        plot_metric_by_class(table, metric, name, ax=axes[0, j], labels=cls.labels)
        axes[0, j].set_title(name, fontsize="medium")
        total = max(rb.n_tokens, 1)
        for cell in sorted((c for c in rb.cells if c.group != "all"),
                           key=lambda c: [str(x) for x in cls.labels].index(c.group.split("=", 1)[1])
                           if c.group.split("=", 1)[1] in [str(x) for x in cls.labels] else 99):
            part = cell_rows(table, cell, metric)
            if part.empty:
                continue
            first, last = part.iloc[0], part.iloc[-1]
            d = direction_test(rb, metric, n=n_boot, seed=cfg.seed, step=cell.step, group=cell.group)
            n_tok = int(part["n_tokens"].sum())
            rows.append({"class": name, "value": cell.group.split("=", 1)[1], "tokens": f"{n_tok:,} "
                         f"({n_tok / total:.0%})", "clusters": rb.n_clusters(metric, cell),
                         f"first bin {metric}": _fmt(first["mean"], first["ci_low"], first["ci_high"]),
                         f"last bin {metric}": _fmt(last["mean"], last["ci_low"], last["ci_high"]),
                         "direction": f"{d.verdict} (rho {_fmt(d.rho, d.ci_low, d.ci_high)})"})
    ctx.note_input("token-class bins", [metric], "computed", f"tokens, grouped by {', '.join(names)} "
                   f"({n_boot} cluster-bootstrap resamples)")
    sec.blocks.append(ctx.figures.add(fig, f"classes_{metric}", f"{metric} by position per token class",
                                      f"relative bins; 95% {rb.cluster}-bootstrap bands; "
                                      f"{', '.join(names)}"))
    sec.blocks.append(TableBlock(f"{metric} per token class", pd.DataFrame(rows),
                                 "tokens: the class value's share of the binned tokens; direction: the test of "
                                 "the direction section, within the class"))
    sec.blocks.append(TextBlock(tuple(cuts) + ((f"not computed: {'; '.join(lacking)}",) if lacking else ()),
                                bullets=True))
    moving = [r for r in rows if r["direction"].split(" ")[0] in ("rises", "falls")]
    if moving:
        sec.findings.append(f"{metric} by token class: " + "; ".join(
            f"{r['class']}={r['value']} {r['direction'].split(' ')[0]}" for r in moving[:4]))
    return sec
