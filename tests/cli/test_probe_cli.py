"""`drift probe` end to end on a small toy (oracle world) dataset written in tmp_path."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from drift.cli import main
from drift.store import open_dataset

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe_cli") / "toy"
    assert main(["collect", "--preset", "toy", "--out", str(out), "--max-prompts", "4", "--progress", "false"]) == 0
    return out


def test_probe_cli_end_to_end(toy, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "probe"
    code = main(["probe", str(toy), "--ratios", "0,0.5,1", "--continuations", "2", "--out", str(out),
                 "--progress", "false", "--n-boot", "200", "--part-size", "6"])
    assert code == 0
    text = capsys.readouterr().out
    assert "ratio" in text and "teacher accuracy" in text and "-t/T" in text and "-C_t/C_T" in text
    assert "4 prompt clusters" in text and "INSUFFICIENT" in text  # 16 rollouts of 4 prompts < --min-clusters 10
    ds = open_dataset(out)
    assert ds.manifest["status"] == "complete" and len(ds.manifest["parts"]) == 3  # 16 rollouts, 6 per part
    rows = ds.to_pandas("continuations")
    assert len(rows) == 16 * 3 * 2 * 2 and rows.success.notna().all()
    acc = pd.read_parquet(out / "accuracy.parquet")
    assert len(acc) == 9 and set(acc.model) == {"teacher", "student", "gap"}
    assert acc.loc[(acc.model == "teacher") & (acc.ratio == 0.0), "accuracy"].item() >= 0.75
    js = json.loads((out / "auroc.json").read_text())
    assert set(js["predictors"]) >= {"neg_rel_position", "neg_cum_abs_gap_frac", "neg_cum_abs_gap", "prefix_logratio",
                                     "neg_teacher_entropy", "topk_overlap", "neg_kl_reverse"}
    assert js["cluster"] == "prompt" and js["n_clusters"] == 4 and js["direction"]["verdict"] == "insufficient"
    assert js["normalizer"] == "tokens" and set(acc.n_clusters) <= {4}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"] == "probe" and cfg["config"]["ratios"] == [0.0, 0.5, 1.0]
    assert cfg["config"]["max_new_tokens"] == 64 and cfg["config"]["student"].endswith("student")  # from toy
    # an existing --out is refused before any model is loaded; --if-exists resume finds nothing left to do
    assert main(["probe", str(toy), "--ratios", "0,0.5,1", "--continuations", "2", "--out", str(out),
                 "--progress", "false"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["probe", str(toy), "--ratios", "0,0.5,1", "--continuations", "2", "--out", str(out),
                 "--progress", "false", "--n-boot", "200", "--part-size", "6", "--if-exists", "resume"]) == 0
    pd.testing.assert_frame_equal(open_dataset(out).to_pandas("continuations"), rows)


def test_probe_cli_cluster_flags(toy, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["probe", str(toy), "--ratios", "0,1", "--continuations", "1", "--out", str(out), "--progress",
                 "false", "--n-boot", "50", "--cluster", "rollout", "--min-clusters", "3"]) == 0
    js = json.loads((out / "auroc.json").read_text())
    assert js["cluster"] == "rollout" and js["n_clusters"] == 16 and js["min_clusters"] == 3
    assert js["bootstrap"]["unit"] == "rollout" and not js["insufficient"]
    with pytest.raises(SystemExit):
        main(["probe", str(toy), "--out", str(tmp_path / "q"), "--cluster", "token"])


def test_probe_cli_range_syntax_and_bad_ratios(toy, tmp_path, capsys):
    code = main(["probe", str(toy), "--ratios", "0,0.5,...,1", "--continuations", "1", "--max-rollouts", "3",
                 "--out", str(tmp_path / "p"), "--progress", "false", "--n-boot", "50"])
    assert code == 0
    assert len(open_dataset(tmp_path / "p").to_pandas("continuations")) == 3 * 3 * 2
    assert main(["probe", str(toy), "--ratios", "0,1.5", "--out", str(tmp_path / "q")]) == 2
    assert "ratios must lie in [0, 1]" in capsys.readouterr().err
