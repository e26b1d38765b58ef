"""Reading and writing drift datasets: atomic parquet parts, a manifest, and resumable runs.

Layout (see :mod:`drift.schema`)::

    OUT/config.json                 written once at the start (resolved config, models, tokenizers, version)
    OUT/manifest.json               rewritten atomically after every part
    OUT/rollouts/part-00000.parquet
    OUT/tokens/part-00000.parquet

A *part* is a fixed slice of the work (e.g. rollouts 0..63). Each part file is written to a temporary name and
renamed into place, then the manifest is updated, so a crash (Ctrl-C, ``kill -9``) leaves every listed part complete.
``resume`` redoes exactly the parts the manifest does not list; since parts are deterministic functions of the
config and their index, a resumed run has the same rows as an uninterrupted one, none lost or duplicated.

Readers only trust parts listed in the manifest; a folder of parquet files without a manifest (data from
elsewhere) is read as-is.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from drift.errors import DatasetError, DatasetExistsError
from drift.schema import read_drift_metadata, validate_schema

__all__ = ["DatasetWriter", "DriftDataset", "IfExists", "open_dataset"]

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


def _part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


class DatasetWriter:
    """Write a drift dataset part by part, atomically, with resume support.

    Args:
        root: the output folder.
        if_exists: what to do when ``root`` already holds a dataset: ``fail`` (default; raises
            :class:`DatasetExistsError`), ``overwrite`` (delete the old dataset first; refuses to delete a folder
            that is not a drift dataset), or ``resume`` (keep the parts already listed and skip them).
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
        self.n_parts = n_parts
        if if_exists not in ("fail", "overwrite", "resume"):
            raise ValueError(f"if_exists must be fail, overwrite or resume, got {if_exists!r}")
        manifest_path = self.root / MANIFEST
        exists = self.root.exists() and any(self.root.iterdir())
        if exists and if_exists == "fail":
            raise DatasetExistsError(
                f"{self.root} already exists and is not empty. Pass --if-exists overwrite to replace it, "
                "--if-exists resume to complete an interrupted run, or choose another --out."
            )
        if exists and if_exists == "overwrite":
            if not manifest_path.exists():
                raise DatasetExistsError(
                    f"{self.root} is not empty and holds no drift manifest.json; refusing to delete it. "
                    "Choose an empty or new --out folder."
                )
            for name in (*self.tables, MANIFEST, CONFIG):
                p = self.root / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
            exists = False
        self.root.mkdir(parents=True, exist_ok=True)
        for t in self.tables:
            (self.root / t).mkdir(exist_ok=True)
        if exists and if_exists == "resume":
            if not manifest_path.exists():
                raise DatasetError(f"cannot resume {self.root}: it has no manifest.json. Use a new --out folder.")
            self.manifest = json.loads(manifest_path.read_text())
            self._check_resumable(dict(identity or {}))
            self.manifest["status"] = "running"
            self.manifest["resumed"] = int(self.manifest.get("resumed", 0)) + 1
            self._clean_unlisted()
        else:
            self.manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "status": "running",
                             "created": _now(), "updated": _now(), "n_parts_planned": n_parts, "parts": [],
                             **{f"n_{t}": 0 for t in self.tables}, "identity": dict(identity or {})}
            _atomic_write_text(self.root / CONFIG, json.dumps(dict(config), indent=2, default=str) + "\n")
        if n_parts is not None:
            self.manifest["n_parts_planned"] = n_parts
        self._write_manifest()

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
        path = self.root / rel
        tmp = path.with_name(f".{path.name}.tmp")
        meta = dict(table.schema.metadata or {})
        meta[b"drift"] = json.dumps(self.metadata, default=str).encode()
        pq.write_table(table.replace_schema_metadata(meta), tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def write_part(self, index: int, rollouts: pa.Table | None = None, tokens: pa.Table | None = None,
                   **tables: pa.Table) -> None:
        """Write part ``index`` (every table of the dataset) atomically and record it in the manifest."""
        if index in self.completed_parts:
            raise DatasetError(f"part {index} of {self.root} is already written")
        given = {k: v for k, v in {"rollouts": rollouts, "tokens": tokens, **tables}.items() if v is not None}
        if set(given) != set(self.tables):
            raise DatasetError(f"part {index}: expected tables {sorted(self.tables)}, got {sorted(given)}")
        for name in ("rollouts", "tokens"):
            if name in given:
                validate_schema(given[name].schema, name, what=f"{name} of part {index}")
        entry: dict[str, Any] = {"index": index}
        # tokens first, rollouts last: a part is only listed once all its files are in place anyway
        for name in sorted(given, key=lambda n: n != "tokens"):
            rel = f"{name}/{_part_name(index)}"
            self._write_table(given[name], rel)
            entry[name] = rel
        counts = {f"n_{name}": t.num_rows for name, t in given.items()}
        entry.update(counts, written=_now())
        self.manifest["parts"].append(entry)
        self.manifest["parts"].sort(key=lambda p: p["index"])
        for key in counts:
            self.manifest[key] = sum(p.get(key, 0) for p in self.manifest["parts"])
        self._write_manifest()

    def close(self, status: Literal["complete", "interrupted", "failed"] = "complete", **info: Any) -> None:
        """Record the final status (and any extra info, e.g. a self-check report) in the manifest."""
        self.manifest["status"] = status
        self.manifest.update(info)
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

    def files(self, table: str) -> list[str]:
        """Paths of the parquet parts of ``table`` (manifest-listed parts only when a manifest exists)."""
        if self.manifest.get("parts") is not None and self.manifest.get("format") == FORMAT:
            return [str(self.root / p[table]) for p in self.manifest["parts"] if table in p]
        folder = self.root / table
        if not folder.is_dir():
            return []
        return sorted(str(p) for p in folder.glob("*.parquet") if not p.name.startswith("."))

    def dataset(self, table: str = "tokens") -> pads.Dataset:
        """A lazy :class:`pyarrow.dataset.Dataset` over the table's parts."""
        files = self.files(table)
        if not files:
            raise DatasetError(f"{self.root} has no {table} parquet parts; is it a drift dataset folder?")
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
        return read_drift_metadata(pq.read_schema(files[0])) if files else {}

    def duckdb(self, con: Any = None) -> Any:
        """A DuckDB connection with views ``tokens`` and ``rollouts`` over this dataset's parts."""
        import duckdb

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
    manifest = json.loads((root / MANIFEST).read_text()) if (root / MANIFEST).exists() else {}
    config = json.loads((root / CONFIG).read_text()) if (root / CONFIG).exists() else {}
    if not manifest and not (root / "tokens").is_dir():
        raise DatasetError(f"{root} holds no manifest.json and no tokens/ folder; it is not a drift dataset.")
    if manifest.get("status") not in (None, "complete"):
        log.warning("%s has status %r: some parts may be missing (resume it with --if-exists resume)",
                    root, manifest.get("status"))
    return DriftDataset(root=root, manifest=manifest, config=config)
