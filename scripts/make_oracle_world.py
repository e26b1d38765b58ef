"""Build the oracle world: the translate-copy task, its tokenizer, a teacher, a weaker student, prompt files.

    python -m scripts.make_oracle_world --out data/oracle                          # shipped default, ~5 min
    python -m scripts.make_oracle_world --out /tmp/oracle-small --variant small    # n = 8..16, ~1 min
    python -m scripts.make_oracle_world --out data/oracle --seed 1                 # another draw

Writes into OUT: ``world.json``, ``tokenizer/``, ``teacher/`` and ``student/`` (Hugging Face model folders
with the tokenizer saved in each, loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer``),
``prompts/train.jsonl`` (512 prompts) and ``prompts/heldout.jsonl`` (128 prompts, disjoint from train),
``training_log.json`` (configs, parameter counts, wall times, the selected student step, held-out evaluations
and the teacher's supervision quality on the student's own rollouts) and ``README.md``. The same seed gives
the same files on the same machine (the wall times in ``training_log.json`` aside). Training runs on the CPU
with one thread, the fastest setting for models this small.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import transformers

from drift.worlds import TranslateCopyWorld
from drift.worlds.sft import SFTConfig, evaluate, sample_rollouts, supervision_quality, train_world_model

TRAIN_PROMPTS = 512
HELDOUT_PROMPTS = 128
QUALITY_SAMPLES = 4
"""Student rollouts per held-out prompt used to measure the teacher's supervision quality."""

