"""drift.onset: where each rollout leaves the teacher's support, found without oracle columns.

A one-sided CUSUM change-point detector on the teacher's surprisal of each sampled token (or its rank, or its
surprisal above the teacher's entropy), with ``k`` and ``h`` calibrated from the dataset's own in-support tokens::

    from drift.onset import OnsetConfig, run_onset, read_onsets
    run = run_onset(OnsetConfig(dataset="runs/x", out="runs/x/onset"))
    print(run.report())
    onsets = read_onsets("runs/x/onset")   # one row per rollout, joined on (run_id, step, prompt_id, sample_id)

Method and calibration: :mod:`drift.onset.detect` (pure numpy/pandas); the stage: :mod:`drift.onset.run`; a
noisy synthetic world with planted change points: :mod:`drift.onset.synthetic`; docs/onset.md gives measured rates.
"""

from drift.lazy import lazy_exports

_LAZY = {
    "SIGNALS": "detect", "SIGNAL_COLUMNS": "detect", "Calibration": "detect", "CusumResult": "detect",
    "calibrate": "detect", "cusum": "detect", "detect_onsets": "detect", "first_nontop": "detect",
    "null_max_statistic": "detect", "padded": "detect", "token_signal": "detect",
    "OnsetConfig": "config",
    "OUTPUT_FILES": "run", "OnsetRun": "run", "read_onsets": "run", "read_tokens": "run", "run_onset": "run",
    "noisy_onset_tokens": "synthetic",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals(), __all__)
