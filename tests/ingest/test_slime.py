"""``drift import slime``: slime's --dump-details folder, written here in slime's real layout.

The v2 train dump mirrors ``slime/observability/train_data_utils.py::_build_dump_payload`` (THUDM/slime 624b824):
``{format_version: 2, rollout_id, rank, samples, dp_shards, raw_reward}`` with per-sample tensors; the rollout dump
mirrors ``save_debug_rollout_data`` (``{rollout_id, samples: [Sample.to_dict()]}``); the older per-rank layout
mirrors ``slime/utils/train_dump_utils.py`` before 681b3ad (``{rollout_id, rank, rollout_data}``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drift.errors import AlignmentError, InputFormatError
from drift.ingest import ImportConfig, import_from_config
from drift.store import open_dataset
from tests.helpers import make_tiny_tokenizer
from tests.ingest.fixtures import make_rollouts


class NotData:
    """A Python object: torch.load(weights_only=True) refuses to rebuild it."""

    def __init__(self) -> None:
        self.x = 1


@pytest.fixture(scope="module")
def rollouts(models):
    _, _, S, T = models
    return make_rollouts(S, T, np.random.default_rng(11), n_prompts=6, samples=2)


def _f32(x) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=torch.float32)


def _train_sample(r, pos: int, dp_rank: int, *, teacher: bool = True) -> dict:
    """One entry of v2 ``samples``: what _build_dump_payload transposes out of a DP shard's rollout_data."""
    tokens = torch.tensor(r.prompt_ids + r.response_ids, dtype=torch.long)
    n = len(r.response_ids)
    s, t = _f32(r.student_lp), _f32(r.teacher_lp)
    out = {"data_parallel_rank": dp_rank, "sample_index": 1000 + pos, "rollout_position": pos, "tokens": tokens,
           "response_lengths": n, "rewards": 0.0, "truncated": 0 if r.finished else 1,
           "loss_masks": torch.ones(n, dtype=torch.int32), "rollout_ids": pos,  # batch-local: 0..n-1 in every file
           "rollout_mask_sums": torch.tensor(float(n)), "rollout_log_probs": _f32(r.rollout_lp),
           "source_names": "unknown", "total_lengths": len(tokens), "local_raw_reward": r.reward, "log_probs": s,
           "ref_log_probs": s.clone(), "kl": torch.zeros(n), "entropy": torch.rand(n)}
    if teacher:
        out.update(teacher_log_probs=t, opd_reverse_kl=s - t, advantages=0.5 - (s - t), returns=torch.zeros(n))
    return out


def _write_step(root: Path, rid: int, rows, *, teacher: bool = True, dump: bool = True, **sample_over) -> Path:
    """train_data/{rid}.pt (v2, two DP shards, samples sorted by rollout_position) and rollout_data/{rid}.pt."""
    samples = [_train_sample(r, i, i % 2, teacher=teacher) for i, r in enumerate(rows)]
    for i, over in sample_over.items():
        samples[int(i.lstrip("s"))].update(over)
    shards = [{"rank": 2 * d, "data_parallel_rank": d, "sample_indices": [1000 + i for i in range(d, len(rows), 2)],
               "partition": list(range(d, len(rows), 2)), "micro_batch_indices": [[0]], "num_microbatches": [1],
               "global_batch_sizes": [len(rows)]} for d in (0, 1)]
    payload = {"format_version": 2, "rollout_id": rid, "rank": 0, "samples": samples, "dp_shards": shards,
               "raw_reward": [r.reward for r in rows]}
    (root / "train_data").mkdir(parents=True, exist_ok=True)
    path = root / "train_data" / f"{rid}.pt"
    torch.save(payload, path)
    if dump:
        _write_rollout_dump(root, rid, rows, teacher=teacher)
    return path


