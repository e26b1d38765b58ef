"""``python -m scripts.make_real_prompts``: deterministic, disjoint, correct, and readable by drift's prompt reader."""

from __future__ import annotations

import ast
import json
import operator
import subprocess
import sys
from pathlib import Path

import pytest

from drift.collect.prompts import read_prompts
from drift.errors import ConfigError
from scripts.make_real_prompts import DEMO_PROMPTS, KINDS, TEACHER_TEMPLATE, RealPromptsConfig, generate, main, write

ROOT = Path(__file__).resolve().parents[2]
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub}


def _eval(expr: str) -> int:
    """A naive reference evaluator of the solution expression (Python's own parser, + and - only)."""
    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise AssertionError(f"unexpected expression {expr!r}")

    return walk(ast.parse(expr, mode="eval").body)


def _question(rec: dict) -> str:
    return rec["prompt"][0]["content"]


def test_same_files_on_every_run_and_in_a_fresh_process(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["--out", str(a), "--train", "60", "--heldout", "20"]) == 0
    # a fresh interpreter (another hash seed) must draw the same questions
    subprocess.run([sys.executable, "-m", "scripts.make_real_prompts", "--out", str(b), "--train", "60",
                    "--heldout", "20"], cwd=ROOT, check=True, capture_output=True,
                   env={"PYTHONHASHSEED": "123", "PATH": "", "PYTHONPATH": str(ROOT)})
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    other = generate(RealPromptsConfig(out=str(tmp_path), train=60, heldout=20, seed=14))
    assert [_question(r) for r in other[1]] != [json.loads(x)["prompt"][0]["content"]
                                                for x in (a / "heldout.jsonl").read_text().splitlines()]


def test_shipped_files_are_the_generators_default_output(tmp_path):
    write(RealPromptsConfig(out=str(tmp_path)))
    for name in ("train.jsonl", "heldout.jsonl"):
        assert (tmp_path / name).read_text() == (ROOT / "data" / "real" / name).read_text(), name


def test_disjoint_distinct_and_answers_recomputed():
    train, heldout = generate(RealPromptsConfig(out="unused", train=400, heldout=100))
    assert len(train) == 400 and len(heldout) == 100
    tq, hq = {_question(r) for r in train}, {_question(r) for r in heldout}
    assert len(tq) == 400 and len(hq) == 100 and not tq & hq
    demo = {json.loads(x)["prompt"][0]["content"] for x in DEMO_PROMPTS.read_text().splitlines() if x.strip()}
    assert not (tq | hq) & demo
    assert len({r["id"] for r in train + heldout}) == 500
    for r in train + heldout:
        expr, _, ans = r["solution"].partition(" = ")
        assert int(r["answer"]) == _eval(expr) == int(ans) and int(r["answer"]) >= 0
        numbers = [int(t) for t in expr.split() if t.isdigit()]
        for n in numbers:  # every operand is in the question, in order
            assert str(n) in _question(r)
        assert r["teacher_prompt"][0] == {"role": "system", "content": TEACHER_TEMPLATE.format(
            solution=r["solution"], answer=r["answer"])}
        assert r["teacher_prompt"][1] == r["prompt"][0] and r["prompt"][0]["role"] == "user"
    for rows in (train, heldout):  # dealt evenly: every default kind in both files
        assert {r["id"].split("-", 1)[1] for r in rows} == {"add_1d", "add_1d_word", "add_small", "add"}


def test_every_kind_has_correct_nonnegative_answers():
    train, heldout = generate(RealPromptsConfig(out="unused", train=300, heldout=60, mix=tuple(KINDS)))
    assert {r["id"].split("-", 1)[1] for r in train + heldout} == set(KINDS)
    for r in train + heldout:
        expr, _, ans = r["solution"].partition(" = ")
        assert int(r["answer"]) == _eval(expr) == int(ans) >= 0


def test_same_format_as_the_demo_prompts_and_read_by_drift(tmp_path):
    write(RealPromptsConfig(out=str(tmp_path), train=30, heldout=10))
    demo_line = json.loads(DEMO_PROMPTS.read_text().splitlines()[0])
    for name in ("train.jsonl", "heldout.jsonl"):
        lines = [json.loads(x) for x in (tmp_path / name).read_text().splitlines()]
        assert all(list(x) == list(demo_line) for x in lines)  # same keys, same order
        records = read_prompts(tmp_path / name)
        assert len(records) == len(lines)
        for rec, line in zip(records, lines, strict=True):
            assert rec.id == line["id"] and rec.answer == line["answer"]
            assert rec.prompt == tuple(line["prompt"]) and rec.teacher_prompt == tuple(line["teacher_prompt"])
            assert rec.extra["solution"] == line["solution"]


def test_bad_config_reports_every_problem():
    with pytest.raises(ConfigError, match=r"(?s)train.*unknown kinds \['mul'\]"):
        RealPromptsConfig(out="x", train=0, mix=("mul:1",))
