"""NeMo RL step dumps: ``train_data_step{N}.jsonl`` written in the real layout (values wrapped in a batch dimension
of one, arrays over prompt + response padded to the batch maximum, log-probs aligned with the tokens), imported with
exact per-token values; the padding / alignment traps, --advantages distillation and its refusals, bad lines."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from drift.errors import AlignmentError, DriftWarning, InputFormatError
from drift.ingest import ImportConfig, import_from_config
from tests.ingest.fixtures import make_rollouts

PAD = 0  # the tiny tokenizer's pad id: NeMo pads token_ids with tokenizer.pad_token_id, the other arrays with 0


@pytest.fixture(scope="module")
def rollouts(models):
    _, _, S, T = models
    return make_rollouts(S, T, np.random.default_rng(11), n_prompts=6, samples=2, min_len=4)


def _line(r, i: int, L: int, rng, *, hole=(), tail=(), sample_mask=1.0, adv=None, shift=False):
    """One line as Logger.log_batched_dict_as_jsonl writes it. Junk (negative, nonzero) sits at the prompt
    positions and the padding of every float array, so reading the wrong positions cannot go unseen."""
    p, n = len(r.prompt_ids), len(r.response_ids)
    ids = [*r.prompt_ids, *r.response_ids, *tail]
    total = len(ids)

    def junk(k: int) -> list[float]:
        return (-rng.uniform(3, 9, k)).tolist()

    prev = [0.0, *junk(p - 1), *r.student_lp, *junk(len(tail))]  # the trainer prepends 0 for position 0
    gen = [*junk(p), *r.rollout_lp, *junk(len(tail))]
    mask = [0] * p + [1] * n + [0] * len(tail)
    gap = r.teacher_lp - r.student_lp if adv is None else np.asarray(adv, float)
    a = [*junk(p), *gap, *junk(len(tail))]
    for j in hole:  # tool tokens between turns: not generated (vLLM entry 0), not trained (advantage masked)
        mask[p + j], gen[p + j], a[p + j] = 0, 0.0, 0.0
    if not sample_mask:
        a = [0.0] * total
    pad = L - total
    prev, gen, a = prev + junk(pad), gen + junk(pad), a + junk(pad)
    if shift:  # the classic bug: entry i holds the log-prob of token i + 1 (no 0 prepended)
        prev = prev[1:] + junk(1)
    return {"content": [["<user> w1 w2", "w3 w4"]], "rewards": [r.reward], "input_lengths": [total],
            "token_ids": [ids + [PAD] * pad], "token_loss_mask": [mask + [0] * pad],
            "sample_loss_mask": [float(sample_mask)], "advantages": [a], "generation_logprobs": [gen],
            "prev_logprobs": [prev], "idx": i}


def _step_file(path: Path, rows, *, seed: int = 0, per_row=None, extra_pad: int = 5) -> Path:
    """A step file: arrays padded to the batch maximum rounded up to 8 (make_sequence_length_divisible_by)."""
    rng = np.random.default_rng(seed)
    per_row = per_row or {}
    longest = max(len(r.prompt_ids) + len(r.response_ids) + len(per_row.get(i, {}).get("tail", ()))
                  for i, r in enumerate(rows))
    L = -(-(longest + extra_pad) // 8) * 8
    lines = [json.dumps(_line(r, i, L, rng, **per_row.get(i, {}))) for i, r in enumerate(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(x + "\n" for x in lines))
    return path


def _cfg(tmp_path, path, **kw) -> ImportConfig:
    from drift.collect.config import ScoringOptions

    kw.setdefault("out", str(tmp_path / "out"))
    return ImportConfig(source="nemo-rl", path=str(path), scoring=ScoringOptions(progress=False), **kw)


def _logdir(tmp_path, rollouts, **kw) -> Path:
    d = tmp_path / "logs" / "exp_001"
    _step_file(d / "train_data_step3.jsonl", rollouts[:6], seed=1, **kw)
    _step_file(d / "train_data_step12.jsonl", rollouts[6:], seed=2)
    (d / "val_data_step3.jsonl").write_text(json.dumps({"content": [["q", "a"]], "rewards": [1.0], "idx": 0}) + "\n")
    return d


def _by_rollout(ds, rollouts):
    """Token rows of rollout i (rows of file order: prompt p{i // 2}, sample i % 2, at step 3 or 12)."""
    tok = ds.read("tokens").to_pandas()
    roll = ds.read("rollouts").to_pandas()
    out = []
    for i, r in enumerate(rollouts):
        step = 3 if i < 6 else 12
        ro = roll[(roll.step == step) & roll.student_prompt_ids.apply(lambda x, r=r: list(x) == r.prompt_ids)
                  & (roll.sample_id == i % 2)]
        assert len(ro) == 1, (i, len(ro))
        ro = ro.iloc[0]
        rows = tok[(tok.step == step) & (tok.prompt_key == ro.prompt_key) & (tok.sample_id == ro.sample_id)]
        out.append((ro, rows.sort_values("position")))
    return out


def test_distillation_exact_values_steps_from_file_names_and_padding(tmp_path, models, rollouts):
    s, t, _, _ = models
    d = _logdir(tmp_path, rollouts)
    ds = import_from_config(_cfg(tmp_path, d, advantages="distillation", student=str(s), teacher=str(t)))
    # numeric order (step3 before step12; by name it would be the other way round); the val dump is skipped
    assert [p["source"]["file"] for p in ds.manifest["parts"]] == ["train_data_step3.jsonl", "train_data_step12.jsonl"]
    assert "val_data_step3.jsonl" in ds.config["source"]["notes"]["skipped"]
    meta = ds.metadata
    assert meta["source_format"] == "nemo-rl" and meta["support"] == "sampled" and meta["has_teacher"]
    assert meta["teacher_source"] == "nemo_prev_plus_advantage"
    checks = ds.manifest["checks"]
    assert checks["student"]["verdict"] == "ok" and checks["student"]["median_abs_diff"] < 1e-4
    assert checks["teacher"]["verdict"] == "ok" and checks["teacher"]["median_abs_diff"] < 1e-4
    assert ds.manifest["n_rollouts"] == len(rollouts)
    for (ro, rows), r in zip(_by_rollout(ds, rollouts), rollouts, strict=True):
        assert list(rows.token_id) == r.response_ids and list(ro.response_ids) == r.response_ids
        assert list(ro.student_prompt_ids) == r.prompt_ids and ro.reward == r.reward
        np.testing.assert_allclose(rows.student_logprob, r.student_lp, rtol=0, atol=1e-6)
        np.testing.assert_allclose(rows.teacher_logprob, r.teacher_lp, rtol=0, atol=1e-6)
        np.testing.assert_allclose(rows.rollout_logprob, r.rollout_lp, rtol=0, atol=1e-6)
        np.testing.assert_allclose(rows.advantage, r.teacher_lp - r.student_lp, rtol=0, atol=1e-5)
        assert rows.loss_mask.all()
    roll = ds.read("rollouts").to_pandas()
    # no prompt id in the dump (idx is the line index): the two generations of a prompt share one cluster key
    assert roll.groupby("step").prompt_key.nunique().tolist() == [3, 3]
    assert (roll.groupby("prompt_key").size() == 2).all()
    assert ds.config["tokenizer"]["source"] == str(s)  # found with --student: text decoded from the ids
    assert roll.response_text.notna().all()


def test_without_advantages_no_teacher_columns_and_missing_analyses(tmp_path, rollouts):
    d = _logdir(tmp_path, rollouts)
    ds = import_from_config(_cfg(tmp_path, d))
    cols = set(ds.read("tokens").column_names)
    assert {"student_logprob", "rollout_logprob", "loss_mask"} <= cols
    assert not {"teacher_logprob", "advantage", "k1", "k3", "cum_abs_gap", "teacher_prefix_logprob"} & cols
    meta = ds.metadata
    assert meta["has_teacher"] is False and meta["teacher_source"] is None
    out = str(tmp_path / "out")
    assert any("--advantages distillation" in m and f"drift score --rollouts {out}" in m and f"--out {out}-full" in m
               for m in meta["missing_analyses"])
    for (_, rows), r in zip(_by_rollout(ds, rollouts), rollouts, strict=True):
        np.testing.assert_allclose(rows.student_logprob, r.student_lp, rtol=0, atol=1e-6)
        np.testing.assert_allclose(rows.rollout_logprob, r.rollout_lp, rtol=0, atol=1e-6)


def test_one_position_shifted_dump_is_named(tmp_path, models, rollouts):
    s, _, _, _ = models
    f = _step_file(tmp_path / "sh" / "train_data_step1.jsonl", rollouts, per_row={i: {"shift": True}
                                                                                  for i in range(len(rollouts))})
    with pytest.raises(AlignmentError, match=r"shifted by one token.*next token"):
        import_from_config(_cfg(tmp_path, f, student=str(s)))
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_multi_turn_holes_and_trailing_tokens(tmp_path, models, rollouts):
    s, _, _, _ = models
    r = next(x for x in rollouts if len(x.response_ids) >= 6)
    # turn 1 = response[:2], tool tokens response[2:4] (mask 0), turn 2 = response[4:], then a final environment
    # message of two tokens after the last generated one (mask 0, before input_lengths)
    other = next(x for x in rollouts if x.prompt_id != r.prompt_id)
    f = _step_file(tmp_path / "mt" / "train_data_step7.jsonl", [r, other],
                   per_row={0: {"hole": (2, 3), "tail": (5, 6)}})
    ds = import_from_config(_cfg(tmp_path, f, advantages="distillation", student=str(s)))
    assert ds.manifest["checks"]["student"]["verdict"] == "ok"
    tok = ds.read("tokens").to_pandas()
    roll = ds.read("rollouts").to_pandas()
    key = roll[roll.student_prompt_ids.apply(lambda x: list(x) == r.prompt_ids)].prompt_key.iloc[0]
    rows = tok[tok.prompt_key == key].sort_values("position")
    assert list(rows.token_id) == r.response_ids  # the span ends at the last trained token, not input_lengths
    assert list(rows.loss_mask) == [True, True, False, False] + [True] * (len(r.response_ids) - 4)
    np.testing.assert_allclose(rows.student_logprob, r.student_lp, rtol=0, atol=1e-6)
    at_tool = np.array([2, 3])
    expect_t = r.teacher_lp.copy()
    expect_t[at_tool] = r.student_lp[at_tool]  # advantage masked there: the teacher is not recoverable, gap 0
    np.testing.assert_allclose(rows.teacher_logprob, expect_t, rtol=0, atol=1e-6)
    expect_r = r.rollout_lp.copy()
    expect_r[at_tool] = r.student_lp[at_tool]  # vLLM's 0 at tool tokens is no log-prob
    np.testing.assert_allclose(rows.rollout_logprob, expect_r, rtol=0, atol=1e-6)


def test_sample_loss_mask_zero(tmp_path, rollouts):
    f = _step_file(tmp_path / "sm" / "train_data_step2.jsonl", rollouts, per_row={3: {"sample_mask": 0.0}})
    ds = import_from_config(_cfg(tmp_path, f))
    roll = ds.read("rollouts").to_pandas()
    tok = ds.read("tokens").to_pandas()
    assert len(roll) == len(rollouts)
    excluded = tok.groupby(["prompt_key", "sample_id"]).loss_mask.any()
    assert (~excluded).sum() == 1  # kept, marked as not trained on
    with pytest.warns(DriftWarning, match=r"1 of 12 samples dropped.*sample_loss_mask 0.*line 4"):
        dist = import_from_config(_cfg(tmp_path, f, advantages="distillation", out=str(tmp_path / "d")))
    assert dist.manifest["n_rollouts"] == len(rollouts) - 1  # its advantages were zeroed: no teacher to derive


def test_distillation_drops_overridden_and_clipped_samples(tmp_path, rollouts):
    over = rollouts[2].teacher_lp - rollouts[2].student_lp
    over[:4] = -5.0  # grpo.invalid_tool_call_advantage over a message span
    rows = {2: {"adv": over}}
    for i in (5, 8):  # two contexts clipped at advantage_clip_low = -1.5
        gap = rollouts[i].teacher_lp - rollouts[i].student_lp
        gap[1] = -1.5
        rows[i] = {"adv": np.maximum(gap, -1.5)}
    f = _step_file(tmp_path / "ov" / "train_data_step2.jsonl", rollouts, per_row=rows)
    with pytest.warns(DriftWarning, match="3 of 12 samples dropped") as caught:
        ds = import_from_config(_cfg(tmp_path, f, advantages="distillation"))
    msg = str(caught[0].message)
    assert "clipped at -1.5 (grpo.advantage_clip_low?)" in msg and "message-level advantage override" in msg
    assert ds.manifest["n_rollouts"] == 9
    with warnings.catch_warnings():  # the same file without the overrides imports every sample, silently
        warnings.simplefilter("error", DriftWarning)
        f2 = _step_file(tmp_path / "ok" / "train_data_step2.jsonl", rollouts)
        assert import_from_config(_cfg(tmp_path, f2, advantages="distillation",
                                       out=str(tmp_path / "o2"))).manifest["n_rollouts"] == 12


def _refused(tmp_path, rollouts, advs, match):
    f = _step_file(tmp_path / "rf" / "train_data_step4.jsonl", rollouts,
                   per_row={i: {"adv": a} for i, a in enumerate(advs)})
    with pytest.raises(InputFormatError, match=match) as exc:
        import_from_config(_cfg(tmp_path, f, advantages="distillation"))
    assert "train_data_step4.jsonl" in str(exc.value)
    assert not (tmp_path / "out").exists()  # checked before a line is written
    # without --advantages distillation the same file imports student and sampler log-probs
    assert import_from_config(_cfg(tmp_path, f, out=str(tmp_path / "plain"))).manifest["n_rollouts"] == 12


def test_distillation_refuses_sequence_level_advantages(tmp_path, rollouts):
    rng = np.random.default_rng(3)
    advs = [np.full(len(r.response_ids), rng.choice([-0.7, 0.7])) for r in rollouts]  # GRPO: one value per sample
    _refused(tmp_path, rollouts, advs, "sequence-level advantages")


def test_distillation_refuses_normalized_advantages(tmp_path, rollouts):
    gaps = [r.teacher_lp - r.student_lp for r in rollouts]
    flat = np.concatenate(gaps)
    _refused(tmp_path, rollouts, [(g - flat.mean()) / flat.std() for g in gaps], "normalized")


def test_distillation_refuses_reward_advantages_mixed_in(tmp_path, rollouts):
    advs = [r.teacher_lp - r.student_lp + (5.0 if r.reward else -5.0) for r in rollouts]  # RLVR + MOPD
    _refused(tmp_path, rollouts, advs, r"prev_logprobs \+ advantages is > 0")



@pytest.mark.parametrize(("edit", "match"), [
    (lambda o: {"content": o["content"], "input_lengths": o["input_lengths"], "idx": 1}, "distillation.py"),
    (lambda o: {**o, "prev_logprobs": [o["prev_logprobs"][0][:-1]]}, "must all cover prompt"),
    (lambda o: {**o, "input_lengths": [len(o["token_ids"][0]) + 1]}, "'input_lengths' is"),
    (lambda o: {**o, "token_loss_mask": [[*o["token_loss_mask"][0][:-1], 1]]}, "past 'input_lengths'"),
    (lambda o: {**o, "token_ids": [[float(x) for x in o["token_ids"][0]]]}, "'token_ids': must be a list of int"),
    (lambda o: {**o, "token_loss_mask": [[2 * x for x in o["token_loss_mask"][0]]]}, "0 and 1 only"),
    (lambda o: {**o, "prev_logprobs": [[0.0] * len(o["prev_logprobs"][0])]}, "force_on_policy_ratio"),
    (lambda o: {k: v for k, v in o.items() if k != "advantages"}, r"missing \['advantages'\]"),
    (lambda o: {**o, "rewards": ["1"]}, "'rewards': must be a number"),
])
def test_bad_lines_name_file_and_line(tmp_path, rollouts, edit, match):
    rs = [r for r in rollouts if len(r.response_ids) >= 4][:2]
    f = _step_file(tmp_path / "bad" / "train_data_step1.jsonl", rs)
    lines = f.read_text().splitlines()
    lines[1] = json.dumps(edit(json.loads(lines[1])))
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFormatError, match=match) as exc:
        import_from_config(_cfg(tmp_path, f, advantages="distillation"))
    assert "train_data_step1.jsonl" in str(exc.value) and "line 2" in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_truncated_last_line_is_reported(tmp_path, rollouts):
    f = _step_file(tmp_path / "cut" / "train_data_step5.jsonl", rollouts[:6])
    text = f.read_text()
    f.write_text(text[:len(text) - 40])  # the writer died mid-line
    with pytest.raises(InputFormatError, match=r"(?s)train_data_step5\.jsonl.*line 6: not valid JSON.*cut off"):
        import_from_config(_cfg(tmp_path, f))
    assert not (tmp_path / "out").exists()


def test_where_the_files_are_not(tmp_path, rollouts):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputFormatError, match="should_log_nemo_gym_responses"):
        import_from_config(_cfg(tmp_path, empty))
    d = _logdir(tmp_path, rollouts)
    with pytest.raises(InputFormatError, match=r"sub-folders.*exp_001"):
        import_from_config(_cfg(tmp_path, d.parent))
    with pytest.raises(InputFormatError, match="validation dump"):
        import_from_config(_cfg(tmp_path, d / "val_data_step3.jsonl"))


def test_cli_one_file(tmp_path, rollouts, capsys):
    from drift.cli import main

    f = _step_file(tmp_path / "one" / "train_data_step9.jsonl", rollouts)
    out = tmp_path / "cli"
    assert main(["import", "nemo-rl", str(f), "--advantages", "distillation", "--out", str(out),
                 "--progress", "false"]) == 0
    assert "imported 12 rollouts" in capsys.readouterr().out
    from drift.store import open_dataset

    ds = open_dataset(out)
    assert set(ds.read("tokens").column("step").to_pylist()) == {9}
    assert ds.config["source"]["files"] == ["train_data_step9.jsonl"]
