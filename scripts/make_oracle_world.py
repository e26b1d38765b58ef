"""Build an oracle world: the task, its tokenizer, a teacher, a weaker student, prompt files.

    python -m scripts.make_oracle_world --out data/oracle                          # shipped default, ~5 min
    python -m scripts.make_oracle_world --out /tmp/oracle-small --variant small    # n = 8..16, ~1 min
    python -m scripts.make_oracle_world --out data/oracle --seed 1                 # another draw
    python -m scripts.make_oracle_world --world plan --out data/plan               # the plan-cipher world

``--world translate_copy`` (the default) builds the translate-copy world (:mod:`drift.worlds.translate_copy`),
``--world plan`` the plan-cipher world (:mod:`drift.worlds.plan_cipher`), whose first tokens fix the outcome.

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

from drift.worlds import PlanCipherWorld, TranslateCopyWorld, World
from drift.worlds.plan_cipher import PlanData
from drift.worlds.sft import SFTConfig, evaluate, sample_rollouts, supervision_quality, train_world_model

TRAIN_PROMPTS = 512
HELDOUT_PROMPTS = 128
QUALITY_SAMPLES = 4
"""Student rollouts per held-out prompt used to measure the teacher's supervision quality."""

_STUDENT = {"layers": 2, "width": 96, "steps": 600, "eval_from": 100, "eval_every": 5,
            "select_token_acc": 0.92}
COPY_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"world": {"min_len": 30, "max_len": 48},
                "teacher": {"layers": 3, "width": 96, "steps": 600},
                "student": _STUDENT},
    "small": {"world": {"min_len": 8, "max_len": 16},
              "teacher": {"layers": 2, "width": 96, "steps": 250, "curriculum_steps": 100},
              "student": {**_STUDENT, "steps": 250, "curriculum_steps": 100, "eval_from": 40,
                          "eval_every": 2}},
}
"""Translate-copy world and model settings of each variant (everything else: the ``SFTConfig`` defaults)."""

_FIXED8 = {"curriculum_steps": 0, "curriculum_start": 8, "train_min_len": 8, "eval_every": 50}
_FIXED4 = {"curriculum_steps": 0, "curriculum_start": 4, "train_min_len": 4, "eval_every": 25}
PLAN_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"world": {},
                "teacher": {"layers": 3, "width": 96, "steps": 500, **_FIXED8},
                "student": {"layers": 2, "width": 96, "steps": 300, **_FIXED8},
                "teacher_data": {}, "student_data": {"known_cue_frac": 0.5}},
    "small": {"world": {"n_cues": 16, "n_symbols": 8, "n_plans": 3, "min_len": 4, "max_len": 4},
              "teacher": {"layers": 2, "width": 96, "steps": 300, **_FIXED4},
              "student": {"layers": 2, "width": 96, "steps": 200, **_FIXED4},
              "teacher_data": {}, "student_data": {"known_cue_frac": 0.5}},
}
"""Plan-cipher world, model and training-data (:class:`PlanData`) settings of each variant. The student never
learnt the keys of a ``1 - known_cue_frac`` share of the cues (no loss on them), so its errors sit at the key."""