def _write_rollout_dump(root: Path, rid: int, rows, *, teacher: bool = True) -> None:
    """rollout_data/{rid}.pt: save_debug_rollout_data's {rollout_id, samples: [Sample.to_dict()]}."""
    (root / "rollout_data").mkdir(parents=True, exist_ok=True)
    entries = [{"group_index": 50 + i // 2, "index": 1000 + i, "rollout_id": None,
                "prompt": f"prompt {r.prompt_id}", "tokens": r.prompt_ids + r.response_ids,
                "multimodal_inputs": None, "response": f"resp {i}",
                "response_length": len(r.response_ids), "label": "4", "reward": r.reward, "loss_mask": None,
                "weight_versions": ["1"], "rollout_log_probs": r.rollout_lp.tolist(), "remove_sample": False,
                "teacher_log_probs": _f32(r.teacher_lp) if teacher else None,
                "status": "completed" if r.finished else "truncated", "metadata": {}, "train_metadata": None,
                "spec_info": {"spec_accept_token_num": 0, "spec_draft_token_num": 0, "spec_verify_ct": 0,
                              "completion_token_num": 0},
                "prefix_cache_info": {"cached_tokens": 0, "total_prompt_tokens": 0}}
               for i, r in enumerate(rows)]
    torch.save({"rollout_id": rid, "samples": entries}, root / "rollout_data" / f"{rid}.pt")


def _dump_dir(tmp_path: Path, rollouts, **kw) -> Path:
    root = tmp_path / "dump"
    # numeric order: 10.pt after 3.pt (name order would put it first)
    _write_step(root, 3, rollouts[:6], **kw)
    _write_step(root, 10, rollouts[6:], **kw)
    make_tiny_tokenizer().save_pretrained(root / "tokenizer")
    return root


def _cfg(tmp_path: Path, path: Path, **kw) -> ImportConfig:
    from drift.collect.config import ScoringOptions

    kw.setdefault("out", str(tmp_path / "out"))
    kw.setdefault("run_id", "run")
    return ImportConfig(source="slime", path=str(path), scoring=ScoringOptions(progress=False), **kw)


def _rows(ds):
    return ds.read("tokens").to_pandas(), ds.read("rollouts").to_pandas()


def _check_values(tok, roll, expected: dict[int, list]) -> None:
    for step, rows in expected.items():
        for r in rows:
            ro = roll[(roll.step == step) & roll.student_prompt_ids.map(lambda p, r=r: list(p) == r.prompt_ids)
                      & roll.response_ids.map(lambda p, r=r: list(p) == r.response_ids)]
            assert len(ro) == 1, (step, r.prompt_id)
            ro = ro.iloc[0]
            t = tok[(tok.step == step) & (tok.prompt_key == ro.prompt_key) & (tok.sample_id == ro.sample_id)]
            t = t.sort_values("position")
            assert list(t.token_id) == r.response_ids
            np.testing.assert_allclose(t.student_logprob, r.student_lp, rtol=0, atol=1e-6)
            np.testing.assert_allclose(t.teacher_logprob, r.teacher_lp, rtol=0, atol=1e-6)
            np.testing.assert_allclose(t.rollout_logprob, r.rollout_lp, rtol=0, atol=1e-6)
            np.testing.assert_allclose(t.advantage, r.teacher_lp - r.student_lp, atol=1e-5)  # drift's sign
            assert t.loss_mask.all() and ro.reward == r.reward


