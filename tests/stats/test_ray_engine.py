"""``--engine ray`` against the in-process engine (bit for bit), and the fixed-order fold both share.

The Ray tests run a local ``ray.init(num_cpus=2)`` (module-scoped, shut down after); they are skipped where Ray is
not installed (it is in the ``dev`` extra, so CI runs them).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from drift.errors import ConfigError, DatasetError
from drift.stats import BinSpec, FitConfig, aggregate_bins, direction_test, fit_bins, run_fit
from drift.stats.binsql import fetch_arrow, plan_bins, rollout_sql, shard_parts
from drift.stats.fold import fold_rollouts
from drift.stats.reader import open_tokens
from drift.synthetic import synthetic_tokens, write_synthetic_dataset

METRICS = ("kl_reverse", "k3", "teacher_top1")
SPECS = {
    "per-step cells": BinSpec(bins=8),
    "quantile strata x groups, steps pooled": BinSpec(bins=6, strata="quantiles:3", group_by=("finished",),
                                                      step="pool"),
    "absolute bins, rollout clusters": BinSpec(by="abs", bins=10, step="pool", cluster="rollout"),
    "log bins without margins": BinSpec(by="abs_log", bins=12, margins=False, group_by=("finished",)),
    "one step, cut-point strata": BinSpec(bins=5, steps=(1,), strata=(100, 200)),
    "token classes x a column": BinSpec(bins=6, group_by=("teacher_entropy_zone", "finished"), step="pool"),
    "token classes, per step": BinSpec(bins=4, group_by=("teacher_mass_zone", "low_student_logprob"), zones=4),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    """Eight parts over two steps; the 3 samples of a prompt are spread over parts (clusters span shards)."""
    frames = []
    for i in range(8):
        df = synthetic_tokens("exponential", {"a": 1.0, "tau": 0.2, "c": 0.3}, n_rollouts=30,
                              length_range=(5, 300), seed=100 + i, step=i // 4,
                              rollout_offset=(i % 4) * 30 + (i // 4) * 7, samples_per_prompt=3)
        # the column full-vocabulary scoring adds (teacher mass on the student's top-k), for teacher_mass_zone
        df["teacher_mass_student_topk"] = np.random.default_rng(i).beta(3, 2, size=len(df)).astype(np.float32)
        frames.append(df)
    return write_synthetic_dataset(tmp_path_factory.mktemp("ray") / "ds", frames)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _assert_same_stats(a, b) -> None:
    assert a.cells == b.cells and a.n_tokens == b.n_tokens and a.strata_labels == b.strata_labels
    for cell in a.cells:
        x, y = a.stats[cell], b.stats[cell]
        for f in dataclasses.fields(x):
            np.testing.assert_array_equal(getattr(x, f.name), getattr(y, f.name), err_msg=f"{cell.label} {f.name}")


@pytest.mark.parametrize("name", list(SPECS))
def test_ray_bins_equal_the_default_engine_exactly(local_ray, dataset, name):
    spec = SPECS[name]
    ref = aggregate_bins(dataset.root, METRICS, spec)
    for tasks in (3, 8):  # shards of several parts, and one part per task
        got = aggregate_bins(dataset.root, METRICS, spec, engine="ray", ray_tasks=tasks)
        _assert_same_stats(ref, got)
        pd.testing.assert_frame_equal(got.table(n_boot=200, seed=4), ref.table(n_boot=200, seed=4),
                                      check_exact=True)
    cell = ref.headline
    fa, fb = (fit_bins(r, "kl_reverse", step=cell.step, stratum=cell.stratum, group=cell.group, n_boot=200)
              for r in (ref, got))
    assert fa.to_dict() == fb.to_dict()
    da, db = (direction_test(r, "kl_reverse", n=200, step=cell.step, stratum=cell.stratum, group=cell.group)
              for r in (ref, got))
    assert da.to_dict() == db.to_dict()
    assert got.classes == ref.classes  # the zone cuts: one first pass on the driver, the same literals in every task


def test_ray_onset_bins_with_a_class_equal_the_default_engine(local_ray, dataset, tmp_path):
    import pyarrow.parquet as pq

    con = dataset.duckdb()
    rollouts = fetch_arrow(con, "SELECT DISTINCT run_id, step, prompt_id, sample_id, response_len FROM tokens")
    con.close()
    T = rollouts.column("response_len").to_numpy()
    onset = np.random.default_rng(0).integers(0, T)
    onset = pa.array([None if k % 5 == 0 else int(v) for k, v in enumerate(onset)], pa.int32())
    path = tmp_path / "onsets.parquet"
    pq.write_table(rollouts.append_column("onset_position", onset)
                   .append_column("onset_score", pa.array(np.zeros(len(T)))), path)
    spec = BinSpec(by="onset", onsets=str(path), onset_window=16, group_by=("teacher_entropy_zone",), step="pool")
    ref = aggregate_bins(dataset.root, METRICS, spec)
    got = aggregate_bins(dataset.root, METRICS, spec, engine="ray", ray_tasks=3)
    _assert_same_stats(ref, got)
    assert got.onset == ref.onset and got.onset.n_excluded == (len(T) + 4) // 5
    pd.testing.assert_frame_equal(got.table(n_boot=100), ref.table(n_boot=100), check_exact=True)


def test_drift_fit_with_engine_ray_writes_the_same_outputs(local_ray, dataset, tmp_path):
    cfg = FitConfig(dataset=str(dataset.root), metric=("kl_reverse", "k3"), out=str(tmp_path / "a"), n_boot=100,
                    strata="quantiles:2")
    ref = run_fit(cfg)
    got = run_fit(dataclasses.replace(cfg, out=str(tmp_path / "b"), engine="ray"))
    pd.testing.assert_frame_equal(got.bins, ref.bins, check_exact=True)
    assert got.fits_json() == ref.fits_json()
    got.write()
    assert '"engine": "ray"' in (tmp_path / "b" / "config.json").read_text()


def test_a_rollout_split_over_two_tasks_is_refused(local_ray, tmp_path):
    df = synthetic_tokens("linear", {"a": 0.5, "b": 0.1}, n_rollouts=12, length_range=(20, 40), seed=3)
    first = df.groupby(["prompt_id", "sample_id"]).ngroup() == 0
    head = df[first & (df["position"] < 2)]  # the first bin of rollout 0 is split over the two parts
    rest = df[~(first & (df["position"] < 2))]
    ds = write_synthetic_dataset(tmp_path / "split", [head, rest])  # rollout 0's tokens in both parts
    one = aggregate_bins(ds.root, "kl_reverse", BinSpec(bins=4), engine="ray", ray_tasks=1)  # one task: fine
    # in-process, 2 threads shard the 2 parts, see the split and fall back to one query: the same numbers
    _assert_same_stats(one, aggregate_bins(ds.root, "kl_reverse", BinSpec(bins=4), threads=2))
    _assert_same_stats(one, aggregate_bins(ds.root, "kl_reverse", BinSpec(bins=4), threads=1))
    with pytest.raises(DatasetError, match="two shards"):
        aggregate_bins(ds.root, "kl_reverse", BinSpec(bins=4), engine="ray", ray_tasks=2)


def test_ray_engine_needs_a_dataset_folder_and_ray(dataset, monkeypatch):
    df = synthetic_tokens("linear", {"a": 0.5, "b": 0.1}, n_rollouts=4, seed=1)
    with pytest.raises(ConfigError, match="dataset folder"):
        aggregate_bins(df, "kl_reverse", engine="ray")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"drift-opd\[ray\]"):
        aggregate_bins(dataset.root, "kl_reverse", engine="ray")
    with pytest.raises(ConfigError, match="engine"):
        aggregate_bins(dataset.root, "kl_reverse", engine="spark")
    with pytest.raises(ConfigError, match="engine"):
        FitConfig(dataset="x", metric=("kl_reverse",), out="y", engine="spark")


def test_shards_are_contiguous_and_cover_every_part():
    for n, k in ((1, 1), (8, 3), (8, 8), (5, 20), (100, 7)):
        shards = shard_parts(n, k)
        assert [p for s in shards for p in s] == list(range(n))
        assert len(shards) == min(n, k) and all(s == list(range(s[0], s[-1] + 1)) for s in shards)


# ------------------------------------------------------------------------- the fold both engines share (no Ray)


def _rows(dataset, spec: BinSpec) -> tuple[pa.Table, list[str]]:
    src = open_tokens(dataset.root, metrics=METRICS[:1])
    con = src.connect()
    try:
        plan = plan_bins(src, con, METRICS[:1], spec)
        rows = con.sql(rollout_sql(plan)).to_arrow_table()
    finally:
        con.close()
    return rows, plan.dims


def test_the_fold_does_not_depend_on_the_order_of_its_rows(dataset):
    rows, dims = _rows(dataset, BinSpec(bins=6, strata="quantiles:2", group_by=("finished",)))
    ref = fold_rollouts(rows, dims, 1)
    rng = np.random.default_rng(0)
    for _ in range(3):  # shuffled rows, and rows in chunks (as from several tasks): the same bits
        shuffled = rows.take(pa.array(rng.permutation(rows.num_rows)))
        for t in (shuffled, pa.concat_tables([shuffled.slice(0, 100), shuffled.slice(100)])):
            assert fold_rollouts(t, dims, 1).equals(ref)


def test_the_fold_adds_a_clusters_rollouts_one_by_one_in_key_order(dataset):
    rows, dims = _rows(dataset, BinSpec(bins=6, step="pool"))  # one cell
    assert dims == []
    out = fold_rollouts(rows, dims, 1).to_pandas()
    df = rows.to_pandas()
    clusters = sorted(df["ck"].unique())
    assert len(out) == len(df.groupby(["ck", "bin"]))
    for (ck, b), g in df.groupby(["ck", "bin"]):
        row = out[(out["rid"] == clusters.index(ck)) & (out["bin"] == b)]
        g = g.sort_values("rk")
        want = {c: 0.0 for c in "sqxw"}
        for c in want:
            for v in g[f"{c}0"].fillna(0.0):
                want[c] += float(v)  # naive: left to right, rollout-key order
            assert row[f"{c}0"].iloc[0] == want[c], (ck, b, c)  # exact
        assert row["n0"].iloc[0] == g["n0"].sum() and row["r0"].iloc[0] == (g["n0"] > 0).sum()
    # f: each rollout's first bin with a value, so that summed over bins it counts the cluster's rollouts
    firsts = df[df["n0"] > 0].groupby("rk")["bin"].min()
    per_cluster = out.groupby("rid")["f0"].sum()
    want = df.groupby("ck")["rk"].nunique()
    np.testing.assert_array_equal(per_cluster.to_numpy(), want.loc[clusters].to_numpy())
    assert int(out["f0"].sum()) == len(firsts)


def test_the_default_engine_is_deterministic(dataset):
    spec = BinSpec(bins=6, strata="quantiles:2", group_by=("finished",))
    a = aggregate_bins(dataset.root, METRICS, spec, threads=1)  # one query
    for threads in (2, 3, 8):  # one single-threaded query per shard of parts, in parallel threads
        _assert_same_stats(a, aggregate_bins(dataset.root, METRICS, spec, threads=threads))
    b = aggregate_bins(pd.concat([synthetic_tokens("linear", {"a": 0.5, "b": 0.1}, n_rollouts=20, seed=s,
                                                   rollout_offset=20 * s) for s in range(3)]), METRICS, spec)
    assert b.n_tokens > 0  # an in-memory table: one query
    c = aggregate_bins(dataset.root, METRICS, spec, background_quantiles=True)
    pd.testing.assert_frame_equal(c.table(n_boot=50), a.table(n_boot=50), check_exact=True)
