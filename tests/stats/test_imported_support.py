"""Statistics on what an import holds: derived per-token columns binned like stored ones, and the support hint of a
metric the dataset's support cannot give."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from drift.errors import SchemaError
from drift.schema import with_drift_metadata
from drift.stats import BinSpec, aggregate_bins
from drift.stats.reader import open_tokens


def token_frame(rng: np.random.Generator, n_prompts: int = 12, samples: int = 2) -> pd.DataFrame:
    rows = []
    for p in range(n_prompts):
        for s in range(samples):
            T = int(rng.integers(5, 15))  # >= 5 tokens: one in each of 5 relative bins
            student = rng.normal(-1.0, 0.5, T).astype(np.float32)
            sampler = (student - 0.5 * np.arange(T) / T + rng.normal(0, 0.05, T)).astype(np.float32)
            for t in range(T):
                rows.append({"run_id": "r", "step": 0, "prompt_id": f"p{p}", "sample_id": s, "prompt_key": f"r/id:p{p}",
                             "position": t, "response_len": T, "rel_position": t / T,
                             "student_logprob": student[t], "rollout_logprob": sampler[t]})
    return pd.DataFrame(rows).astype({"student_logprob": "float32", "rollout_logprob": "float32",
                                      "position": "int32", "response_len": "int32"})


DERIVED = {"gap": "CAST(student_logprob AS DOUBLE) - CAST(rollout_logprob AS DOUBLE)",
           "outside": "abs(exp(CAST(student_logprob AS DOUBLE) - CAST(rollout_logprob AS DOUBLE)) - 1) > 0.2"}


def test_derived_columns_bin_like_stored_ones(rng):
    df = token_frame(rng)
    src = open_tokens(df, derived=DERIVED)
    assert src.schema.field("gap").type == pa.float64() and src.schema.field("outside").type == pa.bool_()
    B = 5
    table = aggregate_bins(src, ["gap", "outside"], BinSpec(by="rel", bins=B, step="pool")).table(n_boot=200)
    gap = df["student_logprob"].astype(np.float64) - df["rollout_logprob"].astype(np.float64)
    outside = np.abs(np.exp(gap) - 1) > 0.2
    b = np.minimum(np.floor(df["rel_position"] * B), B - 1).astype(int)
    for metric, values in (("gap", gap), ("outside", outside.astype(float))):
        got = table[table["metric"] == metric].sort_values("bin")
        expected = pd.Series(np.asarray(values, float)).groupby(b.to_numpy()).mean()
        np.testing.assert_allclose(got["mean"].to_numpy(), expected.to_numpy(), rtol=1e-9)
        np.testing.assert_array_equal(got["n_tokens"].to_numpy(), np.bincount(b, minlength=B))
        assert (got["ci_low"] <= got["mean"]).all() and (got["mean"] <= got["ci_high"]).all()
        np.testing.assert_array_equal(got["n_clusters"].to_numpy(), df.groupby(b.to_numpy())["prompt_id"].nunique())
        assert (got["cluster"] == "prompt").all()
    # the sampler lags more and more behind: the gap rises with position and so does the share outside the band
    means = table[table["metric"] == "gap"].sort_values("bin")["mean"].to_numpy()
    assert means[-1] > means[0] + 0.2
    # a TokenSource handed back keeps its derived columns (aggregate_bins re-opens it)
    again = open_tokens(src, metrics=["gap"])
    assert dict(again.derived) == DERIVED


def test_derived_columns_on_a_dataset_keep_its_metadata(rng, tmp_path):
    import pyarrow.parquet as pq

    from drift.schema import read_drift_metadata

    df = token_frame(rng, n_prompts=3, samples=1)
    table = pa.Table.from_pandas(df, preserve_index=False)
    (tmp_path / "ds" / "tokens").mkdir(parents=True)
    pq.write_table(table.replace_schema_metadata(with_drift_metadata(table.schema, {"support": "sampled"}).metadata),
                   tmp_path / "ds" / "tokens" / "part-00000.parquet")
    src = open_tokens(tmp_path / "ds", derived={"gap": DERIVED["gap"]})
    assert read_drift_metadata(src.schema)["support"] == "sampled"  # the hints still know the support
    con = src.connect()
    got = con.sql("SELECT gap FROM tokens ORDER BY prompt_id, position").fetchnumpy()["gap"]
    con.close()
    want = df.sort_values(["prompt_id", "position"])
    np.testing.assert_allclose(got, want["student_logprob"].astype(float) - want["rollout_logprob"].astype(float))


def test_bad_derived_columns_are_named(rng):
    df = token_frame(rng, n_prompts=2, samples=1)
    with pytest.raises(SchemaError, match="gap = nope - 1"):
        open_tokens(df, derived={"gap": "nope - 1"})
    with pytest.raises(ValueError, match="already exist"):
        open_tokens(df, derived={"student_logprob": "1"})


def test_absent_metric_of_a_sampled_import_names_the_command(rng):
    df = token_frame(rng, n_prompts=2, samples=1)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(with_drift_metadata(table.schema, {"support": "sampled",
                                                                             "has_teacher": True}).metadata)
    with pytest.raises(SchemaError) as err:
        aggregate_bins(table, ["kl_reverse", "teacher_top1"], BinSpec(bins=2))
    text = str(err.value)
    assert "needs full-vocabulary scoring" in text and "support='sampled'" in text and "drift score" in text
    assert "teacher_top1" in text and "drift import vllm" in text
