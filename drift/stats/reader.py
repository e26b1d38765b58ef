"""Lazy, schema-checked access to token tables for aggregation in DuckDB.

drift never loads all tokens into pandas to compute statistics: a :class:`TokenSource` is a description of where the
tokens are (parquet parts of a drift dataset, or an in-memory pandas / arrow table for notebooks and tests), and
:meth:`TokenSource.connect` returns a DuckDB connection with a view ``tokens`` over it. Aggregations are SQL over that
view, so memory scales with the size of the *result* (rollouts x bins), not with the number of tokens.

The schema is checked when the source is opened: every missing column, every column with the wrong type family and
every metric that is not numeric is listed in one :class:`~drift.errors.SchemaError`.

*Derived columns* (``open_tokens(..., derived={"name": "SQL expression"})``) are computed per token row by DuckDB in
the ``tokens`` view itself (e.g. ``student_logprob - rollout_logprob``), so a quantity no column holds can be binned,
resampled and fitted like any other metric without materializing it.

*Joined rollout tables* (``open_tokens(..., joins=[(path, columns)])``) add per-rollout columns from a parquet file
keyed by :data:`~drift.schema.ROLLOUT_KEY` (a ``LEFT JOIN`` in the view: a rollout without a row gets nulls), e.g.
the ``onset_position`` of ``drift onset``'s ``onsets.parquet`` for ``drift fit --by onset``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from drift.errors import DatasetError, SchemaError
from drift.schema import ROLLOUT_KEY, read_drift_metadata, support_hint, validate_schema
from drift.store import DriftDataset, open_dataset

if TYPE_CHECKING:  # pandas is imported where a table is built: `import drift.stats` and the CLI stay light
    import pandas as pd

__all__ = ["ROLLOUT_KEY", "TokenSource", "is_dataframe", "numeric_columns", "open_tokens"]

log = logging.getLogger(__name__)

# ROLLOUT_KEY (re-exported) and the cluster keys are defined once, in drift.schema.
_BASE_VIEW = "_drift_base_tokens"  # the stored (and joined) columns, under the ``tokens`` view that adds derived ones
_STORED_VIEW = "_drift_stored_tokens"  # the stored columns, under the view that adds joined ones
_MEMORY_RE = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


def is_dataframe(obj: Any) -> bool:
    """True for a pandas DataFrame, without importing pandas (an object cannot be one before pandas is loaded)."""
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(obj, pd.DataFrame)


def _is_numeric(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def numeric_columns(schema: pa.Schema) -> list[str]:
    """Names of the columns of ``schema`` that can be averaged (int, float or bool)."""
    return [f.name for f in schema if _is_numeric(f.type)]


def quote_ident(name: str) -> str:
    """A SQL identifier for DuckDB (double quotes, escaped)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class TokenSource:
    """Where the tokens are, checked and ready for DuckDB; nothing is read until a query runs.

    Build it with :func:`open_tokens`. Attributes:
        name: how the source is named in messages (a path, or ``"DataFrame"``).
        schema: the arrow schema of the token table.
        n_rows: number of token rows (from parquet metadata; no scan).
        memory_limit: DuckDB ``memory_limit`` of connections made by :meth:`connect` (e.g. ``"4GB"``).
        threads: DuckDB worker threads (None: DuckDB's default, one per core).
        derived: ``(name, SQL expression)`` pairs: columns computed per row in the ``tokens`` view (they are in
            :attr:`schema` too).
        files: the token parquet parts of a dataset, in part order (empty for in-memory tables).
        joins: ``(parquet path, columns)`` pairs: per-rollout tables left-joined on the rollout key (their columns
            are in :attr:`schema` too).
    """

    name: str
    schema: pa.Schema
    n_rows: int
    memory_limit: str = "4GB"
    threads: int | None = None
    dataset: DriftDataset | None = field(default=None, repr=False)
    table: pa.Table | None = field(default=None, repr=False)
    derived: tuple[tuple[str, str], ...] = ()
    files: tuple[str, ...] = ()
    joins: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)

    def numeric_columns(self) -> list[str]:
        """Columns that can be binned as metrics."""
        return numeric_columns(self.schema)

    def connect(self, parts: Sequence[int] | None = None) -> Any:
        """A new DuckDB connection with a view (or registered table) ``tokens``; close it when done.

        ``parts`` restricts a dataset's view to those parts (indices into :attr:`files`: a Ray task's shard).
        """
        import duckdb

        config: dict[str, Any] = {
            "memory_limit": self.memory_limit,
            # Aggregations never need input order; dropping it lets DuckDB stream and spill more freely.
            "preserve_insertion_order": False,
            "temp_directory": os.path.join(tempfile.gettempdir(), "drift-duckdb"),
        }
        if self.threads is not None:
            config["threads"] = int(self.threads)
        con = duckdb.connect(config=config)
        joined = _BASE_VIEW if self.derived else "tokens"
        base = _STORED_VIEW if self.joins else joined
        if self.dataset is not None:
            files = self.files if parts is None else [self.files[int(i)] for i in parts]
            if not files:
                raise ValueError("connect(parts=...) needs at least one part")
            listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
            con.execute(f"CREATE VIEW {base} AS SELECT * FROM read_parquet([{listing}])")
        else:
            con.register(base, self.table)
        if self.joins:
            con.execute(f"CREATE VIEW {joined} AS {_joined_sql(base, self.joins)}")
        if self.derived:
            con.execute(f"CREATE VIEW tokens AS SELECT *, {_derived_sql(self.derived)} FROM {_BASE_VIEW}")
        return con


