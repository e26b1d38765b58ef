"""Benchmark: one OPD training step of drift against a minimal reference loop, on the oracle world.

    python -m benchmarks.bench_train                       # 16 prompts x 4 samples, 3 warm-up + 20 measured rounds
    python -m benchmarks.bench_train --rounds 40 --variants reference,drift
    python -m benchmarks.bench_train --profile drift       # cProfile of drift's step (top 30 by own time)

The toy preset's models (``data/oracle``: a 2-layer student, a 3-layer teacher, 133 token ids) on one CPU thread
(the preset's ``num_threads``). Variants, each with its own copy of the student and its own AdamW:

- ``reference``: the minimal loop of this file (:class:`Reference`): HF ``generate`` on the left-padded batch
  (the same ``GenerationConfig`` and seed as drift, so the same rollouts), one plain forward of each model on the
  generated sequences with ``log_softmax`` + gather of the sampled tokens, the sampled OPD loss
  ``-(1/N) sum sg(A) log pi_S(y_t)`` with A = log pi_T - sg(log pi_S) (drift's ``loss="sampled"`` at uniform
  weights), backward, gradient clipping at ``grad_clip``, AdamW;
- ``drift``: :class:`drift.train.step.OpdStep` with the uniform schedule (what ``drift train`` runs per step,
  its logged statistics and verifier reward included);
- ``drift-iw``: the same with IW-OPD (gamma 0.5), a position schedule that reads the advantages;
- ``drift-copy``: a second, independent instance of ``drift`` (an A/A pair: the spread between the two is the
  measurement's noise floor on this machine);
- ``drift-plain``: drift without its shared-prompt paths (plain ``generate`` prefill, padded prompt + response
  teacher forcing), i.e. the step before this benchmark existed.

Every round k runs step k of each variant in a random order, each from the **same** weights and optimizer state
(copied in untimed; after the round the trajectory follows ``drift``), so all variants sample the same rollouts
and do the same work apart from their implementation. Round 1 checks that the reference and drift compute the
same objective (loss equal to 1e-4 relative; ``tests/train/test_loop.py`` checks loss and gradient on tiny models).

Reported: the median step time of each variant after the warm-up, its ratio to the reference median (target for
``drift``: <= 1.0) and the median of the per-round paired ratios; for drift's variants the median sampling time
and the median time of the schedule's ``weights`` call. The schedule target (IW-OPD adds <= 2 % over uniform) is
checked on that call, IW-OPD's minus uniform's, as a share of drift's median step: both variants do the same work
apart from it (same weights, same rollouts), and on a shared machine the end-to-end difference of two medians,
also printed, is noise of several per cent.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import sys
import time
from collections.abc import Callable
from typing import Any

VARIANTS = ("reference", "drift", "drift-iw", "drift-copy", "drift-plain")


class Reference:
    """The minimal OPD loop: generate, score both models with a plain forward, sampled loss, AdamW."""

    def __init__(self, student: Any, teacher: Any, prompts: list[list[int]], config: Any, stop_ids: list[int],
                 pad_id: int) -> None:
        import torch
        from transformers import GenerationConfig

        self.student, self.teacher, self.prompts, self.config = student, teacher, prompts, config
        self.device = next(student.parameters()).device
        self.pad_id, self.stops = pad_id, torch.as_tensor(stop_ids, device=self.device)
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=config.lr, betas=tuple(config.betas),
                                           weight_decay=config.weight_decay)
        self.gen_cfg = GenerationConfig(max_new_tokens=config.max_new_tokens, do_sample=True,
                                        temperature=config.temperature, top_p=config.top_p, top_k=0,
                                        pad_token_id=pad_id, eos_token_id=list(stop_ids), bos_token_id=None)

    @staticmethod
    def logprobs(model: Any, seq: Any, attention: Any, width: int) -> Any:
        """log pi(y_t) of the tokens after ``width``: one forward, log_softmax, gather."""
        import torch

        positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding: positions count real tokens only
        logits = model(input_ids=seq, attention_mask=attention, position_ids=positions).logits
        logp = torch.log_softmax(logits[:, width - 1: -1].float(), dim=-1)
        return logp.gather(-1, seq[:, width:, None]).squeeze(-1)

    def __call__(self, step: int) -> float:
        import torch

        from drift.collect.rollouts import derive_seed
        from drift.train.evaluate import prompt_indices

        cfg = self.config
        rows = [self.prompts[i] for i in prompt_indices(len(self.prompts), cfg.prompts_per_step, cfg.seed, step)
                for _ in range(cfg.samples_per_prompt)]
        width = max(len(r) for r in rows)
        ids = torch.as_tensor([[self.pad_id] * (width - len(r)) + list(r) for r in rows], device=self.device)
        mask = torch.as_tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        torch.manual_seed(derive_seed(derive_seed(cfg.seed, step), 0))  # drift's seed of batch 0 of step k
        with torch.no_grad():
            seq = self.student.generate(input_ids=ids, attention_mask=mask, generation_config=self.gen_cfg)
        stop = torch.isin(seq[:, width:], self.stops).long()
        valid = (stop.cumsum(-1) - stop) == 0  # up to and including the first stop token
        attention = torch.cat([mask, valid.long()], dim=1)
        student_lp = self.logprobs(self.student, seq, attention, width)
        with torch.no_grad():
            teacher_lp = self.logprobs(self.teacher, seq, attention, width)
        m = valid.float()
        adv = (teacher_lp - student_lp.detach()) * m
        loss = -(adv * student_lp * m).sum() / m.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.student.parameters()), cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())


class _TimedSchedule:
    """Delegates to a schedule and records the wall time of each ``weights`` call (the schedule's own cost)."""

    def __init__(self, schedule: Any) -> None:
        self.schedule, self.seconds = schedule, []

    def weights(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = self.schedule.weights(*args, **kwargs)
        self.seconds.append(time.perf_counter() - t0)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.schedule, name)


def _snapshot(model: Any, optimizer: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Detached copies of the parameters and the per-parameter optimizer state, by parameter name."""
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {n: {k: v.clone() if hasattr(v, "clone") else v for k, v in optimizer.state[p].items()}
             for n, p in model.named_parameters() if p in optimizer.state}
    return params, state


def _restore(model: Any, optimizer: Any, snap: tuple[dict[str, Any], dict[str, dict[str, Any]]]) -> None:
    import torch

    params, state = snap
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(params[n])
    for n, p in model.named_parameters():
        if n in state:
            optimizer.state[p] = {k: v.clone() if hasattr(v, "clone") else v for k, v in state[n].items()}
        else:
            optimizer.state.pop(p, None)


def build(variants: list[str], args: argparse.Namespace) -> tuple[dict[str, tuple[Callable[[int], Any], Any, Any]],
                                                                  Any]:
    """Load the toy world once; return {variant: (step function, student, optimizer)} and the config."""
    import torch

    from drift import schedules
    from drift.collect.config import ScoringOptions
    from drift.train.config import TrainConfig, resolve_preset
    from drift.train.loop import load_setup
    from drift.train.step import prepare_step

    config = resolve_preset(TrainConfig(preset="toy", out="", collect_at=(), prompts_per_step=args.prompts,
                                        samples_per_prompt=args.samples,
                                        scoring=ScoringOptions(progress=False, num_threads=args.threads,
                                                               device=args.device, dtype=args.dtype)))
    setup = load_setup(config)
    torch.set_num_threads(config.scoring.num_threads or torch.get_num_threads())
    out: dict[str, tuple[Callable[[int], Any], Any, Any]] = {}
    for name in variants:
        student = copy.deepcopy(setup.student).requires_grad_(True)
        if name == "reference":
            run = prepare_step(student, setup.teacher, setup.tokenizer, setup.train_prompts,
                               schedules.load({"kind": "uniform"}), config, world=setup.world)
            if any(p.student_ids != p.teacher_ids for p in run.train_prompts):
                raise SystemExit("the reference scores the teacher on the student's prompt: needs equal prompts")
            ref = Reference(student, setup.teacher, [p.student_ids for p in run.train_prompts], config,
                            run.gen["stop_ids"], run.gen["pad_id"])
            out[name] = (ref, student, ref.optimizer)
            continue
        spec = {"kind": "iw_opd", "gamma": 0.5} if name == "drift-iw" else {"kind": "uniform"}
        run = prepare_step(student, setup.teacher, setup.tokenizer, setup.train_prompts,
                           _TimedSchedule(schedules.load(spec)), config, world=setup.world,
                           shared_prefix=name != "drift-plain")
        out[name] = (run, student, run.optimizer)
    return out, config


def measure(args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, dict[str, list[float]]]]:
    """Alternate the variants for ``warmup + rounds`` rounds; return each variant's measured step times and, for
    drift's variants, the parts of each step (``sample``: rollouts; ``schedule``: the weights call)."""
    import numpy as np
    import torch

    variants = [v for v in args.variants.split(",") if v]
    steps, _ = build(variants, args)
    lead = "drift" if "drift" in steps else variants[0]
    snap = _snapshot(*steps[lead][1:])
    times: dict[str, list[float]] = {v: [] for v in variants}
    parts: dict[str, dict[str, list[float]]] = {v: {"sample": [], "schedule": []} for v in variants if v != "reference"}
    cuda = args.device.startswith("cuda")
    rng = np.random.default_rng(0)
    for k in range(1, args.warmup + args.rounds + 1):
        order = [variants[i] for i in rng.permutation(len(variants))]
        after, losses = snap, {}
        for name in order:
            fn, model, opt = steps[name]
            _restore(model, opt, snap)
            t0 = time.perf_counter()
            res = fn(k)
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            losses[name] = res if isinstance(res, float) else res["loss"]
            if k > args.warmup:
                times[name].append(dt)
                if name in parts:
                    parts[name]["sample"].append(res["time/sample"])
                    parts[name]["schedule"].append(fn.schedule.seconds[-1])
            if name == lead:
                after = _snapshot(model, opt)
        snap = after
        if k == 1 and "reference" in losses and "drift" in losses:
            a, b = losses["reference"], losses["drift"]
            print(f"round 1 loss: reference {a:.6f}, drift {b:.6f}", file=sys.stderr)
            if abs(a - b) > 1e-4 * max(1.0, abs(a)):
                raise SystemExit(f"the reference and drift disagree on the loss ({a} vs {b}): not the same objective")
        print(f"round {k}: " + ", ".join(f"{n} {times[n][-1] if k > args.warmup else float('nan'):.3f}s"
                                         for n in variants), file=sys.stderr, flush=True)
    return times, parts


def report(times: dict[str, list[float]], parts: dict[str, dict[str, list[float]]]) -> None:
    """Markdown table of medians and ratios (to the reference median; paired per round), and the schedule's cost."""
    import numpy as np

    med = {n: float(np.median(v)) for n, v in times.items()}
    ref = med.get("reference")
    print("| variant | median s | p25 s | p75 s | / reference median | median of paired ratios | sampling s | "
          "schedule ms |")
    print("|---|---|---|---|---|---|---|---|")
    for n, v in times.items():
        q25, q75 = np.percentile(v, [25, 75])
        ratio = f"{med[n] / ref:.3f}" if ref else "n/a"
        paired = f"{np.median(np.asarray(v) / np.asarray(times['reference'])):.3f}" if ref else "n/a"
        sample = f"{np.median(parts[n]['sample']):.3f}" if n in parts else "n/a"
        sched = f"{1000 * np.median(parts[n]['schedule']):.2f}" if n in parts else "n/a"
        print(f"| {n} | {med[n]:.3f} | {q25:.3f} | {q75:.3f} | {ratio} | {paired} | {sample} | {sched} |")
    if ref and "drift" in med:
        r = med["drift"] / ref
        print(f"\ndrift / reference = {r:.3f} (target <= 1.0: {'met' if r <= 1.0 else 'MISSED'})")
    if "drift" in med and "drift-iw" in med:
        over = 100 * (med["drift-iw"] / med["drift"] - 1)
        paired = 100 * (float(np.median(np.asarray(times["drift-iw"]) / np.asarray(times["drift"]))) - 1)
        if "drift-copy" in med:
            aa = 100 * (med["drift-copy"] / med["drift"] - 1)
            aa_paired = 100 * (float(np.median(np.asarray(times["drift-copy"]) / np.asarray(times["drift"]))) - 1)
            print(f"A/A noise floor, drift-copy over drift (identical work): {aa:+.1f} % of the median step, "
                  f"{aa_paired:+.1f} % median paired")
        own = 100 * (np.median(parts["drift-iw"]["schedule"]) - np.median(parts["drift"]["schedule"])) / med["drift"]
        print(f"IW-OPD over uniform: {over:+.1f} % of the median step, {paired:+.1f} % median paired; the schedule's "
              f"own cost (weights call, IW-OPD minus uniform) {own:+.2f} % of drift's median step "
              f"(target <= 2 %: {'met' if own <= 2.0 else 'MISSED'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per step")
    parser.add_argument("--samples", type=int, default=4, help="samples per prompt")
    parser.add_argument("--warmup", type=int, default=3, help="rounds not measured")
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds (one step of each variant)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the preset's 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="scoring dtype (auto: float32 on CPU; the student is float32)")
    parser.add_argument("--profile", metavar="VARIANT", help="profile this variant's steps instead (cProfile)")
    args = parser.parse_args(argv)
    if args.profile:
        steps, _ = build([args.profile], args)
        fn = steps[args.profile][0]
        for k in range(1, args.warmup + 1):
            fn(k)
        prof = cProfile.Profile()
        prof.enable()
        for k in range(args.warmup + 1, args.warmup + args.rounds + 1):
            fn(k)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return 0
    times, parts = measure(args)
    print(f"\n{args.prompts} prompts x {args.samples} samples, {args.rounds} rounds after {args.warmup} warm-up, "
          f"device {args.device}")
    report(times, parts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
