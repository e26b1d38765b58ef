"""Generate the train and held-out prompt sets of the real-model OPD training (``scripts/train_real.py``).

    python -m scripts.make_real_prompts                                  # data/real/{train,heldout}.jsonl (shipped)
    python -m scripts.make_real_prompts --out /tmp/p --train 20 --heldout 10 --seed 1   # a small other draw

Arithmetic questions with their answers, in exactly the format of ``data/real/prompts.jsonl`` (one JSON object a line:
``id``, ``prompt`` [one user message], ``answer``, ``teacher_prompt`` [the privileged system turn carrying the
reference answer, then the same user message], ``solution``), so ``drift collect`` and ``drift train`` read them as
they read the demo's prompts. ``data/real/README.md`` explains the teacher prompt and the measured difficulty.

Kinds (``--mix kind:weight,...``; the default ``add_1d:2,add_1d_word:1,add_small:1,add:1``): ``add_1d`` sums of two
one-digit numbers in five wordings ("What is 3 + 5?", "Add 3 and 5.", ...), ``add_1d_word`` the same as one-step word
problems ("Sam has 3 marbles and finds 5 more. ..."), ``add_small`` a two-digit plus a one-digit number, ``add`` two
two-digit numbers; ``sub_1d``, ``sub_1d_word``, ``sub``, ``add_word``, ``sub_word`` are the differences and two-digit
word problems (never negative). The default mix is the measured level of SmolLM2-135M-Instruct at temperature 1:
about 0.3 on one-digit sums and ~0 on everything harder (``data/real/README.md``).

Determinism: one ``random.Random(seed)`` (Mersenne Twister, the same stream on every platform and Python version)
draws the questions; a question text already drawn, or one of ``data/real/prompts.jsonl``, is drawn again, so every
line is distinct and the held-out set shares no question text with the training set (or with the demo's prompts).
Train and held-out lines are dealt evenly from one stream of distinct questions (every fifth to held-out for
400 + 100), so both files have the same mix of kinds.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drift.config import Checks, add_config_arguments, config_from_namespace, opt, save_config

ROOT = Path(__file__).resolve().parent.parent
DEMO_PROMPTS = ROOT / "data" / "real" / "prompts.jsonl"

TEACHER_TEMPLATE = 'Reference answer: "{solution}. The answer is {answer}." Repeat the reference answer.'
"""The privileged system prompt of ``data/real/prompts.jsonl`` (``data/real/README.md`` says why this wording)."""

NAMES = ("Sam", "Lena", "Tom", "Mia", "Ben", "Anna", "Kim", "Omar", "Lucy", "Ravi", "Eva", "Noah", "Zoe", "Leo")
ITEMS = ("marbles", "apples", "stickers", "coins", "books", "stamps", "pencils", "cards", "shells", "cookies")

# plain-expression wordings (several, so the few one-digit sums give enough distinct questions)
PLAIN = {"+": ("What is {a} + {b}?", "What is {a} plus {b}?", "What is the sum of {a} and {b}?", "Add {a} and {b}.",
               "What do you get when you add {a} and {b}?"),
         "-": ("What is {a} - {b}?", "What is {a} minus {b}?")}
# word-problem templates: (question with {name} {a} {b} {items}, operator)
ADD_WORDS = (
    "{name} has {a} {items} and finds {b} more. How many {items} does {name} have now?",
    "{name} had {a} {items}. A friend gave {name} {b} more. How many {items} does {name} have in total?",
    "A shop sold {a} {items} in the morning and {b} {items} in the afternoon. How many {items} did it sell that day?",
)
SUB_WORDS = (
    "{name} has {a} {items} and gives away {b} of them. How many {items} does {name} have left?",
    "There were {a} {items} in a box. {name} took {b} of them. How many {items} are still in the box?",
    "{name} needs {a} {items} and already has {b}. How many more {items} does {name} need?",
)


def _operands(rng: random.Random, kind: str) -> tuple[int, int]:
    """Two operands; for a difference the first is larger, so every answer is a positive whole number."""
    if kind == "add_small":
        return rng.randint(10, 89), rng.randint(2, 9)
    if kind in ("add_1d", "add_1d_word"):
        return rng.randint(1, 9), rng.randint(1, 9)
    if kind in ("sub_1d", "sub_1d_word"):
        return rng.randint(10, 18), rng.randint(2, 9)
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if kind.startswith("sub"):
        a, b = max(a, b), min(a, b)
        if a == b:
            a += 1
    return a, b


def _question(rng: random.Random, kind: str) -> tuple[str, str]:
    """(question text, solution expression 'a op b') of one draw of ``kind``."""
    a, b = _operands(rng, kind)
    op = "-" if kind.startswith("sub") else "+"
    if kind in ("add", "sub", "add_small", "add_1d", "sub_1d"):
        return rng.choice(PLAIN[op]).format(a=a, b=b), f"{a} {op} {b}"
    templates = SUB_WORDS if op == "-" else ADD_WORDS
    text = rng.choice(templates).format(name=rng.choice(NAMES), items=rng.choice(ITEMS), a=a, b=b)
    return text, f"{a} {op} {b}"


KINDS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    k: (lambda rng, k=k: _question(rng, k))
    for k in ("add_1d", "sub_1d", "add_1d_word", "sub_1d_word", "add_small", "add", "sub", "add_word", "sub_word")
}


def evaluate_expression(expr: str) -> int:
    """The value of a solution expression ``'a + b'`` / ``'a - b'`` (whole numbers, left to right)."""
    tokens = expr.split()
    value = int(tokens[0])
    for op, num in zip(tokens[1::2], tokens[2::2], strict=True):
        value = value + int(num) if op == "+" else value - int(num) if op == "-" else _bad(op)
    return value


def _bad(op: str) -> int:
    raise ValueError(f"unknown operator {op!r} in a solution expression (only + and - are generated)")


def make_record(pid: str, question: str, expr: str) -> dict[str, Any]:
    """One prompt line in the format of ``data/real/prompts.jsonl``."""
    answer = str(evaluate_expression(expr))
    solution = f"{expr} = {answer}"
    user = {"role": "user", "content": question}
    return {"id": pid, "prompt": [user], "answer": answer,
            "teacher_prompt": [{"role": "system", "content": TEACHER_TEMPLATE.format(solution=solution,
                                                                                     answer=answer)}, user],
            "solution": solution}


def parse_mix(mix: tuple[str, ...]) -> dict[str, float]:
    """``('add:1', 'sub_word:2')`` -> ``{'add': 1.0, 'sub_word': 2.0}`` (a kind without weight has weight 1)."""
    out: dict[str, float] = {}
    for item in mix:
        kind, _, weight = item.partition(":")
        out[kind.strip()] = float(weight) if weight else 1.0
    return out


@dataclass(frozen=True)
class RealPromptsConfig:
    """``python -m scripts.make_real_prompts``: deterministic arithmetic prompts for real-model OPD training."""

    out: str = opt("data/real", "output folder (train.jsonl, heldout.jsonl, prompts_config.json)")
    train: int = opt(400, "training prompts")
    heldout: int = opt(100, "held-out prompts (no question text shared with train)")
    seed: int = opt(13, "seed of the one random stream all questions are drawn from")
    mix: tuple[str, ...] = opt(("add_1d:2", "add_1d_word:1", "add_small:1", "add:1"),
                               "kinds and their weights, kind:weight (" + ", ".join(KINDS) + ")")

    def __post_init__(self) -> None:
        c = Checks("RealPromptsConfig")
        c.check(bool(self.out), "out is required")
        c.positive("train", self.train)
        c.positive("heldout", self.heldout)
        try:
            mix = parse_mix(self.mix)
        except ValueError:
            mix = {}
            c.check(False, f"mix entries must be kind:weight with a number as weight, got {list(self.mix)}")
        bad = [k for k in mix if k not in KINDS]
        c.check(not bad, f"unknown kinds {bad} in mix; choose from {list(KINDS)}")
        c.check(all(w >= 0 for w in mix.values()) and sum(mix.values()) > 0,
                f"mix weights must be >= 0 with a positive sum, got {mix}")
        c.raise_if_any()


def generate(cfg: RealPromptsConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train records, held-out records): distinct questions from one seeded stream, dealt evenly."""
    rng = random.Random(cfg.seed)
    mix = parse_mix(cfg.mix)
    kinds, weights = list(mix), [mix[k] for k in mix]
    seen = {json.loads(line)["prompt"][0]["content"] for line in DEMO_PROMPTS.read_text().splitlines()
            if line.strip()} if DEMO_PROMPTS.exists() else set()
    need, drawn, tries = cfg.train + cfg.heldout, [], 0
    while len(drawn) < need:
        tries += 1
        if tries > 50 * need:
            raise ValueError(f"could not draw {need} distinct questions from mix {mix}; lower --train/--heldout")
        kind = rng.choices(kinds, weights)[0]
        question, expr = KINDS[kind](rng)
        if question not in seen:
            seen.add(question)
            drawn.append((kind, question, expr))
    # deal the stream evenly (line i is held-out when floor((i + 1) H / N) > floor(i H / N)): a kind whose few
    # distinct questions run out late in the stream is then equally rare in both files
    to_heldout = [(i + 1) * cfg.heldout // need > i * cfg.heldout // need for i in range(need)]
    held = [d for d, h in zip(drawn, to_heldout, strict=True) if h]
    rest = [d for d, h in zip(drawn, to_heldout, strict=True) if not h]
    heldout = [make_record(f"h{i:03d}-{kind}", q, e) for i, (kind, q, e) in enumerate(held)]
    train = [make_record(f"t{i:03d}-{kind}", q, e) for i, (kind, q, e) in enumerate(rest)]
    return train, heldout


def write(cfg: RealPromptsConfig) -> dict[str, Path]:
    """Write ``train.jsonl``, ``heldout.jsonl`` and ``prompts_config.json`` into ``cfg.out``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    train, heldout = generate(cfg)
    paths = {"train": out / "train.jsonl", "heldout": out / "heldout.jsonl"}
    for name, rows in (("train", train), ("heldout", heldout)):
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_config(cfg, out / "prompts_config.json", command="python -m scripts.make_real_prompts")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, RealPromptsConfig)
    cfg = config_from_namespace(RealPromptsConfig, parser.parse_args(argv))
    paths = write(cfg)
    for name, path in paths.items():
        print(f"{name}: {sum(1 for _ in path.open())} prompts -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
