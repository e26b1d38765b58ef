"""Recording drift from inside other training loops.

- :mod:`drift.integrations.live`: :class:`~drift.integrations.live.LiveRecorder`, framework-agnostic: sample the
  live model and score it with drift's own full-vocabulary scorer into ``OUT/step-XXXXXX`` drift datasets, leaving
  the training run undisturbed (RNG states, train/eval flags, tokenizer settings restored).
- :mod:`drift.integrations.trl`: :class:`~drift.integrations.trl.DriftCallback`, a ``transformers.TrainerCallback``
  doing that for TRL trainers (``DistillationTrainer``, ``GRPOTrainer``, ...) and any ``transformers.Trainer``.
- :mod:`drift.integrations.verl`, :mod:`drift.integrations.slime`, :mod:`drift.integrations.nemo_rl`: adapters
  handing those frameworks' training batches (their own sampled log-probs) to a :class:`drift.record.Recorder`.

Nothing here is imported with ``drift``; import the submodule you use.
"""
