"""Reading and writing drift datasets: atomic parquet parts, a manifest, and resumable runs.

Layout (see :mod:`drift.schema`)::

    OUT/config.json                 written once, with the first part (resolved config, models, tokenizers, version)
    OUT/manifest.json               rewritten atomically after every part
    OUT/rollouts/part-00000.parquet
    OUT/tokens/part-00000.parquet

A *part* is a fixed slice of the work (e.g. rollouts 0..63). Each part file is written to a temporary name and
renamed into place, then the manifest is updated, so a crash (Ctrl-C, ``kill -9``) leaves every listed part complete.
``resume`` first checks every listed part from its parquet footer (the file exists, is parquet, has the row count
the manifest records and the columns the schema requires) and drops damaged ones, then redoes exactly the parts the
manifest does not list; since parts are deterministic functions of the config and their index, a resumed run has
the same rows as an uninterrupted one, none lost or duplicated.

A sharded run (``torchrun``, :mod:`drift.runtime.distributed`) has one :class:`DatasetWriter`, on rank 0, which
makes every check above and plans the parts; each rank writes its own part files the same atomic way
(:class:`PartFiles`), and rank 0 lists them in the one manifest (:meth:`DatasetWriter.record_parts`).

Nothing reaches the disk before the first part: a run that fails earlier leaves ``OUT`` as it found it (an
``overwrite`` deletes the old dataset only then), so a rerun needs no ``--if-exists overwrite``.

Readers only trust parts listed in the manifest; a folder of parquet files without a manifest (data from
elsewhere) is read as-is. Reading (:meth:`DriftDataset.dataset`, ``read``, ``duckdb``) checks the parts once and
raises :class:`~drift.errors.DamagedPartError` naming each damaged file and the ``--if-exists resume`` command that
regenerates it (:func:`repair_command`, from the command recorded in ``config.json``).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import json
import logging
import os
import shlex
import shutil
import typing
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from drift.errors import DamagedPartError, DatasetError, DatasetExistsError, DriftError, SchemaError
from drift.schema import read_drift_metadata, validate_schema, with_drift_metadata

__all__ = ["DatasetWriter", "DriftDataset", "IfExists", "PartFiles", "PartProblem", "open_dataset",
           "repair_command"]

log = logging.getLogger(__name__)

IfExists = Literal["fail", "overwrite", "resume"]
MANIFEST = "manifest.json"
CONFIG = "config.json"
FORMAT = "drift-dataset"
FORMAT_VERSION = 1
TABLES = ("rollouts", "tokens")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any]:
    """A dataset's manifest.json / config.json; a damaged one is a :class:`DatasetError` saying what to do."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path} is damaged ({exc}); the dataset cannot be trusted or resumed. Rerun its command "
                           "with --if-exists overwrite (or a new --out).") from exc
    if not isinstance(value, dict):
        raise DatasetError(f"{path} is damaged (it holds a {type(value).__name__}, not a JSON object); rerun its "
                           "command with --if-exists overwrite (or a new --out).")
    return value


def _part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# ---------------------------------------------------------------------------------------------------------------
# Damage checks: parquet footers only (magic bytes, row count, schema), never the data pages.

_MAGIC = b"PAR1"


@dataclass(frozen=True)
class PartProblem:
    """What is wrong with one part file of a dataset.

    Attributes:
        path: the file, relative to the dataset folder (e.g. ``tokens/part-00001.parquet``).
        problem: what is wrong, e.g. ``truncated: ...``, ``not a parquet file ...``, ``row count differs: ...``,
            ``missing column 'kl_reverse' ...`` (several problems of one file are joined with ``; ``).
        index: the part's index in the manifest (None in a folder without manifest).
        table: the table the file belongs to (``tokens``, ``rollouts``, ...).
    """

    path: str
    problem: str
    index: int | None = None
    table: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def _footer_problems(path: Path, kind: str, expected_rows: int | None) -> tuple[list[str], pa.Schema | None]:
    """Problems of one parquet file found from its first and last bytes and its footer, and its schema."""
    if not path.is_file():
        return ["missing: the file does not exist"], None
    size = path.stat().st_size
    if size == 0:
        return ["truncated: the file is empty (0 bytes)"], None
    with open(path, "rb") as fh:
        head = fh.read(4)
        tail = b""
        if size >= 8:
            fh.seek(-4, os.SEEK_END)
            tail = fh.read(4)
    if head != _MAGIC:
        return ["not a parquet file (it does not start with the parquet magic bytes PAR1)"], None
    if tail != _MAGIC:
        return [f"truncated: the parquet footer is missing ({size} bytes; the write was cut off)"], None
    try:
        md = pq.read_metadata(path)
        schema = md.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as exc:
        return [f"unreadable parquet footer ({exc})"], None
    problems: list[str] = []
    if expected_rows is not None and md.num_rows != int(expected_rows):
        problems.append(f"row count differs: the file has {md.num_rows} rows, the manifest lists {expected_rows}")
    if kind in TABLES:
        try:
            validate_schema(schema, kind)
        except SchemaError as exc:
            problems.extend(exc.problems)
    return problems, schema


