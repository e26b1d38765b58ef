"""bf16 vs fp32 scoring on SmolLM2-135M-Instruct (issue 8, item 2): mean |A| and log-probs above 0.

    python -m benchmarks.bf16_parity                      # 16 rollouts, 32 new tokens, CPU
    python -m benchmarks.bf16_parity --n 32 --device cuda

Context distillation on one set of rollouts: the student sees the user turn (under the template's default system
turn), the teacher (same weights) a privileged system turn instead, for each teacher of :data:`TEACHERS`.
Rollouts are sampled once (float32 student, temperature 1, fixed seed) and scored three ways:

- ``fp32``: float32 weights, drift's scorer.
- ``bf16 (old)``: the pre-fix computation, reproduced: log p(y) = x_y(float32 dot product) - log Z(bfloat16 tiles),
  i.e. the fixed log-prob plus (x_y in float32 - x_y as the bfloat16 tile holds it).
- ``bf16``: bfloat16 weights, drift's scorer (one precision per log-softmax).

It prints mean |A| (A = log pi_T(y) - log pi_S(y)), the mean |A - A_fp32| and the count of realized-token
log-probs above 0 (student and teacher together).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = (
    "What is 12 plus 30?", "Name the capital of France.", "How many legs does a spider have?",
    "Give me a synonym for happy.", "What colour is the sky on a clear day?", "Write a haiku about rain.",
    "What is the boiling point of water in Celsius?", "Who wrote Romeo and Juliet?",
    "Translate 'thank you' into Spanish.", "What is 7 times 8?", "Name a primary colour.",
    "What gas do plants absorb?", "How many days are in a week?", "What is the largest planet?",
    "Suggest a name for a cat.", "What is the square root of 81?",
)
TEACHERS = {  # privileged system turns: a near-identical teacher (small |A|, where precision matters) and a far one
    "near": "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Answer briefly.",
    "pirate": "You are a pirate. Always answer like a pirate, and keep it short.",
}


def _render(tok: Any, question: str, system: str | None) -> list[int]:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    out = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def old_mixed_logprobs(model: Any, items: list[Any], new: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Pre-fix log-probs [student, teacher] per item: the fixed ones + (float32 x_y - tile x_y), per model."""
    from drift.collect.scoring import LMHead, gather_response_hidden

    lm = LMHead(model)
    out = []
    for it, res in zip(items, new, strict=True):
        y = torch.as_tensor(list(it.response_ids), device=lm.device)
        shifts = []
        for prompt in (it.student_prompt_ids, it.teacher_prompt_ids):
            with torch.inference_mode():
                h = gather_response_hidden(lm, [prompt], [list(it.response_ids)])
                w = lm.head.weight[y]
                fp32 = (h.float() * w.float()).sum(-1)  # the old LMHead.target_logits
                tile = lm.logits(h).float().gather(1, y[:, None])[:, 0]  # what the bf16 tiles hold
            shifts.append((fp32 - tile).cpu().numpy())
        out.append(np.stack([res["student_logprob"] + shifts[0], res["teacher_logprob"] + shifts[1]]))
    return out


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=16, help="rollouts (questions cycle)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from drift.collect.rollouts import sample_responses, stop_token_ids
    from drift.collect.scoring import ScoringItem, score_items
    from drift.models import load_model, load_tokenizer

    tok = load_tokenizer("smollm2")
    fp32 = load_model("smollm2", device=args.device, dtype="float32")
    bf16 = load_model("smollm2", device=args.device, dtype="bfloat16")
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.n)]
    s_prompts = [_render(tok, q, None) for q in qs]
    stops = stop_token_ids(tok, fp32)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else stops[0]
    gens = sample_responses(fp32, s_prompts, stop_ids=stops, pad_id=pad_id, max_new_tokens=args.max_new_tokens,
                            temperature=1.0, batch_size=16, seed=args.seed)

    def lps(res: list[dict[str, np.ndarray]]) -> np.ndarray:
        return np.concatenate([np.stack([r["student_logprob"], r["teacher_logprob"]]) for r in res], axis=1)

    table: dict[str, dict[str, float]] = {}
    n_tok = sum(len(g.response_ids) for g in gens)
    print(f"SmolLM2-135M-Instruct, {len(gens)} rollouts, {n_tok} response tokens, teacher = student weights with a "
          "privileged system turn")
    print(f"{'teacher':<8} {'scoring':<12} {'mean |A|':>9} {'mean |A - A_fp32|':>18} {'log-probs > 0':>14} "
          f"{'max log-prob':>13}")
    for teacher, system in TEACHERS.items():
        t_prompts = [_render(tok, q, system) for q in qs]
        items = [ScoringItem(s, t, g.response_ids) for s, t, g in zip(s_prompts, t_prompts, gens, strict=True)]
        res16 = score_items(bf16, bf16, items)
        lp = {"fp32": lps(score_items(fp32, fp32, items)),
              "bf16 (old)": np.concatenate(old_mixed_logprobs(bf16, items, res16), axis=1), "bf16": lps(res16)}
        a32 = lp["fp32"][1] - lp["fp32"][0]
        for name, v in lp.items():
            a = v[1] - v[0]
            row = {"mean_abs_A": float(np.abs(a).mean()), "mean_abs_dA": float(np.abs(a - a32).mean()),
                   "n_pos": int((v > 0).sum()), "n": int(v.size), "max_lp": float(v.max())}
            table[f"{teacher}/{name}"] = row
            print(f"{teacher:<8} {name:<12} {row['mean_abs_A']:>9.4f} {row['mean_abs_dA']:>18.4f} "
                  f"{row['n_pos']:>7d} / {v.size:<4d} {row['max_lp']:>13.3g}")
    return table


if __name__ == "__main__":
    main()
