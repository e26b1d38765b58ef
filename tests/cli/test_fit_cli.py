"""``drift fit`` end to end on a synthetic dataset written to disk."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from drift.cli import main
from drift.stats.bins import BIN_COLUMNS
from drift.synthetic import synthetic_tokens, write_synthetic_dataset

CONTRACT = ["metric", "by", "group", "bin", "bin_left", "bin_right", "mean", "ci_low", "ci_high", "n_tokens",
            "n_rollouts"]
MODEL_KEYS = {"params", "stderr", "ci_low", "ci_high", "aic", "bic", "converged"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("fitcli") / "ds"
    df = synthetic_tokens("exponential", {"a": 1.0, "tau": 0.2, "c": 0.3}, n_rollouts=120, length_range=(40, 200),
                          seed=3, metric="kl_reverse")
    write_synthetic_dataset(root, df, rollouts_per_part=50)
    return root


def test_fit_writes_bins_fits_and_config(dataset, tmp_path, capsys):
    out = tmp_path / "fit"
    rc = main(["fit", str(dataset), "--metric", "kl_reverse", "--metric", "cum_abs_gap_frac", "--by", "rel",
               "--bins", "12", "--n-boot", "200", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "kl_reverse" in printed and "selected:" in printed and "direction:" in printed

    bins = pd.read_parquet(out / "bins.parquet")
    assert list(bins.columns[:11]) == CONTRACT
    assert list(bins.columns) == list(BIN_COLUMNS)
    assert set(bins["metric"]) == {"kl_reverse", "cum_abs_gap_frac"}
    assert len(bins) == 2 * 12 and (bins["by"] == "rel").all() and (bins["group"] == "all").all()
    assert (bins["n_rollouts"] == 120).all()
    assert (bins["n_clusters"] == 30).all() and (bins["cluster"] == "prompt").all()  # 4 samples per prompt
    assert (bins["ci_low"] <= bins["mean"]).all() and (bins["mean"] <= bins["ci_high"]).all()

    fits = json.loads((out / "fits.json").read_text())
    assert set(fits) == {"kl_reverse", "cum_abs_gap_frac"}
    for entry in fits.values():
        assert {"models", "selected", "direction"} <= set(entry)
        assert set(entry["models"]) == {"exponential", "power", "logistic", "linear", "hinge"}
        for m in entry["models"].values():
            assert set(m) >= MODEL_KEYS
        converged = {n: m["aic"] for n, m in entry["models"].items() if m["converged"]}
        assert entry["selected"] == min(converged, key=converged.get)
        assert entry["direction"]["verdict"] in ("rises", "falls", "flat", "inconclusive")
        assert entry["cluster"] == "prompt" and entry["n_clusters"] == 30 and entry["n_rollouts"] == 120
        assert entry["direction"]["n_clusters"] == 30 and entry["selection_note"] is None
    assert fits["kl_reverse"]["direction"]["verdict"] == "falls"
    assert fits["cum_abs_gap_frac"]["direction"]["verdict"] == "rises"
    assert fits["kl_reverse"]["selected"] == "exponential"
    tau = fits["kl_reverse"]["models"]["exponential"]
    assert tau["ci_low"]["tau"] <= 0.2 <= tau["ci_high"]["tau"]

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config_type"] == "FitConfig"
    assert cfg["config"]["metric"] == ["kl_reverse", "cum_abs_gap_frac"]
    assert cfg["config"]["bins"] == 12 and cfg["config"]["n_boot"] == 200
    assert cfg["config"]["cluster"] == "prompt" and cfg["config"]["min_clusters"] == 10
    assert cfg["config"]["flat_margin"] == 0.1 and cfg["cluster"] == "prompt"
    assert len(cfg["edges"]) == 13


def test_strata_and_groups_add_cells(dataset, tmp_path):
    out = tmp_path / "fit"
    rc = main(["fit", str(dataset), "--metric", "kl_reverse", "--strata", "quantiles:2", "--group-by", "finished",
               "--models", "exponential,linear", "--n-boot", "100", "--out", str(out)])
    assert rc == 0
    bins = pd.read_parquet(out / "bins.parquet")
    assert {"all"} < set(bins["stratum"]) and {"all"} < set(bins["group"])
    fits = json.loads((out / "fits.json").read_text())["kl_reverse"]
    assert fits["cell"] == {"step": 0, "stratum": "all", "group": "all"}
    assert len(fits["cells"]) == bins[["stratum", "group"]].drop_duplicates().shape[0]
    assert set(fits["models"]) == {"exponential", "linear"}


def test_help_explains_the_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--metric", "--by", "--bins", "--strata", "--group-by", "--n-boot", "--models", "--out",
                   "bins.parquet", "fits.json", "resample whole prompts", "--cluster", "--min-clusters",
                   "--flat-margin", "insufficient", "examples:"):
        assert needle in text, needle


def test_unknown_metric_lists_numeric_columns(dataset, tmp_path, capsys):
    rc = main(["fit", str(dataset), "--metric", "kl_revers", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown metric 'kl_revers'" in err and "kl_reverse" in err and "cum_abs_gap_frac" in err
    assert not (tmp_path / "o" / "fits.json").exists()


def test_existing_output_needs_overwrite(dataset, tmp_path, capsys):
    out = tmp_path / "fit"
    args = ["fit", str(dataset), "--metric", "k3", "--models", "linear", "--n-boot", "60", "--out", str(out)]
    assert main(args) == 0
    assert main(args) == 2
    assert "--if-exists overwrite" in capsys.readouterr().err
    assert main([*args, "--if-exists", "overwrite"]) == 0


def test_bad_flags_and_empty_selection(dataset, tmp_path, capsys):
    assert main(["fit", str(dataset), "--metric", "k3", "--out", str(tmp_path / "o"), "--bins", "0",
                 "--models", "exponential,gamma"]) == 2
    err = capsys.readouterr().err
    assert "bins" in err and "gamma" in err
    assert main(["fit", str(dataset), "--metric", "k3", "--steps", "7", "--out", str(tmp_path / "o")]) == 2
    assert "no token rows" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "nope"), "--metric", "k3", "--out", str(tmp_path / "o")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_rollout_clusters_stay_selectable(dataset, tmp_path):
    out = tmp_path / "fit"
    assert main(["fit", str(dataset), "--metric", "kl_reverse", "--models", "linear", "--n-boot", "60",
                 "--cluster", "rollout", "--out", str(out)]) == 0
    bins = pd.read_parquet(out / "bins.parquet")
    assert (bins["cluster"] == "rollout").all() and (bins["n_clusters"] == 120).all()
    assert json.loads((out / "fits.json").read_text())["kl_reverse"]["n_clusters"] == 120


def test_below_min_clusters_is_insufficient_and_selects_nothing(dataset, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", str(dataset), "--metric", "kl_reverse", "--models", "exponential,linear", "--n-boot", "60",
                 "--min-clusters", "31", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "insufficient" in printed and "not selected" in printed
    entry = json.loads((out / "fits.json").read_text())["kl_reverse"]
    assert entry["direction"]["verdict"] == "insufficient" and entry["selected"] is None
    assert "min-clusters 31" in entry["selection_note"] and set(entry["models"]) == {"exponential", "linear"}


def test_one_bin_gives_no_direction(dataset, tmp_path):
    out = tmp_path / "fit"
    assert main(["fit", str(dataset), "--metric", "kl_reverse", "--models", "linear", "--errors", "n_rollouts",
                 "--bins", "1", "--n-boot", "60", "--out", str(out)]) == 0
    d = json.loads((out / "fits.json").read_text())["kl_reverse"]["direction"]
    assert d["verdict"] == "insufficient" and ">= 3 bins" in d["reason"]


def test_permutation_direction_stops_with_a_typed_error(dataset, tmp_path, capsys):
    assert main(["fit", str(dataset), "--metric", "k3", "--direction", "permutation",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "ConfigError" in err and "removed" in err and "--direction bootstrap" in err
    assert not (tmp_path / "o" / "fits.json").exists()


def test_token_classes_and_the_onset_axis(dataset, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "zones"
    assert main(["fit", str(dataset), "--metric", "kl_reverse", "--group-by", "teacher_entropy_zone,finished",
                 "--models", "linear", "--n-boot", "60", "--out", str(out)]) == 0
    assert "token class teacher_entropy_zone: teacher_entropy quantile cuts" in capsys.readouterr().out
    groups = set(pd.read_parquet(out / "bins.parquet")["group"])
    assert {"teacher_entropy_zone=low,finished=True", "all"} <= groups
    assert len(json.loads((out / "config.json").read_text())["token_classes"][0]["cuts"]) == 2
    # --by onset: an onsets.parquet as `drift onset` writes it (every third rollout never leaves)
    roll = pd.read_parquet(dataset / "rollouts")[["run_id", "step", "prompt_id", "sample_id", "response_len"]]
    onset = [None if i % 3 == 0 else int(t) // 2 for i, t in enumerate(roll["response_len"])]
    table = pa.Table.from_pandas(roll, preserve_index=False).append_column(
        "onset_position", pa.array(onset, pa.int32())).append_column("onset_score", pa.array([0.0] * len(roll)))
    pq.write_table(table, tmp_path / "onsets.parquet")
    out = tmp_path / "onset"
    assert main(["fit", str(dataset), "--metric", "kl_reverse", "--by", "onset", "--onsets",
                 str(tmp_path / "onsets.parquet"), "--onset-window", "16", "--width", "4", "--n-boot", "60",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "40 excluded (null onset" in printed and "onset contrast:" in printed
    fits = json.loads((out / "fits.json").read_text())["kl_reverse"]
    assert fits["onset"]["n_excluded"] == 40 and fits["models"] == {} and "onset_contrast" in fits
    assert len(pd.read_parquet(out / "bins.parquet")) == 8
    assert main(["fit", str(dataset), "--metric", "k3", "--by", "onset", "--onsets", str(tmp_path / "none.parquet"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "drift onset" in capsys.readouterr().err
    assert main(["fit", str(dataset), "--metric", "k3", "--by", "onset", "--out", str(tmp_path / "x")]) == 2
    assert "--onsets" in capsys.readouterr().err
