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


# ---------------------------------------------------------------------------------------------------------------
# Damaged parts, resume over them, and no half-made --out.

def _table(schema: pa.Schema, n: int, part: int) -> pa.Table:
    """``n`` rows of ``schema`` with plausible values (4 tokens per rollout, prompts unique per part)."""
    cols = {}
    for f in schema:
        t = f.type
        if pa.types.is_string(t):
            v = [f"p{part}_{i // 4}" if f.name == "prompt_id" else "run" for i in range(n)]
        elif pa.types.is_boolean(t):
            v = [False] * n
        elif pa.types.is_integer(t):
            v = [i % 4 if f.name in ("sample_id", "position") else 4 if f.name == "response_len" else 0
                 for i in range(n)]
        elif pa.types.is_floating(t):
            v = [0.1 * (i % 7) for i in range(n)]
        else:
            v = [[1, 2, 3, 4]] * n
        cols[f.name] = pa.array(v, t)
    return pa.table(cols, schema=schema)


def _recorded_config(out) -> dict:
    from drift.collect.config import CollectConfig, ScoringOptions
    from drift.config import config_to_dict

    cfg = CollectConfig(out=str(out), student="models/s", teacher="models/t p", prompts="p.jsonl", temperature=0.7,
                        samples_per_prompt=2, teacher_system_prompt="Be brief.",
                        scoring=ScoringOptions(dtype="float32", self_check=True, progress=False))
    return {"command": "collect", "config_type": "CollectConfig", "config": config_to_dict(cfg)}


def _write(root, n_parts: int = 3, config: dict | None = None):
    from drift.schema import ROLLOUT_SCHEMA, TOKEN_SCHEMA

    w = DatasetWriter(root, config=config or _recorded_config(root), n_parts=n_parts)
    for i in range(n_parts):
        w.write_part(i, _table(ROLLOUT_SCHEMA, 4, i), _table(TOKEN_SCHEMA, 16, i))
    w.close("complete")
    return w


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _drop_column(path, column: str) -> None:
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(path).drop([column]), path)


def test_verify_names_each_damage(tmp_path):
    import pyarrow.parquet as pq

    root = tmp_path / "d"
    _write(root, n_parts=4)
    ds = open_dataset(root)
    assert ds.verify() == []
    _truncate(root / "tokens" / "part-00000.parquet")
    (root / "rollouts" / "part-00001.parquet").write_text("run_id,step\nx,0\n")
    pq.write_table(pq.read_table(root / "tokens" / "part-00002.parquet").slice(0, 5),
                   root / "tokens" / "part-00002.parquet")
    _drop_column(root / "tokens" / "part-00003.parquet", "kl_reverse")
    found = {p.path: p.problem for p in open_dataset(root).verify()}
    assert set(found) == {"tokens/part-00000.parquet", "rollouts/part-00001.parquet", "tokens/part-00002.parquet",
                          "tokens/part-00003.parquet"}
    assert found["tokens/part-00000.parquet"].startswith("truncated")
    assert found["rollouts/part-00001.parquet"].startswith("not a parquet file")
    assert found["tokens/part-00002.parquet"] == "row count differs: the file has 5 rows, the manifest lists 16"
    assert found["tokens/part-00003.parquet"].startswith("missing column 'kl_reverse'")
    assert [p.path for p in open_dataset(root).verify(["rollouts"])] == ["rollouts/part-00001.parquet"]


def test_columns_must_agree_across_parts_even_when_not_required(tmp_path):
    root = tmp_path / "d"
    _write(root, n_parts=3)
    _drop_column(root / "tokens" / "part-00001.parquet", "prompt_key")  # optional in the schema, but DuckDB needs it
    (problem,) = open_dataset(root).verify()
    assert problem.path == "tokens/part-00001.parquet" and problem.index == 1
    assert problem.problem == "missing column 'prompt_key' (the other tokens parts have it)"