def _verify_files(root: Path, items: Sequence[tuple[int | None, str, str, int | None]], *,
                  check_schema: bool) -> list[PartProblem]:
    """Check part files ``(index, table, relative path, expected rows)``; one :class:`PartProblem` per bad file.

    Besides each file on its own, the parts of one table must have the same columns (DuckDB and pyarrow read all
    parts with the first part's columns): the column set most parts share is the reference.
    """
    found: list[tuple[int | None, str, str, list[str], pa.Schema | None]] = []
    for index, table, rel, rows in items:
        problems, schema = _footer_problems(root / rel, table if check_schema else "", rows)
        found.append((index, table, rel, problems, schema))
    for table in dict.fromkeys(t for _, t, _, _, _ in found):
        named = [(problems, schema) for _, t, _, problems, schema in found if t == table and schema is not None]
        if len(named) < 2:
            continue
        counts = Counter(frozenset(schema.names) for _, schema in named)
        ref = max(counts, key=lambda k: (counts[k], len(k)))
        order = next(schema.names for _, schema in named if frozenset(schema.names) == ref)
        for problems, schema in named:
            names = set(schema.names)
            for col in (c for c in order if c not in names):
                if not any(p.startswith(f"missing column {col!r}") for p in problems):
                    problems.append(f"missing column {col!r} (the other {table} parts have it)")
            extra = [c for c in schema.names if c not in ref]
            if extra:
                problems.append(f"extra column(s) {', '.join(map(repr, extra))} that the other {table} parts lack")
    return [PartProblem(rel, "; ".join(problems), index, table) for index, table, rel, problems, _ in found
            if problems]


def _manifest_items(manifest: Mapping[str, Any], tables: Iterable[str]) -> tuple[
        list[tuple[int | None, str, str, int | None]], list[PartProblem]]:
    """The files a manifest lists for ``tables`` (with their row counts), and entries that list no file."""
    items: list[tuple[int | None, str, str, int | None]] = []
    missing: list[PartProblem] = []
    parts = list(manifest.get("parts") or [])
    for table in tables:
        if not any(table in p for p in parts):
            continue
        for p in parts:
            index = int(p["index"]) if "index" in p else None
            if table not in p:
                missing.append(PartProblem(f"{table}/{_part_name(index or 0)}",
                                           f"the manifest lists no {table} file for part {index}", index, table))
                continue
            rows = p.get(f"n_{table}")
            items.append((index, table, str(p[table]), int(rows) if rows is not None else None))
    return items, missing


# The commands whose config.json lets a damaged dataset be regenerated: module, config class, positionals.
_COMMANDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "collect": ("drift.collect.config", "CollectConfig", ()),
    "score": ("drift.collect.config", "ScoreConfig", ()),
    "import": ("drift.ingest.config", "ImportConfig", ("source", "path")),
    "probe": ("drift.probe.config", "ProbeConfig", ("dataset",)),
}


def _plain(value: Any) -> Any:
    """JSON-normal form of a config value (tuples become lists), for comparing recorded and default values."""
    return json.loads(json.dumps(value, default=str))