def test_v2_dump_exact_values_steps_grouping_and_checks(tmp_path, models, rollouts):
    s, t, _, _ = models
    root = _dump_dir(tmp_path, rollouts)
    torch.save({"rollout_id": 3, "samples": []}, root / "rollout_data" / "eval_3.pt")
    ds = import_from_config(_cfg(tmp_path, root, student=str(s), teacher=str(t)))
    tok, roll = _rows(ds)
    assert sorted(roll.step.unique()) == [3, 10]  # the file's rollout_id, never the batch-local rollout_ids
    assert [p["source"]["file"] for p in ds.manifest["parts"]] == ["train_data/3.pt", "train_data/10.pt"]
    _check_values(tok, roll, {3: rollouts[:6], 10: rollouts[6:]})
    # the two samples of a prompt share a prompt key (hash of the prompt ids) and get sample ids 0, 1
    assert roll.groupby("prompt_key").size().eq(2).all() and roll.prompt_key.nunique() == 6
    assert sorted(roll.groupby("prompt_key").sample_id.apply(sorted).map(tuple).unique()) == [(0, 1)]
    # the rollout dump gives status and text
    for i, r in enumerate(rollouts[:6]):
        ro = roll[(roll.step == 3) & roll.response_text.eq(f"resp {i}")].iloc[0]
        assert ro.prompt == f"prompt {r.prompt_id}" and ro.finished == r.finished and ro.truncated != r.finished
    meta, notes = ds.metadata, ds.config["source"]["notes"]
    assert meta["support"] == "sampled" and meta["has_teacher"] and meta["source_format"] == "slime"
    assert meta["teacher_source"] == "slime_dump" and meta["temperature"] is None
    assert ds.config["tokenizer"]["source"] == str(root / "tokenizer")
    assert notes["eval_dumps_skipped"] == ["eval_3.pt"] and "format_version 2" in notes["layout"]
    assert notes["opd_reverse_kl"]["agrees_with"] == "log_probs - teacher_log_probs"
    assert notes["advantages"]["pure_distillation"] is False and "reference model" in notes["kl"]
    checks = ds.manifest["checks"]
    assert checks["student"]["verdict"] == "ok" and checks["teacher"]["verdict"] == "ok"
    assert checks["sign"]["verdict"] == "ok"
    with pytest.raises(AlignmentError, match="does not match the student"):  # the check can fail
        import_from_config(_cfg(tmp_path, root, student=str(t), out=str(tmp_path / "wrong")))


def test_without_rollout_dump_or_teacher(tmp_path, rollouts):
    root = _dump_dir(tmp_path, rollouts, teacher=False, dump=False)
    ds = import_from_config(_cfg(tmp_path, root / "train_data"))  # the train_data folder works too
    tok, roll = _rows(ds)
    assert {"student_logprob", "rollout_logprob"} <= set(tok.columns)
    assert not {"teacher_logprob", "advantage", "k1", "k3"} & set(tok.columns)
    assert ds.metadata["has_teacher"] is False
    notes = ds.config["source"]["notes"]
    assert notes["teacher_logprob"].startswith("absent") and notes["rollout_dump"].startswith("absent")
    assert any("no teacher_log_probs" in m for m in ds.metadata["missing_analyses"])
    # rewards from the train dump itself, finished = not truncated; text decoded with DIR/tokenizer
    for r in rollouts[:6]:
        ro = roll[(roll.step == 3) & roll.response_ids.map(lambda p, r=r: list(p) == r.response_ids)].iloc[0]
        assert ro.reward == r.reward and ro.finished == r.finished and ro.prompt.startswith("<bos>")


def test_opd_reverse_kl_of_the_other_sign_is_recorded_not_fatal(tmp_path, rollouts):
    root = tmp_path / "d"
    over = {f"s{i}": {"opd_reverse_kl": _f32(r.teacher_lp - r.student_lp)} for i, r in enumerate(rollouts[:4])}
    _write_step(root, 0, rollouts[:4], **over)
    notes = import_from_config(_cfg(tmp_path, root)).config["source"]["notes"]
    assert notes["opd_reverse_kl"]["agrees_with"] is None and "neither" in notes["opd_reverse_kl"]["meaning"]


def test_pickle_needed_names_allow_pickle(tmp_path, rollouts):
    root = tmp_path / "d"
    _write_step(root, 0, rollouts[:4], s1={"metadata": NotData()})
    with pytest.raises(InputFormatError, match=r"0\.pt holds Python objects.*--allow-pickle"):
        import_from_config(_cfg(tmp_path, root))
    assert not (tmp_path / "out").exists()
    ds = import_from_config(_cfg(tmp_path, root, allow_pickle=True))  # the user trusts the file
    assert ds.manifest["n_rollouts"] == 4


