"""A quick look at a collected dataset: main metrics by relative-position decile (DuckDB, no full load)."""

from __future__ import annotations

import pandas as pd

from drift.store import DriftDataset

__all__ = ["decile_table"]

_MAIN = ("kl_reverse", "k3", "advantage", "teacher_top1", "argmax_agree", "cum_abs_gap_frac",
         "oracle_teacher_correct", "oracle_prefix_ok")


def decile_table(ds: DriftDataset) -> pd.DataFrame:
    """Token-mean of the main metrics per relative-position decile (d0 = first 10% of each response).

    Columns present in the dataset only; booleans become rates. Rows: deciles; plus token and rollout counts.
    """
    con = ds.duckdb()
    names = {r[0] for r in con.execute("DESCRIBE tokens").fetchall()}
    metrics = [m for m in _MAIN if m in names]
    aggs = ", ".join(f"avg(CAST({m} AS DOUBLE)) AS {m}" for m in metrics)
    sql = f"""
        SELECT least(CAST(floor(rel_position * 10) AS INTEGER), 9) AS decile, {aggs},
               count(*) AS n_tokens,
               count(DISTINCT (run_id, step, prompt_id, sample_id)) AS n_rollouts
        FROM tokens GROUP BY decile ORDER BY decile"""
    df = con.execute(sql).df()
    df["decile"] = [f"{10 * d}-{10 * d + 10}%" for d in df["decile"]]
    return df.set_index("decile")
