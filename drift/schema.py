"""The drift dataset schema: one place that names every column, its type and its meaning.

A drift dataset is a folder::

    OUT/config.json          resolved config, model paths/revisions, tokenizer hashes, drift version
    OUT/manifest.json        parts, row counts, status (running | complete | interrupted)
    OUT/rollouts/part-*.parquet   one row per student rollout
    OUT/tokens/part-*.parquet     one row per response token (tidy long format)

Token rows are keyed by ``(run_id, step, prompt_id, sample_id, position)``. Signs follow the paper: the OPD
advantage is ``teacher_logprob - student_logprob`` (mostly negative), ``k1`` is its negation (a reverse-KL
estimate), prefix sums are *exclusive* (they cover tokens ``k < t``).

Types are checked by *family* (int, float, bool, string, list<int>) rather than exact width, so tables that went
through pandas or DuckDB still validate.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from drift.errors import SchemaError

__all__ = [
    "CLUSTER_UNITS",
    "DRIFT_METADATA_KEY",
    "FULL_VOCAB_COLUMNS",
    "IMPORT_TOKEN_COLUMNS",
    "NEWER_COLUMNS",
    "ONSET_COLUMNS",
    "ONSET_SCHEMA",
    "ORACLE_TOKEN_COLUMNS",
    "ROLLOUT_COLUMNS",
    "ROLLOUT_KEY",
    "ROLLOUT_SCHEMA",
    "SUPPORTS",
    "TEACHER_COLUMNS",
    "TOKEN_COLUMNS",
    "TOKEN_SCHEMA",
    "TOPK_COLUMNS",
    "Column",
    "cluster_key_columns",
    "cluster_key_sql",
    "make_prompt_key",
    "read_drift_metadata",
    "required_token_columns",
    "support_hint",
    "token_schema",
    "validate_columns",
    "validate_schema",
    "with_drift_metadata",
]

DRIFT_METADATA_KEY = b"drift"


@dataclass(frozen=True)
class Column:
    """One column: name, arrow type, family used for validation, nullability and meaning."""

    name: str
    type: pa.DataType
    doc: str
    nullable: bool = False
    required: bool = True  # False: written by current drift, absent from older datasets (readers fall back)

    @property
    def family(self) -> str:
        return _family(self.type)


def _family(t: pa.DataType) -> str:
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"list<{_family(t.value_type)}>"
    if pa.types.is_dictionary(t):
        return _family(t.value_type)
    if pa.types.is_null(t):
        return "null"
    return str(t)


F32, F64, I32, I64 = pa.float32(), pa.float64(), pa.int32(), pa.int64()

ROLLOUT_COLUMNS: tuple[Column, ...] = (
    Column("run_id", pa.string(), "run identifier (defaults to the output folder's name)"),
    Column("step", I64, "training step / checkpoint label of the scoring student (same as the token rows)"),
    Column("prompt_id", pa.string(), "prompt identifier (the prompt file's `id`, else its line number)"),
    Column("sample_id", I64, "index of this sample among the prompt's samples (0-based)"),
    Column("prompt_key", pa.string(), "the sampling unit: run_id + the prompt file's id when given, else a hash "
           "of the student prompt's token ids (see make_prompt_key)", nullable=True, required=False),
    Column("prompt", pa.string(), "the student's prompt as rendered text (chat template applied if used; null in an "
           "import without a tokenizer)", nullable=True),
    Column("teacher_prompt", pa.string(), "the teacher's rendered prompt when it differs (privileged), else null",
           nullable=True),
    Column("student_prompt_ids", pa.list_(I32), "student prompt token ids (incl. BOS / template tokens)"),
    Column("teacher_prompt_ids", pa.list_(I32), "teacher prompt token ids"),
    Column("response_ids", pa.list_(I32), "sampled response token ids, EOS included when finished"),
    Column("response_text", pa.string(), "decoded response (special tokens kept; null in an import without a "
           "tokenizer)", nullable=True),
    Column("response_len", I32, "number of response tokens"),
    Column("finished", pa.bool_(), "the response ended with EOS"),
    Column("truncated", pa.bool_(), "the response hit max_new_tokens without EOS"),
    Column("reward", F64, "verifier score in [0, 1] when an answer and a verifier exist, else null", nullable=True),
    Column("answer", pa.string(), "reference answer from the prompt file, if any", nullable=True),
)

TOKEN_COLUMNS: tuple[Column, ...] = (
    Column("run_id", pa.string(), "run identifier"),
    Column("step", I64, "training step / checkpoint label of the *scoring* student (--step, default 0)"),
    Column("prompt_id", pa.string(), "prompt identifier"),
    Column("sample_id", I64, "sample index within the prompt"),
    Column("prompt_key", pa.string(), "cluster key of the prompt (copied from the rollout; see make_prompt_key)",
           nullable=True, required=False),
    Column("position", I32, "0-based index t in the response"),
    Column("response_len", I32, "T, number of response tokens"),
    Column("rel_position", F64, "t / T"),
    Column("token_id", I32, "the sampled token y_t"),
    Column("student_logprob", F32, "log pi_S(y_t | x, y_<t)"),
    Column("teacher_logprob", F32, "log pi_T(y_t | x_T, y_<t) (x_T may be a privileged prompt)"),
    Column("advantage", F32, "A_t = teacher_logprob - student_logprob (OPD advantage, keep the sign)"),
    Column("k1", F32, "student_logprob - teacher_logprob = -A_t (single-sample reverse-KL estimate)"),
    Column("k3", F32, "exp(d) - d - 1, d = clamp(A_t, +-20), clamped to <= 10 (verl low_var_kl)"),
    Column("kl_reverse", F32, "full-vocab KL(pi_S || pi_T) at this position"),
    Column("kl_forward", F32, "full-vocab KL(pi_T || pi_S) at this position"),
    Column("student_entropy", F32, "full-vocab entropy of pi_S (nats)"),
    Column("teacher_entropy", F32, "full-vocab entropy of pi_T (nats)"),
    Column("teacher_rank", I32, "rank of y_t under the teacher (0 = teacher argmax; ties count as lower rank)"),
    Column("teacher_top1", pa.bool_(), "y_t is the teacher's argmax"),
    Column("argmax_agree", pa.bool_(), "student argmax == teacher argmax"),
    Column("topk_overlap", F32, "|top-k(pi_S) ∩ top-k(pi_T)| / k (k in the parquet metadata, default 16)"),
    Column("teacher_argmax", I32, "the teacher's most likely next token (lowest id among tied maxima); at "
           "support=topk the listed id of largest log-prob", required=False),
    Column("teacher_mass_student_topk", F32, "sum over v in top-k(pi_S) of pi_T(v): the teacher's probability on "
           "the student's top k (same k as topk_overlap; ties toward the lower id)", required=False),
    Column("prefix_logratio", F64, "S_t = sum_{k<t} A_k (log prefix ratio, exclusive)"),
    Column("cum_abs_gap", F64, "C_t = sum_{k<t} |A_k| (exclusive)"),
    Column("cum_abs_gap_frac", F64, "C_t / sum_all |A_k| (IW-OPD code convention; 0 when the total is 0)"),
    Column("student_prefix_logprob", F64, "sum_{k<t} student_logprob (exclusive)"),
    Column("teacher_prefix_logprob", F64, "sum_{k<t} teacher_logprob (exclusive)"),
    Column("finished", pa.bool_(), "copied from the rollout: ended with EOS"),
    Column("truncated", pa.bool_(), "copied from the rollout: hit max_new_tokens"),
    Column("reward", F64, "copied from the rollout: verifier score or null", nullable=True),
)

#: Written by ``drift import`` where the source has them (never by collect/score): see :mod:`drift.ingest`.
IMPORT_TOKEN_COLUMNS: tuple[Column, ...] = (
    Column("rollout_logprob", F32, "log-prob of y_t under the *sampler* (vLLM/SGLang), next to the trainer-side "
           "student_logprob; their gap is the sampler-vs-trainer mismatch", nullable=True, required=False),
    Column("loss_mask", pa.bool_(), "the source trained on this token (false: e.g. tool output in a multi-turn "
           "response)", required=False),
    Column("teacher_id", pa.string(), "which teacher scored this step (multi-teacher or refreshed teachers)",
           nullable=True, required=False),
    Column("teacher_revision", pa.string(), "the scoring teacher's revision / checkpoint at this step",
           nullable=True, required=False),
    Column("teacher_topk_ids", pa.list_(I32), "the teacher's top-k token ids at this position (support=topk)",
           nullable=True, required=False),
    Column("teacher_topk_logprobs", pa.list_(F32), "log-probs of teacher_topk_ids (support=topk)", nullable=True,
           required=False),
)

ORACLE_TOKEN_COLUMNS: tuple[Column, ...] = (
    Column("oracle_token", I32, "the oracle's correct token at this slot given the prefix (-1 past the answer)"),
    Column("oracle_teacher_correct", pa.bool_(), "teacher argmax equals the oracle's next token"),
    Column("oracle_student_correct", pa.bool_(), "sampled token equals the oracle's next token"),
    Column("oracle_prefix_ok", pa.bool_(), "the prefix y_<t is error-free so far"),
)


# ---------------------------------------------------------------------------------------------------------------
# Supports. What a dataset can hold depends on what scored it: drift itself (full vocabulary), a top-k list of the
# teacher (vLLM prompt_logprobs), or the sampled token only (every framework's dump). Columns a support cannot give
# are absent, never zero.

#: ``full``: drift scored both models over the whole vocabulary; ``topk``: the teacher's top-k list per position
#: (its rank of y_t and its argmax are known, no full-vocab KL or entropy); ``sampled``: log-probs of y_t only.
SUPPORTS: tuple[str, ...] = ("full", "topk", "sampled")

#: Columns that need both models' whole next-token distribution (``support = full``).
FULL_VOCAB_COLUMNS: tuple[str, ...] = ("kl_reverse", "kl_forward", "student_entropy", "teacher_entropy",
                                       "argmax_agree", "topk_overlap", "teacher_mass_student_topk")
#: Columns that need the teacher's ranking (``support`` full or topk).
TOPK_COLUMNS: tuple[str, ...] = ("teacher_rank", "teacher_top1", "teacher_argmax")
#: Optional columns added after datasets without them were written (``required=False``): absent from an older
#: dataset whose support could give them; re-scoring adds them.
NEWER_COLUMNS: tuple[str, ...] = ("teacher_argmax", "teacher_mass_student_topk")
#: Columns that need a teacher's log-prob of y_t (absent when a format dumps no teacher, e.g. NeMo RL without
#: ``--advantages distillation``).
TEACHER_COLUMNS: tuple[str, ...] = ("teacher_logprob", "advantage", "k1", "k3", "prefix_logratio", "cum_abs_gap",
                                    "cum_abs_gap_frac", "teacher_prefix_logprob")


def required_token_columns(support: str = "full", *, teacher: bool = True) -> list[str]:
    """The token columns a dataset of ``support`` must have (``teacher``: it holds teacher log-probs)."""
    if support not in SUPPORTS:
        raise ValueError(f"support must be one of {SUPPORTS}, got {support!r}")
    drop = set()
    if support != "full":
        drop |= set(FULL_VOCAB_COLUMNS)
    if support == "sampled":
        drop |= set(TOPK_COLUMNS)
    if not teacher:
        drop |= set(TEACHER_COLUMNS) | set(TOPK_COLUMNS)
    return [c.name for c in TOKEN_COLUMNS if c.required and c.name not in drop]


def support_hint(column: str, support: str, *, teacher: bool = True, dataset: str = "DATASET") -> str | None:
    """Why ``column`` is absent from a dataset of ``support``, and the command that adds it (naming ``dataset``);
    None if it should be there."""
    fix = (f"re-score the rollouts over the full vocabulary: `drift score --rollouts {dataset} --student S --teacher "
           f"T --out {dataset}-full`")
    if column in TEACHER_COLUMNS + TOPK_COLUMNS and not teacher:
        return (f"{column!r} needs a teacher's log-probs, which this dataset does not hold (the source dumped none); "
                f"{fix}")
    if column in FULL_VOCAB_COLUMNS and support != "full":
        return f"{column!r} needs full-vocabulary scoring; this dataset has support={support!r}: {fix}"
    if column in TOPK_COLUMNS and support == "sampled":
        return (f"{column!r} needs the teacher's ranking (top-k or full support); this dataset has support="
                f"'sampled': {fix}, or merge vLLM prompt_logprobs with `drift import vllm`")
    if column in NEWER_COLUMNS and support == "topk":
        return (f"{column!r} needs the teacher's top-k list, which this import does not hold (scored with "
                "prompt_logprobs=0?): score with prompt_logprobs >= 1 and re-run `drift import vllm`")
    if column in NEWER_COLUMNS:
        return (f"{column!r} is not in this dataset: a drift older than the column wrote it; re-score the rollouts "
                f"to add it: `drift score --rollouts {dataset} --student S --teacher T --out {dataset}-rescored`")
    return None


# ---------------------------------------------------------------------------------------------------------------
# Keys. Every stage that groups, resamples or counts rollouts asks these functions; nobody spells a key out.

#: One rollout (a row of the rollouts table). ``step`` is part of it: a re-scored rollout is another row.
ROLLOUT_KEY: tuple[str, ...] = ("run_id", "step", "prompt_id", "sample_id")

#: Resampling units. ``prompt``: all rollouts of one prompt (at every step) move together, because they share the
#: prompt's difficulty; ``rollout``: each rollout alone (valid only with one rollout per prompt and no repeats).
CLUSTER_UNITS: tuple[str, ...] = ("prompt", "rollout")

# Columns that stand in for ``prompt_key`` in datasets written before it existed (older drift, some imports).
_PROMPT_FALLBACK: tuple[str, ...] = ("run_id", "prompt_id")


def make_prompt_key(run_id: str, prompt_id: str | None, prompt_ids: Iterable[int] | None = None) -> str:
    """The cluster key of a prompt: ``run_id`` plus the user's prompt id, else a hash of the prompt's token ids.

    ``prompt_id`` is the id the *user* gave (None when the prompt file had no ``id``: line numbers of two files
    would collide), in which case the student prompt's token ids identify the prompt. Two rollouts share a key
    exactly when they were sampled from the same prompt of the same run.
    """
    import hashlib

    if prompt_id is not None and str(prompt_id) != "":
        return f"{run_id}/id:{prompt_id}"
    if prompt_ids is None:
        raise ValueError("make_prompt_key needs the prompt's token ids when the prompt has no user-given id")
    digest = hashlib.sha256(",".join(str(int(i)) for i in prompt_ids).encode()).hexdigest()[:16]
    return f"{run_id}/ids:{digest}"


def cluster_key_columns(unit: str, available: Iterable[str] | None = None) -> tuple[str, ...]:
    """The columns whose distinct values are the resampling clusters of ``unit`` ("prompt" or "rollout").

    ``available`` (the table's column names) lets a dataset without ``prompt_key`` fall back to
    ``(run_id, prompt_id)`` for prompt clusters.
    """
    if unit == "rollout":
        return ROLLOUT_KEY
    if unit == "prompt":
        if available is None or "prompt_key" in set(available):
            return ("prompt_key",)
        return _PROMPT_FALLBACK
    raise ValueError(f"cluster unit must be one of {CLUSTER_UNITS}, got {unit!r}")


def cluster_key_sql(unit: str, available: Iterable[str] | None = None) -> str:
    """SQL tuple expression of :func:`cluster_key_columns`, e.g. ``(run_id, step, prompt_id, sample_id)``."""
    cols = cluster_key_columns(unit, available)
    return cols[0] if len(cols) == 1 else "(" + ", ".join(cols) + ")"


def _schema(columns: Iterable[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in columns])


ROLLOUT_SCHEMA = _schema(ROLLOUT_COLUMNS)
TOKEN_SCHEMA = _schema(TOKEN_COLUMNS)


def token_schema(*, oracle: bool = False) -> pa.Schema:
    """Arrow schema of the token table, with the oracle-world columns when ``oracle``."""
    return _schema(TOKEN_COLUMNS + (ORACLE_TOKEN_COLUMNS if oracle else ()))


def validate_schema(schema: pa.Schema, kind: str, *, required: Iterable[str] | None = None,
                    what: str | None = None, support: str | None = None) -> None:
    """Check an arrow schema against the drift ``kind`` ("tokens" or "rollouts"); list every problem at once.

    Args:
        schema: the schema found (of a table, a parquet file or a dataset).
        kind: which table it should be.
        required: only these columns are required and type-checked (default: every column of ``kind`` is
            required and every known column present is type-checked). Extra columns are always allowed.
        what: how to name the checked object in the error (e.g. a path).
        support: the dataset's support (default: the ``support`` in the schema's drift metadata, else ``full``);
            token columns its support cannot give are not required (:func:`required_token_columns`).

    Raises:
        SchemaError: naming every missing column and every column whose type family is wrong.
    """
    columns = {"tokens": TOKEN_COLUMNS + ORACLE_TOKEN_COLUMNS + IMPORT_TOKEN_COLUMNS,
               "rollouts": ROLLOUT_COLUMNS}.get(kind)
    if columns is None:
        raise ValueError(f"kind must be 'tokens' or 'rollouts', got {kind!r}")
    by_name = {c.name: c for c in columns}
    base = TOKEN_COLUMNS if kind == "tokens" else ROLLOUT_COLUMNS
    if required is not None:
        need = list(required)
    elif kind == "tokens":
        meta = read_drift_metadata(schema)
        need = required_token_columns(support or meta.get("support") or "full",
                                      teacher=bool(meta.get("has_teacher", True)))
    else:
        need = [c.name for c in base if c.required]
    problems: list[str] = []
    present = {f.name: f for f in schema}
    for name in need:
        if name not in present:
            hint = f" ({by_name[name].doc})" if name in by_name else ""
            problems.append(f"missing column {name!r}{hint}")
    for name, fld in present.items():
        col = by_name.get(name)
        if col is None or (required is not None and name not in need):
            continue
        found = _family(fld.type)
        if found != col.family and found != "null":
            problems.append(f"column {name!r} has type {fld.type} ({found}); expected {col.family} like {col.type}")
    if problems:
        raise SchemaError(what or f"{kind} table", problems)


def with_drift_metadata(schema: pa.Schema, meta: Mapping[str, Any]) -> pa.Schema:
    """Attach drift's key-value metadata (estimator support, temperature, models, ...) as JSON under b"drift"."""
    existing = dict(schema.metadata or {})
    existing[DRIFT_METADATA_KEY] = json.dumps(dict(meta), default=str).encode()
    return schema.with_metadata(existing)


