"""The import driver: stream a source file by file into an ordinary drift dataset, check it, and resume.

A reader (``drift.ingest.<format>``) describes its source as a :class:`SourcePlan`: the files in import order, a
function that streams one file's rollouts, the support (``sampled`` or ``topk``) and what it knows about the
teacher. :func:`run_import` then

1. checks a sample of the first rollouts against ``--student`` / ``--teacher`` when given
   (:func:`drift.ingest.checks.check_logprobs`: median |imported - re-scored| < tolerance, a one-token shift
   named), before anything is written;
2. writes parts of ``part_size`` rollouts, never spanning two files, each part recording the file and chunk it came
   from (so a resume skips whole files already imported, and a file that changed since is refused);
3. on a malformed file stops with the file and line or key named, leaving the parts already written under status
   ``failed``: fix the file and rerun with ``--if-exists resume``;
4. closes with a sign check (on-policy the mean k1 estimates KL(S||T) >= 0; a clearly negative mean says student
   and teacher are swapped or the rollouts are not the student's) recorded in the manifest.

Memory is one file's rollouts at most (a ``.pt`` dump is loaded whole; jsonl is streamed line by line).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drift import __version__
from drift.collect.metrics import K3_CLAMP, K3_MAX
from drift.config import config_to_dict, git_sha
from drift.errors import AlignmentWarning, DatasetError, DriftError, InputFormatError
from drift.ingest.config import ImportConfig
from drift.ingest.records import ImportedRollout, build_import_tables
from drift.progress import make_progress
from drift.store import DatasetWriter, DriftDataset, open_dataset

__all__ = ["SourcePlan", "conform_columns", "reference_columns", "resolve_tokenizer", "run_import", "seen_sample_ids",
           "sign_check", "support_limits"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourcePlan:
    """What a reader found and how to stream it.

    Attributes:
        format: the source format (``slime``, ``nemo-rl``, ``tokens``, ...).
        root: the path the user gave.
        files: the files to import, in order (parts never span two).
        iter_file: streams one file's rollouts; raises :class:`~drift.errors.InputFormatError` naming the file and
            the line / key of a malformed entry.
        support: ``sampled`` (log-probs of y_t only) or ``topk`` (plus the teacher's top-k list).
        has_teacher: the rollouts carry teacher log-probs.
        teacher_source: where the teacher log-probs came from (``slime_dump``, ``nemo_prev_plus_advantage``,
            ``vllm_prompt_logprobs``, ``user``), None without a teacher.
        tokenizer: the tokenizer the token ids belong to (None: unknown; text columns stay empty).
        tokenizer_source: where it was loaded from.
        notes: what the reader wants recorded (layout version, dropped fields, ...).
        missing_analyses: the analyses this source cannot support and the command that adds them.
        k: the top-k size for ``topk`` support.
    """

    format: str
    root: Path
    files: tuple[Path, ...]
    iter_file: Callable[[Path], Iterator[ImportedRollout]]
    support: str = "sampled"
    has_teacher: bool = True
    teacher_source: str | None = None
    tokenizer: Any = None
    tokenizer_source: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    missing_analyses: tuple[str, ...] = ()
    k: int | None = None


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root if root.is_dir() else root.parent))
    except ValueError:
        return str(path)


def _file_stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _chunks(rows: Iterator[ImportedRollout], size: int) -> Iterator[list[ImportedRollout]]:
    chunk: list[ImportedRollout] = []
    for r in rows:
        chunk.append(r)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def sign_check(sums: dict[str, tuple[float, int]]) -> dict[str, Any]:
    """Mean k1 per token with a prompt-cluster standard error, from per-prompt (sum of k1, tokens).

    On-policy (rollouts sampled from the student) E[k1] = KL(S||T) >= 0, so ``verdict`` is ``swapped?`` when the
    mean is more than 3 cluster standard errors below 0, ``ok`` otherwise (``insufficient`` with < 2 prompts).
    """
    if len(sums) < 2:
        return {"verdict": "insufficient", "n_prompts": len(sums)}
    tot = np.array([v[0] for v in sums.values()], float)
    cnt = np.array([v[1] for v in sums.values()], float)
    mean = float(tot.sum() / cnt.sum())
    # ratio estimator's cluster-robust standard error
    resid = tot - mean * cnt
    g = len(sums)
    se = float(math.sqrt(g / (g - 1) * (resid ** 2).sum()) / cnt.sum())
    verdict = "swapped?" if mean < -3 * se else "ok"
    return {"verdict": verdict, "mean_k1": mean, "se": se, "n_prompts": g, "n_tokens": int(cnt.sum())}


def support_limits(support: str, has_teacher: bool, dataset: str = "DATASET") -> list[str]:
    """What a dataset of ``support`` cannot show, each with the command that adds it (naming ``dataset``)."""
    fix = (f"`drift score --rollouts {dataset} --student S --teacher T --out {dataset}-full` re-scores it over the "
           "full vocabulary")
    out = []
    if not has_teacher:
        out.append("every teacher column (teacher_logprob, advantage, k1, k3, C_t, C_t/C_T, S_t): the source holds "
                   f"no teacher log-probs; {fix}")
    if support != "full":
        out.append("full-vocabulary KL (kl_reverse, kl_forward), entropies (student_entropy, teacher_entropy), "
                   "argmax agreement, top-k overlap and the teacher's mass on the student's top k "
                   f"(teacher_mass_student_topk): support is {support!r}; {fix}")
    if support == "sampled":
        out.append(f"the teacher's rank, top-1 agreement and argmax (teacher_rank, teacher_top1, teacher_argmax): "
                   f"{fix}, or merge vLLM "
                   "prompt_logprobs with `drift import vllm`")
    return out


def _limits(plan: SourcePlan, cfg: ImportConfig) -> list[str]:
    """The reader's own sentences (they replace the generic one about a missing teacher), then the support's."""
    return [*plan.missing_analyses,
            *support_limits(plan.support, plan.has_teacher or bool(plan.missing_analyses), cfg.out)]


def resolve_tokenizer(cfg: ImportConfig, default: Path | None = None) -> tuple[Any, str | None]:
    """The tokenizer of an import: ``--tokenizer``, else the dump's own folder ``default``, else ``--student``'s;
    (None, None) when there is none (the text columns then stay empty)."""
    from drift.models import load_tokenizer

    if cfg.tokenizer:
        return load_tokenizer(cfg.tokenizer), cfg.tokenizer
    if default is not None and default.is_dir():
        tok = load_tokenizer(default, required=False)
        if tok is not None:
            return tok, str(default)
    if cfg.student:
        tok = load_tokenizer(cfg.student, required=False)
        if tok is not None:
            return tok, cfg.student
    return None, None


def source_temperature(plan: SourcePlan, cfg: ImportConfig) -> float | None:
    """The temperature the source's log-probs were computed at: ``--temperature``, else what the reader found
    (None: unknown). The metadata records it and the re-score check divides the logits by it."""
    return cfg.temperature if cfg.temperature is not None else plan.notes.get("temperature")


def _metadata(plan: SourcePlan, cfg: ImportConfig, run_id: str) -> dict[str, Any]:
    from drift.models import tokenizer_hash, vocab_hash

    tok = plan.tokenizer
    return {
        "estimator": "sampled" if plan.support == "sampled" else "topk", "support": plan.support, "k": plan.k,
        "has_teacher": plan.has_teacher, "teacher_source": plan.teacher_source, "source_format": plan.format,
        "temperature": source_temperature(plan, cfg), "score_temperature": source_temperature(plan, cfg),
        "k3_clamp": K3_CLAMP, "k3_max": K3_MAX, "run_id": run_id,
        "student": {"source": cfg.student}, "teacher": {"source": cfg.teacher, "id": cfg.teacher_id,
                                                        "revision": cfg.teacher_revision},
        "tokenizer": tokenizer_hash(tok) if tok is not None else None,
        "vocab_hash": vocab_hash(tok) if tok is not None else None,
        "missing_analyses": _limits(plan, cfg),
        "drift_version": __version__,
    }


def _payload(plan: SourcePlan, cfg: ImportConfig, checks: dict[str, Any]) -> dict[str, Any]:
    import torch

    from drift.models import tokenizer_hash, vocab_hash

    tok = plan.tokenizer
    tokenizer = None if tok is None else {
        "hash": tokenizer_hash(tok), "vocab_hash": vocab_hash(tok), "source": plan.tokenizer_source,
        "size": len(tok), "eos": tok.eos_token, "chat_template": bool(getattr(tok, "chat_template", None))}
    return {
        "command": "import", "config_type": "ImportConfig", "config": config_to_dict(cfg),
        "source": {"format": plan.format, "path": str(plan.root), "support": plan.support,
                   "has_teacher": plan.has_teacher, "teacher_source": plan.teacher_source,
                   "files": [_rel(f, plan.root) for f in plan.files], "notes": plan.notes,
                   "missing_analyses": _limits(plan, cfg)},
        "tokenizer": tokenizer, "checks": checks,
        "drift_version": __version__, "git_sha": git_sha(), "torch_version": torch.__version__,
    }


def _identity(plan: SourcePlan, cfg: ImportConfig) -> dict[str, Any]:
    flat = config_to_dict(cfg)
    flat.pop("scoring", None)
    for k in ("if_exists", "check_rollouts", "check_tolerance", "out"):
        flat.pop(k, None)
    flat["path"] = str(Path(cfg.path).resolve())
    flat["support"] = plan.support
    flat["vocab_hash"] = None
    if plan.tokenizer is not None:
        from drift.models import vocab_hash

        flat["vocab_hash"] = vocab_hash(plan.tokenizer)
    return {"command": "import", **flat}


def _done_parts(writer: DatasetWriter, plan: SourcePlan) -> tuple[dict[tuple[str, int], int], set[str]]:
    """Parts already written: (file, chunk) -> part index, and the files imported completely.

    Raises:
        DatasetError: an imported file changed (size or time) since, or is gone.
    """
    done: dict[tuple[str, int], int] = {}
    complete: set[str] = set()
    by_rel = {_rel(f, plan.root): f for f in plan.files}
    for p in writer.manifest["parts"]:
        src = p.get("source")
        if not isinstance(src, dict):
            raise DatasetError(f"{writer.root}: part {p['index']} records no source file; it was not written by "
                               "`drift import`. Use --if-exists overwrite or a new --out.")
        rel = src["file"]
        if rel not in by_rel:
            raise DatasetError(f"{writer.root}: part {p['index']} came from {rel}, which is no longer under "
                               f"{plan.root}; restore it or re-import with --if-exists overwrite.")
        now = _file_stamp(by_rel[rel])
        if now["size"] != src["size"]:
            raise DatasetError(f"{rel} changed since part {p['index']} was imported from it ({src['size']} -> "
                               f"{now['size']} bytes); re-import with --if-exists overwrite.")
        done[(rel, int(src["chunk"]))] = int(p["index"])
        if src.get("last"):
            complete.add(rel)
    return done, complete


def run_import(plan: SourcePlan, cfg: ImportConfig, *, student: Any = None, teacher: Any = None) -> DriftDataset:
    """Import ``plan`` into ``cfg.out`` (see the module docstring).

    Args:
        plan: the source, from a reader's ``open_*`` function.
        cfg: the import config.
        student, teacher: loaded models to check the imported log-probs against (None: no check).

    Raises:
        InputFormatError: a file is malformed (named with its line or key); parts written before it are kept.
        AlignmentError: the imported log-probs do not match the given models (a one-token shift is named).
        DatasetError: a resume finds imported files changed.
    """
    from drift.ingest.checks import check_logprobs

    if not plan.files:
        raise InputFormatError(f"{plan.root}: no {plan.format} files found to import")
    run_id = cfg.run_id or Path(cfg.out).name
    checks: dict[str, Any] = {}
    writer = DatasetWriter(cfg.out, if_exists=cfg.if_exists,  # type: ignore[arg-type]
                           config=_payload(plan, cfg, checks), metadata=_metadata(plan, cfg, run_id),
                           identity=_identity(plan, cfg))
    done, complete = _done_parts(writer, plan)
    next_index = max(writer.completed_parts, default=-1) + 1
    seen = seen_sample_ids(writer)
    sums: dict[str, tuple[float, int]] = {}
    checked = (student is None and teacher is None) or cfg.check_rollouts == 0 or bool(done)
    bar = make_progress(len(plan.files), f"import {plan.format}", unit="file", enabled=cfg.scoring.progress)
    n_written = 0
    try:
        for path in plan.files:
            rel = _rel(path, plan.root)
            if rel in complete:
                bar.update(1)
                continue
            stamp = _file_stamp(path)
            pending: tuple[int, list[ImportedRollout]] | None = None
            for j, chunk in enumerate(_chunks(plan.iter_file(path), cfg.part_size)):
                if pending is not None:
                    next_index = _write(writer, pending, rel, stamp, False, done, next_index, run_id, plan, seen,
                                        sums)
                    n_written += 1
                if not checked:
                    checks.update(check_logprobs(chunk, student=student, teacher=teacher, n=cfg.check_rollouts,
                                                 tolerance=cfg.check_tolerance, options=cfg.scoring,
                                                 temperature=source_temperature(plan, cfg) or 1.0))
                    writer.set_config(_payload(plan, cfg, checks))
                    checked = True
                pending = (j, chunk)
            if pending is not None:
                next_index = _write(writer, pending, rel, stamp, True, done, next_index, run_id, plan, seen, sums)
                n_written += 1
            bar.update(1)
    except DriftError as exc:
        writer.close("failed")
        bar.close()
        kept = len(writer.completed_parts)
        if kept and isinstance(exc, InputFormatError):
            raise InputFormatError(f"{exc}\nThe {kept} part(s) imported before it are kept in {cfg.out} (status "
                                   "'failed'); fix or remove that file, then rerun with --if-exists resume.") from exc
        raise
    except BaseException:
        writer.close("interrupted")
        bar.close()
        raise
    bar.close()
    sign = sign_check(sums) if sums else {"verdict": "not run", "why": "no teacher log-probs (or resumed)"}
    if sign.get("verdict") == "swapped?":
        warnings.warn(f"{cfg.out}: the mean k1 = student - teacher log-prob is {sign['mean_k1']:.3g} nats "
                      f"(cluster s.e. {sign['se']:.2g}, {sign['n_prompts']} prompts), clearly below 0. On the "
                      "student's own rollouts it estimates KL(S||T) >= 0: the student and teacher columns look "
                      "swapped, or these rollouts were not sampled from this student.", AlignmentWarning,
                      stacklevel=2)
    if not writer.completed_parts:
        raise InputFormatError(f"{plan.root}: the {plan.format} files hold no rollouts")
    # what the reader found while reading (dropped samples, skipped files): config.json was written with part 0
    writer.close("complete", checks={**checks, "sign": sign}, source_format=plan.format,
                 source_notes=json.loads(json.dumps(plan.notes, default=str)))
    log.info("imported %d new part(s) from %d file(s) into %s", n_written, len(plan.files), cfg.out)
    return open_dataset(writer.root)


def _write(writer: DatasetWriter, pending: tuple[int, list[ImportedRollout]], rel: str, stamp: dict[str, Any],
           last: bool, done: dict[tuple[str, int], int], next_index: int, run_id: str, plan: SourcePlan,
           seen: dict[tuple[Any, ...], int], sums: dict[str, tuple[float, int]]) -> int:
    j, chunk = pending
    if (rel, j) in done:
        return next_index
    rollouts, tokens = build_import_tables(chunk, run_id=run_id, support=plan.support, tokenizer=plan.tokenizer,
                                           seen=seen)
    tokens = conform_columns(tokens, reference_columns(writer), rel)
    if "k1" in tokens.column_names:
        keys = tokens.column("prompt_key").to_numpy(zero_copy_only=False)
        k1 = tokens.column("k1").to_numpy().astype(np.float64)
        for key in np.unique(keys):
            sel = keys == key
            s, c = sums.get(key, (0.0, 0))
            sums[key] = (s + float(k1[sel].sum()), c + int(sel.sum()))
    writer.write_part(next_index, rollouts, tokens,
                      info={"source": {"file": rel, "chunk": j, "last": last, **stamp, "n_rollouts": len(chunk)}})
    return next_index + 1


def seen_sample_ids(writer: DatasetWriter) -> dict[tuple[Any, ...], int]:
    """Order-of-appearance sample-id counters after the parts already written (a resume continues them, so new
    ids never collide with stored ones)."""
    import pyarrow.parquet as pq

    seen: dict[tuple[Any, ...], int] = {}
    for p in writer.manifest["parts"]:
        t = pq.read_table(writer.root / p["rollouts"], columns=["step", "prompt_key", "sample_id"]).to_pylist()
        for r in t:
            k = (int(r["step"]), r["prompt_key"])
            seen[k] = max(seen.get(k, 0), int(r["sample_id"]) + 1)
    return seen


def reference_columns(writer: DatasetWriter) -> list[str] | None:
    """The token columns of the parts already written (every part of a dataset must have the same)."""
    import pyarrow.parquet as pq

    parts = writer.manifest["parts"]
    return pq.read_schema(writer.root / parts[0]["tokens"]).names if parts else None


def conform_columns(tokens: Any, reference: list[str] | None, rel: str) -> Any:
    """``tokens`` with the reference's columns: optional per-row columns a later file lacks are filled (nulls;
    ``loss_mask`` True), a column a later file adds is refused (DuckDB reads every part with one schema)."""
    import pyarrow as pa

    from drift.schema import IMPORT_TOKEN_COLUMNS

    if reference is None or tokens.column_names == reference:
        return tokens
    fill = {c.name: c for c in IMPORT_TOKEN_COLUMNS}
    extra = [c for c in tokens.column_names if c not in reference]
    lacking = [c for c in reference if c not in tokens.column_names]
    bad = [c for c in lacking if c not in fill]
    if extra or bad:
        raise InputFormatError(
            f"{rel} holds different fields than the files imported before it (it adds {extra or 'none'}, lacks "
            f"{bad or 'none'}); every part of a dataset has the same columns. Import such files into separate "
            "--out folders.")
    n = tokens.num_rows
    for name in lacking:
        col = fill[name]
        value = pa.array([True] * n, col.type) if name == "loss_mask" else pa.nulls(n, col.type)
        tokens = tokens.append_column(pa.field(name, col.type, nullable=col.nullable or name != "loss_mask"), value)
    return tokens.select(reference)


def default_step(cfg: ImportConfig) -> int:
    """The step of rollouts whose source records none."""
    return int(cfg.step) if cfg.step is not None else 0