def _joined_sql(base: str, joins: Sequence[tuple[str, Sequence[str]]]) -> str:
    """``SELECT`` of the stored rows with the columns of each joined per-rollout table (left join on the key)."""
    cols, tables = ["s.*"], []
    for j, (path, columns) in enumerate(joins):
        cols += [f"j{j}.{quote_ident(c)}" for c in columns]
        on = " AND ".join(f"s.{quote_ident(k)} = j{j}.{quote_ident(k)}" for k in ROLLOUT_KEY)
        tables.append(f"LEFT JOIN read_parquet('{path.replace(chr(39), chr(39) * 2)}') j{j} ON {on}")
    return f"SELECT {', '.join(cols)} FROM {base} s {' '.join(tables)}"


def _derived_sql(derived: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"({expr}) AS {quote_ident(name)}" for name, expr in derived)


def _derived_schema(src: TokenSource) -> pa.Schema:
    """``src.schema`` (the stored columns) plus the types DuckDB gives the derived expressions."""
    import duckdb

    clash = [name for name, _ in src.derived if name in src.schema.names]
    if clash:
        raise ValueError(f"derived column(s) {clash} already exist in the tokens of {src.name}; pick other names")
    try:
        con = src.connect()
    except duckdb.Error as exc:
        listing = "; ".join(f"{n} = {e}" for n, e in src.derived)
        raise SchemaError(f"tokens of {src.name}", [f"derived column(s) {listing} do not compute: {exc}"]) from None
    try:
        names = ", ".join(quote_ident(n) for n, _ in src.derived)
        rel = con.sql(f"SELECT {names} FROM tokens LIMIT 0")
        extra = (getattr(rel, "to_arrow_table", None) or rel.arrow)().schema
    finally:
        con.close()
    schema = src.schema
    for fld in extra:
        schema = schema.append(fld)
    return schema


def _schema_problems(schema: pa.Schema, required: Sequence[str], metrics: Sequence[str],
                     dataset: str = "DATASET") -> list[str]:
    problems: list[str] = []
    need = list(dict.fromkeys([*required, *metrics]))
    # Only the columns this analysis reads are type-checked: an unrelated odd column must not block it.
    used = pa.schema([f for f in schema if f.name in need])
    try:
        validate_schema(used, "tokens", required=[c for c in required if c not in metrics])
    except SchemaError as exc:
        problems.extend(exc.problems)
    present = {f.name: f for f in schema}
    missing_metrics = [m for m in metrics if m not in present]
    # Metrics are not type-checked by validate_schema above (they are not in its ``required``): check them here.
    wrong_type = [m for m in metrics if m in present and not _is_numeric(present[m].type)]
    for m in wrong_type:
        problems.append(f"metric {m!r} is a {present[m].type} column; metrics must be numeric (int, float, bool)")
    if missing_metrics or wrong_type:
        avail = ", ".join(numeric_columns(schema)) or "none"
        meta = read_drift_metadata(schema)
        support, teacher = meta.get("support") or "full", bool(meta.get("has_teacher", True))
        for m in missing_metrics:
            hint = support_hint(m, support, teacher=teacher, dataset=dataset)
            problems.append(f"metric {hint}" if hint else f"unknown metric {m!r}: no such column")
        problems.append(f"numeric columns available as metrics (pass one to --metric): {avail}")
    return problems


