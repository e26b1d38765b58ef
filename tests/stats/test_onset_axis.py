"""``drift fit --by onset``: offsets from an onsets.parquet, against pandas, the contrast by planted truth, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drift.errors import ConfigError, DatasetError, SchemaError
from drift.stats import BinSpec, FitConfig, aggregate_bins, run_fit
from drift.stats.onset_axis import onset_contrast
from drift.synthetic import synthetic_tokens, write_synthetic_dataset

ROLLOUT = ["run_id", "step", "prompt_id", "sample_id"]
JUMP = 0.4  # kl_reverse rises by this at the onset in the planted dataset


def write_onsets(path, rollouts: pd.DataFrame) -> str:
    """An onsets.parquet with the columns `drift onset` writes (onset_position null = never leaves)."""
    table = pa.table({
        "run_id": pa.array(rollouts["run_id"].astype(str)), "step": pa.array(rollouts["step"], pa.int64()),
        "prompt_id": pa.array(rollouts["prompt_id"].astype(str)),
        "sample_id": pa.array(rollouts["sample_id"], pa.int64()),
        "response_len": pa.array(rollouts["response_len"], pa.int32()),
        "onset_position": pa.array([None if pd.isna(v) else int(v) for v in rollouts["onset"]], pa.int32()),
        "onset_score": pa.array(np.linspace(0, 1, len(rollouts)), pa.float64())})
    pq.write_table(table, path)
    return str(path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A dataset whose kl_reverse jumps by JUMP at each rollout's onset; 20% of rollouts have none."""
    root = tmp_path_factory.mktemp("onset")
    df = synthetic_tokens("linear", {"a": 0.5, "b": 0.0}, n_rollouts=80, length_range=(20, 90), seed=8)
    rollouts = df.groupby(ROLLOUT, as_index=False)["response_len"].first()
    rng = np.random.default_rng(2)
    onset = rng.integers(0, rollouts["response_len"].to_numpy())
    rollouts["onset"] = pd.array(np.where(rng.random(len(rollouts)) < 0.2, -1, onset)).astype("Int64")
    rollouts.loc[rollouts["onset"] < 0, "onset"] = pd.NA
    df = df.merge(rollouts[[*ROLLOUT, "onset"]], on=ROLLOUT)
    after = (df["onset"].notna() & (df["position"] >= df["onset"].fillna(0))).to_numpy(bool)
    df["kl_reverse"] = (df["kl_reverse"] + JUMP * after).astype(np.float32)  # as stored (float32 column)
    ds = write_synthetic_dataset(root / "ds", df.drop(columns=["onset"]), rollouts_per_part=30)
    return ds, df, rollouts, write_onsets(root / "onsets.parquet", rollouts)


