"""``DriftCallback``: drift over training from inside a TRL (or any ``transformers.Trainer``) run.

Example (TRL's on-policy ``DistillationTrainer``)::

    from trl import DistillationConfig, DistillationTrainer
    from drift.integrations.trl import DriftCallback

    callback = DriftCallback(teacher="teacher/", prompts="heldout.jsonl", out="runs/opd/drift", every=100,
                             samples_per_prompt=4, max_prompts=64)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=DistillationConfig(...),
                                  train_dataset=dataset, processing_class=tokenizer, callbacks=[callback])
    trainer.train()
    # then: drift report runs/opd   (a run folder with drift/step-* datasets gets the "Drift over training" section)

What is recorded, and when (``state.global_step`` counts the optimizer updates already applied):

- ``on_train_begin``: step ``global_step`` (0 for a fresh run), before the first update;
- ``on_step_end``: whenever ``global_step % every == 0`` (the hook runs right after update ``global_step``);
- ``on_train_end``: the last step, unless it is already written (a step folder holding a complete dataset is never
  written again, so a resumed run skips the steps it has).

Each recording samples ``samples_per_prompt`` rollouts per prompt from the trainer's *current* model (the
``model=`` the hooks receive, updated in place), scores them with drift's full-vocabulary scorer against the
teacher and writes ``OUT/step-XXXXXX`` (:class:`~drift.integrations.live.LiveRecorder`; RNG states, train/eval
flags and tokenizer settings are restored, so the training run is the one it would have been without the
callback). The hooks' ``processing_class=`` is the student's tokenizer (a processor's ``.tokenizer``), else
``tokenizer=``.

Under several processes every rank runs the hooks, samples its share of the prompts and rank 0 writes the
dataset. Errors: a failure at the first recording stops the run (nothing trained yet); later ones warn and training
goes on (``on_error="raise"`` stops instead).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from drift.collect.config import ScoringOptions
from drift.collect.prompts import PromptRecord
from drift.config import Checks
from drift.integrations.live import LiveConfig, LiveRecorder

__all__ = ["DriftCallback"]

log = logging.getLogger(__name__)


class DriftCallback(TrainerCallback):
    """Record drift datasets of the live student at step 0, every ``every`` optimizer steps and at the end.

    Args:
        teacher: the teacher causal LM, or its path (loaded on the student's device, in ``teacher_dtype`` or the
            student's dtype).
        prompts: a drift prompts jsonl (``{"id", "prompt", "answer", ...}`` per line) or prompt records. Use
            held-out prompts: the same ones at every step, so steps differ by the model only.
        out: folder receiving ``step-XXXXXX`` datasets. ``RUN/drift`` makes ``drift report RUN`` draw drift over
            training.
        every: record after every ``every``-th optimizer step.
        samples_per_prompt: rollouts sampled per prompt.
        max_new_tokens: response cap (default: the trainer's ``args.max_completion_length``, else 512).
        teacher_system_prompt: the teacher's privileged system turn.
        temperature: sampling temperature (1 = the student's own distribution).
        seed: base seed; step N samples with ``derive_seed(seed, N)``.
        max_prompts: use only the first N prompts.
        tokenizer: the student's tokenizer when the trainer passes no ``processing_class``.
        world: an oracle world (``world.json``) adding ``oracle_*`` columns.
        record_start: record at ``on_train_begin``.
        record_end: record at ``on_train_end`` (unless that step is already written).
        scoring: drift's scoring options (chunk sizes, top-k, ...; progress bars off by default).
        **settings: any other :class:`~drift.integrations.live.LiveConfig` field (``top_p``, ``run_id``,
            ``student_system_prompt``, ``chat_template``, ``verifier``, ``gen_batch_size``, ``teacher_dtype``,
            ``on_error``, ...).

    Attributes:
        recorder: the :class:`LiveRecorder` (its ``written`` and ``seconds`` say what each step wrote and cost).
    """

    def __init__(self, teacher: Any, prompts: str | Path | Sequence[PromptRecord], out: str | Path, every: int, *,
                 samples_per_prompt: int = 4, max_new_tokens: int | None = None,
                 teacher_system_prompt: str | None = None, temperature: float = 1.0, seed: int = 0,
                 max_prompts: int | None = None, tokenizer: Any = None, world: Any = None,
                 record_start: bool = True, record_end: bool = True, scoring: ScoringOptions | None = None,
                 **settings: Any) -> None:
        c = Checks("DriftCallback")
        c.check(isinstance(every, int) and not isinstance(every, bool) and every > 0,
                f"every must be a positive integer (optimizer steps), got {every!r}")
        names = {f.name for f in dataclasses.fields(LiveConfig)}
        unknown = sorted(set(settings) - names)
        c.check(not unknown, f"unknown setting(s) {unknown}; known: {sorted(names - {'out', 'scoring'})}")
        c.raise_if_any()
        config = LiveConfig(out=str(out), samples_per_prompt=samples_per_prompt, max_new_tokens=max_new_tokens,
                            teacher_system_prompt=teacher_system_prompt, temperature=temperature, seed=seed,
                            max_prompts=max_prompts, **settings,
                            **({"scoring": scoring} if scoring is not None else {}))
        self.every = every
        self.record_start, self.record_end = record_start, record_end
        self.recorder = LiveRecorder(teacher, prompts, config, tokenizer=tokenizer, world=world)

    @property
    def out(self) -> Path:
        """The folder holding the ``step-XXXXXX`` datasets."""
        return Path(self.recorder.config.out)

    def _record(self, args: Any, state: Any, model: Any, processing_class: Any, hook: str) -> Path | None:
        if model is None:
            log.warning("drift: the trainer passed no model to %s; step %d is not recorded", hook, state.global_step)
            return None
        cap = getattr(args, "max_completion_length", None)
        info = {"hook": hook, "every": self.every, "trainer_max_steps": getattr(state, "max_steps", None),
                "epoch": getattr(state, "epoch", None)}
        return self.recorder.record(int(state.global_step), model, processing_class,
                                    max_new_tokens=cap if isinstance(cap, int) and cap > 0 else None, info=info)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, processing_class: Any = None,
                       **kwargs: Any) -> None:
        """Record the model before its first update (step ``global_step``: 0, or a resumed run's step)."""
        if self.record_start:
            self._record(args, state, model, processing_class, "on_train_begin")

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, processing_class: Any = None,
                    **kwargs: Any) -> None:
        """Record after update ``global_step`` when it is a multiple of ``every``."""
        if state.global_step % self.every == 0:
            self._record(args, state, model, processing_class, "on_step_end")

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, processing_class: Any = None,
                     **kwargs: Any) -> None:
        """Record the final model, unless its step is already written."""
        if self.record_end:
            self._record(args, state, model, processing_class, "on_train_end")
