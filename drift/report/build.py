"""``drift report``: one self-contained HTML page (plus Markdown and figure files) about a drift dataset.

:class:`ReportConfig` is the stage's frozen config (CLI flags map 1:1 onto it); :func:`build_report` gathers the
sections, renders the templates and writes::

    FILE.html          the report: figures embedded as data: URIs, inline CSS, no network, no server
    FILE.md            a Markdown summary (findings, tables, links to the figure files)
    FILE_files/        every figure as PNG and SVG, and the recommended schedule.json

Inputs are found next to the dataset, so ``drift report runs/x`` after the pipeline needs no flags:
``runs/x/fit`` (``drift fit``: its bins.parquet and fits.json are reloaded, never recomputed), ``runs/x/probe``
(``drift probe``: its accuracy.parquet and auroc.json are reloaded), ``runs/x/schedule.json`` (``drift schedule
recommend --out``). Only what they lack is computed here, once: metrics fit/ does not hold, the other position
axis, length strata of a fit made without them, and a schedule (``recommend`` is handed what the report already
has). The report lists every input as reloaded or computed (a table under "Run metadata";
:attr:`ReportResult.inputs`). ``--train RUNDIR`` adds a training run's ``drift/step-*`` datasets; a dataset with
several ``step`` values gets the training section on its own. DATASET may also be a training run folder: its last
``drift/step-*`` dataset is reported and the run supplies the training section.

An imported dataset (``drift import``: support ``sampled`` or ``topk``, maybe no teacher) is reported with the
columns it has (:mod:`drift.report.imported`): absent default metrics are replaced by what exists (``k1`` for
``kl_reverse``), every section that cannot be drawn says why and which command adds it, the metadata states the
support, the source format and what the dataset cannot show, and one more section, "Sampler vs trainer log-probs"
(:data:`IMPORT_SECTION_IDS`), compares the sampler's and the trainer's log-probs by position when the source kept
both (``rollout_logprob``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from drift.config import config_to_dict
from drift.report.classes import classes_section
from drift.report.config import DEFAULT_METRICS, ReportConfig
from drift.report.imported import Support, choose_metrics, sampler_section
from drift.report.render import FigureStore, Section, TableBlock, render
from drift.report.sections import (
    Context,
    directions_section,
    fits_section,
    metadata_section,
    positions_section,
    prepare,
    trajectories_section,
)
from drift.report.stages import probe_section, schedule_section, train_steps, training_section
from drift.report.tokens import token_view_section
from drift.store import open_dataset

__all__ = ["DEFAULT_METRICS", "IMPORT_SECTION_IDS", "SECTION_IDS", "ReportConfig", "ReportResult", "build_report",
           "report_paths"]

log = logging.getLogger(__name__)

_TITLES = {"metadata": "Run metadata", "positions": "Metrics by position", "directions": "Direction tests",
           "fits": "Fitted curves and model selection", "classes": "Token classes",
           "trajectories": "Trajectories of sample rollouts", "tokens": "Token view",
           "probe": "Continuation probe", "training": "Drift over training", "schedule": "Recommended schedule"}
SECTION_IDS: tuple[str, ...] = tuple(_TITLES)
"""Every report has these sections, in this order (one without its inputs says how to get them)."""
_IMPORT_TITLES = {"sampler": "Sampler vs trainer log-probs"}
IMPORT_SECTION_IDS: tuple[str, ...] = tuple(_IMPORT_TITLES)
"""Sections a report of an imported dataset (or one with ``rollout_logprob``) adds, after "trajectories"."""


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote and found.

    Attributes:
        html, markdown, figures_dir: the written files; figures: every figure file (PNG and SVG).
        sections: each section (``present``: it had its inputs; ``missing``: what to run; ``error``: why it failed).
        findings: the one-line results shown at the top. wall_s: seconds it took.
        inputs: each input of the report (``input``, ``metrics``, ``status``: reloaded or computed, ``from``).
    """

    html: Path
    markdown: Path
    figures_dir: Path
    figures: tuple[Path, ...]
    sections: tuple[Section, ...] = field(repr=False)
    findings: tuple[str, ...]
    wall_s: float
    inputs: tuple[dict[str, str], ...] = ()

    @property
    def errors(self) -> dict[str, str]:
        """Sections that failed, with their messages."""
        return {s.id: s.error for s in self.sections if s.error}

    def summary(self) -> str:
        """Findings, then the sections that are missing or failed, then the written files."""
        lines = ["findings:", *(f"  - {f}" for f in self.findings), "inputs:",
                 *(f"  - {i['status']}: {i['input']} ({i['metrics']}) from {i['from']}" if i["metrics"] != "—" else
                   f"  - {i['status']}: {i['input']} from {i['from']}" for i in self.inputs)]
        for s in self.sections:
            if s.error:
                lines.append(f"section {s.id} FAILED: {s.error}")
            elif s.missing:
                lines.append(f"section {s.id}: {s.missing}")
        lines.append(f"wrote {self.html} ({self.html.stat().st_size / 1e6:.1f} MB), {self.markdown} and "
                     f"{len(self.figures)} figure files in {self.figures_dir} ({self.wall_s:.1f} s)")
        return "\n".join(lines)


def report_paths(dataset: str | os.PathLike[str], out: str = "") -> tuple[Path, Path, Path]:
    """(html, markdown, figures folder) for a report of ``dataset`` written to ``out``."""
    html = Path(out) if out else Path(dataset) / "report.html"
    return html, html.with_suffix(".md"), html.with_name(f"{html.stem}_files")


