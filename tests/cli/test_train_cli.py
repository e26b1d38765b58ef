"""`drift train` smoke runs on the embedded oracle world (max 2 steps, tiny evaluation)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from drift.cli import main
from drift.store import open_dataset

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")

SMALL = ["--eval-prompts", "4", "--eval-samples", "1", "--collect-prompts", "3", "--collect-samples", "2",
         "--progress", "false"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    schedule = root / "schedule.json"
    schedule.write_text(json.dumps({"kind": "iw_opd", "gamma": 0.5}))
    out = root / "run"
    code = main(["train", "--preset", "toy", "--steps", "2", "--seed", "0", "--schedule", str(schedule),
                 "--out", str(out), *SMALL])
    assert code == 0
    return out


def test_smoke_run_writes_metrics_config_checkpoint_and_drift_data(smoke, capsys):
    lines = [json.loads(x) for x in (smoke / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1, 2]
    assert "eval/kl_mean" in lines[0] and "eval/kl_mean" in lines[2]
    assert {"loss", "adv/mean", "kl/k3_mean", "weight/mean", "optim/lr", "time/step"} <= set(lines[1])
    assert lines[1]["weight/max"] == pytest.approx(1.5) and lines[1]["weight/min"] >= 1.0  # iw_opd gamma 0.5
    frame = pd.read_parquet(smoke / "metrics.parquet")
    assert frame.step.tolist() == [0, 1, 2]

    cfg = json.loads((smoke / "config.json").read_text())
    assert cfg["config_type"] == "TrainConfig" and cfg["config"]["steps"] == 2
    assert cfg["config"]["prompts"].endswith("train.jsonl") and cfg["config"]["heldout_prompts"].endswith(
        "heldout.jsonl")
    assert cfg["config"]["max_new_tokens"] == 64  # from the toy preset
    assert cfg["schedule"]["kind"] == "iw_opd"
    assert json.loads((smoke / "schedule.json").read_text())["gamma"] == 0.5

    ckpt = smoke / "checkpoints" / "step-000002"
    assert (ckpt / "config.json").exists() and (ckpt / "tokenizer.json").exists()

    for step in (0, 2):  # collect_at defaults to 0,final
        ds = open_dataset(smoke / "drift" / f"step-{step:06d}")
        tokens = ds.to_pandas("tokens")
        assert ds.manifest["status"] == "complete" and ds.manifest["n_rollouts"] == 6
        assert (tokens.step == step).all() and "oracle_prefix_ok" in tokens.columns
    final = open_dataset(smoke / "drift" / "step-000002").config
    assert final["config"]["student"] == str(ckpt)  # the dataset names the weights it measured


def test_existing_run_is_not_overwritten_without_flag(smoke, capsys):
    code = main(["train", "--preset", "toy", "--steps", "1", "--out", str(smoke), *SMALL])
    assert code == 2
    assert "--if-exists overwrite" in capsys.readouterr().err


def test_out_is_required(capsys):
    assert main(["train", "--preset", "toy", "--steps", "1"]) == 2
    assert "out is required" in capsys.readouterr().err