def open_tokens(source: str | os.PathLike[str] | DriftDataset | pd.DataFrame | pa.Table | TokenSource,
                required_columns: Iterable[str] = ROLLOUT_KEY, *, metrics: Iterable[str] = (),
                memory_limit: str = "4GB", threads: int | None = None,
                derived: Mapping[str, str] | None = None,
                joins: Sequence[tuple[str, Sequence[str]]] | None = None) -> TokenSource:
    """Open tokens lazily and check the schema, listing every problem at once.

    Args:
        source: a dataset folder, a :class:`~drift.store.DriftDataset`, a pandas DataFrame or arrow Table of token
            rows (registered in DuckDB without copying), or an existing :class:`TokenSource` (re-checked).
        required_columns: columns that must exist with the schema's type family.
        metrics: columns that must exist and be numeric (int, float or bool; a bool's mean is a rate).
        memory_limit: DuckDB memory limit for queries on this source (``"4GB"``, ``"512MB"``...).
        threads: DuckDB threads (None: one per core).
        derived: ``{name: SQL expression over the token columns}``: columns computed per row by DuckDB (e.g.
            ``{"gap": "student_logprob - rollout_logprob"}``), usable as metrics; a re-opened
            :class:`TokenSource` keeps its own and adds these.
        joins: ``[(parquet path, columns)]``: per-rollout tables whose ``columns`` are left-joined onto every token
            row by the rollout key (the file must hold the key columns; check its rows yourself: a rollout without
            one gets nulls, a duplicated key duplicates tokens). A re-opened source keeps its own and adds these.

    Raises:
        SchemaError: naming every missing or ill-typed column (and, for unknown metrics, the numeric columns).
        DatasetError: if a folder is not a drift dataset or has no token parts.
    """
    problems: list[str] = []
    if not _MEMORY_RE.match(str(memory_limit)):
        raise ValueError(f"memory_limit must look like '4GB' or '512MB', got {memory_limit!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    dataset: DriftDataset | None = None
    table: pa.Table | None = None
    extra: dict[str, str] = {}
    sides: list[tuple[str, tuple[str, ...]]] = []
    if isinstance(source, TokenSource):
        dataset, table, name = source.dataset, source.table, source.name
        extra.update(source.derived)
        sides += source.joins
    elif isinstance(source, DriftDataset):
        dataset, name = source, str(source.root)
    elif isinstance(source, (str, os.PathLike)):
        dataset, name = open_dataset(source), str(Path(source))
    elif is_dataframe(source):
        table, name = pa.Table.from_pandas(source, preserve_index=False), "DataFrame"
    elif isinstance(source, pa.Table):
        table, name = source, "arrow Table"
    else:
        raise TypeError(f"cannot read tokens from {type(source).__name__}; pass a dataset folder, a DriftDataset, "
                        "a pandas DataFrame or a pyarrow Table")
    if dataset is not None:
        files = dataset.files("tokens")
        if not files:
            raise DatasetError(f"{dataset.root} has no token parquet parts (tokens/part-*.parquet); "
                               "run `drift collect`/`drift score` first or check the path.")
        dataset.check()  # damaged parts -> DamagedPartError naming each file and the repair command
        import pyarrow.parquet as pq  # the footers only (pyarrow.dataset would import pandas)

        schema = pq.read_schema(files[0])  # what pyarrow.dataset takes: the first part's schema
        n_rows = sum(int(pq.ParquetFile(f).metadata.num_rows) for f in files)
    else:
        assert table is not None
        schema, n_rows = table.schema, table.num_rows
    extra.update(derived or {})
    files = tuple(dataset.files("tokens")) if dataset is not None else ()
    sides += [(str(path), tuple(columns)) for path, columns in joins or ()]
    for path, columns in sides:
        import pyarrow.parquet as pq

        side = pq.read_schema(path)
        for c in columns:
            schema = schema.append(side.field(c))
    if extra:
        schema = _derived_schema(TokenSource(name, schema, n_rows, str(memory_limit), threads, dataset, table,
                                             tuple(extra.items()), files, tuple(sides)))
    metrics = list(dict.fromkeys(metrics))
    problems = _schema_problems(schema, list(dict.fromkeys(required_columns)), metrics,
                                str(dataset.root) if dataset is not None else "DATASET")
    if problems:
        raise SchemaError(f"tokens of {name}", problems)
    return TokenSource(name=name, schema=schema, n_rows=n_rows, memory_limit=str(memory_limit), threads=threads,
                       dataset=dataset, table=table, derived=tuple(extra.items()), files=files, joins=tuple(sides))