def test_truncated_and_malformed_files_name_file_sample_and_key(tmp_path, rollouts):
    root = tmp_path / "d"
    path = _write_step(root, 0, rollouts[:4])
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputFormatError, match=r"train_data/0\.pt cannot be read.*truncated"):
        import_from_config(_cfg(tmp_path, root))
    cases = [({"s2": {"tokens": None}}, r"0\.pt samples\[2\]: missing 'tokens'"),
             ({"s1": {"teacher_log_probs": torch.zeros(2)}}, r"samples\[1\] 'teacher_log_probs': 2 entries but"),
             ({"s0": {"total_lengths": 99}}, r"samples\[0\] 'total_lengths'"),
             ({"s3": {"log_probs": torch.zeros(2, 2)}}, r"samples\[3\] 'log_probs': expected a 1-D")]
    for over, match in cases:
        _write_step(root, 0, rollouts[:4], **over)
        with pytest.raises(InputFormatError, match=match):
            import_from_config(_cfg(tmp_path, root, out=str(tmp_path / "o")))
    torch.save({"format_version": 3, "rollout_id": 0, "samples": []}, path)
    with pytest.raises(InputFormatError, match="format_version 3: drift reads"):
        import_from_config(_cfg(tmp_path, root, out=str(tmp_path / "o")))


def test_rollout_dump_of_another_run_is_refused(tmp_path, rollouts):
    root = tmp_path / "d"
    _write_step(root, 0, rollouts[:4])
    other = torch.load(root / "rollout_data" / "0.pt", weights_only=True)
    other["samples"][1]["tokens"] = [1, 2, 3]
    torch.save(other, root / "rollout_data" / "0.pt")
    with pytest.raises(InputFormatError, match=r"samples\[1\] and .*rollout_data/0\.pt samples\[1\] hold different"):
        import_from_config(_cfg(tmp_path, root))


def test_malformed_second_file_then_resume(tmp_path, rollouts):
    root = _dump_dir(tmp_path, rollouts, s4={"response_lengths": None})
    _write_step(root, 3, rollouts[:6])  # the first file is fine, the second (10.pt) lacks a key
    cfg = _cfg(tmp_path, root, part_size=4)
    with pytest.raises(InputFormatError, match=r"(?s)10\.pt samples\[4\]: missing 'response_lengths'.*resume"):
        import_from_config(cfg)
    failed = open_dataset(cfg.out)
    assert failed.manifest["status"] == "failed" and failed.manifest["n_rollouts"] == 6
    _write_step(root, 10, rollouts[6:])
    done = import_from_config(_cfg(tmp_path, root, part_size=4, if_exists="resume"))
    ref = import_from_config(_cfg(tmp_path, root, part_size=4, out=str(tmp_path / "ref")))
    assert done.manifest["status"] == "complete" and done.manifest["n_rollouts"] == len(rollouts)
    (a, ra), (b, _) = _rows(done), _rows(ref)
    assert len(a) == len(b) and not ra.duplicated(["step", "prompt_key", "sample_id"]).any()
    key = ["step", "prompt_key", "sample_id", "position"]
    a, b = a.sort_values(key), b.sort_values(key)
    np.testing.assert_array_equal(a[[*key, "token_id"]].to_numpy(), b[[*key, "token_id"]].to_numpy())
    np.testing.assert_array_equal(a.student_logprob.to_numpy(), b.student_logprob.to_numpy())