WORLD_CHOICES: dict[str, tuple[type[World], dict[str, dict[str, Any]]]] = {
    "translate_copy": (TranslateCopyWorld, COPY_VARIANTS),
    "plan": (PlanCipherWorld, PLAN_VARIANTS),
}
"""``--world``: the world class and its variants."""
VARIANTS = COPY_VARIANTS
"""The default world's variants (kept for callers of the first version of this script)."""


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _save_model(model: Any, tokenizer: Any, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _files_table(log: dict[str, Any], *, heldout: str = "", logged: str = "configs, ") -> str:
    """The README's table of a world folder's files (both worlds share the layout)."""
    p = log["prompts"]
    return f"""| file | what |
|---|---|
| `world.json` | the task (`drift.worlds.load_world`) |
| `tokenizer/` | word-level Hugging Face tokenizer (`AutoTokenizer.from_pretrained`) |
| `teacher/`, `student/` | Llama causal LMs with the tokenizer (`AutoModelForCausalLM.from_pretrained`) |
| `prompts/train.jsonl` | {p['train']} prompts `{{"id", "prompt", "answer", "task"}}` |
| `prompts/heldout.jsonl` | {p['heldout']} prompts, disjoint from train{heldout} |
| `training_log.json` | {logged}parameter counts, wall times, evaluation curves, the numbers below |"""


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

{_files_table(log)}

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


def _plan_readme(log: dict[str, Any], out: Path) -> str:
    t, s, q = log["teacher"], log["student"], log["supervision_quality"]
    w, sd = log["world"], log["student"]["data"]
    n = w["min_len"] if w["min_len"] == w["max_len"] else f"{w['min_len']} to {w['max_len']}"

    def row(name: str, m: dict[str, Any]) -> str:
        h = m["heldout"]
        return (f"| {name} | {m['config']['layers']} x {m['config']['width']} | {m['n_parameters']:,} | "
                f"{m['selected_step']} | {h['token_acc']:.3f} | {h['token_acc_key']:.3f} | "
                f"{h['token_acc_body']:.3f} | {h['greedy_exact']:.3f} | {h['sampled_exact']:.3f} | "
                f"{h['greedy_exact_key']:.3f} | {h['sampled_exact_key']:.3f} | {h['greedy_first_error_median']} | "
                f"{h['sampled_first_error_median']} |")

    header = ("| model | layers x width | parameters | steps | teacher-forced token acc | ... on key slots "
              "| ... on later slots | greedy exact | sampled exact (T=1) | key acc (greedy) | key acc (T=1) "
              "| median first error (greedy) | (T=1) |")
    task = textwrap.fill(
        f"The second oracle world of drift, where early decisions fix the outcome. Prompt: `<bos>`, a cue "
        f"(`c00`..`c{w['n_cues'] - 1:02d}`), {n} distinct input symbols (`i00`..`i{w['n_symbols'] - 1:02d}`), "
        f"`<sep>`. Correct response: the cue's key, {w['key_len']} "
        f"tokens (`k0`..`k{w['n_plans'] - 1}`) from a fixed random table (seed {w['table_seed']}; memorised, "
        "nothing in the prompt predicts it), then each input enciphered by the first key token a: "
        f"`o{{a}}_{{(x + 7a + 3) mod {w['n_symbols']}}}`, then `<eos>`. Given the key every later token is "
        "a local, deterministic function of it; a wrong first key token makes every later token wrong. Both "
        f"models are trained to follow the key they are given ({t['data']['corrupt_key_prob']:.0%} of the "
        "training examples carry a random key, with no loss on it), so a teacher scoring a wrong-key prefix "
        "keeps enciphering with the wrong key. See `drift/worlds/plan_cipher.py`.", width=110)
    wq = log["supervision_quality_wrong_plan"]
    quality = textwrap.fill(
        f"Supervision quality: on {q['n_rollouts']} sampled student rollouts (T=1), the teacher's argmax "
        f"equals the oracle token on **{q['clean_acc']}** of {q['n_clean']:,} slots whose prefix is still "
        f"correct, and on **{q['error_acc']}** of {q['n_error']:,} slots whose prefix already holds an "
        f"error; on those it names the token the rollout holds (follows the error) on **{q['error_agree']}**. "
        "The error slots include rollouts whose first key token is right and only a later one wrong: their "
        f"enciphered symbols are still the oracle's. On the {wq['n_rollouts']} rollouts whose first token (the "
        f"plan) is wrong, the teacher's argmax equals the oracle on **{wq['error_acc']}** of their "
        f"{wq['n_error']:,} later slots and names the rollout's own token on **{wq['error_agree']}**: its "
        "oracle hits are the second key token, which it still recalls from the cue, and the EOS, which every "
        "plan shares; on the enciphered symbols it follows the wrong plan.",
        width=110)
    student = textwrap.fill(
        f"The student is the teacher's recipe at a smaller size, trained all its steps, but its key tokens "
        f"carry loss for only {sd['known_cue_frac']:.0%} of the cues: it never learnt the other cues' keys, "
        "so it is weak on the early decision and good at everything after it; its first error sits at the "
        "key.", width=110)
    regenerate = (f"python -m scripts.make_oracle_world --world plan --out {out.as_posix()} --variant "
                  f"{log['variant']} --seed {log['seed']}")
    return f"""# Plan-cipher world ({log['variant']} variant, seed {log['seed']})

{task}

{_files_table(log, heldout=" (same cues, new inputs)", logged="configs, data options, ")}

## Numbers (held-out prompts)

{header}
|---|---|---|---|---|---|---|---|---|---|---|---|---|
{row("teacher", t)}
{row("student", s)}

"Key acc" is the share of free-running responses whose {w['key_len']} key tokens are all right; "later slots"
are the enciphered symbols and the EOS. First-error positions are 0-based response slots, over the wrong
rollouts.

{student}

{quality}

## Use

    drift collect --student {out.as_posix()}/student --teacher {out.as_posix()}/teacher \\
        --prompts {out.as_posix()}/prompts/heldout.jsonl --world {out.as_posix()} --max-new-tokens 16 \\
        --out runs/plan-collect

## Regenerate

    {regenerate}

Same seed, same files on the same machine (wall times in `training_log.json` aside).
"""


def build_oracle_world(out: Path, *, variant: str = "default", seed: int = 0, progress: bool = True,
                       world_name: str = "translate_copy") -> dict[str, Any]:
    """Train and write an oracle world into ``out``; returns the training log (also written to ``out``).

    Args:
        out: the output folder (files in it are overwritten).
        variant: a key of the world's variants (:data:`COPY_VARIANTS`, :data:`PLAN_VARIANTS`).
        seed: seed of models, training data and prompts.
        progress: progress bars and a summary per model on stderr.
        world_name: a key of :data:`WORLD_CHOICES`.
    """
    world_cls, variants = WORLD_CHOICES[world_name]
    spec = variants[variant]
    world = world_cls(**spec["world"])
    tokenizer = world.build_tokenizer()
    out.mkdir(parents=True, exist_ok=True)
    world.save(out)
    tokenizer.save_pretrained(out / "tokenizer")

    train = world.make_prompt_records(np.random.default_rng([seed, 100]), TRAIN_PROMPTS, "train")
    heldout = world.make_prompt_records(np.random.default_rng([seed, 200]), HELDOUT_PROMPTS, "heldout",
                                        exclude={r["prompt"] for r in train})
    _write_jsonl(out / "prompts" / "train.jsonl", train)
    _write_jsonl(out / "prompts" / "heldout.jsonl", heldout)

    log: dict[str, Any] = {**({"world_choice": world_name} if world_name != "translate_copy" else {}),
                           "variant": variant, "seed": seed, "world": world.to_dict(),
                           "prompts": {"train": len(train), "heldout": len(heldout)},
                           "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                        "python": platform.python_version()}}
    models = {}
    for role, seed_offset in (("teacher", 0), ("student", 1)):
        cfg = SFTConfig(**spec[role], seed=seed + seed_offset)
        data = PlanData(**spec[f"{role}_data"]) if f"{role}_data" in spec else None
        model, model_log = train_world_model(world, tokenizer, cfg, data=data, progress=progress)
        model_log["heldout"] = evaluate(model, world, tokenizer, heldout, seed=seed)
        _save_model(model, tokenizer, out / role)
        models[role], log[role] = model, model_log
        if progress:
            print(f"{role}: {model_log['n_parameters']:,} params, {model_log['wall_time_s']} s, "
                  f"step {model_log['selected_step']}, held-out {model_log['heldout']}", file=sys.stderr)

    prompts = [list(tokenizer(r["prompt"])["input_ids"]) for r in heldout for _ in range(QUALITY_SAMPLES)]
    sp = world.special_ids(tokenizer)
    rollouts = sample_rollouts(models["student"], prompts, eos=sp["eos"], pad=sp["pad"], do_sample=True,
                               max_new_tokens=world.max_response_len + 1, seed=seed)
    quality = supervision_quality(models["teacher"], world, tokenizer, prompts, rollouts)
    how = f"student, sampled at temperature 1, {QUALITY_SAMPLES} per held-out prompt"
    log["supervision_quality"] = {"rollouts": how, "n_rollouts": len(rollouts), **quality}
    if world_name == "plan":  # the rollouts whose very first token (the plan) is wrong
        first = [i for i, (p, r) in enumerate(zip(prompts, rollouts, strict=True))
                 if world.first_error(p, r, tokenizer) == 0]
        wrong = supervision_quality(models["teacher"], world, tokenizer, [prompts[i] for i in first],
                                    [rollouts[i] for i in first])
        log["supervision_quality_wrong_plan"] = {"n_rollouts": len(first), **wrong}
    (out / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
    readme = _plan_readme if world_name == "plan" else _readme
    (out / "README.md").write_text(readme(log, out))
    return log


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, build the oracle world, print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (files in it are overwritten)")
    parser.add_argument("--world", choices=sorted(WORLD_CHOICES), default="translate_copy",
                        help="translate_copy (data/oracle) or plan (the plan-cipher world, data/plan)")
    parser.add_argument("--variant", choices=sorted(COPY_VARIANTS), default="default",
                        help="default: the shipped world; small: short prompts and small models, for tests")
    parser.add_argument("--seed", type=int, default=0, help="seed of models, training data and prompts")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest for these models)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quiet:
        transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    log = build_oracle_world(args.out, variant=args.variant, seed=args.seed, progress=not args.quiet,
                             world_name=args.world)
    q, t, s = log["supervision_quality"], log["teacher"]["heldout"], log["student"]["heldout"]
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s: teacher greedy exact {t['greedy_exact']}, "
          f"student token acc {s['token_acc']} / greedy exact {s['greedy_exact']}, supervision quality "
          f"clean {q['clean_acc']} vs error {q['error_acc']}"
          + (f", student greedy key acc {s['greedy_exact_key']}" if "greedy_exact_key" in s else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
