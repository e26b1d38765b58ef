"""`drift collect` / `drift score` end to end on the embedded oracle world (the toy preset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from drift.cli import main
from drift.store import open_dataset

pytestmark = pytest.mark.filterwarnings("ignore::drift.errors.AlignmentWarning")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "toy"
    code = main(["collect", "--preset", "toy", "--out", str(out), "--max-prompts", "12", "--self-check",
                 "--progress", "false", "--part-size", "16"])
    assert code == 0
    return open_dataset(out)


def test_toy_preset_writes_oracle_columns_and_summary(toy, capsys):
    m = toy.manifest
    assert m["status"] == "complete" and m["n_rollouts"] == 48 and len(m["parts"]) == 3
    assert m["self_check"]["self_max_kl"] < 1e-5
    tokens, rollouts = toy.to_pandas("tokens"), toy.to_pandas("rollouts")
    assert {"oracle_token", "oracle_teacher_correct", "oracle_prefix_ok"} <= set(tokens.columns)
    # oracle columns against the world's own definition, recomputed here
    from drift.models import load_tokenizer
    from drift.worlds import load_world

    cfg = toy.config["config"]
    world, tok = load_world(cfg["world"]), load_tokenizer(cfg["student"])
    for _, r in rollouts.head(8).iterrows():
        t = tokens[(tokens.prompt_id == r.prompt_id) & (tokens.sample_id == r.sample_id)].sort_values("position")
        oracle = world.oracle_tokens(r.student_prompt_ids, r.response_ids, tok)
        np.testing.assert_array_equal(t.oracle_token, oracle)
        np.testing.assert_array_equal(t.oracle_prefix_ok, world.oracle_prefix_ok(r.student_prompt_ids,
                                                                                 r.response_ids, tok))
        np.testing.assert_array_equal(t.oracle_teacher_correct, t.teacher_argmax.to_numpy() == oracle)
        assert r.reward == world.verify(r.student_prompt_ids, r.response_ids, tok)
    # the world's defining property: on clean prefixes the teacher is right, on broken ones mostly not
    clean = tokens[tokens.oracle_prefix_ok].oracle_teacher_correct.mean()
    broken = tokens[~tokens.oracle_prefix_ok].oracle_teacher_correct.mean()
    assert clean > 0.95 and broken < 0.3
    assert rollouts.reward.notna().all()


def test_score_cli_rescored_at_a_step(toy, tmp_path, capsys):
    cfg = toy.config["config"]
    out = tmp_path / "s"
    code = main(["score", "--rollouts", str(toy.root), "--student", cfg["student"], "--teacher", cfg["teacher"],
                 "--step", "200", "--out", str(out), "--world", cfg["world"], "--progress", "false"])
    assert code == 0
    assert "at step 200" in capsys.readouterr().out
    a = toy.to_pandas("tokens").sort_values(["prompt_id", "sample_id", "position"]).reset_index(drop=True)
    b = open_dataset(out).to_pandas("tokens").sort_values(["prompt_id", "sample_id", "position"])
    np.testing.assert_allclose(a.kl_reverse, b.kl_reverse.to_numpy(), atol=1e-5)
    assert (b.step == 200).all()


def test_existing_out_is_refused_with_exit_code_2(toy, capsys):
    code = main(["collect", "--preset", "toy", "--out", str(toy.root), "--max-prompts", "2", "--progress", "false"])
    assert code == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--if-exists resume" in err


def test_missing_arguments_are_listed_together(tmp_path, capsys):
    code = main(["collect", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "student is required" in err and "teacher is required" in err and "prompts is required" in err


def test_missing_model_path_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    code = main(["collect", "--student", str(tmp_path / "nope"), "--teacher", str(tmp_path / "nope"),
                 "--prompts", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "o")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_help_mentions_examples(capsys):
    with pytest.raises(SystemExit):
        main(["collect", "--help"])
    assert "--preset toy" in capsys.readouterr().out


def test_tokenizer_only_folder_is_accepted_and_prints_what_each_model_saw(tmp_path, capsys):
    from drift.presets import preset_values

    toy = preset_values("toy")
    out = tmp_path / "tok"
    code = main(["collect", "--preset", "toy", "--tokenizer", str(Path(toy["student"]).parent / "tokenizer"),
                 "--out", str(out), "--max-prompts", "2", "--samples-per-prompt", "1", "--progress", "false"])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "as the student saw it" in stdout and "the teacher saw the same prompt" in stdout
    ds = open_dataset(out)
    assert ds.config["rendered_example"]["student"].endswith("<sep>")  # no template: raw text under auto
    assert ds.config["tokenizer"]["vocab_hash"] == ds.metadata["vocab_hash"]
