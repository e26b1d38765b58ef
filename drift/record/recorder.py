"""The live recorder: per-token log-probs a trainer already has, logged every step into one drift dataset.

:class:`Recorder` takes a batch as the trainer holds it (ragged lists, or padded ``(B, L)`` tensors with a mask,
on any device, in any dtype), derives every column drift can derive from sampled log-probs with
:func:`drift.ingest.records.build_import_tables` (the code ``drift import`` uses, so the signs and conventions are
drift's), and writes atomic parquet parts with :class:`drift.store.DatasetWriter`:

- the rows of one step are buffered; a part is written when the step changes, when the buffer passes
  ``max_buffer_tokens`` tokens, on :meth:`Recorder.flush` and on :meth:`Recorder.close` (also at interpreter exit
  when the trainer forgot to close it, with status ``interrupted``);
- the manifest says ``running`` until :meth:`Recorder.close` sets ``complete``; a killed trainer leaves every
  written part listed and readable (only the rows of the step being buffered are lost);
- a logging problem (bad shapes, non-finite log-probs, a full disk, an unwritable folder) never raises into the
  training loop: the batch is dropped and counted (:attr:`Recorder.n_dropped_batches`, in the manifest), and one
  :class:`~drift.errors.DriftWarning` says what failed (``strict=True`` raises instead).

The first part fixes the dataset's columns: a later part lacking ``rollout_logprob`` (or ``loss_mask``,
``teacher_id``, ``teacher_revision``) gets nulls there (``loss_mask``: true); a later batch that brings one of them
when the first part had none keeps its other columns (the extra one is dropped, with a warning). Teacher log-probs
are all or nothing: the first logged batch decides whether the dataset has a teacher (``has_teacher``), and a batch
that disagrees is dropped.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import time
import warnings
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drift.config import git_sha
from drift.errors import DatasetError, DatasetExistsError, DriftWarning
from drift.ingest.records import ImportedRollout, build_import_tables
from drift.record.batch import batch_rollouts
from drift.record.meta import config_payload, parquet_metadata, tokenizer_info

__all__ = ["Recorder"]

log = logging.getLogger(__name__)

#: Optional token columns a later part may lack (filled by :func:`drift.ingest.run.conform_columns`).
_OPTIONAL = ("rollout_logprob", "loss_mask", "teacher_id", "teacher_revision")
_MAX_ERRORS = 20  # errors kept in the manifest


def _close_at_exit(ref: weakref.ReferenceType[Recorder]) -> None:
    rec = ref()
    if rec is not None and not rec.closed:
        rec.close("interrupted")


class Recorder:
    """Record the per-token log-probs of a training run into one drift dataset (see the module docstring).

    Args:
        out: the dataset folder (created with the first part).
        run_id: written to every row and part of the prompt key (default: the folder's name).
        tokenizer: the tokenizer the ids belong to: its identity is recorded, the prompt and response text are
            decoded into the rollouts table, and a sequence ending with its EOS counts as ``finished``. None: the
            text columns stay null.
        support: ``sampled`` (log-probs of the sampled token only: the only support a trainer's log-probs give).
        metadata: JSON-able facts about the run (model names, learning rate, ...), stored in ``config.json``
            and under ``user`` in the parquet metadata; its ``student``, ``teacher`` and ``temperature`` entries
            also fill those fields of the parquet metadata.
        if_exists: ``fail`` (default: refuse a non-empty ``out``, at construction), ``overwrite`` or ``resume``
            (append to the dataset an earlier run of this recorder left, e.g. after restarting from a checkpoint).
        strict: raise every logging problem instead of warning and dropping the batch (tests, debugging).
        max_buffer_tokens: a part is written when the buffered step holds this many tokens.

    Only the constructor raises (before training starts); call :meth:`log` from one thread (under several
    processes: from rank 0, or give each rank its own ``out``).

    Raises:
        ValueError: an argument is invalid.
        DatasetExistsError: ``out`` is a file, or not empty while ``if_exists`` is ``fail``.
    """

    def __init__(self, out: str | os.PathLike[str], *, run_id: str | None = None, tokenizer: Any = None,
                 support: str = "sampled", metadata: Mapping[str, Any] | None = None, if_exists: str = "fail",
                 strict: bool = False, max_buffer_tokens: int = 1_000_000) -> None:
        if support != "sampled":
            raise ValueError(f"support must be 'sampled' (a trainer holds the log-prob of the sampled token only), "
                             f"got {support!r}; full-vocabulary metrics come from `drift score` or the TRL callback")
        if if_exists not in ("fail", "overwrite", "resume"):
            raise ValueError(f"if_exists must be fail, overwrite or resume, got {if_exists!r}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValueError(f"metadata must be a mapping (dict), got {type(metadata).__name__}")
        if int(max_buffer_tokens) < 1:
            raise ValueError(f"max_buffer_tokens must be >= 1, got {max_buffer_tokens}")
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise DatasetExistsError(f"{self.out} is an existing file, not a folder; give the recorder a folder path")
        if if_exists == "fail" and self.out.is_dir() and any(self.out.iterdir()):
            raise DatasetExistsError(f"{self.out} already exists and is not empty; pass if_exists='overwrite' to "
                                     "replace it, if_exists='resume' to append to it, or choose another folder.")
        self.run_id = str(run_id) if run_id is not None else self.out.name
        self.tokenizer = tokenizer
        self.support = support
        self.metadata = dict(metadata or {})
        self.if_exists = if_exists
        self.strict = bool(strict)
        self.max_buffer_tokens = int(max_buffer_tokens)
        #: batches dropped because of a logging problem (bad input, failed write); recorded in the manifest
        self.n_dropped_batches = 0
        #: batches accepted by :meth:`log`
        self.n_batches = 0
        #: parts, rollouts and tokens written so far
        self.n_parts = self.n_rollouts = self.n_tokens = 0
        #: wall seconds spent inside log / flush / close
        self.seconds = 0.0
        self.closed = False
        self.errors: list[dict[str, Any]] = []
        self._warned: set[str] = set()
        self._has_teacher: bool | None = None
        self._buffer: list[ImportedRollout] = []
        self._buffer_step: int | None = None
        self._buffer_sig: tuple[bool, ...] | None = None
        self._buffer_tokens = 0
        self._buffer_batches = 0
        self._writer: Any = None
        self._fatal: str | None = None
        self._reference: list[str] | None = None
        self._next_index = 0
        self._seen: dict[tuple[Any, ...], int] = {}
        self._eos = getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None
        self._tok_info = tokenizer_info(tokenizer)
        self._git_sha = git_sha()
        self._atexit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._atexit)

    # ------------------------------------------------------------------------------------------------- public

    def log(self, step: int, prompt_ids: Any, response_ids: Any, student_logprobs: Any,
            teacher_logprobs: Any = None, *, mask: Any = None, prompt_mask: Any = None,
            rollout_logprobs: Any = None, loss_mask: Any = None, reward: Any = None, prompt_id: Any = None,
            sample_id: Any = None, teacher_id: Any = None, teacher_revision: Any = None, finished: Any = None,
            truncated: Any = None) -> int:
        """Log one batch of sequences scored at training step ``step``; never raises (unless ``strict``).

        Args:
            step: the training step (optimizer steps done when the student scored these tokens).
            prompt_ids: the prompts: a list of sequences, or a padded ``(B, P)`` tensor with ``prompt_mask``.
            response_ids: the responses: a list of sequences, or a padded ``(B, L)`` tensor with ``mask``.
            student_logprobs: log S(y_t) of each response token, laid out like ``response_ids``.
            teacher_logprobs: log T(y_t), laid out the same way; None records the student only.
            mask: ``(B, L)``, true at the valid response tokens of the padded inputs (left or right padding, or
                holes: valid tokens are taken in order). Ragged inputs hold valid tokens only and are taken as
                they are, unless ``mask`` is ragged too (one list per sequence).
            prompt_mask: ``(B, P)``, true at the valid prompt tokens of a padded ``prompt_ids``.
            rollout_logprobs: the sampler's (vLLM / SGLang) log-probs of the response tokens, if the trainer has
                them.
            loss_mask: whether the trainer trains on each valid response token (e.g. false on tool output).
            reward: one reward per sequence.
            prompt_id: one id per sequence, or one id for the whole batch (None: the prompt's token ids identify
                it in ``prompt_key``).
            sample_id: index of each sequence among its prompt's samples (None: order of appearance in the step).
            teacher_id, teacher_revision: which teacher scored the batch (one value, or one per sequence).
            finished, truncated: per sequence (None: ``finished`` = ends with the tokenizer's EOS, else false).

        Returns:
            The number of sequences accepted (0 when the batch was dropped).
        """
        t0 = time.perf_counter()
        try:
            if self.closed:
                raise RuntimeError("log() called after close()")
            rows = batch_rollouts(
                int(step), prompt_ids, response_ids, student_logprobs, teacher_logprobs, mask=mask,
                prompt_mask=prompt_mask, rollout_logprobs=rollout_logprobs, loss_mask=loss_mask, reward=reward,
                prompt_id=prompt_id, sample_id=sample_id, teacher_id=teacher_id, teacher_revision=teacher_revision,
                finished=finished, truncated=truncated, run_id=self.run_id, eos_id=self._eos,
                has_teacher=self._has_teacher)
            if rows:
                self._has_teacher = rows[0].teacher_logprob is not None
                self._add(int(step), rows)
            return len(rows)
        except Exception as exc:
            if self.strict:
                raise
            self._failed("log", step, exc, 1)
            return 0
        finally:
            self.seconds += time.perf_counter() - t0

    def flush(self) -> None:
        """Write the buffered rows as a part now (e.g. before a checkpoint); never raises (unless ``strict``)."""
        t0 = time.perf_counter()
        try:
            self._flush()
        finally:
            self.seconds += time.perf_counter() - t0

    def close(self, status: str = "complete", **info: Any) -> None:
        """Write the buffered rows and mark the dataset ``status`` (``complete``, ``interrupted`` or ``failed``).

        ``info`` (JSON-able) goes into the manifest. Closing twice does nothing; never raises (unless ``strict``).
        """
        if self.closed:
            return
        t0 = time.perf_counter()
        try:
            self._flush()
            try:
                writer = self._ensure_writer()
                writer.close(status, record=self.stats(), **info)  # type: ignore[arg-type]
            except Exception as exc:
                if self.strict:
                    raise
                self._failed("close", self._buffer_step, exc, 0)
        finally:
            self.closed = True
            atexit.unregister(self._atexit)
            self.seconds += time.perf_counter() - t0

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close("complete")
        else:
            status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
            self.close(status, training_error=f"{exc_type.__name__}: {exc}"[:500])

    def stats(self) -> dict[str, Any]:
        """What was recorded and dropped so far (stored in the manifest under ``record``)."""
        return {"n_batches": self.n_batches, "n_dropped_batches": self.n_dropped_batches, "n_parts": self.n_parts,
                "n_rollouts": self.n_rollouts, "n_tokens": self.n_tokens, "seconds": round(self.seconds, 4),
                "max_buffer_tokens": self.max_buffer_tokens, "errors": list(self.errors)}

    # ----------------------------------------------------------------------------------------------- batches

    def _drop_unknown(self, step: int, rows: list[ImportedRollout]) -> tuple[bool, ...]:
        """Drop the optional columns the dataset's first part (once written) lacks; the batch's part signature."""
        if self._reference is not None:
            for name in _OPTIONAL:
                if name not in self._reference and any(getattr(r, name) is not None for r in rows):
                    self._warn_once(f"column:{name}", f"drift Recorder ({self.out}): {name} given at step {step}, "
                                    "but the dataset's first part has no such column (every part of a dataset has "
                                    "the same columns); it is not recorded. Give it from the first logged batch on.")
                    for r in rows:
                        setattr(r, name, None)
        return (rows[0].rollout_logprob is not None,)

    def _add(self, step: int, rows: list[ImportedRollout]) -> None:
        sig = self._drop_unknown(step, rows)
        if self._buffer and (step != self._buffer_step or sig != self._buffer_sig):
            self._flush()  # a part holds one step, with or without sampler log-probs throughout
            sig = self._drop_unknown(step, rows)  # the flush may have written the first part
        self._buffer.extend(rows)
        self._buffer_step, self._buffer_sig = step, sig
        self._buffer_tokens += sum(len(r.response_ids) for r in rows)
        self._buffer_batches += 1
        self.n_batches += 1
        if self._buffer_tokens >= self.max_buffer_tokens:
            self._flush()

    # ------------------------------------------------------------------------------------------------ writing

    def _flush(self) -> None:
        """Write the buffer as one part; a failure drops its batches (counted, warned once) unless ``strict``."""
        if not self._buffer:
            return
        rows, step, n_batches = self._buffer, self._buffer_step, self._buffer_batches
        self._buffer, self._buffer_tokens, self._buffer_batches = [], 0, 0
        try:
            self._write(rows, int(step or 0), n_batches)
        except Exception as exc:
            if self.strict:
                raise
            self._failed("writing a part", step, exc, n_batches)

    def _write(self, rows: list[ImportedRollout], step: int, n_batches: int) -> None:
        from drift.ingest.run import conform_columns

        writer = self._ensure_writer()
        rollouts, tokens = build_import_tables(rows, run_id=self.run_id, support=self.support,
                                               tokenizer=self.tokenizer, seen=self._seen)
        tokens = conform_columns(tokens, self._reference, str(self.out))
        self.n_parts += 1
        self.n_rollouts += rollouts.num_rows
        self.n_tokens += tokens.num_rows
        writer.manifest["record"] = self.stats()  # the manifest written with the part carries the counts
        try:
            writer.write_part(self._next_index, rollouts, tokens, info={"step": step, "n_batches": n_batches})
        except BaseException:
            self.n_parts -= 1
            self.n_rollouts -= rollouts.num_rows
            self.n_tokens -= tokens.num_rows
            raise
        self._next_index += 1
        if self._reference is None:
            self._reference = tokens.column_names

    def _ensure_writer(self) -> Any:
        """The dataset writer, created at the first write (when the columns are known)."""
        if self._fatal is not None:
            raise DatasetError(self._fatal)
        if self._writer is not None:
            return self._writer
        from drift.store import DatasetWriter

        writer = DatasetWriter(self.out, if_exists=self.if_exists,  # type: ignore[arg-type]
                               config=config_payload(self), metadata=parquet_metadata(self),
                               identity={"command": "record", "run_id": self.run_id, "support": self.support,
                                         "vocab_hash": (self._tok_info or {}).get("vocab_hash")})
        if writer.manifest["parts"]:  # resume: continue after the parts an earlier run wrote
            self._resume_from(writer)
        self._writer = writer
        return writer

    def _resume_from(self, writer: Any) -> None:
        import pyarrow.parquet as pq

        from drift.ingest.run import reference_columns, seen_sample_ids
        from drift.schema import read_drift_metadata

        first = read_drift_metadata(pq.read_schema(writer.root / writer.manifest["parts"][0]["tokens"]))
        had = first.get("has_teacher")
        if self._has_teacher is not None and had is not None and bool(had) != self._has_teacher:
            self._fatal = (f"{self.out}: cannot append {'teacher' if self._has_teacher else 'student-only'} batches "
                           f"to a dataset recorded {'with' if had else 'without'} teacher log-probs; record into "
                           "another folder")
            raise DatasetError(self._fatal)
        self._next_index = max(writer.completed_parts) + 1
        self._seen = seen_sample_ids(writer)
        self._reference = reference_columns(writer)

    # ------------------------------------------------------------------------------------------------ failures

    def _failed(self, where: str, step: Any, exc: BaseException, n_batches: int) -> None:
        """Count a dropped batch (or buffer), keep the error for the manifest, warn the first time."""
        self.n_dropped_batches += n_batches
        what = f"{type(exc).__name__}: {exc}"
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append({"where": where, "step": _plain_step(step), "n_batches": n_batches,
                                "error": what[:1000]})
        log.info("drift Recorder (%s): %s at step %s failed: %s", self.out, where, step, what)
        dropped = f"{n_batches} batch(es) of step {step} dropped" if n_batches else "nothing dropped"
        self._warn_once("failure", f"drift Recorder ({self.out}): {where} at step {step} failed ({what}); {dropped}. "
                        "Training continues; later problems are not warned again, they are counted in "
                        "recorder.n_dropped_batches and the dataset's manifest (record.errors).")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, DriftWarning, stacklevel=4)


def _plain_step(step: Any) -> int | None:
    try:
        return int(step)
    except (TypeError, ValueError):
        return None