@pytest.mark.parametrize("damage", ["truncate", "drop_column", "delete"])
def test_reading_a_damaged_dataset_raises_a_typed_error_with_the_repair_command(tmp_path, damage):
    from drift.errors import DamagedPartError
    from drift.stats.reader import open_tokens

    root = tmp_path / "d"
    _write(root)
    part = root / "tokens" / "part-00001.parquet"
    {"truncate": _truncate, "drop_column": lambda p: _drop_column(p, "kl_reverse"), "delete": lambda p: p.unlink()
     }[damage](part)
    want = {"truncate": "truncated", "drop_column": "missing column 'kl_reverse'", "delete": "missing"}[damage]
    readers = [lambda ds: ds.read("tokens"), lambda ds: ds.duckdb(), lambda ds: ds.dataset("tokens").count_rows(),
               lambda ds: ds.metadata, lambda ds: open_tokens(ds, metrics=["kl_reverse"]),
               lambda ds: open_tokens(str(root), metrics=["kl_reverse"])]
    for read in readers:
        with pytest.raises(DamagedPartError) as err:
            read(open_dataset(root))
        msg = str(err.value)
        assert f"{part}: {want}" in msg
        assert "drift collect --out" in msg and msg.rstrip().endswith("--if-exists resume")
    assert err.value.problems and err.value.repair.startswith("drift collect")
    open_dataset(root).read("rollouts")  # the intact table still reads


def test_repair_command_parses_back_to_the_recorded_config(tmp_path):
    import shlex

    from drift.cli import build_parser
    from drift.collect.config import CollectConfig
    from drift.config import config_from_namespace, config_to_dict

    root = tmp_path / "my run"
    _write(root)
    cmd = open_dataset(root).repair_command()
    assert cmd is not None
    words = shlex.split(cmd)
    assert words[:2] == ["drift", "collect"] and "--dtype" in words and "--self-check" in words
    assert "--seed" not in words and "--chunk-size" not in words  # defaults are not spelled out
    cfg = config_from_namespace(CollectConfig, build_parser().parse_args(words[1:]))
    recorded = _recorded_config(root)["config"]
    assert config_to_dict(cfg) == {**recorded, "if_exists": "resume"}


def test_repair_command_of_score_and_unknown_commands(tmp_path):
    from drift.collect.config import ScoreConfig
    from drift.config import config_to_dict
    from drift.store import repair_command

    cfg = ScoreConfig(rollouts="runs/x", out="elsewhere", student="ckpt/200", teacher="T", step=200)
    cmd = repair_command(tmp_path / "y", {"command": "score", "config": config_to_dict(cfg)})
    assert cmd == f"drift score --rollouts runs/x --out {tmp_path / 'y'} --student ckpt/200 --teacher T " \
                  "--step 200 --if-exists resume"
    assert repair_command(tmp_path, {"config": {"synthetic": True}}) is None


def test_damaged_folder_without_manifest_or_command(tmp_path):
    import pyarrow.parquet as pq

    from drift.errors import DamagedPartError
    from drift.schema import TOKEN_SCHEMA

    (tmp_path / "tokens").mkdir()
    for i in range(2):
        pq.write_table(_table(TOKEN_SCHEMA, 8, i), tmp_path / "tokens" / f"part-{i}.parquet")
    assert open_dataset(tmp_path).verify() == []
    _truncate(tmp_path / "tokens" / "part-1.parquet")
    with pytest.raises(DamagedPartError, match=r"part-1.parquet: truncated(.|\n)*records no drift command"):
        open_dataset(tmp_path).read("tokens")


def test_resume_drops_and_removes_damaged_parts(tmp_path, caplog):
    root = tmp_path / "d"
    _write(root, n_parts=4)
    _truncate(root / "tokens" / "part-00001.parquet")
    _drop_column(root / "rollouts" / "part-00002.parquet", "response_ids")
    with caplog.at_level("WARNING", logger="drift.store"):
        w = DatasetWriter(root, if_exists="resume", config=_recorded_config(root), n_parts=4)
    assert w.completed_parts == {0, 3}
    assert sorted(p.index for p in w.dropped) == [1, 2]
    assert "part 1" in caplog.text and "truncated" in caplog.text and "'response_ids'" in caplog.text
    for t in ("tokens", "rollouts"):
        assert sorted(f.name for f in (root / t).iterdir()) == ["part-00000.parquet", "part-00003.parquet"]
    m = json.loads((root / "manifest.json").read_text())
    assert m["n_tokens"] == 32 and m["n_rollouts"] == 8 and [p["index"] for p in m["parts"]] == [0, 3]
    assert open_dataset(root).verify() == []