def _resolve(cfg: ReportConfig) -> tuple[Path, Path | None]:
    """(dataset folder, training run folder or None); a run folder as DATASET reports its last step."""
    root = Path(cfg.dataset)
    if not (root / "tokens").is_dir() and not (root / "manifest.json").exists() and train_steps(root):
        return train_steps(root)[-1], Path(cfg.train) if cfg.train else root
    return root, Path(cfg.train) if cfg.train else None


def _default(given: str | None, candidate: Path, marker: str) -> Path | None:
    if given:
        return Path(given)
    return candidate if (candidate / marker).exists() else None


def _run(sec_id: str, fn: Any, strict: bool) -> Any:
    """Build one section; on failure (unless strict) return a section that shows the error."""
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:
        if strict:
            raise
        log.warning("report section %s failed: %s", sec_id, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        return Section(sec_id, {**_TITLES, **_IMPORT_TITLES}.get(sec_id, sec_id), error=f"{type(exc).__name__}: {exc}")
    log.info("report: %s (%.1f s)", sec_id, time.perf_counter() - t0)
    return out


def build_report(dataset: str | os.PathLike[str], config: ReportConfig | None = None) -> ReportResult:
    """Compute every section for ``dataset`` and write the HTML report, its Markdown summary and its figures.

    Args:
        dataset: the drift dataset folder (or a training run folder, see the module docstring).
        config: the :class:`ReportConfig` (default: all defaults for ``dataset``).
    """
    import matplotlib

    t0 = time.perf_counter()
    cfg = config or ReportConfig(dataset=str(dataset))
    if config is not None and Path(cfg.dataset) != Path(dataset):
        cfg = ReportConfig(**{**config_to_dict(cfg), "dataset": str(dataset)})
    root, train_dir = _resolve(cfg)
    ds = open_dataset(root)
    support = Support.of(ds.metadata, (f.name for f in ds.dataset("tokens").schema))
    metrics, absent = choose_metrics(cfg.metrics, (*DEFAULT_METRICS, "oracle_teacher_correct"), support, str(root))
    html, md, files = report_paths(cfg.dataset, cfg.out)
    files.mkdir(parents=True, exist_ok=True)
    for old in files.glob("*"):  # figures of an earlier report; nothing else lives here
        if old.suffix in (".png", ".svg", ".json") and old.is_file():
            old.unlink()
    ctx = Context(ds=ds, cfg=cfg, figures=FigureStore(files, svg=cfg.svg, dpi=cfg.dpi), metrics=metrics,
                  fit_dir=_default(cfg.fit, root / "fit", "fits.json"),
                  probe_dir=_default(cfg.probe, root / "probe", "continuations"), train_dir=train_dir,
                  schedule_path=Path(cfg.schedule) if cfg.schedule else
                  (root / "schedule.json" if (root / "schedule.json").exists() else None),
                  support=support, absent=absent)
    with matplotlib.rc_context({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                                "svg.fonttype": "none", "svg.hashsalt": "drift"}):
        sections: list[Section] = [_run("metadata", lambda: metadata_section(ctx), cfg.strict)]
        prepared = _run("statistics", lambda: prepare(ctx) or True, cfg.strict)
        for sid, fn in (("positions", positions_section), ("directions", directions_section),
                        ("fits", fits_section), ("classes", classes_section)):
            sections.append(_run(sid, lambda fn=fn: fn(ctx), cfg.strict) if prepared is True else
                            Section(sid, _TITLES[sid], error=prepared.error))
        sections.append(_run("trajectories", lambda: trajectories_section(ctx), cfg.strict))
        if support.imported or "rollout_logprob" in support.columns:
            sections.append(_run("sampler", lambda: sampler_section(ctx), cfg.strict))
        sections.append(_run("tokens", lambda: token_view_section(ctx), cfg.strict))
        probe = _run("probe", lambda: probe_section(ctx), cfg.strict)
        probe_sec, analysis = probe if isinstance(probe, tuple) else (probe, None)
        sections.append(probe_sec)
        sections.append(_run("training", lambda: training_section(ctx), cfg.strict))
        sections.append(_run("schedule", lambda: schedule_section(ctx, analysis), cfg.strict))
    if ctx.inputs and sections[0].id == "metadata":
        sections[0].blocks.append(TableBlock("Inputs: reloaded or computed", pd.DataFrame(ctx.inputs),
                                             "reloaded = read from the file a pipeline stage wrote, never "
                                             "recomputed; computed = made here, once, because no stage wrote it"))
    findings = tuple(f for s in sections for f in s.findings)
    title = cfg.title or f"drift report: {root}"
    context = {"title": title, "dataset": str(root), "sections": sections, "findings": findings,
               "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "version": _version(), "files_dir": files.name, "n_boot": cfg.n_boot, "seed": cfg.seed,
               "command": _command(cfg)}
    html.parent.mkdir(parents=True, exist_ok=True)
    _write(html, render("report.html.j2", **context))
    _write(md, render("report.md.j2", **context))
    return ReportResult(html, md, files, tuple(ctx.figures.paths), tuple(sections), findings,
                        time.perf_counter() - t0, tuple(ctx.inputs))


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _version() -> str:
    from drift import __version__

    return __version__


def _command(cfg: ReportConfig) -> str:
    """The ``drift report`` command line that repeats this report (non-default flags only)."""
    defaults = ReportConfig(dataset=cfg.dataset)
    parts = ["drift report", cfg.dataset]
    for name, value in config_to_dict(cfg).items():
        if name in ("dataset", "strict") or value == config_to_dict(defaults)[name]:
            continue
        flag = "--" + name.replace("_", "-")
        parts.append(f"{flag} {','.join(map(str, value)) if isinstance(value, list) else value}")
    return " ".join(parts)
