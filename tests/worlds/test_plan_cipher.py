"""The plan-cipher world: cipher and key table, tokenizer, oracles, training data, persistence, shipped models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from drift.errors import ConfigError, InputFormatError
from drift.verifiers import get_verifier
from drift.worlds import PLAN_DIR, WORLDS, PlanCipherWorld, TranslateCopyWorld, World, load_world
from drift.worlds.plan_cipher import PlanData
from drift.worlds.sft import (
    SFTConfig,
    evaluate,
    sample_rollouts,
    supervision_quality,
    teacher_forced_hits,
    train_world_model,
)


@pytest.fixture(scope="module")
def small() -> PlanCipherWorld:
    """4 cues, 8 symbols, 3 plans, 2 key tokens; its table (seed 0) is [[2, 1], [1, 0], [0, 0], [0, 0]]."""
    return PlanCipherWorld(n_cues=4, n_symbols=8, n_plans=3, key_len=2, min_len=2, max_len=4)


@pytest.fixture(scope="module")
def tok(small: PlanCipherWorld) -> Any:
    return small.build_tokenizer()


def ids(tok: Any, text: str) -> list[int]:
    return tok.convert_tokens_to_ids(text.split())


# ------------------------------------------------------------------------------------- key and cipher
def test_cipher_and_key_table_by_hand(small: PlanCipherWorld) -> None:
    assert small.key_table.tolist() == [[2, 1], [1, 0], [0, 0], [0, 0]]  # default_rng(0).integers(0, 3, (4, 2))
    assert small.key(1) == (1, 0)
    # f_a(x) = x + 7a + 3 mod 8: a=1 adds 10 = 2 (mod 8), a=2 adds 17 = 1 (mod 8), a=0 adds 3
    assert [small.cipher(1, x) for x in (5, 0, 7)] == [7, 2, 1]
    assert [small.cipher(2, x) for x in (5, 0, 7)] == [6, 1, 0]
    assert [small.cipher(0, x) for x in (5, 0, 7)] == [0, 3, 2]
    for a in range(3):
        assert sorted(small.cipher(a, x) for x in range(8)) == list(range(8))
    assert small.prompt_text(1, [5, 0, 7]) == "c01 i05 i00 i07 <sep>"
    assert small.answer_text(1, [5, 0, 7]) == "k1 k0 o1_07 o1_02 o1_01"
    assert small.answer_text(0, [5]) == "k2 k1 o2_06"
    assert small.max_response_len == 2 + 4 + 1 and small.max_sequence_len == 4 + 3 + 7
    with pytest.raises(ValueError):
        small.key_table[0, 0] = 1  # read-only


def test_default_world_and_validation() -> None:
    w = PlanCipherWorld()
    assert w.key_table.shape == (64, 2) and w.key_table.min() >= 0 and w.key_table.max() < 8
    assert w.key_table.tolist() == PlanCipherWorld().key_table.tolist()  # the table is a function of the seed
    assert w.key_table.tolist() != PlanCipherWorld(table_seed=1).key_table.tolist()
    with pytest.raises(ConfigError) as err:
        PlanCipherWorld(min_len=10, max_len=5, n_plans=1)
    assert len(err.value.problems) == 2
    with pytest.raises(ConfigError, match="distinct"):
        PlanCipherWorld(n_symbols=8, max_len=9)
    with pytest.raises(ConfigError):
        PlanData(known_cue_frac=1.5)


# ------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_round_trips(small: PlanCipherWorld, tok: Any, rng: np.random.Generator,
                               tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    assert len(tok) == 5 + 4 + 8 + 3 + 3 * 8
    assert len(set(small.vocab().values())) == len(tok)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for _ in range(20):
        cue, symbols = small.sample_instance(rng)
        prompt = small.prompt_text(cue, symbols)
        prompt_ids = tok(prompt)["input_ids"]
        assert prompt_ids[0] == tok.bos_token_id and len(prompt_ids) == len(symbols) + 3
        full = [*prompt_ids, *small.correct_response_ids(prompt_ids, tok)]
        text = tok.decode(full, skip_special_tokens=False)
        assert text == f"<bos> {prompt} {small.answer_text(cue, symbols)} <eos>"
        assert tok(text, add_special_tokens=False)["input_ids"] == full
        assert loaded(prompt)["input_ids"] == prompt_ids and loaded.decode(full) == text


# -------------------------------------------------------------------------------------------- oracles
def test_oracles_on_hand_made_responses(small: PlanCipherWorld, tok: Any) -> None:
    prompt = tok("c01 i05 i00 i07 <sep>")["input_ids"]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    assert small.parse_prompt_ids(prompt, tok) == (1, [5, 0, 7])
    correct = [*ids(tok, "k1 k0 o1_07 o1_02 o1_01"), eos]
    assert small.correct_response_ids(prompt, tok) == correct
    assert small.oracle_tokens(prompt, correct, tok).tolist() == correct
    assert small.oracle_prefix_ok(prompt, correct, tok).all()
    assert small.verify(prompt, correct, tok) == 1.0 and small.first_error(prompt, correct, tok) is None
    assert small.verify(prompt, [*correct, pad, pad], tok) == 1.0
    groups = small.slot_groups(prompt, tok)
    assert groups["key"].tolist() == [True, True, False, False, False, False]
    assert groups["body"].tolist() == [False, False, True, True, True, True]

    # a wrong first key token, then a faithful cipher of it (plan 2 adds 1): every slot after it is off-oracle
    wrong_key = [*ids(tok, "k2 k0 o2_06 o2_01 o2_00"), eos]
    assert small.oracle_tokens(prompt, wrong_key, tok).tolist() == correct
    assert small.oracle_prefix_ok(prompt, wrong_key, tok).tolist() == [True, False, False, False, False, False]
    assert small.first_error(prompt, wrong_key, tok) == 0 and small.verify(prompt, wrong_key, tok) == 0.0
    match = np.asarray(wrong_key) == small.oracle_tokens(prompt, wrong_key, tok)
    assert match.tolist() == [False, True, False, False, False, True]

    wrong_second = [*ids(tok, "k1 k2 o1_07 o1_02 o1_01"), eos]
    assert small.oracle_prefix_ok(prompt, wrong_second, tok).tolist() == [True, True, False, False, False, False]
    assert small.first_error(prompt, wrong_second, tok) == 1

    late = [*ids(tok, "k1 k0 o1_07 o1_03 o1_01"), eos]
    assert small.first_error(prompt, late, tok) == 3
    too_long = [*correct, *ids(tok, "o1_01")]
    assert small.oracle_tokens(prompt, too_long, tok).tolist() == [*correct, -1]
    assert small.first_error(prompt, too_long, tok) == 6 and small.verify(prompt, too_long, tok) == 0.0
    truncated = correct[:3]
    assert small.first_error(prompt, truncated, tok) == 3 and small.verify(prompt, truncated, tok) == 0.0
    assert small.oracle_tokens(prompt, [], tok).tolist() == [] and small.verify(prompt, [], tok) == 0.0
    assert small.oracle_tokens(torch.tensor([pad, *prompt]), torch.tensor(correct), tok).tolist() == correct


def test_parse_prompt_rejects_foreign_prompts(small: PlanCipherWorld, tok: Any) -> None:
    for text in ("i05 i00 <sep>", "c01 c02 i05 <sep>", "c01 i05 k1 <sep>", "c01 i05 hello <sep>", "<sep>"):
        with pytest.raises(InputFormatError, match="plan_cipher prompt"):
            small.parse_prompt_ids(tok(text)["input_ids"], tok)


def test_records_and_world_verifier(small: PlanCipherWorld, tok: Any) -> None:
    from drift.collect.prompts import PromptRecord

    rows = small.make_prompt_records(np.random.default_rng(3), 6, "train")
    assert rows == small.make_prompt_records(np.random.default_rng(3), 6, "train")
    assert {r["task"] for r in rows} == {"plan_cipher"} and rows[0]["id"] == "train-00000"
    held = small.make_prompt_records(np.random.default_rng(4), 6, "heldout", exclude={r["prompt"] for r in rows})
    assert not {r["prompt"] for r in held} & {r["prompt"] for r in rows}
    auto = get_verifier("auto", world=small, tokenizer=tok)
    for r in rows:
        cue, symbols = small.parse_prompt_ids(tok(r["prompt"])["input_ids"], tok)
        assert r["answer"] == small.answer_text(cue, symbols)
        prompt_ids = tok(r["prompt"])["input_ids"]
        response_ids = small.correct_response_ids(prompt_ids, tok)
        record = PromptRecord(id=r["id"], prompt=r["prompt"], answer=r["answer"], task=r["task"])
        assert auto(record, tok.decode(response_ids), prompt_ids, response_ids) == 1.0
        assert auto(record, "", prompt_ids, response_ids[1:]) == 0.0


# ---------------------------------------------------------------------------------------- persistence
def test_save_load_and_registry(small: PlanCipherWorld, tmp_path: Path) -> None:
    assert WORLDS["plan_cipher"] is PlanCipherWorld and WORLDS["translate_copy"] is TranslateCopyWorld
    path = small.save(tmp_path)
    assert json.loads(path.read_text())["name"] == "plan_cipher"
    assert load_world(tmp_path) == small == PlanCipherWorld.load(path)
    assert isinstance(load_world(tmp_path), World) and isinstance(TranslateCopyWorld(), World)
    with pytest.raises(InputFormatError, match="expected 'plan_cipher'"):
        PlanCipherWorld.from_dict(TranslateCopyWorld().to_dict())
    with pytest.raises(InputFormatError, match="colour"):
        PlanCipherWorld.from_dict({"name": "plan_cipher", "colour": 1})


# ------------------------------------------------------------------------------------------- training
def test_sampler_corrupts_keys_and_masks_unknown_cues(small: PlanCipherWorld, tok: Any) -> None:
    sampler = small.sft_sampler(tok, PlanData(corrupt_key_prob=0.5, known_cue_frac=0.5))
    assert int(sampler.known.sum()) == 2
    examples = sampler.sample(np.random.default_rng(0), 200, 2, 4)
    corrupted = 0
    for e in examples:
        cue, symbols = small.parse_prompt_ids(e.prompt, tok)
        assert 2 <= len(symbols) <= 4 and e.response[-1] == tok.eos_token_id
        key = [int(k[1:]) for k in tok.convert_ids_to_tokens(e.response[:2])]
        outputs = tok.convert_ids_to_tokens(e.response[2:-1])
        assert outputs == [small.output_token(key[0], small.cipher(key[0], x)) for x in symbols]  # follows its key
        assert e.loss_mask is not None and all(e.loss_mask[2:])
        is_correct = tuple(key) == small.key(cue)
        corrupted += not is_correct
        if not is_correct:
            assert e.loss_mask[:2] == [False, False]
        elif e.loss_mask[:2] == [True, True]:
            assert sampler.known[cue]
        if not sampler.known[cue]:
            assert e.loss_mask[:2] == [False, False]
    assert 60 <= corrupted <= 120  # about half, minus random keys that happen to be right
    selection = sampler.selection(np.random.default_rng(1), 5)
    assert all(e.loss_mask is None and small.verify(e.prompt, e.response, tok) == 1.0 for e in selection)


def test_loss_mask_drops_tokens_from_the_labels() -> None:
    from drift.worlds.sft import _sft_batch

    batch = _sft_batch([[1, 2], [1, 2, 3]], [[7, 8, 9], [7, 8]], 0, [[False, True, True], None])
    assert batch["input_ids"].tolist() == [[1, 2, 7, 8, 9], [1, 2, 3, 7, 8]]
    assert batch["labels"].tolist() == [[-100, -100, -100, 8, 9], [-100, -100, -100, 7, 8]]
    assert _sft_batch([[1, 2]], [[7, 8]], 0)["labels"].tolist() == [[-100, -100, 7, 8]]


def test_a_few_training_steps_are_deterministic(small: PlanCipherWorld, tok: Any) -> None:
    cfg = SFTConfig(layers=1, width=32, steps=3, batch=8, warmup=1, curriculum_steps=2, eval_every=1,
                    eval_prompts=4)
    a, log = train_world_model(small, tok, cfg, data=PlanData(known_cue_frac=0.5), progress=False)
    b, _ = train_world_model(small, tok, cfg, data=PlanData(known_cue_frac=0.5), progress=False)
    assert log["data"] == {"corrupt_key_prob": 0.25, "known_cue_frac": 0.5, "known_seed": 0}
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    result = evaluate(a, small, tok, small.make_prompt_records(np.random.default_rng(0), 4, "h"))
    assert {"token_acc_key", "token_acc_body", "greedy_exact_key", "sampled_exact_key"} <= set(result)


# ---------------------------------------------------------------------------------- the shipped models
@pytest.fixture(scope="module")
def shipped() -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out: dict[str, Any] = {"world": load_world(PLAN_DIR), "tok": AutoTokenizer.from_pretrained(PLAN_DIR / "tokenizer")}
    for role in ("teacher", "student"):
        out[role] = AutoModelForCausalLM.from_pretrained(PLAN_DIR / role).eval()
        assert AutoTokenizer.from_pretrained(PLAN_DIR / role).get_vocab() == out["tok"].get_vocab()
    out["heldout"] = [json.loads(x) for x in (PLAN_DIR / "prompts" / "heldout.jsonl").read_text().splitlines()]
    out["train"] = [json.loads(x) for x in (PLAN_DIR / "prompts" / "train.jsonl").read_text().splitlines()]
    out["log"] = json.loads((PLAN_DIR / "training_log.json").read_text())
    return out


def test_shipped_folder_is_consistent(shipped: dict[str, Any]) -> None:
    assert shipped["world"] == PlanCipherWorld()
    assert len(shipped["train"]) == 512 and len(shipped["heldout"]) == 128
    assert not {r["prompt"] for r in shipped["heldout"]} & {r["prompt"] for r in shipped["train"]}
    assert {r["task"] for r in shipped["train"]} == {"plan_cipher"}
    q = shipped["log"]["supervision_quality"]
    assert q["clean_acc"] > 0.95 and q["error_agree"] > 0.9 and q["error_acc"] < q["clean_acc"] - 0.3
    assert shipped["log"]["student"]["data"]["known_cue_frac"] == 0.5
    wrong = shipped["log"]["supervision_quality_wrong_plan"]  # rollouts whose first token is wrong
    assert wrong["n_rollouts"] > 50 and wrong["error_acc"] < 0.3 and wrong["error_agree"] > 0.85


def test_shipped_models_reach_their_accuracies(shipped: dict[str, Any]) -> None:
    world, tok, rows = shipped["world"], shipped["tok"], shipped["heldout"][:48]
    teacher = evaluate(shipped["teacher"], world, tok, rows, seed=0)
    student = evaluate(shipped["student"], world, tok, rows, seed=0)
    print(f"teacher {teacher}\nstudent {student}")
    assert teacher["greedy_exact"] >= 0.95 and teacher["token_acc"] >= 0.99
    assert 0.25 <= student["greedy_exact_key"] <= 0.75  # weak on the early decision ...
    assert student["token_acc_body"] >= 0.95  # ... good at the rest given the right key
    assert student["greedy_first_error_median"] < world.key_len  # its first error sits in the key
    assert student["greedy_exact"] <= teacher["greedy_exact"] - 0.2


def test_teacher_follows_a_wrong_key(shipped: dict[str, Any]) -> None:
    world, tok, teacher = shipped["world"], shipped["tok"], shipped["teacher"]
    prompts = [tok(r["prompt"])["input_ids"] for r in shipped["heldout"][:48]]
    rollouts = sample_rollouts(shipped["student"], prompts, eos=tok.eos_token_id, pad=tok.pad_token_id,
                               do_sample=True, max_new_tokens=world.max_response_len + 1, seed=0)
    q = supervision_quality(teacher, world, tok, prompts, rollouts)
    assert q["n_clean"] > 0 and q["n_error"] > 0
    assert q["clean_acc"] >= 0.95 and q["error_agree"] >= 0.9
    # rollouts whose first key token is wrong: on their enciphered slots the teacher names the rollout's own
    # token (the cipher of the wrong key), never the oracle's
    agree = teacher_forced_hits(teacher, prompts, rollouts, pad=tok.pad_token_id)
    body = slice(world.key_len, world.key_len + world.max_len)
    follows, oracle_hits, n = 0, 0, 0
    for p, r, a in zip(prompts, rollouts, agree, strict=True):
        oracle = world.oracle_tokens(p, r, tok)
        if r[0] != oracle[0] and len(r) == world.max_response_len:
            follows += int(a[body].sum())
            oracle_hits += int((np.asarray(r)[body] == oracle[body]).sum())
            n += world.max_len
    assert n >= 5 * world.max_len
    assert follows / n >= 0.95 and oracle_hits / n <= 0.05


@pytest.mark.slow
def test_small_variant_builds_end_to_end(tmp_path: Path) -> None:
    from scripts.make_oracle_world import main

    assert main(["--world", "plan", "--variant", "small", "--out", str(tmp_path), "--quiet"]) == 0
    log = json.loads((tmp_path / "training_log.json").read_text())
    for name in ("world.json", "README.md", "prompts/train.jsonl", "prompts/heldout.jsonl",
                 "tokenizer/tokenizer.json", "teacher/model.safetensors", "student/model.safetensors"):
        assert (tmp_path / name).is_file(), name
    assert load_world(tmp_path).name == "plan_cipher"
    assert log["teacher"]["heldout"]["greedy_exact"] >= 0.8
    assert log["student"]["heldout"]["greedy_exact_key"] < log["teacher"]["heldout"]["greedy_exact_key"]