def read_drift_metadata(schema: pa.Schema) -> dict[str, Any]:
    """The drift metadata dict stored on a parquet schema, or {} if absent."""
    raw = (schema.metadata or {}).get(DRIFT_METADATA_KEY)
    return json.loads(raw) if raw else {}


# ---------------------------------------------------------------------------------------------------------------
# Onsets (``drift onset``): one row per rollout, where it leaves the teacher's support (drift.onset). Other stages
# join this table on ROLLOUT_KEY.

ONSET_COLUMNS: tuple[Column, ...] = (
    Column("run_id", pa.string(), "run identifier (as in the token rows)"),
    Column("step", I64, "scoring step (as in the token rows)"),
    Column("prompt_id", pa.string(), "prompt identifier"),
    Column("sample_id", I64, "sample index within the prompt"),
    Column("response_len", I32, "T, number of response tokens"),
    Column("onset_position", I32, "first response position off the teacher's support: the start of the CUSUM "
           "excursion that crossed the threshold (null: the rollout never leaves)", nullable=True),
    Column("onset_score", F64, "the detector statistic that decided: the CUSUM value at the alarm, or the largest "
           "value reached when the onset is null"),
    Column("alarm_position", I32, "the position where the statistic crossed the threshold (>= onset_position; "
           "null with it)", nullable=True, required=False),
)
ONSET_SCHEMA = _schema(ONSET_COLUMNS)


def validate_columns(schema: pa.Schema, columns: Iterable[Column], *, what: str) -> None:
    """Check ``schema`` against ``columns`` (by type family, see :class:`Column`); list every problem at once.

    Required columns must be present; every column present that ``columns`` names must have the right family.
    Extra columns are allowed.

    Raises:
        SchemaError: naming every missing or mistyped column.
    """
    problems: list[str] = []
    present = {f.name: f for f in schema}
    for col in columns:
        fld = present.get(col.name)
        if fld is None:
            if col.required:
                problems.append(f"missing column {col.name!r} ({col.doc})")
            continue
        found = _family(fld.type)
        if found != col.family and found != "null":
            problems.append(f"column {col.name!r} has type {fld.type} ({found}); expected {col.family} like "
                            f"{col.type}")
    if problems:
        raise SchemaError(what, problems)
