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
- :mod:`drift.train.ablation`: the paper's schedule ablation (grid, statistics, claims); its report is
  :mod:`drift.report.ablation` and ``scripts/reproduce_ablation.py`` runs both.
"""

from drift.train.config import TrainConfig, resolve_preset, train_preset_values
from drift.train.evaluate import evaluate
from drift.train.loop import TrainResult, TrainSetup, load_setup, lr_factor, run_training, train, train_from_config
from drift.train.loss import opd_full_kl_loss, opd_sampled_loss, reverse_kl, sampled_stats, token_logprobs

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
