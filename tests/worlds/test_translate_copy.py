"""The translate-copy oracle world: tokenizer, oracles, persistence, and the shipped teacher/student pair."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import drift
from drift.errors import ConfigError, DatasetError, InputFormatError
from drift.worlds import DATA_DIR, ORACLE_DIR, TranslateCopyWorld, load_world
from drift.worlds.sft import (
    SFTConfig,
    build_model,
    evaluate,
    sample_rollouts,
    supervision_quality,
    teacher_forced_accuracy,
    train_world_model,
)


@pytest.fixture(scope="module")
def world() -> TranslateCopyWorld:
    return TranslateCopyWorld()


@pytest.fixture(scope="module")
def tok(world: TranslateCopyWorld) -> Any:
    return world.build_tokenizer()


def ids(tok: Any, text: str) -> list[int]:
    return tok.convert_tokens_to_ids(text.split())


# ------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_adds_bos_only_with_special_tokens(tok: Any) -> None:
    bos, sep = tok.bos_token_id, tok.sep_token_id
    assert tok("i05 i33 <sep>")["input_ids"] == [bos, tok.convert_tokens_to_ids("i05"),
                                                 tok.convert_tokens_to_ids("i33"), sep]
    assert tok("i05 i33 <sep>", add_special_tokens=False)["input_ids"] == ids(tok, "i05 i33 <sep>")
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token, tok.sep_token) == (
        "<pad>", "<bos>", "<eos>", "<unk>", "<sep>")
    assert len({tok.pad_token_id, bos, tok.eos_token_id, tok.unk_token_id, sep}) == 5
    assert len(tok) == 5 + 2 * 64
    assert tok.chat_template is None


def test_tokenizer_round_trips(world: TranslateCopyWorld, tok: Any, rng: np.random.Generator,
                               tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for _ in range(20):
        symbols = world.sample_symbols(rng)
        prompt = world.prompt_text(symbols)
        prompt_ids = tok(prompt)["input_ids"]
        assert len(prompt_ids) == len(symbols) + 2
        assert tok.decode(prompt_ids, skip_special_tokens=False) == "<bos> " + prompt
        full = [*prompt_ids, *tok(world.answer_text(symbols), add_special_tokens=False)["input_ids"],
                tok.eos_token_id]
        text = tok.decode(full, skip_special_tokens=False)
        assert text == f"<bos> {prompt} {world.answer_text(symbols)} <eos>"
        assert tok(text, add_special_tokens=False)["input_ids"] == full
        assert tok.decode(full, skip_special_tokens=True) == " ".join(
            [*prompt.split()[:-1], world.answer_text(symbols)])
        assert loaded(prompt)["input_ids"] == prompt_ids
        assert loaded.decode(full) == text


def test_tokenizer_left_padding(tok: Any, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    left = AutoTokenizer.from_pretrained(tmp_path, padding_side="left")
    batch = left(["i05 <sep>", "i01 i02 i03 <sep>"], padding=True)
    pad, bos = tok.pad_token_id, tok.bos_token_id
    assert batch["input_ids"][0][:3] == [pad, pad, bos]
    assert batch["attention_mask"][0] == [0, 0, 1, 1, 1]


# --------------------------------------------------------------------------------------------- the map
def test_f_is_a_bijection(world: TranslateCopyWorld) -> None:
    assert sorted(world.f(x) for x in range(64)) == list(range(64))
    assert all(world.f_inverse(world.f(x)) == x for x in range(64))
    assert [world.f(x) for x in (0, 5, 33, 12)] == [3, 38, 42, 23]  # 7x + 3 mod 64, by hand
    assert world.answer_text([5, 33, 12]) == "o38 o42 o23"
    assert world.prompt_text([5, 33, 12]) == "i05 i33 i12 <sep>"


def test_world_validation_reports_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        TranslateCopyWorld(mult=8, max_len=100)
    assert len(err.value.problems) == 2
    assert "coprime" in str(err.value)
    with pytest.raises(ConfigError):
        TranslateCopyWorld(min_len=10, max_len=5)
    with pytest.raises(ConfigError):
        SFTConfig(width=95)


def test_sample_symbols_and_records(world: TranslateCopyWorld, rng: np.random.Generator) -> None:
    for _ in range(50):
        symbols = world.sample_symbols(rng)
        assert 30 <= len(symbols) <= 48 and len(set(symbols)) == len(symbols)
        assert all(0 <= x < 64 for x in symbols)
    assert len(world.sample_symbols(rng, 64)) == 64
    rows = world.make_prompt_records(np.random.default_rng(3), 5, "train")
    assert rows == world.make_prompt_records(np.random.default_rng(3), 5, "train")
    assert [r["id"] for r in rows] == [f"train-{i:05d}" for i in range(5)]
    assert {r["task"] for r in rows} == {"translate_copy"}
    for r in rows:
        symbols = [int(t[1:]) for t in r["prompt"].split()[:-1]]
        assert r["answer"] == world.answer_text(symbols)
    held = world.make_prompt_records(np.random.default_rng(3), 5, "heldout", exclude={rows[0]["prompt"]})
    assert rows[0]["prompt"] not in {r["prompt"] for r in held}
    tiny = TranslateCopyWorld(n_symbols=3, mult=1, offset=0, min_len=1, max_len=1)
    with pytest.raises(ValueError, match="distinct prompts"):
        tiny.make_prompt_records(np.random.default_rng(0), 4, "x")


# -------------------------------------------------------------------------------------------- oracles
def test_oracles_on_hand_made_responses(world: TranslateCopyWorld, tok: Any) -> None:
    prompt = tok("i05 i33 i12 <sep>")["input_ids"]
    eos = tok.eos_token_id
    o38, o42, o23, o12 = ids(tok, "o38 o42 o23 o12")
    assert world.parse_prompt_ids(prompt, tok) == [5, 33, 12]

    correct = [o38, o42, o23, eos]
    assert world.oracle_tokens(prompt, correct, tok).tolist() == correct
    assert world.oracle_tokens(prompt, correct, tok).dtype == np.int64
    assert world.oracle_prefix_ok(prompt, correct, tok).tolist() == [True, True, True, True]
    assert world.verify(prompt, correct, tok) == 1.0
    assert world.first_error(prompt, correct, tok) is None

    wrong_second = [o38, o12, o23, eos]  # a wrong token at slot 1
    assert world.oracle_tokens(prompt, wrong_second, tok).tolist() == correct
    assert world.oracle_prefix_ok(prompt, wrong_second, tok).tolist() == [True, True, False, False]
    assert world.verify(prompt, wrong_second, tok) == 0.0
    assert world.first_error(prompt, wrong_second, tok) == 1

    wrong_first = [o12, o42, o23, eos]
    assert world.oracle_prefix_ok(prompt, wrong_first, tok).tolist() == [True, False, False, False]

    too_long = [o38, o42, o23, eos, o12]  # keeps going after the EOS slot
    assert world.oracle_tokens(prompt, too_long, tok).tolist() == [o38, o42, o23, eos, -1]
    assert world.oracle_prefix_ok(prompt, too_long, tok).tolist() == [True, True, True, True, True]
    assert world.verify(prompt, too_long, tok) == 0.0
    assert world.first_error(prompt, too_long, tok) == 4

    no_eos = [o38, o42, o23, o12, o12]  # no EOS where it belongs
    assert world.oracle_tokens(prompt, no_eos, tok).tolist() == [o38, o42, o23, eos, -1]
    assert world.oracle_prefix_ok(prompt, no_eos, tok).tolist() == [True, True, True, True, False]
    assert world.first_error(prompt, no_eos, tok) == 3

    early_eos = [o38, eos]
    assert world.oracle_tokens(prompt, early_eos, tok).tolist() == [o38, o42]
    assert world.oracle_prefix_ok(prompt, early_eos, tok).tolist() == [True, True]
    assert world.verify(prompt, early_eos, tok) == 0.0
    assert world.first_error(prompt, early_eos, tok) == 1

    truncated = [o38, o42]  # cut off before finishing
    assert world.verify(prompt, truncated, tok) == 0.0
    assert world.first_error(prompt, truncated, tok) == 2

    assert world.oracle_tokens(prompt, [], tok).tolist() == []
    assert world.oracle_prefix_ok(prompt, [], tok).tolist() == []
    assert world.verify(prompt, [], tok) == 0.0


def test_oracles_accept_padding_and_tensors(world: TranslateCopyWorld, tok: Any) -> None:
    pad, eos = tok.pad_token_id, tok.eos_token_id
    prompt = [pad, pad, *tok("i05 i33 i12 <sep>")["input_ids"]]
    correct = [*ids(tok, "o38 o42 o23"), eos]
    assert world.parse_prompt_ids(torch.tensor(prompt), tok) == [5, 33, 12]
    assert world.oracle_tokens(np.asarray(prompt), torch.tensor(correct), tok).tolist() == correct
    assert world.verify(prompt, [*correct, pad, pad], tok) == 1.0
    assert world.correct_response_ids(prompt, tok) == correct


def test_parse_prompt_rejects_foreign_tokens(world: TranslateCopyWorld, tok: Any) -> None:
    with pytest.raises(InputFormatError, match="o38"):
        world.parse_prompt_ids(tok("i05 o38 <sep>")["input_ids"], tok)
    with pytest.raises(InputFormatError, match="<unk>"):
        world.parse_prompt_ids(tok("i05 hello <sep>")["input_ids"], tok)


def test_oracle_matches_correct_answers(world: TranslateCopyWorld, tok: Any,
                                        rng: np.random.Generator) -> None:
    for _ in range(10):
        symbols = world.sample_symbols(rng)
        prompt = tok(world.prompt_text(symbols))["input_ids"]
        response = [*tok(world.answer_text(symbols), add_special_tokens=False)["input_ids"], tok.eos_token_id]
        assert world.verify(prompt, response, tok) == 1.0
        assert world.oracle_prefix_ok(prompt, response, tok).all()
        t = int(rng.integers(len(response) - 1))
        corrupted = list(response)
        corrupted[t] = tok.convert_tokens_to_ids(world.output_token((world.f(symbols[t]) + 1) % 64))
        ok = world.oracle_prefix_ok(prompt, corrupted, tok)
        assert ok.tolist() == [k <= t for k in range(len(response))]
        assert world.verify(prompt, corrupted, tok) == 0.0


# ---------------------------------------------------------------------------------------- persistence
def test_world_save_load_round_trip(tmp_path: Path) -> None:
    world = TranslateCopyWorld(n_symbols=32, mult=5, offset=1, min_len=4, max_len=9)
    path = world.save(tmp_path / "w")
    assert path == tmp_path / "w" / "world.json"
    assert json.loads(path.read_text())["name"] == "translate_copy"
    assert load_world(tmp_path / "w") == world
    assert load_world(path) == world
    assert TranslateCopyWorld.load(tmp_path / "w") == world
    assert TranslateCopyWorld.from_dict(world.to_dict()) == world
    assert world.save(tmp_path / "other.json") == tmp_path / "other.json"


def test_load_world_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="make_oracle_world"):
        load_world(tmp_path)
    (tmp_path / "world.json").write_text("{not json")
    with pytest.raises(InputFormatError, match="not valid JSON"):
        load_world(tmp_path)
    (tmp_path / "world.json").write_text(json.dumps({"name": "nope"}))
    with pytest.raises(InputFormatError, match="known worlds"):
        load_world(tmp_path)
    (tmp_path / "world.json").write_text(json.dumps({"name": "translate_copy", "colour": 1}))
    with pytest.raises(InputFormatError, match="colour"):
        load_world(tmp_path)
    (tmp_path / "world.json").write_text(json.dumps({"name": "translate_copy", "mult": 2}))
    with pytest.raises(ConfigError):
        load_world(tmp_path)


@pytest.mark.skipif(bool(os.environ.get("DRIFT_DATA")), reason="DRIFT_DATA overrides the data folder")
def test_data_dir_is_the_repo_data_folder() -> None:
    assert Path(drift.__file__).resolve().parent.parent / "data" == DATA_DIR
    assert DATA_DIR / "oracle" == ORACLE_DIR


# ------------------------------------------------------------------------------------------- training
def test_build_model_and_a_few_steps_are_deterministic(tok: Any) -> None:
    world = TranslateCopyWorld(min_len=4, max_len=6)
    cfg = SFTConfig(layers=1, width=32, steps=3, batch=8, warmup=1, curriculum_steps=2, eval_every=1,
                    eval_prompts=4)
    model = build_model(world, tok, cfg)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert (model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id) == (
        tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    a, log = train_world_model(world, tok, cfg, progress=False)
    b, _ = train_world_model(world, tok, cfg, progress=False)
    assert log["selected_step"] == 3 and [e["step"] for e in log["evals"]] == [1, 2, 3]
    assert log["n_parameters"] == sum(p.numel() for p in a.parameters())
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


# ---------------------------------------------------------------------------------- the shipped models
@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    world = load_world(ORACLE_DIR)
    out: dict[str, Any] = {"world": world, "tok": AutoTokenizer.from_pretrained(ORACLE_DIR / "tokenizer")}
    for role in ("teacher", "student"):
        out[role] = AutoModelForCausalLM.from_pretrained(ORACLE_DIR / role).eval()
        out[f"{role}_tok"] = AutoTokenizer.from_pretrained(ORACLE_DIR / role)
    rows = [json.loads(line) for line in (ORACLE_DIR / "prompts" / "heldout.jsonl").read_text().splitlines()]
    out["heldout"] = rows[:64]
    out["train"] = [json.loads(line) for line in
                    (ORACLE_DIR / "prompts" / "train.jsonl").read_text().splitlines()]
    return out


def test_shipped_folder_is_consistent(shipped: dict[str, Any]) -> None:
    tok = shipped["tok"]
    assert shipped["world"] == TranslateCopyWorld()
    assert len(shipped["train"]) == 512
    heldout_file = ORACLE_DIR / "prompts" / "heldout.jsonl"
    heldout = [json.loads(line) for line in heldout_file.read_text().splitlines()]
    assert len(heldout) == 128
    assert not {r["prompt"] for r in heldout} & {r["prompt"] for r in shipped["train"]}
    for role in ("teacher", "student"):
        assert shipped[f"{role}_tok"].get_vocab() == tok.get_vocab()
        assert shipped[role].config.vocab_size == len(tok)
        assert (ORACLE_DIR / role / "model.safetensors").is_file()
    log = json.loads((ORACLE_DIR / "training_log.json").read_text())
    assert log["student"]["select_target_reached"] is True
    assert log["supervision_quality"]["clean_acc"] > 0.95 > 0.5 > log["supervision_quality"]["error_acc"]


def test_shipped_models_reach_their_accuracies(shipped: dict[str, Any]) -> None:
    world, tok = shipped["world"], shipped["tok"]
    teacher = evaluate(shipped["teacher"], world, tok, shipped["heldout"], seed=0)
    student = evaluate(shipped["student"], world, tok, shipped["heldout"], seed=0)
    print(f"teacher {teacher}\nstudent {student}")
    assert teacher["greedy_exact"] >= 0.95
    assert teacher["token_acc"] >= 0.99
    assert 0.88 <= student["token_acc"] <= 0.97
    assert student["greedy_exact"] <= teacher["greedy_exact"] - 0.2
    assert student["sampled_exact"] <= teacher["sampled_exact"] - 0.2


def test_teacher_supervision_follows_student_errors(shipped: dict[str, Any]) -> None:
    world, tok = shipped["world"], shipped["tok"]
    prompts = [tok(r["prompt"])["input_ids"] for r in shipped["heldout"][:32]]
    rollouts = sample_rollouts(shipped["student"], prompts, eos=tok.eos_token_id, pad=tok.pad_token_id,
                               do_sample=True, max_new_tokens=world.max_len + 2, seed=0)
    q = supervision_quality(shipped["teacher"], world, tok, prompts, rollouts)
    assert q["n_clean"] > 0 and q["n_error"] > 0
    assert q["clean_acc"] >= 0.95
    assert q["error_acc"] <= 0.3
    correct = [world.correct_response_ids(p, tok) for p in prompts]
    assert teacher_forced_accuracy(shipped["teacher"], prompts, correct, pad=tok.pad_token_id) >= 0.99


@pytest.mark.slow
def test_small_variant_trains_end_to_end(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from scripts.make_oracle_world import main

    assert main(["--out", str(tmp_path), "--variant", "small", "--quiet"]) == 0
    log = json.loads((tmp_path / "training_log.json").read_text())
    assert log["teacher"]["heldout"]["greedy_exact"] >= 0.9
    for name in ("world.json", "README.md", "prompts/train.jsonl", "prompts/heldout.jsonl",
                 "tokenizer/tokenizer.json", "teacher/model.safetensors", "student/model.safetensors"):
        assert (tmp_path / name).is_file(), name
    world = load_world(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "teacher")
    tok = AutoTokenizer.from_pretrained(tmp_path / "teacher")
    rows = [json.loads(line) for line in (tmp_path / "prompts" / "heldout.jsonl").read_text().splitlines()]
    assert evaluate(model, world, tok, rows[:32])["greedy_exact"] >= 0.9
