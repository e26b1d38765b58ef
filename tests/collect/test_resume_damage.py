"""Resume over damaged parts equals an uninterrupted run; reading damage is a typed error; no half-made --out."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

import drift.collect.pipeline as pipeline
from drift.collect.config import CollectConfig, ScoringOptions
from drift.collect.pipeline import collect
from drift.collect.prompts import PromptRecord
from drift.errors import DamagedPartError
from drift.store import DatasetWriter, open_dataset

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")

KEYS = {"tokens": ["prompt_id", "sample_id", "position"], "rollouts": ["prompt_id", "sample_id"]}


def _prompts(n: int = 6) -> list[PromptRecord]:
    return [PromptRecord(id=f"p{i}", prompt=" ".join(f"w{(5 * i + j) % 90}" for j in range(2 + i % 3)),
                         answer=str(i)) for i in range(n)]


def _cfg(out, **kw) -> CollectConfig:
    scoring = ScoringOptions(progress=False, chunk_size=8, num_threads=1)
    base = dict(out=str(out), student="s", teacher="t", prompts="p.jsonl", samples_per_prompt=2,
                max_new_tokens=8, part_size=4, seed=5, run_id="run", chat_template="never", scoring=scoring)
    base.update(kw)
    return CollectConfig(**base)


@pytest.fixture(scope="module")
def uninterrupted(tiny_pair, tiny_tokenizer, tmp_path_factory):
    ds = collect(*tiny_pair, tiny_tokenizer, _prompts(), _cfg(tmp_path_factory.mktemp("whole") / "run"))
    assert len(ds.manifest["parts"]) == 3
    return ds


def _assert_same_rows(a, b) -> None:
    for table, key in KEYS.items():
        x = a.to_pandas(table).sort_values(key).reset_index(drop=True)
        y = b.to_pandas(table).sort_values(key).reset_index(drop=True)
        assert not y.duplicated(subset=key).any()
        pd.testing.assert_frame_equal(x, y)


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _dropper(column: str):
    def drop(path) -> None:
        pq.write_table(pq.read_table(path).drop([column]), path)

    return drop


DAMAGES = {
    "truncated tokens": ("tokens", _truncate, "truncated"),
    "tokens without kl_reverse": ("tokens", _dropper("kl_reverse"), "missing column 'kl_reverse'"),
    "tokens without teacher_argmax": ("tokens", _dropper("teacher_argmax"), "missing column 'teacher_argmax'"),
    "rollouts without response_ids": ("rollouts", _dropper("response_ids"), "missing column 'response_ids'"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_over_a_damaged_part_equals_an_uninterrupted_run(uninterrupted, tiny_pair, tiny_tokenizer, tmp_path,
                                                               damage):
    table, damage_fn, phrase = DAMAGES[damage]
    out = tmp_path / "run"
    collect(*tiny_pair, tiny_tokenizer, _prompts(), _cfg(out))
    part = out / table / "part-00001.parquet"
    damage_fn(part)

    with pytest.raises(DamagedPartError) as err:  # reading names the part, the problem and the repair
        open_dataset(out).to_pandas("tokens" if table == "tokens" else "rollouts")
    msg = str(err.value)
    assert f"{part}: {phrase}" in msg
    assert f"drift collect --out {out} --student s --teacher t --prompts p.jsonl" in msg
    assert err.value.repair is not None and err.value.repair.endswith("--if-exists resume")

    done = collect(*tiny_pair, tiny_tokenizer, _prompts(), _cfg(out, if_exists="resume"))
    assert done.manifest["status"] == "complete" and done.manifest["resumed"] == 1
    assert [p["index"] for p in done.manifest["parts"]] == [0, 1, 2]
    assert done.manifest["n_tokens"] == uninterrupted.manifest["n_tokens"]
    assert done.verify() == []
    _assert_same_rows(uninterrupted, done)


def test_a_failure_before_the_first_part_leaves_no_out(uninterrupted, tiny_pair, tiny_tokenizer, tmp_path,
                                                       monkeypatch):
    out = tmp_path / "run"

    def broken(*args, **kwargs):
        raise RuntimeError("the model failed")

    monkeypatch.setattr(pipeline, "sample_responses", broken)
    with pytest.raises(RuntimeError, match="the model failed"):
        collect(*tiny_pair, tiny_tokenizer, _prompts(), _cfg(out))
    assert not out.exists()
    monkeypatch.undo()
    again = collect(*tiny_pair, tiny_tokenizer, _prompts(), _cfg(out))  # --if-exists fail: no overwrite needed
    _assert_same_rows(uninterrupted, again)


def test_a_failure_after_a_part_keeps_the_folder(uninterrupted, tiny_pair, tiny_tokenizer, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real = DatasetWriter.write_part
    state = {"n": 0}

    def once(self, index, rollouts, tokens):
        if state["n"] == 1:
            raise RuntimeError("disk full")
        state["n"] += 1
        return real(self, index, rollouts, tokens)

    monkeypatch.setattr(DatasetWriter, "write_part", once)
    with pytest.raises(RuntimeError, match="disk full"):
        collect(*tiny_pair, tiny_tokenizer, _prompts(), _cfg(out))
    monkeypatch.undo()
    half = open_dataset(out)
    assert half.manifest["status"] == "interrupted" and len(half.manifest["parts"]) == 1 and half.verify() == []
    done = collect(*tiny_pair, tiny_tokenizer, _prompts(), _cfg(out, if_exists="resume"))
    _assert_same_rows(uninterrupted, done)