def test_offset_bins_match_pandas(planted):
    ds, df, rollouts, path = planted
    W, w = 8, 2
    rb = aggregate_bins(ds.root, ["kl_reverse", "k3"], BinSpec(by="onset", onsets=path, onset_window=W, width=w,
                                                              step="pool"))
    table = rb.table(n_boot=50)
    np.testing.assert_array_equal(rb.edges, np.arange(-W, W + 1, w))
    d = df["position"] - df["onset"]
    keep = df["onset"].notna() & (d >= -W) & (d < W)
    ref = df[keep].assign(_bin=((d[keep] + W) // w).astype(int), _x=d[keep] + 0.5)
    for metric in ("kl_reverse", "k3"):
        got = table[table["metric"] == metric].reset_index(drop=True)
        g = ref.groupby("_bin")
        np.testing.assert_array_equal(got["bin"], g.size().index)
        np.testing.assert_array_equal(got["n_tokens"], g.size().to_numpy())
        np.testing.assert_array_equal(got["n_rollouts"], g.apply(lambda x: x[ROLLOUT].drop_duplicates().shape[0]))
        np.testing.assert_allclose(got["mean"], g[metric].apply(lambda v: v.astype(float).mean()), rtol=1e-10)
        np.testing.assert_allclose(got["x"], g["_x"].mean().to_numpy(), rtol=1e-10)
        np.testing.assert_allclose(got["bin_left"], -W + w * got["bin"])
        assert (got["by"] == "onset").all()
    n_null = int(rollouts["onset"].isna().sum())
    assert rb.onset.n_rollouts == len(rollouts) and rb.onset.n_excluded == n_null > 0
    assert rb.onset.n_with_onset == len(rollouts) - n_null


def test_contrast_recovers_the_planted_jump_and_equals_naive_means(planted):
    ds, df, _, path = planted
    W = 16
    rb = aggregate_bins(ds.root, ["kl_reverse", "k3"], BinSpec(by="onset", onsets=path, onset_window=W,
                                                              step="pool"))
    d = df["position"] - df["onset"]
    inside = df["onset"].notna() & (d >= -W) & (d < W)
    for metric in ("kl_reverse", "k3"):
        c = onset_contrast(rb, metric, n=400, seed=1)
        before = df.loc[inside & (d < 0), metric].astype(float).mean()
        after = df.loc[inside & (d >= 0), metric].astype(float).mean()
        np.testing.assert_allclose([c.before, c.after, c.diff], [before, after, after - before], rtol=1e-10)
        assert c.n_tokens_before == int((inside & (d < 0)).sum()) and c.ci_low <= c.diff <= c.ci_high
    hit = onset_contrast(rb, "kl_reverse", n=400, seed=1)
    assert hit.verdict == "higher_after" and hit.ci_low <= JUMP <= hit.ci_high and hit.p_value < 0.01
    null = onset_contrast(rb, "k3", n=400, seed=1)  # k3 has no jump planted
    assert null.verdict == "not_significant" and null.ci_low <= 0 <= null.ci_high


def test_fit_by_onset_writes_bins_contrast_and_the_excluded(planted, tmp_path):
    ds, _, rollouts, path = planted
    cfg = FitConfig(dataset=str(ds.root), metric=("kl_reverse",), out=str(tmp_path / "fit"), by="onset",
                    onsets=path, n_boot=200, group_by=("low_student_logprob",))
    run = run_fit(cfg)
    run.write()
    fits = json.loads((tmp_path / "fit" / "fits.json").read_text())["kl_reverse"]
    assert fits["models"] == {} and fits["selected"] is None and "no curve fits" in fits["selection_note"]
    assert fits["onset_contrast"]["verdict"] == "higher_after"
    assert fits["onset"]["n_excluded"] == int(rollouts["onset"].isna().sum()) and fits["onset"]["window"] == [-32, 32]
    assert {c["group"] for c in fits["cells"]} >= {"all", "low_student_logprob=True"}
    assert all("onset_contrast" in c for c in fits["cells"])
    conf = json.loads((tmp_path / "fit" / "config.json").read_text())
    assert conf["onset"]["n_excluded"] == fits["onset"]["n_excluded"] and len(conf["edges"]) == 17
    text = run.summary()
    assert "excluded (null onset" in text and "onset contrast: higher_after" in text


def test_onset_files_that_do_not_fit_are_refused(planted, tmp_path):
    ds, _, rollouts, path = planted

    def fit(onsets: str) -> None:
        aggregate_bins(ds.root, "kl_reverse", BinSpec(by="onset", onsets=onsets))

    with pytest.raises(DatasetError, match=r"drift onset .* --out OUT"):
        fit(str(tmp_path / "nope.parquet"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DatasetError, match="not a readable parquet"):
        fit(str(tmp_path / "bad.parquet"))
    pq.write_table(pa.table({"run_id": ["a"], "step": [0]}), tmp_path / "cols.parquet")
    with pytest.raises(SchemaError, match="onset_position") as exc:
        fit(str(tmp_path / "cols.parquet"))
    assert "prompt_id" in str(exc.value) and "drift onset" in str(exc.value)
    with pytest.raises(DatasetError, match=r"does not belong.*no row"):  # another dataset's file: rollouts missing
        fit(write_onsets(tmp_path / "part.parquet", rollouts.iloc[5:]))
    with pytest.raises(DatasetError, match="duplicated"):
        fit(write_onsets(tmp_path / "dup.parquet", pd.concat([rollouts, rollouts.iloc[:2]])))
    other = rollouts.assign(response_len=rollouts["response_len"] + 1)
    with pytest.raises(DatasetError, match="another response_len"):
        fit(write_onsets(tmp_path / "len.parquet", other))
    with pytest.raises(ConfigError, match="onsets"):
        BinSpec(by="onset")
    with pytest.raises(ConfigError, match="multiple of the width"):
        BinSpec(by="onset", onsets=path, onset_window=10, width=4)
    with pytest.raises(ConfigError, match="only used with by='onset'"):
        FitConfig(dataset="x", metric=("k3",), out="y", onsets=path)
