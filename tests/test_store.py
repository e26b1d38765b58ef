"""Dataset writer/reader: atomic parts, manifest-only reads, schema errors listing every problem."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from drift.errors import DatasetError, SchemaError
from drift.schema import TOKEN_SCHEMA, validate_schema
from drift.store import DatasetWriter, open_dataset


def test_schema_error_lists_every_problem():
    schema = pa.schema([("run_id", pa.int64()), ("position", pa.string()), ("step", pa.int32())])
    with pytest.raises(SchemaError) as err:
        validate_schema(schema, "tokens")
    msg = str(err.value)
    assert "column 'run_id' has type int64" in msg and "column 'position' has type string" in msg
    assert "missing column 'kl_reverse'" in msg and "missing column 'teacher_logprob'" in msg
    assert "column 'step'" not in msg  # int32 is fine where int64 is expected (type families)
    validate_schema(TOKEN_SCHEMA, "tokens")


def test_reader_ignores_parts_not_in_the_manifest(tmp_path):
    from drift.schema import ROLLOUT_SCHEMA, TOKEN_SCHEMA

    w = DatasetWriter(tmp_path / "d", config={"config": {}}, n_parts=2)
    w.write_part(0, ROLLOUT_SCHEMA.empty_table(), TOKEN_SCHEMA.empty_table())
    stray = tmp_path / "d" / "tokens" / "part-00001.parquet"
    stray.write_bytes((tmp_path / "d" / "tokens" / "part-00000.parquet").read_bytes())
    ds = open_dataset(tmp_path / "d")
    assert ds.files("tokens") == [str(tmp_path / "d" / "tokens" / "part-00000.parquet")]
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["status"] == "running"
    with pytest.raises(DatasetError, match="already written"):
        w.write_part(0, ROLLOUT_SCHEMA.empty_table(), TOKEN_SCHEMA.empty_table())


def test_open_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a drift dataset"):
        open_dataset(tmp_path / "empty")


def test_write_part_validates_tables(tmp_path):
    from drift.schema import ROLLOUT_SCHEMA

    w = DatasetWriter(tmp_path / "d", config={"config": {}})
    with pytest.raises(SchemaError, match="tokens of part 0"):
        w.write_part(0, ROLLOUT_SCHEMA.empty_table(), pa.table({"position": [1]}))
    assert w.completed_parts == set()
