"""The ``drift onset`` stage: read a dataset's token rows, detect each rollout's onset, write the outputs.

::

    OUT/onsets.parquet   one row per rollout (drift.schema.ONSET_SCHEMA): run_id, step, prompt_id, sample_id,
                         response_len, onset_position (null: never leaves), onset_score, alarm_position
    OUT/summary.json     n_rollouts, n_with_onset, method, signal, parameters, the calibration (k, h, where each
                         came from, rounds, reference quantiles, null alarm rate), and the naive first-non-top rule's
                         count for comparison where the dataset has teacher_rank
    OUT/config.json      the resolved OnsetConfig (drift.config.save_config)

The token rows are read with DuckDB over the dataset's parts (only the key, ``position``, ``response_len`` and the
signal's columns), ordered by rollout and position. Outputs are written to temporary names and renamed into place
only after the detection succeeded, so a failed run never damages outputs already there.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from drift.config import save_config
from drift.errors import DatasetError, DatasetExistsError, SchemaError
from drift.onset.config import OnsetConfig
from drift.onset.detect import SIGNAL_COLUMNS, Calibration, detect_onsets, first_nontop
from drift.schema import ONSET_COLUMNS, ONSET_SCHEMA, ROLLOUT_KEY, support_hint, validate_columns
from drift.store import DriftDataset, open_dataset

__all__ = ["OUTPUT_FILES", "OnsetRun", "read_onsets", "read_tokens", "run_onset"]

log = logging.getLogger(__name__)

OUTPUT_FILES: tuple[str, ...] = ("onsets.parquet", "summary.json", "config.json")
ONSETS_FILE = "onsets.parquet"


def _check_output(out: Path, if_exists: str) -> None:
    if out.exists() and not out.is_dir():
        raise DatasetExistsError(f"--out {out} is an existing file, not a folder; choose a folder path.")
    existing = [f for f in OUTPUT_FILES if (out / f).exists()]
    if existing and if_exists != "overwrite":
        raise DatasetExistsError(f"{out} already holds {', '.join(existing)}. Pass --if-exists overwrite to replace "
                                 "them, or choose another --out.")


def read_tokens(dataset: DriftDataset, signal: str) -> pd.DataFrame:
    """The token columns the ``signal`` needs, with the rollout key, ``position``, ``response_len`` (and
    ``loss_mask`` and ``teacher_rank`` when present), ordered by rollout and position.

    Raises:
        SchemaError: a needed column is missing; the message names it and the command that adds it.
    """
    names = set(dataset.dataset("tokens").schema.names)
    meta = dataset.metadata
    support = str(meta.get("support") or "full")
    teacher = bool(meta.get("has_teacher", True))
    need = [*ROLLOUT_KEY, "position", "response_len", *SIGNAL_COLUMNS[signal]]
    problems = []
    for col in (c for c in need if c not in names):
        hint = support_hint(col, support, teacher=teacher, dataset=str(dataset.root))
        if hint is None and col in SIGNAL_COLUMNS[signal]:
            hint = (f"the {signal!r} signal needs {col!r}; re-score the rollouts with `drift score --rollouts "
                    f"{dataset.root} --student S --teacher T --out {dataset.root}-scored`, or pick another --signal")
        problems.append(f"missing column {col!r}" + (f": {hint}" if hint else ""))
    if problems:
        raise SchemaError(f"{dataset.root}/tokens (drift onset --signal {signal})", problems)
    extra = [c for c in ("loss_mask", "teacher_rank") if c in names and c not in need]  # rank: the naive rule
    cols = [*need, *extra]
    con = dataset.duckdb()
    try:
        order = ", ".join([*ROLLOUT_KEY, "position"])
        frame = con.execute(f"SELECT {', '.join(cols)} FROM tokens ORDER BY {order}").df()
    finally:
        con.close()
    if frame.empty:
        raise DatasetError(f"{dataset.root} holds no token rows; nothing to detect")
    return frame


@dataclass(frozen=True)
class OnsetRun:
    """A finished detection: the onsets table, its calibration and the summary (as written to ``out``)."""

    onsets: pd.DataFrame
    calibration: Calibration
    summary: dict[str, Any]
    out: Path

    def report(self) -> str:
        """A few lines for the terminal."""
        s, c = self.summary, self.calibration
        lines = [f"{s['n_with_onset']} of {s['n_rollouts']} rollouts leave the teacher's support "
                 f"(signal {s['signal']}; CUSUM k = {c.k:.3g} [{c.k_source}], h = {c.h:.3g} [{c.h_source}], "
                 f"{c.rounds} calibration round(s){'' if c.converged else ', not converged'})"]
        if s.get("median_onset") is not None:
            lines.append(f"median onset position {s['median_onset']:.1f}, median relative onset "
                         f"{s['median_rel_onset']:.3f}")
        naive = s.get("naive_first_nontop")
        if naive:
            lines.append(f"for comparison, the first token the teacher does not rank first: {naive['n_rollouts']} "
                         f"rollouts, median position {naive['median_position']}")
        return "\n".join(lines)


def _summary(cfg: OnsetConfig, dataset: DriftDataset, onsets: pd.DataFrame, cal: Calibration,
             tokens: pd.DataFrame) -> dict[str, Any]:
    has = onsets["onset_position"].notna().to_numpy()
    pos = onsets.loc[has, "onset_position"].to_numpy(np.float64)
    rel = pos / np.maximum(onsets.loc[has, "response_len"].to_numpy(np.float64), 1.0)
    out: dict[str, Any] = {
        "dataset": str(dataset.root), "method": "cusum", "signal": cfg.signal,
        "n_rollouts": len(onsets), "n_with_onset": int(has.sum()),
        "median_onset": float(np.median(pos)) if has.any() else None,
        "median_rel_onset": float(np.median(rel)) if has.any() else None,
        "parameters": cfg.calibration_kwargs(), "calibration": cal.to_dict(),
    }
    if "teacher_rank" in tokens.columns:
        naive = first_nontop(tokens, onsets)
        fired = naive >= 0
        out["naive_first_nontop"] = {"n_rollouts": int(fired.sum()),
                                     "median_position": float(np.median(naive[fired])) if fired.any() else None}
    return out


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def run_onset(config: OnsetConfig) -> OnsetRun:
    """The ``drift onset`` stage (module docstring): detect, then write ``onsets.parquet``, ``summary.json`` and
    ``config.json`` in ``config.out`` (default ``DATASET/onset``).

    Raises:
        DatasetError: the dataset is missing or holds no tokens.
        SchemaError: a column the signal needs is missing (named, with the command that adds it).
        DatasetExistsError: ``out`` already holds onset outputs and ``if_exists`` is ``fail``.
    """
    out = Path(config.out) if config.out else Path(config.dataset) / "onset"
    _check_output(out, config.if_exists)
    dataset = open_dataset(config.dataset)
    tokens = read_tokens(dataset, config.signal)
    onsets, cal = detect_onsets(tokens, signal=config.signal, **config.calibration_kwargs())
    summary = _summary(config, dataset, onsets, cal, tokens)
    table = pa.Table.from_pandas(onsets[[c.name for c in ONSET_COLUMNS]], schema=ONSET_SCHEMA, preserve_index=False)
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / ONSETS_FILE, lambda p: pq.write_table(table, p))
    _atomic(out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    save_config(config, out / "config.json", command="onset", out=str(out), calibration=cal.to_dict())
    log.info("wrote %s", out / ONSETS_FILE)
    return OnsetRun(onsets, cal, summary, out)


def read_onsets(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``onsets.parquet`` (or the folder holding it) and check it against :data:`drift.schema.ONSET_SCHEMA`.

    Returns:
        One row per rollout; ``onset_position`` (and ``alarm_position``) as nullable ``Int32``.

    Raises:
        DatasetError: the file is missing or not parquet (names the command that writes it).
        SchemaError: a column is missing or mistyped, or a rollout key repeats.
    """
    p = Path(path)
    file = p / ONSETS_FILE if p.is_dir() else p
    if not file.is_file():
        raise DatasetError(f"{file} does not exist; write it with `drift onset DATASET --out {file.parent}`")
    try:
        table = pq.read_table(file)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{file} is not a readable parquet file ({exc}); rerun `drift onset` with "
                           "--if-exists overwrite") from exc
    validate_columns(table.schema, ONSET_COLUMNS, what=str(file))
    frame = table.to_pandas()
    for col in ("onset_position", "alarm_position"):
        if col in frame.columns:
            frame[col] = frame[col].astype("Int32")
    dup = frame.duplicated(list(ROLLOUT_KEY))
    if dup.any():
        raise SchemaError(str(file), [f"{int(dup.sum())} rollout key(s) {ROLLOUT_KEY} appear more than once"])
    return frame