def _v1_columns(rows, positions, *, log_probs: bool = True, cp_chunk: bool = False) -> dict:
    """One rank's rollout_data in the older layout: DP-local per-sample columns (dict of lists)."""
    rd = {"tokens": [torch.tensor(rows[i].prompt_ids + rows[i].response_ids) for i in positions],
          "response_lengths": [len(rows[i].response_ids) for i in positions],
          "total_lengths": [len(rows[i].prompt_ids) + len(rows[i].response_ids) for i in positions],
          "rewards": [0.0 for _ in positions], "raw_reward": [r.reward for r in rows],  # the whole batch
          "local_raw_reward": [rows[i].reward for i in positions],
          "truncated": [0 if rows[i].finished else 1 for i in positions],
          "loss_masks": [torch.ones(len(rows[i].response_ids), dtype=torch.int32) for i in positions],
          "sample_indices": [1000 + i for i in positions], "rollout_ids": list(range(len(positions))),
          "rollout_log_probs": [_f32(rows[i].rollout_lp) for i in positions],
          "teacher_log_probs": [_f32(rows[i].teacher_lp) for i in positions],
          "micro_batch_indices": [[0, 1]], "num_microbatches": [1], "global_batch_sizes": [len(rows)]}
    if log_probs:
        lp = [_f32(rows[i].student_lp) for i in positions]
        rd["log_probs"] = [x[: (len(x) + 1) // 2] for x in lp] if cp_chunk else lp
    return rd


def test_older_per_rank_layout_keeps_each_sample_once(tmp_path, rollouts):
    root = tmp_path / "old"
    (root / "train_data").mkdir(parents=True)
    # PP=2 x DP=2 x TP=2 over 8 ranks: ranks 0-3 are the first pipeline stage (no log_probs), 4,5 hold DP shard 0
    # (two TP copies), 6,7 DP shard 1
    for rid, rows in ((2, rollouts[:6]), (7, rollouts[6:])):
        for rank in range(8):
            positions = list(range(0, 6, 2)) if rank in (0, 1, 4, 5) else list(range(1, 6, 2))
            cols = _v1_columns(rows, positions, log_probs=rank >= 4)
            torch.save({"rollout_id": rid, "rank": rank, "rollout_data": cols},
                       root / "train_data" / f"{rid}_{rank}.pt")
    _write_rollout_dump(root, 2, rollouts[:6])  # joined by sample_index = Sample.index (no rollout_position)
    ds = import_from_config(_cfg(tmp_path, root))
    tok, roll = _rows(ds)
    assert ds.manifest["n_rollouts"] == len(rollouts) and sorted(roll.step.unique()) == [2, 7]
    _check_values(tok, roll, {2: rollouts[:6], 7: rollouts[6:]})
    assert sorted(roll[roll.step == 2].response_text) == [f"resp {i}" for i in range(6)]
    assert roll[roll.step == 7].response_text.str.startswith("resp").sum() == 0  # no dump: decoded ids
    assert "older per-rank" in ds.config["source"]["notes"]["layout"]
    assert ds.config["source"]["notes"]["student_logprob"].startswith("log_probs")
    # context parallelism: each rank kept only its chunk of the response
    cp = tmp_path / "cp"
    (cp / "train_data").mkdir(parents=True)
    torch.save({"rollout_id": 0, "rank": 0, "rollout_data": _v1_columns(rollouts, [0, 1], cp_chunk=True)},
               cp / "train_data" / "0_0.pt")
    with pytest.raises(InputFormatError, match=r"0_0\.pt samples\[0\] 'log_probs'.*without context parallelism"):
        import_from_config(_cfg(tmp_path, cp, out=str(tmp_path / "o")))
    torch.save({"rollout_id": 0, "rank": 0, "stuff": {}}, cp / "train_data" / "0_0.pt")
    with pytest.raises(InputFormatError, match="drift reads those two slime train-dump layouts"):
        import_from_config(_cfg(tmp_path, cp, out=str(tmp_path / "o")))


def test_cli_imports_one_train_file_given_directly(tmp_path, rollouts):
    from drift.cli import main

    path = _write_step(tmp_path / "d", 5, rollouts[:4], dump=False)
    custom = path.rename(path.with_name("train_5.pt"))  # --save-debug-train-data takes any template
    out = tmp_path / "one"
    assert main(["import", "slime", str(custom), "--out", str(out), "--progress", "false"]) == 0
    ds = open_dataset(out)
    assert ds.manifest["n_rollouts"] == 4 and set(ds.read("rollouts").column("step").to_pylist()) == {5}
    assert main(["import", "slime", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
