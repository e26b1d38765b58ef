"""Collect per-token drift data: sample student rollouts, score them with student and teacher, write parquet."""
