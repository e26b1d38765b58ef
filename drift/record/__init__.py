"""Live recording inside training: :class:`Recorder` logs the per-token log-probs any trainer already computes
(student, teacher, sampler) into one drift dataset, step by step, cheaply and without ever raising into the loop.

    from drift.record import Recorder

    with Recorder("runs/opd-record", tokenizer=tokenizer, metadata={"student": "Qwen3-1.7B"}) as rec:
        for step, batch in enumerate(loader):
            ...  # rollouts, student and teacher log-prob passes
            rec.log(step, batch.prompt_ids, batch.response_ids, student_lp, teacher_lp, mask=batch.response_mask)
            ...  # the update

The dataset is an ordinary drift dataset (support ``sampled``): ``drift fit`` / ``drift report`` read it.
"""

from __future__ import annotations

from drift.record.recorder import Recorder

__all__ = ["Recorder"]
