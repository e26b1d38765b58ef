"""drift.probe: the continuation probe (paper §3.1) and its reliability analysis (§9 items 2 and 12).

For each student rollout, cut the response at prefix ratios, let teacher and student each sample k continuations
from the kept prefix, verify them with the task's verifier, and write one row per (rollout, ratio, model,
continuation). :func:`analyze` turns the rows into accuracy by ratio with rollout-bootstrap intervals, the
teacher - student gap, the direction of teacher accuracy with the ratio, and the AUROC of per-token reliability
predictors against teacher continuation success::

    from drift.probe import ProbeConfig, run_probe
    run = run_probe(ProbeConfig(dataset="runs/x", ratios=(0, 0.5, 1), continuations=4))
    print(run.analysis.summary())

Cut, alignment, budget and seeding rules: :mod:`drift.probe.run`; statistics: :mod:`drift.probe.analysis`.
"""

from typing import Any

# Submodules are imported on first use, so `drift --help` (which imports the probe's config) does not load torch.
_LAZY = {
    "PREDICTORS": "analysis", "ProbeAnalysis": "analysis", "analyze": "analysis", "auroc": "analysis",
    "auroc_bootstrap": "analysis", "load_analysis": "analysis",
    "DEFAULT_RATIOS": "config", "ProbeConfig": "config", "parse_ratios": "config", "resolve_config": "config",
    "CONTINUATION_SCHEMA": "run", "PREDICTOR_COLUMNS": "run", "ProbeRun": "run", "continuation_budget": "run",
    "cut_points": "run", "cut_predictors": "run", "probe": "run", "probe_from_config": "run",
    "response_body_len": "run", "run_probe": "run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"drift.probe.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'drift.probe' has no attribute {name!r}")


__all__ = [
    "CONTINUATION_SCHEMA",
    "DEFAULT_RATIOS",
    "PREDICTORS",
    "PREDICTOR_COLUMNS",
    "ProbeAnalysis",
    "ProbeConfig",
    "ProbeRun",
    "analyze",
    "auroc",
    "auroc_bootstrap",
    "continuation_budget",
    "cut_points",
    "cut_predictors",
    "load_analysis",
    "parse_ratios",
    "probe",
    "probe_from_config",
    "resolve_config",
    "response_body_len",
    "run_probe",
]
