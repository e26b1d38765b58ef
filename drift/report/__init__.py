"""drift.report: everything drift measured about one dataset, on one self-contained HTML page.

A report answers, in order: what was measured (models, prompts, sampling, sizes); how the main per-token metrics
change with position in the response, by relative and absolute position, split by response length (length
confounds position: late positions exist only in long rollouts); whether each metric rises, falls or stays flat
(a Spearman test with a rollout-bootstrap interval, never assumed); which curve family describes it (five families
compared by AIC); how the prefix log-likelihoods and the cumulative gap evolve along sample rollouts; where single
rollouts leave the teacher, token by token (the token view, with ``drift onset``'s onsets marked); how well the
teacher continues from student prefixes (when a ``drift probe`` exists); how drift changes over training (when
several ``step`` values or a ``drift train`` run exist); and which token-weight schedule the evidence supports, with
its rationale and its export to verl, TRL and tinker. A dataset imported from a training framework's logs
(``drift import``) is reported with the columns it has, says what it cannot show and which command adds it, and
gets a section comparing the sampler's and the trainer's log-probs by position when the logs kept both.

From Python::

    from drift.report import ReportConfig, build_report

    result = build_report("runs/toy", ReportConfig(dataset="runs/toy", out="runs/toy/report.html", n_boot=200))
    print(result.summary())          # findings, missing sections, written files

From the shell: ``drift report runs/toy --out runs/toy/report.html``. What the pipeline already wrote is reloaded,
never recomputed (``fit/``: bins and fits; ``probe/``: its analysis; ``schedule.json``); only what is missing is
computed, once, and the report lists which inputs it reloaded and which it computed. The figures come from
:mod:`drift.report.plots` (functions that take and return a matplotlib axes and never save); figures are saved in
one place, :class:`~drift.report.render.FigureStore`, and embedded in the page rendered from the Jinja2 templates in
``drift/report/templates``.

Modules: :mod:`~drift.report.build` (config, inputs, orchestration), :mod:`~drift.report.sections` (sections from
the token rows), :mod:`~drift.report.stages` (probe, training, schedule), :mod:`~drift.report.tokens` (the token view),
:mod:`~drift.report.plots` (the plot functions), :mod:`~drift.report.render` (blocks, figure files, templates).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drift.lazy import lazy_exports

if TYPE_CHECKING:
    from drift.report.build import (
        DEFAULT_METRICS,
        IMPORT_SECTION_IDS,
        SECTION_IDS,
        ReportConfig,
        ReportResult,
        build_report,
        report_paths,
    )
    from drift.report.render import CodeBlock, FigureBlock, FigureStore, Section, TableBlock, TextBlock

# Re-exports imported on first use, so importing one submodule (say the config, for `drift report --help`) does
# not load all of them (pandas, DuckDB, matplotlib, the statistics).
_LAZY: dict[str, str] = {
    **dict.fromkeys(("DEFAULT_METRICS", "IMPORT_SECTION_IDS", "SECTION_IDS", "ReportConfig", "ReportResult",
                     "build_report", "report_paths"), "build"),
    **dict.fromkeys(("CodeBlock", "FigureBlock", "FigureStore", "Section", "TableBlock", "TextBlock"), "render"),
}

__all__ = [
    "DEFAULT_METRICS",
    "IMPORT_SECTION_IDS",
    "SECTION_IDS",
    "CodeBlock",
    "FigureBlock",
    "FigureStore",
    "ReportConfig",
    "ReportResult",
    "Section",
    "TableBlock",
    "TextBlock",
    "build_report",
    "report_paths",
]


__getattr__, __dir__ = lazy_exports("drift.report", _LAZY, globals(), __all__)