_STUDENT = {"layers": 2, "width": 96, "steps": 600, "eval_from": 100, "eval_every": 5,
            "select_token_acc": 0.92}
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"world": {"min_len": 30, "max_len": 48},
                "teacher": {"layers": 3, "width": 96, "steps": 600},
                "student": _STUDENT},
    "small": {"world": {"min_len": 8, "max_len": 16},
              "teacher": {"layers": 2, "width": 96, "steps": 250, "curriculum_steps": 100},
              "student": {**_STUDENT, "steps": 250, "curriculum_steps": 100, "eval_from": 40,
                          "eval_every": 2}},
}
"""World and model settings of each variant (everything else: the ``SFTConfig`` defaults)."""


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _save_model(model: Any, tokenizer: Any, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _readme(log: dict[str, Any], out: Path) -> str:
    t, s, q = log["teacher"], log["student"], log["supervision_quality"]
    w = log["world"]

    def row(name: str, m: dict[str, Any]) -> str:
        h = m["heldout"]
        return (f"| {name} | {m['config']['layers']} x {m['config']['width']} | {m['n_parameters']:,} | "
                f"{m['selected_step']} | {h['token_acc']:.3f} | {h['greedy_exact']:.3f} | "
                f"{h['sampled_exact']:.3f} | {h['greedy_first_error_median']} |")

    header = ("| model | layers x width | parameters | step | teacher-forced token acc | greedy exact "
              "| sampled exact (T=1) | median first error (greedy) |")
    task = textwrap.fill(
        f"The offline default task of drift, with ground truth. Prompt: `<bos>`, n distinct input symbols "
        f"(`i00`..`i{w['n_symbols'] - 1:02d}`, n from {w['min_len']} to {w['max_len']}), `<sep>`. Correct "
        f"response: each symbol mapped through f(x) = ({w['mult']}x + {w['offset']}) mod {w['n_symbols']} "
        "into the output alphabet (`o00`..), then `<eos>`. A model solves it by finding its last output's "
        "source in the prompt and translating the next symbol, so one wrong token makes it jump and later "
        "tokens go wrong too. See `drift/worlds/translate_copy.py`.", width=110)
    quality = textwrap.fill(
        f"Supervision quality: on {q['n_rollouts']} sampled student rollouts (T=1), the teacher's argmax "
        f"equals the oracle token on **{q['clean_acc']}** of {q['n_clean']:,} slots whose prefix is still "
        f"correct, and on **{q['error_acc']}** of {q['n_error']:,} slots whose prefix already holds an "
        "error.",
        width=110)
    return f"""# Oracle world ({log['variant']} variant, seed {log['seed']})

{task}

| file | what |
|---|---|
| `world.json` | the task (`drift.worlds.load_world`) |
| `tokenizer/` | word-level Hugging Face tokenizer (`AutoTokenizer.from_pretrained`) |
| `teacher/`, `student/` | Llama causal LMs with the tokenizer (`AutoModelForCausalLM.from_pretrained`) |
| `prompts/train.jsonl` | {log['prompts']['train']} prompts `{{"id", "prompt", "answer", "task"}}` |
| `prompts/heldout.jsonl` | {log['prompts']['heldout']} prompts, disjoint from train |
| `training_log.json` | configs, parameter counts, wall times, evaluation curves, the numbers below |

## Numbers (held-out prompts)

{header}
|---|---|---|---|---|---|---|---|
{row("teacher", t)}
{row("student", s)}

The student is trained with the teacher's recipe and stopped at the first checkpoint whose teacher-forced
token accuracy on a selection set reached {s['config']['select_token_acc']}; "step" is where training stopped.

{quality}

## Regenerate

    python -m scripts.make_oracle_world --out {out.as_posix()} --variant {log['variant']} --seed {log['seed']}

Same seed, same files on the same machine (wall times in `training_log.json` aside).
"""


def build_oracle_world(out: Path, *, variant: str = "default", seed: int = 0,
                       progress: bool = True) -> dict[str, Any]:
    """Train and write the oracle world into ``out``; returns the training log (also written to ``out``)."""
    spec = VARIANTS[variant]
    world = TranslateCopyWorld(**spec["world"])
    tokenizer = world.build_tokenizer()
    out.mkdir(parents=True, exist_ok=True)
    world.save(out)
    tokenizer.save_pretrained(out / "tokenizer")

    train = world.make_prompt_records(np.random.default_rng([seed, 100]), TRAIN_PROMPTS, "train")
    heldout = world.make_prompt_records(np.random.default_rng([seed, 200]), HELDOUT_PROMPTS, "heldout",
                                        exclude={r["prompt"] for r in train})
    _write_jsonl(out / "prompts" / "train.jsonl", train)
    _write_jsonl(out / "prompts" / "heldout.jsonl", heldout)

    log: dict[str, Any] = {"variant": variant, "seed": seed, "world": world.to_dict(),
                           "prompts": {"train": len(train), "heldout": len(heldout)},
                           "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                        "python": platform.python_version()}}
    models = {}
    for role, seed_offset in (("teacher", 0), ("student", 1)):
        cfg = SFTConfig(**spec[role], seed=seed + seed_offset)
        model, model_log = train_world_model(world, tokenizer, cfg, progress=progress)
        model_log["heldout"] = evaluate(model, world, tokenizer, heldout, seed=seed)
        _save_model(model, tokenizer, out / role)
        models[role], log[role] = model, model_log
        if progress:
            print(f"{role}: {model_log['n_parameters']:,} params, {model_log['wall_time_s']} s, "
                  f"step {model_log['selected_step']}, held-out {model_log['heldout']}", file=sys.stderr)

    prompts = [list(tokenizer(r["prompt"])["input_ids"]) for r in heldout for _ in range(QUALITY_SAMPLES)]
    sp = world.special_ids(tokenizer)
    rollouts = sample_rollouts(models["student"], prompts, eos=sp["eos"], pad=sp["pad"], do_sample=True,
                               max_new_tokens=world.max_len + 2, seed=seed)
    quality = supervision_quality(models["teacher"], world, tokenizer, prompts, rollouts)
    how = f"student, sampled at temperature 1, {QUALITY_SAMPLES} per held-out prompt"
    log["supervision_quality"] = {"rollouts": how, "n_rollouts": len(rollouts), **quality}
    (out / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
    (out / "README.md").write_text(_readme(log, out))
    return log


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, build the oracle world, print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (files in it are overwritten)")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="default",
                        help="default: n = 30..48, 3-layer teacher; small: n = 8..16, 2-layer teacher")
    parser.add_argument("--seed", type=int, default=0, help="seed of models, training data and prompts")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest for these models)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quiet:
        transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    log = build_oracle_world(args.out, variant=args.variant, seed=args.seed, progress=not args.quiet)
    q, t, s = log["supervision_quality"], log["teacher"]["heldout"], log["student"]["heldout"]
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s: teacher greedy exact {t['greedy_exact']}, "
          f"student token acc {s['token_acc']} / greedy exact {s['greedy_exact']}, supervision quality "
          f"clean {q['clean_acc']} vs error {q['error_acc']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
