"""``drift onset`` end to end: the files it writes, exit 2 with a message on bad input, no torch at run time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drift.onset import read_onsets
from drift.onset.synthetic import noisy_onset_tokens
from drift.synthetic import write_synthetic_dataset
from tests.cli.test_startup import _run_cli

ROOT = Path(__file__).resolve().parents[2]


def _drift(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "drift", *argv], capture_output=True, text=True, env=env,
                          timeout=300, check=False, cwd=ROOT)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    tokens, _ = noisy_onset_tokens(60, seed=7)
    root = tmp_path_factory.mktemp("cli") / "noisy"
    write_synthetic_dataset(root, tokens)
    return root


def test_onset_writes_its_files(dataset, tmp_path):
    out = tmp_path / "onset"
    proc = _drift("onset", str(dataset), "--out", str(out), "--alpha", "0.02")
    assert proc.returncode == 0, proc.stderr
    assert "rollouts leave the teacher's support" in proc.stdout
    assert {p.name for p in out.iterdir()} == {"onsets.parquet", "summary.json", "config.json"}
    assert len(read_onsets(out)) == 60
    assert json.loads((out / "config.json").read_text())["config"]["alpha"] == 0.02
    again = _drift("onset", str(dataset), "--out", str(out))
    assert again.returncode == 2 and "DatasetExistsError" in again.stderr and "--if-exists overwrite" in again.stderr
    assert _drift("onset", str(dataset), "--out", str(out), "--if-exists", "overwrite").returncode == 0


@pytest.mark.parametrize(("args", "message"), [
    (("{missing}",), "DatasetError"),
    (("{dataset}", "--alpha", "0.9"), "alpha must be in"),
    (("{dataset}", "--signal", "excess", "--k", "-1"), "k must be >= 0"),
])
def test_bad_input_exits_2_with_a_message(dataset, tmp_path, args, message):
    argv = [a.format(dataset=dataset, missing=tmp_path / "nowhere") for a in args]
    proc = _drift("onset", *argv, "--out", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_onset_runs_without_torch(dataset, tmp_path):
    result = _run_cli("onset", str(dataset), "--out", str(tmp_path / "o"))
    assert result["rc"] == 0, result["out"]
    assert result["loaded"] == [], f"`drift onset` imported {result['loaded']}"
