"""What a training run writes: the run folder, the metrics log, checkpoints and drift datasets at chosen steps.

Layout of ``OUT``::

    metrics.jsonl              one JSON object per step (written as the run goes; NaN as null)
    metrics.parquet            the same rows, written at the end
    config.json, schedule.json the resolved TrainConfig (+ model identities) and the schedule spec
    checkpoints/step-XXXXXX/   save_pretrained of the student (+ tokenizer) after XXXXXX updates
    drift/step-XXXXXX/         a drift dataset (``drift collect``) of held-out rollouts, ``step`` = XXXXXX
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from drift.collect.prompts import PromptRecord
from drift.errors import DatasetExistsError
from drift.train.config import TrainConfig

__all__ = ["OUTPUTS", "MetricsLog", "collect_at", "prepare_out", "save_checkpoint"]

OUTPUTS = ("metrics.jsonl", "metrics.parquet", "config.json", "schedule.json", "checkpoints", "drift")
"""Entries of a run folder; ``--if-exists overwrite`` removes exactly these (other files are left alone)."""


class MetricsLog:
    """One row per step, kept in memory and appended to ``path`` (JSON Lines) as it comes."""

    def __init__(self, path: Path | None) -> None:
        self.rows: list[dict[str, float]] = []
        self.path = path

    def log(self, row: dict[str, float]) -> None:
        self.rows.append(row)
        if self.path is not None:
            clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(clean) + "\n")

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame, ``step`` first (keys a row lacks are NaN)."""
        df = pd.DataFrame(self.rows)
        return df[["step", *[c for c in df.columns if c != "step"]]] if len(df) else df


def prepare_out(config: TrainConfig) -> Path | None:
    """Create the run folder (None for an in-memory run); refuse an existing run unless ``if_exists=overwrite``."""
    if not config.out:
        return None
    out = Path(config.out)
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and config.if_exists == "fail":
        raise DatasetExistsError(f"{out} already holds a training run ({', '.join(existing)}); pass --if-exists "
                                 "overwrite to replace it, or choose another --out")
    for name in existing:
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_checkpoint(student: Any, tokenizer: Any, path: Path) -> Path:
    """``save_pretrained`` the student and its tokenizer into ``path`` (no progress bars)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        student.save_pretrained(path)
        tokenizer.save_pretrained(path)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return path


@contextlib.contextmanager
def _named_as(model: Any, path: Path | None) -> Iterator[None]:
    """Let ``model_identity`` name (and fingerprint) the checkpoint the current weights were saved to."""
    if path is None:
        yield
        return
    old_name, old_source = model.config._name_or_path, getattr(model, "drift_source", None)
    model.config._name_or_path, model.drift_source = str(path), str(path)
    try:
        yield
    finally:
        model.config._name_or_path, model.drift_source = old_name, old_source


def collect_at(step: int, student: Any, teacher: Any, tokenizer: Any, heldout: Sequence[PromptRecord],
               config: TrainConfig, out: Path, checkpoint: Path | None, world: Any | None = None,
               teacher_tokenizer: Any | None = None) -> Path:
    """Run the drift collector on the held-out prompts with ``step`` set, into ``OUT/drift/step-XXXXXX``.

    The dataset's config names ``checkpoint`` (the weights it measured) as the student; at step 0 it names the
    initial student. Same sampling settings and seed at every step, so datasets differ by the model only.
    """
    from drift.collect.config import CollectConfig
    from drift.collect.pipeline import collect

    dest = out / "drift" / f"step-{step:06d}"
    ccfg = CollectConfig(
        out=str(dest), student=str(checkpoint) if checkpoint else (config.student or "student"),
        teacher=config.teacher or "teacher", prompts=config.heldout_prompts or "heldout_prompts",
        tokenizer=config.tokenizer, world=config.world, samples_per_prompt=config.collect_samples,
        max_prompts=config.collect_prompts, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
        top_p=config.top_p, seed=config.seed, step=step, run_id=out.name,
        teacher_system_prompt=config.teacher_system_prompt, chat_template=config.chat_template,
        verifier=config.verifier, gen_batch_size=config.gen_batch_size, if_exists="fail", scoring=config.scoring)
    with _named_as(student, checkpoint):
        collect(student, teacher, tokenizer, list(heldout), ccfg, teacher_tokenizer=teacher_tokenizer, world=world)
    return dest
