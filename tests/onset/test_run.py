"""The onset stage: outputs and their schema, read_onsets' checks, typed errors on bad input and existing OUT."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drift.config import config_from_dict
from drift.errors import ConfigError, DatasetError, DatasetExistsError, SchemaError
from drift.onset import OnsetConfig, read_onsets, run_onset
from drift.onset.synthetic import noisy_onset_tokens
from drift.schema import ONSET_SCHEMA, TEACHER_COLUMNS, TOPK_COLUMNS
from drift.synthetic import write_synthetic_dataset


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    tokens, truth = noisy_onset_tokens(120, seed=3)
    root = tmp_path_factory.mktemp("onset") / "noisy"
    write_synthetic_dataset(root, tokens, rollouts_per_part=50)
    return root, truth


def test_run_writes_onsets_summary_and_config(noisy, tmp_path):
    root, truth = noisy
    run = run_onset(OnsetConfig(dataset=str(root), out=str(tmp_path / "o")))
    assert pq.read_schema(tmp_path / "o" / "onsets.parquet").remove_metadata().equals(ONSET_SCHEMA)
    onsets = read_onsets(tmp_path / "o")
    assert len(onsets) == len(truth) == run.summary["n_rollouts"]
    assert run.summary["n_with_onset"] == int(onsets["onset_position"].notna().sum())
    assert str(onsets["onset_position"].dtype) == "Int32"
    has = onsets["onset_position"].notna()
    assert (onsets.loc[has, "alarm_position"] >= onsets.loc[has, "onset_position"]).all()
    assert (onsets.loc[has, "onset_score"] > run.calibration.h).all()
    assert (onsets.loc[~has, "onset_score"] <= run.calibration.h).all()
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["method"] == "cusum" and summary["calibration"]["k"] == pytest.approx(run.calibration.k)
    assert summary["naive_first_nontop"]["n_rollouts"] > summary["n_with_onset"]
    saved = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config_from_dict(OnsetConfig, saved["config"]) == OnsetConfig(dataset=str(root), out=str(tmp_path / "o"))
    again = run_onset(OnsetConfig(dataset=str(root), out=str(tmp_path / "o"), if_exists="overwrite"))
    pd.testing.assert_frame_equal(again.onsets, run.onsets)  # seeded: same thresholds, same onsets


def test_existing_out_is_kept(noisy, tmp_path):
    root, _ = noisy
    run_onset(OnsetConfig(dataset=str(root), out=str(tmp_path / "o")))
    before = (tmp_path / "o" / "onsets.parquet").read_bytes()
    with pytest.raises(DatasetExistsError, match="--if-exists overwrite"):
        run_onset(OnsetConfig(dataset=str(root), out=str(tmp_path / "o"), k=5.0))
    assert (tmp_path / "o" / "onsets.parquet").read_bytes() == before


def test_missing_teacher_columns_name_the_column_and_the_fix(tmp_path):
    tokens, _ = noisy_onset_tokens(20, seed=4)
    sampled = tokens.drop(columns=[c for c in (*TEACHER_COLUMNS, *TOPK_COLUMNS) if c in tokens])
    ds = tmp_path / "no_teacher"
    write_synthetic_dataset(ds, sampled, metadata={"support": "sampled", "has_teacher": False})
    with pytest.raises(SchemaError, match=r"teacher_logprob.*drift score --rollouts"):
        run_onset(OnsetConfig(dataset=str(ds), out=str(tmp_path / "o")))
    with pytest.raises(SchemaError, match="teacher_entropy"):  # the synthetic set has it: drop it for excess
        ranked = tokens.drop(columns=["teacher_entropy"])
        write_synthetic_dataset(tmp_path / "no_entropy", ranked)
        run_onset(OnsetConfig(dataset=str(tmp_path / "no_entropy"), out=str(tmp_path / "o2"), signal="excess"))
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()
    with pytest.raises(DatasetError, match="not a folder"):
        run_onset(OnsetConfig(dataset=str(tmp_path / "nowhere"), out=str(tmp_path / "o3")))


def test_config_checks_every_problem_at_once():
    with pytest.raises(ConfigError) as err:
        OnsetConfig(dataset="", signal="bogus", alpha=0.7, h=-1.0, n_null=5)
    assert len(err.value.problems) == 5


def test_read_onsets_validates(tmp_path):
    good = pd.DataFrame({"run_id": ["r", "r"], "step": [0, 0], "prompt_id": ["p", "p"], "sample_id": [0, 1],
                         "response_len": np.array([5, 6], np.int32), "onset_position": pd.array([2, None], "Int32"),
                         "onset_score": [5.0, 1.0]})
    pq.write_table(pa.Table.from_pandas(good, preserve_index=False), tmp_path / "onsets.parquet")
    assert read_onsets(tmp_path)["onset_position"].isna().tolist() == [False, True]  # alarm_position is optional
    pq.write_table(pa.Table.from_pandas(good.drop(columns="onset_score").assign(step="x"), preserve_index=False),
                   tmp_path / "bad.parquet")
    with pytest.raises(SchemaError) as err:
        read_onsets(tmp_path / "bad.parquet")
    assert "onset_score" in str(err.value) and "'step' has type" in str(err.value)
    pq.write_table(pa.Table.from_pandas(pd.concat([good, good]), preserve_index=False), tmp_path / "dup.parquet")
    with pytest.raises(SchemaError, match="more than once"):
        read_onsets(tmp_path / "dup.parquet")
    with pytest.raises(DatasetError, match="drift onset DATASET"):
        read_onsets(tmp_path / "missing")
