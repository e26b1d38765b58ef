"""On-policy distillation training with token-weight schedules (``drift train``).

A small, explicit OPD loop for any Hugging Face causal-LM student and a frozen teacher: sample rollouts from
the current student, score them with both models in teacher forcing, weight the per-token advantage
A_t = log pi_T(y_t) - log pi_S(y_t) with a :mod:`drift.schedules` schedule (both held constant), and minimize
the token-mean ``-sum w·A·log pi_S(y_t)`` (or the full-vocabulary reverse KL). Metrics go to
``OUT/metrics.jsonl`` with ``/``-namespaced keys; checkpoints and drift datasets at chosen steps land beside them::

    from drift.train import TrainConfig, train_from_config
    result = train_from_config(TrainConfig(preset="toy", out="runs/opd", steps=100))
    result.metrics[["step", "eval/kl_mean", "eval/accuracy"]].dropna()

- :mod:`drift.train.config`: :class:`TrainConfig` and the step convention;
- :mod:`drift.train.loss`: the pure losses (formulas in the docstrings);
- :mod:`drift.train.loop`: :func:`train`, :func:`train_from_config`, :func:`run_training` (ablation grids);
- :mod:`drift.train.evaluate`: held-out evaluation (accuracy, full-vocab KL) and prompt plumbing;
- :mod:`drift.train.outputs`: the run folder, metrics log, checkpoints and drift datasets at chosen steps.
- :mod:`drift.train.ablation`: the paper's schedule ablation with its negative controls, on any oracle-world folder
  (grid, claims); :mod:`drift.train.verdicts` its paired statistics and verdict rules; :mod:`drift.train.pilot` the
  pilot that measures seconds per run-step and the plateau the ablation's steps come from. Its report is
  :mod:`drift.report.ablation` and ``scripts/reproduce_ablation.py`` runs both.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from drift.lazy import lazy_exports
from drift.train.config import TrainConfig, resolve_preset, train_preset_values

if TYPE_CHECKING:
    from drift.train.evaluate import evaluate
    from drift.train.loop import (
        TrainResult,
        TrainSetup,
        load_setup,
        lr_factor,
        run_training,
        train,
        train_from_config,
    )
    from drift.train.loss import opd_full_kl_loss, opd_sampled_loss, reverse_kl, sampled_stats, token_logprobs

# Re-exports imported on first use: the loop, losses and evaluation load torch, and `drift train --help` (which
# needs only the config) must not.
_LAZY: dict[str, str] = {
    "evaluate": "evaluate",
    **dict.fromkeys(("TrainResult", "TrainSetup", "load_setup", "lr_factor", "run_training", "train",
                     "train_from_config"), "loop"),
    **dict.fromkeys(("opd_full_kl_loss", "opd_sampled_loss", "reverse_kl", "sampled_stats", "token_logprobs"),
                    "loss"),
}

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainSetup",
    "evaluate",
    "load_setup",
    "lr_factor",
    "opd_full_kl_loss",
    "opd_sampled_loss",
    "resolve_preset",
    "reverse_kl",
    "run_training",
    "sampled_stats",
    "token_logprobs",
    "train",
    "train_from_config",
    "train_preset_values",
]


class _Package(types.ModuleType):
    """``drift.train.evaluate`` is the function, as when it was imported eagerly, not the submodule of that name.

    Importing a submodule binds it on its package; the package's ``evaluate`` stays the function whichever is
    imported first.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "evaluate" and isinstance(value, types.ModuleType):
            value = value.evaluate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__getattr__, __dir__ = lazy_exports("drift.train", _LAZY, globals(), __all__)