def _config_flags(cls: type, values: Mapping[str, Any], skip: set[str], defaults: Mapping[str, Any]) -> list[str]:
    """Command-line words for the fields of ``values`` that differ from config ``cls``'s defaults."""
    from drift.config import _unwrap_optional

    hints = typing.get_type_hints(cls)
    words: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):  # nested blocks (scoring) are flat flags on the command line
            nested = values.get(f.name)
            if isinstance(nested, Mapping):
                words += _config_flags(tp, nested, skip, defaults)  # type: ignore[arg-type]
            continue
        if f.name not in values or values[f.name] is None:
            continue  # None cannot be spelled as a flag; it is the default of every optional field anyway
        value = values[f.name]
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if default is not dataclasses.MISSING and _plain(value) == _plain(default):
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            if tp is bool and default is False and not optional:
                words.append(flag)  # a store_true flag
            else:
                words += [flag, "true" if value else "false"]
        elif isinstance(value, (list, tuple)):
            words += [flag, ",".join(str(v) for v in value)]
        else:
            words += [flag, str(value)]
    return words


def repair_command(root: str | os.PathLike[str], recorded: Mapping[str, Any]) -> str | None:
    """The shell command that regenerates the damaged or missing parts of the dataset at ``root``.

    Built from its ``config.json`` (``recorded``): the recorded ``command`` (collect, score, probe) with every
    setting that differs from the default as a flag (nested ``scoring`` settings flattened, as on the command line),
    ``--out root`` and ``--if-exists resume``.

    Args:
        root: the dataset folder (as the user will pass it to ``--out``).
        recorded: the parsed ``config.json`` (``{"command": ..., "config": {...}}``).

    Returns:
        The command, shell-quoted, or None when ``config.json`` records no command drift can rerun.
    """
    command = recorded.get("command")
    values = recorded.get("config")
    if not isinstance(command, str) or command not in _COMMANDS or not isinstance(values, Mapping):
        return None
    module, name, positional = _COMMANDS[command]
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    defaults: dict[str, Any] = {}
    if values.get("preset"):  # settings the preset fills in need no flag
        try:
            from drift.presets import preset_values

            defaults = dict(preset_values(str(values["preset"])))
        except (DriftError, ImportError, OSError):
            defaults = {}
    words = ["drift", command, *(str(values[p]) for p in positional if values.get(p))]
    words += _config_flags(cls, {**values, "out": str(root)}, {"if_exists", *positional}, defaults)
    words += ["--if-exists", "resume"]
    return shlex.join(words)