def test_failure_before_the_first_part_leaves_no_out(tmp_path):
    out = tmp_path / "new" / "run"
    for status in ("interrupted", "failed"):
        w = DatasetWriter(out, config={"config": {}}, n_parts=2)
        assert w.completed_parts == set() and not out.exists()
        w.close(status)  # type: ignore[arg-type]
        assert not out.exists() and not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    DatasetWriter(tmp_path / "empty", config={"config": {}}).close("interrupted")
    assert list((tmp_path / "empty").iterdir()) == []  # only what was there before
    _write(out)  # a rerun with --if-exists fail just works
    assert open_dataset(out).manifest["status"] == "complete"


def test_complete_run_without_parts_is_written(tmp_path):
    DatasetWriter(tmp_path / "d", config={"config": {}}, n_parts=0).close("complete")
    assert open_dataset(tmp_path / "d").manifest["status"] == "complete"
    assert (tmp_path / "d" / "config.json").exists()


def test_written_parts_survive_a_failure(tmp_path):
    from drift.schema import ROLLOUT_SCHEMA, TOKEN_SCHEMA

    out = tmp_path / "d"
    w = DatasetWriter(out, config={"config": {}}, n_parts=2)
    w.write_part(0, _table(ROLLOUT_SCHEMA, 4, 0), _table(TOKEN_SCHEMA, 16, 0))
    w.close("interrupted")
    ds = open_dataset(out)
    assert ds.manifest["status"] == "interrupted" and len(ds.read("tokens")) == 16
    # a resume that fails before its first new part keeps the folder too
    DatasetWriter(out, if_exists="resume", config={"config": {}}, n_parts=2).close("interrupted")
    assert len(open_dataset(out).read("tokens")) == 16


def test_overwrite_deletes_the_old_dataset_only_when_the_new_one_has_data(tmp_path):
    from drift.schema import ROLLOUT_SCHEMA, TOKEN_SCHEMA

    out = tmp_path / "d"
    _write(out, n_parts=2)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    DatasetWriter(out, if_exists="overwrite", config={"config": {"new": 1}}).close("interrupted")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    w = DatasetWriter(out, if_exists="overwrite", config={"config": {"new": 1}})
    w.write_part(0, _table(ROLLOUT_SCHEMA, 4, 0), _table(TOKEN_SCHEMA, 8, 0))
    ds = open_dataset(out)
    assert len(ds.manifest["parts"]) == 1 and ds.config == {"config": {"new": 1}}
    assert not (out / "tokens" / "part-00001.parquet").exists()


def test_out_that_is_a_file_is_a_typed_error(tmp_path):
    from drift.errors import DatasetExistsError

    (tmp_path / "f").write_text("x")
    for mode in ("fail", "overwrite", "resume"):
        with pytest.raises(DatasetExistsError, match="is an existing file"):
            DatasetWriter(tmp_path / "f", if_exists=mode, config={})  # type: ignore[arg-type]


def test_string_metric_is_a_schema_error_naming_the_numeric_columns(tmp_path):
    from drift.stats.reader import open_tokens

    _write(tmp_path / "d")
    with pytest.raises(SchemaError) as err:
        open_tokens(tmp_path / "d", metrics=["run_id"])
    msg = str(err.value)
    assert "metric 'run_id' is a string column" in msg
    assert "numeric columns available as metrics" in msg and "kl_reverse" in msg


def test_probe_repair_command_parses_back(tmp_path):
    import shlex

    from drift.cli import build_parser
    from drift.config import config_from_namespace, config_to_dict
    from drift.probe.config import ProbeConfig
    from drift.store import repair_command

    cfg = ProbeConfig(dataset="runs/x", out="runs/x/probe", student="S", teacher="T", ratios=(0.0, 0.5, 1.0),
                      continuations=2)
    cmd = repair_command("runs/x/probe", {"command": "probe", "config": config_to_dict(cfg)})
    assert cmd is not None and cmd.startswith("drift probe runs/x --out runs/x/probe")
    ns = build_parser().parse_args(shlex.split(cmd)[1:])
    back = config_from_namespace(ProbeConfig, ns, dataset=ns.dataset)
    assert config_to_dict(back) == {**config_to_dict(cfg), "if_exists": "resume"}


def test_a_damaged_manifest_is_a_dataset_error(tmp_path):
    _write(tmp_path / "d")
    (tmp_path / "d" / "manifest.json").write_text('{"parts": [')
    with pytest.raises(DatasetError, match=r"manifest.json is damaged(.|\n)*--if-exists overwrite"):
        open_dataset(tmp_path / "d")
    with pytest.raises(DatasetError, match=r"manifest\.json is damaged"):
        DatasetWriter(tmp_path / "d", if_exists="resume", config={})
