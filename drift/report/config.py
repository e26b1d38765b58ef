"""The configuration of ``drift report`` (:class:`ReportConfig`), apart from the report's machinery so the CLI's
parser (``drift report --help``) does not load pandas, DuckDB or the statistics."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drift.config import Checks, opt

__all__ = ["DEFAULT_METRICS", "ReportConfig"]

DEFAULT_METRICS: tuple[str, ...] = ("kl_reverse", "k3", "cum_abs_gap_frac", "teacher_top1")
"""Metrics drawn when --metrics is not given (plus ``oracle_teacher_correct`` on oracle-world data)."""


@dataclass(frozen=True)
class ReportConfig:
    """Configuration of ``drift report``: what to read, what to compute, where to write."""

    dataset: str = opt("", "drift dataset folder (or a drift train run folder)", cli=False)
    out: str = opt("", "the HTML file to write (default: DATASET/report.html); FILE.md and FILE_files/ go beside it")
    probe: str | None = opt(None, "continuation-probe folder (default: DATASET/probe when it exists)")
    fit: str | None = opt(None, "`drift fit` output folder whose fits.json to show (default: DATASET/fit when it "
                                "exists; otherwise fits are computed)")
    train: str | None = opt(None, "a `drift train` run folder: its drift/step-* datasets give the training section")
    schedule: str | None = opt(None, "a schedule JSON to show (default: DATASET/schedule.json when it exists; "
                                     "otherwise one is recommended now)")
    metrics: tuple[str, ...] = opt((), "token columns to draw, comma separated (default: "
                                   f"{','.join(DEFAULT_METRICS)}, plus oracle_teacher_correct when present)")
    bins: int = opt(20, "position bins (relative and absolute)")
    strata: str = opt("quantiles:3", "response-length strata: 'quantiles:k' or cut points '256,512'; '' for none")
    n_boot: int = opt(1000, "rollout-bootstrap resamples for intervals, fits and direction tests")
    seed: int = opt(0, "bootstrap seed (same seed, same report)")
    sample_rollouts: int = opt(4, "rollouts drawn in the trajectory figures")
    token_rollouts: int = opt(4, "rollouts drawn token by token in the token view (spread from the highest to the "
                                 "lowest total reverse KL; half with and half without an onset when --onsets is given)")
    onsets: str | None = opt(None, "an onsets.parquet written by `drift onset` (default: DATASET/onset/onsets.parquet "
                                   "when it exists): the token view marks each rollout's onset")
    gamma: float = opt(0.5, "bonus strength of a schedule recommended here (weights in [1, 1 + gamma])")
    clip_band: float = opt(0.2, "sampler-vs-trainer section: a token is outside the clip band when "
                                "|exp(student_logprob - rollout_logprob) - 1| > this")
    title: str = opt("", "report title (default: 'drift report: DATASET')")
    svg: bool = opt(True, "also write every figure as SVG")
    dpi: int = opt(110, "PNG resolution")
    strict: bool = opt(False, "stop at the first section that fails (default: report the error in that section)")

    def __post_init__(self) -> None:
        if isinstance(self.metrics, str):
            object.__setattr__(self, "metrics", tuple(m.strip() for m in self.metrics.split(",") if m.strip()))
        object.__setattr__(self, "metrics", tuple(self.metrics))
        c = Checks("ReportConfig")
        c.check(bool(self.dataset), "dataset is required: a folder written by `drift collect` / `drift score`")
        c.check(not self.out or self.out.endswith((".html", ".htm")), f"--out must end in .html, got {self.out!r}")
        c.in_range("bins", self.bins, 2, 200)
        c.check(self.n_boot >= 0, f"n_boot must be >= 0, got {self.n_boot}")
        c.in_range("sample_rollouts", self.sample_rollouts, 1, 16)
        c.in_range("token_rollouts", self.token_rollouts, 1, 16)
        c.positive("gamma", self.gamma)
        c.positive("clip_band", self.clip_band)
        c.in_range("dpi", self.dpi, 50, 300)
        for name in ("probe", "fit", "train", "schedule", "onsets"):
            path = getattr(self, name)
            c.check(path is None or Path(path).exists(), f"--{name} {path} does not exist")
        c.raise_if_any()