def _write_table(root: Path, rel: str, table: pa.Table, metadata: Mapping[str, Any]) -> None:
    """Write ``table`` to ``root / rel`` atomically (a temporary name, fsync, rename) with drift's metadata."""
    path = root / rel
    tmp = path.with_name(f".{path.name}.tmp")
    meta = dict(table.schema.metadata or {})
    meta[b"drift"] = json.dumps(dict(metadata), default=str).encode()
    # dictionary pages only for columns whose values repeat (strings, ints, flags): high-entropy floats (log-probs,
    # prefix sums) never fit a dictionary, and the failed attempt made writes ~3x slower and files ~30% larger
    dictionary = [f.name for f in table.schema if not pa.types.is_floating(f.type)]
    pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd", use_dictionary=dictionary)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class PartFiles:
    """The part files of one dataset, written atomically without touching its manifest.

    Every rank of a sharded run (:mod:`drift.runtime.distributed`) writes its own parts with one of these; rank 0's
    :class:`DatasetWriter` (whose :attr:`DatasetWriter.files` is one too) lists them with
    :meth:`DatasetWriter.record_parts`. The dataset folder must exist (:meth:`DatasetWriter.materialize`).

    Args:
        root: the dataset folder.
        tables: the tables each part holds.
        metadata: key-value metadata attached to every parquet file under ``b"drift"`` (the writer's, by reference).
    """

    def __init__(self, root: str | os.PathLike[str], tables: Sequence[str], metadata: Mapping[str, Any]) -> None:
        self.root = Path(root)
        self.tables = tuple(tables)
        self.metadata = metadata

    def check(self, index: int, given: Mapping[str, pa.Table]) -> None:
        """Raise :class:`DatasetError` / :class:`SchemaError` unless ``given`` holds every table, schema-valid."""
        if set(given) != set(self.tables):
            raise DatasetError(f"part {index}: expected tables {sorted(self.tables)}, got {sorted(given)}")
        for name in ("rollouts", "tokens"):
            if name in given:
                # the writer's metadata says the support, hence which token columns must be there
                validate_schema(with_drift_metadata(given[name].schema, dict(self.metadata)), name,
                                what=f"{name} of part {index}")

    def write(self, index: int, tables: Mapping[str, pa.Table], *,
              info: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Check and write part ``index`` (tokens first, rollouts last); return its manifest entry.

        ``info`` (JSON-able) is stored in the entry, e.g. the source file an import read it from, or the rank.
        """
        self.check(index, tables)
        if not self.root.is_dir():
            raise DatasetError(f"{self.root} does not exist; part {index} cannot be written before the dataset "
                               "folder is created")
        entry: dict[str, Any] = {"index": index}
        # tokens first, rollouts last: a part is only listed once all its files are in place anyway
        for name in sorted(tables, key=lambda n: n != "tokens"):
            rel = f"{name}/{_part_name(index)}"
            _write_table(self.root, rel, tables[name], self.metadata)
            entry[name] = rel
        entry.update({f"n_{name}": t.num_rows for name, t in tables.items()}, written=_now())
        if info:
            entry.update(dict(info))
        return entry


class DatasetWriter:
    """Write a drift dataset part by part, atomically, with resume support.

    Args:
        root: the output folder.
        if_exists: what to do when ``root`` already holds a dataset: ``fail`` (default; raises
            :class:`DatasetExistsError`), ``overwrite`` (delete the old dataset when the first new part is written;
            refuses a folder that is not a drift dataset), or ``resume`` (keep the intact parts already listed and
            skip them; damaged ones are dropped, see :attr:`dropped`, and written again).
        config: the JSON-able payload written to ``config.json`` (resolved config, models, ...).
        n_parts: number of parts planned (for progress and status).
        metadata: key-value metadata attached to every parquet file under ``b"drift"``.
        identity: what determines the rows (settings, model fingerprints, input hash). Stored in the manifest;
            ``resume`` requires it to be equal, so a resumed run cannot silently mix two configurations.
        tables: the tables each part holds (one sub-folder each). Tables named ``rollouts`` or ``tokens`` are
            checked against the drift schema on write; others (e.g. a probe's ``continuations``) are not.
    """

    def __init__(self, root: str | os.PathLike[str], *, if_exists: IfExists = "fail",
                 config: Mapping[str, Any], n_parts: int | None = None,
                 metadata: Mapping[str, Any] | None = None,
                 identity: Mapping[str, Any] | None = None, tables: tuple[str, ...] = TABLES) -> None:
        self.root = Path(root)
        self.tables = tuple(tables)
        self.metadata = dict(metadata or {})
        #: writes the part files (shares :attr:`metadata`); other ranks of a sharded run use their own
        self.files = PartFiles(self.root, self.tables, self.metadata)
        self.n_parts = n_parts
        #: problems of the parts a resume found damaged and dropped (they are regenerated like missing parts)
        self.dropped: list[PartProblem] = []
        if if_exists not in ("fail", "overwrite", "resume"):
            raise ValueError(f"if_exists must be fail, overwrite or resume, got {if_exists!r}")
        if self.root.exists() and not self.root.is_dir():
            raise DatasetExistsError(f"--out {self.root} is an existing file, not a folder; choose a folder path "
                                     "for --out (it is created if missing).")
        manifest_path = self.root / MANIFEST
        exists = self.root.exists() and any(self.root.iterdir())
        if exists and if_exists == "fail":
            raise DatasetExistsError(
                f"{self.root} already exists and is not empty. Pass --if-exists overwrite to replace it, "
                "--if-exists resume to complete an interrupted run, or choose another --out."
            )
        if exists and if_exists == "overwrite" and not manifest_path.exists():
            raise DatasetExistsError(
                f"{self.root} is not empty and holds no drift manifest.json; refusing to delete it. "
                "Choose an empty or new --out folder."
            )
        if exists and if_exists == "resume" and not manifest_path.exists():
            raise DatasetError(f"cannot resume {self.root}: it has no manifest.json. Use a new --out folder.")
        self._config_text = json.dumps(dict(config), indent=2, default=str) + "\n"
        # A new dataset (and an overwrite's deletion of the old one) only reaches the disk with the first part
        # (or a complete close): a run that fails before writing data leaves --out as it found it.
        self._overwrite = exists and if_exists == "overwrite"
        self._on_disk = exists and if_exists == "resume"
        if self._on_disk:
            self.manifest = _read_json(manifest_path)
            self._check_resumable(dict(identity or {}))
            for t in self.tables:
                (self.root / t).mkdir(exist_ok=True)
            self.manifest["status"] = "running"
            self.manifest["resumed"] = int(self.manifest.get("resumed", 0)) + 1
            self._drop_damaged()
            self._clean_unlisted()
            if n_parts is not None:
                self.manifest["n_parts_planned"] = n_parts
            self._write_manifest()
        else:
            self.manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "status": "running",
                             "created": _now(), "updated": _now(), "n_parts_planned": n_parts, "parts": [],
                             **{f"n_{t}": 0 for t in self.tables}, "identity": dict(identity or {})}

    def _materialize(self) -> None:
        """Create the dataset on disk (folder, config.json, manifest), deleting an overwritten one first."""
        if self._on_disk:
            return
        if self._overwrite:
            # The new (empty) manifest replaces the old one first, so the folder is a drift dataset at every instant.
            self._write_manifest()
            for name in (*self.tables, CONFIG):
                p = self.root / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        elif self.root.exists() and any(self.root.iterdir()):
            raise DatasetExistsError(f"{self.root} was filled by something else while this run started; choose "
                                     "another --out, or pass --if-exists overwrite to replace it.")
        self.root.mkdir(parents=True, exist_ok=True)
        for t in self.tables:
            (self.root / t).mkdir(exist_ok=True)
        _atomic_write_text(self.root / CONFIG, self._config_text)
        self._write_manifest()
        self._on_disk = True

    def _drop_damaged(self) -> None:
        """Drop listed parts whose files are missing, truncated, not parquet, of another row count or lacking
        columns from the manifest (their files go with :meth:`_clean_unlisted`), so they are written again."""
        items, missing = _manifest_items(self.manifest, self.tables)
        bad = missing + _verify_files(self.root, items, check_schema=True)
        if not bad:
            return
        indices = {b.index for b in bad}
        for b in bad:
            log.warning("resume: part %s of %s is damaged and will be regenerated: %s", b.index, self.root, b)
        self.dropped = bad
        self.manifest["parts"] = [p for p in self.manifest["parts"] if int(p["index"]) not in indices]
        for t in self.tables:
            self.manifest[f"n_{t}"] = sum(int(p.get(f"n_{t}", 0)) for p in self.manifest["parts"])

    def _check_resumable(self, identity: dict[str, Any]) -> None:
        stored = json.loads(json.dumps(self.manifest.get("identity", {})))
        new = json.loads(json.dumps(identity, default=str))
        diffs = [f"{k}: stored {stored.get(k)!r} vs now {new.get(k)!r}"
                 for k in sorted(set(stored) | set(new)) if stored.get(k) != new.get(k)]
        if diffs:
            raise DatasetError(
                f"cannot resume {self.root} with a different configuration ({len(diffs)} difference(s)):\n  - "
                + "\n  - ".join(diffs) + "\nRerun with the original flags and models, or use --if-exists overwrite."
            )

    def _clean_unlisted(self) -> None:
        """Delete part files and temp files the manifest does not list (left by a crash mid-part)."""
        listed = {p[t] for p in self.manifest["parts"] for t in self.tables}
        for t in self.tables:
            for f in (self.root / t).iterdir():
                rel = f"{t}/{f.name}"
                if rel not in listed:
                    log.info("resume: removing unlisted file %s", f)
                    f.unlink()

    @property
    def completed_parts(self) -> set[int]:
        """Indices of parts already written (and listed in the manifest)."""
        return {int(p["index"]) for p in self.manifest["parts"]}

    def _write_manifest(self) -> None:
        self.manifest["updated"] = _now()
        _atomic_write_text(self.root / MANIFEST, json.dumps(self.manifest, indent=2) + "\n")

    def _write_table(self, table: pa.Table, rel: str) -> None:
        _write_table(self.root, rel, table, self.metadata)

    def materialize(self) -> None:
        """Create the dataset folder now (config.json, the table folders, the manifest) if it is not there yet.

        :meth:`write_part` does so itself; a sharded run calls it on rank 0 before other ranks write part files.
        """
        self._materialize()

    def set_config(self, config: Mapping[str, Any]) -> None:
        """Replace the ``config.json`` payload (e.g. with checks made after construction) before the first part.

        Raises:
            DatasetError: the dataset is already on disk (its config.json is written once).
        """
        if self._on_disk:
            raise DatasetError(f"{self.root}: config.json is already written; it cannot change mid-run")
        self._config_text = json.dumps(dict(config), indent=2, default=str) + "\n"

    def write_part(self, index: int, rollouts: pa.Table | None = None, tokens: pa.Table | None = None, *,
                   info: Mapping[str, Any] | None = None, **tables: pa.Table) -> None:
        """Write part ``index`` (every table of the dataset) atomically and record it in the manifest.

        ``info`` (JSON-able) is stored in the part's manifest entry, e.g. the source file an import read it from.
        """
        if index in self.completed_parts:
            raise DatasetError(f"part {index} of {self.root} is already written")
        given = {k: v for k, v in {"rollouts": rollouts, "tokens": tokens, **tables}.items() if v is not None}
        self.files.check(index, given)
        self._materialize()
        self.record_parts([self.files.write(index, given, info=info)])

    def record_parts(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """List parts whose files are in place (entries from :meth:`PartFiles.write`) and rewrite the manifest.

        Raises:
            DatasetError: a part is listed already.
        """
        if not entries:
            return
        done = self.completed_parts
        for e in entries:
            if int(e["index"]) in done:
                raise DatasetError(f"part {e['index']} of {self.root} is already written")
            done.add(int(e["index"]))
        self.manifest["parts"].extend(dict(e) for e in entries)
        self.manifest["parts"].sort(key=lambda p: p["index"])
        for t in self.tables:
            self.manifest[f"n_{t}"] = sum(p.get(f"n_{t}", 0) for p in self.manifest["parts"])
        self._write_manifest()

    @property
    def on_disk(self) -> bool:
        """Whether this writer has put (or found, on resume) a dataset in :attr:`root`."""
        return self._on_disk

    def close(self, status: Literal["complete", "interrupted", "failed"] = "complete", **info: Any) -> None:
        """Record the final status (and any extra info, e.g. a self-check report) in the manifest.

        A run that ends ``interrupted`` or ``failed`` before its first part leaves nothing behind: the new dataset
        was never created (nor an overwritten one deleted), so rerunning with the same flags, even
        ``--if-exists fail``, just works. A dataset with written parts is always kept.
        """
        self.manifest["status"] = status
        self.manifest.update(info)
        if not self._on_disk:
            if status != "complete":
                log.info("%s: the run ended (%s) before its first part; nothing was written", self.root, status)
                return
            self._materialize()
        self._write_manifest()


@dataclass
class DriftDataset:
    """A drift dataset on disk, opened lazily (nothing is loaded until you ask).

    Attributes:
        root: the dataset folder.
        manifest: the parsed manifest (``{}`` for a bare folder of parquet files).
        config: the parsed ``config.json`` (``{}`` if absent).
    """

    root: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    _checked: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    @property
    def _listed(self) -> bool:
        return self.manifest.get("parts") is not None and self.manifest.get("format") == FORMAT

    def table_names(self) -> list[str]:
        """The tables of this dataset (``tokens``, ``rollouts``, a probe's ``continuations``, ...)."""
        if self._listed:
            names = [k for p in self.manifest["parts"] for k, v in p.items()
                     if isinstance(v, str) and v.endswith(".parquet")]
        else:
            names = [p.name for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith(".")
                     and any(p.glob("*.parquet"))]
        return list(dict.fromkeys(names))

    def verify(self, tables: Iterable[str] | None = None) -> list[PartProblem]:
        """Check the part files from their parquet footers (the data pages are not read); list what is wrong.

        Each listed part file must exist, be parquet (magic bytes at both ends, a readable footer), have the row
        count the manifest records and the columns the drift schema requires (tables ``tokens`` / ``rollouts``);
        the parts of one table must have the same columns. A folder without manifest is checked for readability
        and consistent columns only.

        Args:
            tables: the tables to check (default: all of them).

        Returns:
            One :class:`PartProblem` per damaged file; empty when the dataset is intact.
        """
        names = list(tables) if tables is not None else self.table_names()
        if self._listed:
            items, missing = _manifest_items(self.manifest, names)
            return missing + _verify_files(self.root, items, check_schema=True)
        items = [(None, t, os.path.relpath(f, self.root), None) for t in names for f in self.files(t)]
        return _verify_files(self.root, items, check_schema=False)

    def repair_command(self) -> str | None:
        """The command that regenerates damaged or missing parts (see :func:`repair_command`), if recorded."""
        return repair_command(self.root, self.config)

    def check(self, tables: Iterable[str] | None = None) -> None:
        """Raise :class:`~drift.errors.DamagedPartError` if :meth:`verify` finds damaged parts (once per table).

        The error names every damaged file and what is wrong with it, and gives the repair command built from the
        command recorded in ``config.json`` (``drift collect ... --if-exists resume``).
        """
        names = [t for t in (list(tables) if tables is not None else self.table_names()) if t not in self._checked]
        if not names:
            return
        problems = self.verify(names)
        if problems:
            raise DamagedPartError(str(self.root), [f"{self.root / p.path}: {p.problem}" for p in problems],
                                   self.repair_command())
        self._checked.update(names)

    def files(self, table: str) -> list[str]:
        """Paths of the parquet parts of ``table`` (manifest-listed parts only when a manifest exists)."""
        if self._listed:
            return [str(self.root / p[table]) for p in self.manifest["parts"] if table in p]
        folder = self.root / table
        if not folder.is_dir():
            return []
        return sorted(str(p) for p in folder.glob("*.parquet") if not p.name.startswith("."))

    def dataset(self, table: str = "tokens") -> pads.Dataset:
        """A lazy :class:`pyarrow.dataset.Dataset` over the table's parts (checked once by :meth:`check`)."""
        files = self.files(table)
        if not files:
            raise DatasetError(f"{self.root} has no {table} parquet parts; is it a drift dataset folder?")
        self.check([table])
        return pads.dataset(files, format="parquet")

    def validate(self, table: str = "tokens", required: list[str] | None = None) -> None:
        """Check the table's schema; raises :class:`~drift.errors.SchemaError` listing every problem."""
        validate_schema(self.dataset(table).schema, table, required=required, what=f"{self.root}/{table}")

    def read(self, table: str = "tokens", columns: list[str] | None = None,
             filter: pads.Expression | None = None) -> pa.Table:
        """Read (a projection / filter of) a table into memory as an arrow Table."""
        return self.dataset(table).to_table(columns=columns, filter=filter)

    def to_pandas(self, table: str = "tokens", columns: list[str] | None = None):
        """Read a table into pandas (fine for small data; use :meth:`dataset` or DuckDB at scale)."""
        return self.read(table, columns=columns).to_pandas()

    @property
    def metadata(self) -> dict[str, Any]:
        """The drift key-value metadata of the token parts (estimator support, temperature, models, ...)."""
        files = self.files("tokens")
        if files:
            self.check(["tokens"])
        return read_drift_metadata(pq.read_schema(files[0])) if files else {}

    def duckdb(self, con: Any = None) -> Any:
        """A DuckDB connection with views ``tokens`` and ``rollouts`` over this dataset's parts (checked first)."""
        import duckdb

        self.check()
        con = con if con is not None else duckdb.connect()
        tables = [p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        for table in sorted(set(tables) | set(TABLES)):
            files = self.files(table)
            if files:
                listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet([{listing}])")
        return con


def open_dataset(path: str | os.PathLike[str]) -> DriftDataset:
    """Open a drift dataset folder lazily.

    Raises:
        DatasetError: if the folder does not exist or holds neither a manifest nor a ``tokens/`` folder.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; pass the OUT folder written by `drift collect`/`drift score`.")
    manifest = _read_json(root / MANIFEST) if (root / MANIFEST).exists() else {}
    config = _read_json(root / CONFIG) if (root / CONFIG).exists() else {}
    if not manifest and not (root / "tokens").is_dir():
        raise DatasetError(f"{root} holds no manifest.json and no tokens/ folder; it is not a drift dataset.")
    if manifest.get("status") not in (None, "complete"):
        log.warning("%s has status %r: some parts may be missing (resume it with --if-exists resume)",
                    root, manifest.get("status"))
    return DriftDataset(root=root, manifest=manifest, config=config)
