"""Real-model demo: context distillation with SmolLM2-135M-Instruct, offline, on CPU (about 6 min on 2 cores).

    python -m scripts.demo_real --out runs/real --if-exists overwrite          # the full demo (`make demo-real`)
    python -m scripts.demo_real --out /tmp/real --max-prompts 3 --max-new-tokens 16 \\
        --probe-ratios 0,1 --n-boot 200 --if-exists overwrite                   # smoke run (under a minute)
    python -m scripts.demo_real --out runs/real-all --probe-max-rollouts 0     # probe all 80 rollouts (~10 min)

The student is SmolLM2-135M-Instruct as shipped (the chat template adds its default system prompt). The teacher is
the *same weights* given a privileged system prompt the student never sees: for the 40 arithmetic prompts of
``data/real/prompts.jsonl``, that question's reference answer and the instruction to repeat it (each line's
``teacher_prompt``; ``data/real/README.md`` says why this prompt). This is a privileged self-teacher, the setting in
which related work (PW-OPSD, PAPER.md §8) reports the *opposite* position effect to IW-OPD's, so the demo measures
the direction and prints what it finds; it assumes nothing.

Stages, each timed (outputs in --out):

1. collect   student rollouts scored by student and teacher      OUT/{rollouts,tokens}/, manifest.json, config.json
2. fit       per-token metrics by relative position, bootstrap   OUT/fit/{bins.parquet,fits.json,config.json}
             intervals over rollouts, curve fits, direction tests
3. probe     cut each rollout at prefix ratios, continue with    OUT/probe/ (continuations, accuracy.parquet,
             teacher and student, verify the final answer         auroc.json)
4. recommend a schedule from the measured supervision quality    OUT/schedule.json (+ .recommendation.json)
5. report    one HTML page (``drift report``)                    OUT/report.html

Then it prints, in plain words, whether each metric rises, falls or is flat along the response (Spearman rho with
a rollout-bootstrap interval), and writes the timings and verdicts to OUT/demo_real.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # drift loads local weights only; never touch the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from drift.config import Checks, add_config_arguments, config_from_namespace, opt, save_config

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROMPTS = ROOT / "data" / "real" / "prompts.jsonl"
DERIVED = ("fit", "probe", "schedule.json", "schedule.recommendation.json", "report.html", "report.md",
           "report_files", "demo_real.json")
DEFAULT_METRICS = ("kl_reverse", "k3", "advantage", "teacher_top1", "teacher_entropy", "cum_abs_gap_frac")

# What each metric is, for the plain-words verdicts (the fit itself only knows column names).
METRIC_WORDS = {
    "kl_reverse": "per-token KL(student || teacher)",
    "k3": "per-token k3 (sampled KL estimate)",
    "advantage": "per-token advantage A_t = log pi_T - log pi_S",
    "teacher_top1": "share of sampled tokens that are the teacher's top choice",
    "teacher_entropy": "teacher entropy",
    "cum_abs_gap_frac": "cumulative |A| fraction C_t / C_T (IW-OPD's signal; rises by construction)",
    "kl_forward": "per-token KL(teacher || student)",
    "student_entropy": "student entropy",
    "topk_overlap": "teacher/student top-16 overlap",
}


@dataclass(frozen=True)
class DemoRealConfig:
    """``python -m scripts.demo_real``: collect, fit, probe, recommend and report on SmolLM2 context distillation."""

    out: str = opt("runs/real", "output folder: the dataset, with fit/, probe/, schedule.json and report.html")
    prompts: str = opt(str(DEFAULT_PROMPTS), "prompt file (JSON Lines; teacher_prompt holds the privileged hint)")
    model: str = opt("smollm2", "student and teacher weights (the teacher differs only by its prompt)")
    teacher_system_prompt: str | None = opt(None, "privileged system prompt for prompts without their own "
                                                  "teacher_prompt (the shipped prompts all have one)")
    max_prompts: int | None = opt(None, "use only the first N prompts")
    samples_per_prompt: int = opt(2, "student rollouts per prompt")
    max_new_tokens: int = opt(96, "response length cap (tokens)")
    temperature: float = opt(1.0, "sampling temperature of rollouts and probe continuations")
    seed: int = opt(0, "sampling and bootstrap seed")
    metrics: tuple[str, ...] = opt(DEFAULT_METRICS, "token columns to bin, fit and test for direction")
    bins: int = opt(10, "relative-position bins for the fit")
    n_boot: int = opt(1000, "rollout-bootstrap resamples (intervals, fit errors, direction tests)")
    probe: bool = opt(True, "run the continuation probe (the evidence `recommend` needs)")
    probe_ratios: tuple[float, ...] = opt((0.0, 0.25, 0.5, 0.75, 1.0), "prefix ratios of the continuation probe")
    probe_continuations: int = opt(1, "continuations per (rollout, ratio, model)")
    probe_max_rollouts: int = opt(40, "probe only the first N rollouts, 0 = all (the probe is the slowest stage: "
                                      "about 6 s per rollout on 2 CPU cores; all 80 take the demo to ~10 min)")
    gamma: float = opt(0.5, "bonus strength of the recommended schedule (weights in [1, 1 + gamma])")
    report: bool = opt(True, "write OUT/report.html with `drift report`")
    num_threads: int | None = opt(None, "torch CPU threads (default: torch's choice)")
    device: str = opt("auto", "auto (CUDA if available), cpu, cuda")
    if_exists: str = opt("fail", "when --out exists: fail or overwrite", choices=("fail", "overwrite"))
    progress: bool = opt(True, "show progress bars")

    def __post_init__(self) -> None:
        for name, kind in (("metrics", str), ("probe_ratios", float)):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            object.__setattr__(self, name, tuple(kind(v) for v in value))
        c = Checks("DemoRealConfig")
        c.check(bool(self.out), "--out is required")
        c.positive("samples_per_prompt", self.samples_per_prompt)
        c.positive("max_new_tokens", self.max_new_tokens)
        c.positive("max_prompts", self.max_prompts, allow_none=True)
        c.check(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        c.check(len(self.metrics) > 0, "--metrics must name at least one token column")
        c.in_range("bins", self.bins, 3, 200)
        c.check(self.n_boot >= 50, f"--n-boot must be >= 50 for bootstrap intervals, got {self.n_boot}")
        c.check(not self.probe or len(self.probe_ratios) >= 2, "--probe-ratios needs at least two ratios")
        c.positive("probe_continuations", self.probe_continuations)
        c.check(self.probe_max_rollouts >= 0, f"--probe-max-rollouts must be >= 0 (0 = all), got "
                                              f"{self.probe_max_rollouts}")
        c.positive("gamma", self.gamma)
        c.positive("num_threads", self.num_threads, allow_none=True)
        c.choice("if_exists", self.if_exists, ("fail", "overwrite"))
        c.raise_if_any()


class _Clock:
    """Times the demo's stages and prints one line per stage as it starts and ends."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def stage(self, name: str, what: str) -> _Stage:
        return _Stage(self, name, what)

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start


class _Stage:
    def __init__(self, clock: _Clock, name: str, what: str) -> None:
        self.clock, self.name, self.what = clock, name, what

    def __enter__(self) -> _Stage:
        print(f"\n[{self.clock.total:6.1f}s] {self.name}: {self.what}", flush=True)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.clock.seconds[self.name] = round(time.perf_counter() - self.t0, 2)
        if exc[0] is None:
            print(f"[{self.clock.total:6.1f}s] {self.name} done in {self.clock.seconds[self.name]:.1f}s", flush=True)


def _rho_text(d: dict[str, Any]) -> str:
    """``rho [lo, hi]``; n/a where a value is missing (fewer than three bins or ratios give no rho)."""
    def f(v: Any) -> str:
        return "n/a" if v is None or not math.isfinite(v) else f"{v:+.2f}"

    return f"{f(d.get('rho'))} [{f(d.get('ci_low'))}, {f(d.get('ci_high'))}]"


def _verdict_sentence(metric: str, direction: dict[str, Any], first: dict[str, float], last: dict[str, float],
                      bins: int) -> str:
    """One plain sentence: what the metric does along the response, with the numbers behind it."""
    words = METRIC_WORDS.get(metric, metric)
    verb = {"rises": "rises", "falls": "falls", "flat": "is flat", "inconclusive": "shows no clear direction",
            "insufficient": "cannot be judged (too few prompts)"}[direction["verdict"]]
    rho_text = _rho_text(direction)
    share = f"{100 / bins:.0f}%"
    return (f"{words} {verb} along the response: Spearman rho {rho_text}; first {share} of the response "
            f"{first['mean']:.3g} [{first['ci_low']:.3g}, {first['ci_high']:.3g}], last {share} "
            f"{last['mean']:.3g} [{last['ci_low']:.3g}, {last['ci_high']:.3g}]")


def _ends(bins: Any, metric: str) -> tuple[dict[str, float], dict[str, float]]:
    from drift.stats import pooled_rows

    d = pooled_rows(bins, metric)
    pick = ("mean", "ci_low", "ci_high")
    return ({k: float(d.iloc[0][k]) for k in pick}, {k: float(d.iloc[-1][k]) for k in pick})


def run_report(dataset: Path, html: Path, cfg: DemoRealConfig) -> bool:
    """Write the HTML report with ``drift report DATASET --out FILE.html``; False when that command is missing.

    The report finds fit/, probe/ and schedule.json beside the dataset and shows them.
    """
    if importlib.util.find_spec("drift.cli.report") is None:
        return False
    from drift.cli import main as drift_main

    code = drift_main(["report", str(dataset), "--out", str(html), "--metrics", ",".join(cfg.metrics),
                       "--bins", str(cfg.bins), "--n-boot", str(cfg.n_boot), "--seed", str(cfg.seed),
                       "--title", "drift report: SmolLM2-135M-Instruct context distillation (privileged "
                                  "reference-answer teacher)"])
    if code == 1:
        print("  the report was written, but some sections failed (see the messages above and in the report)")
    elif code != 0:
        raise SystemExit(f"drift report failed with exit code {code}")
    return True


def run_demo(cfg: DemoRealConfig) -> dict[str, Any]:
    """Run every stage; return (and write to OUT/demo_real.json) the timings, verdicts and output paths."""

    from drift.collect.config import CollectConfig, ScoringOptions
    from drift.collect.pipeline import collect
    from drift.collect.prompts import read_prompts
    from drift.probe.analysis import analyze
    from drift.probe.config import ProbeConfig
    from drift.probe.run import probe
    from drift.runtime.checks import preflight_out
    from drift.runtime.loading import load_pair
    from drift.schedules.recommend import RecommendConfig, recommend_from_config
    from drift.stats import FitConfig, run_fit

    out = Path(cfg.out)
    preflight_out(out, cfg.if_exists)  # fail before loading the model
    if cfg.if_exists == "overwrite" and (out / "manifest.json").exists():
        # collect replaces the dataset itself; drop what this demo derived from the old one, so a stale probe or
        # schedule never ends up in the new report
        for name in DERIVED:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    clock = _Clock()
    scoring = ScoringOptions(device=cfg.device, num_threads=cfg.num_threads, progress=cfg.progress)
    summary: dict[str, Any] = {"out": str(out)}

    with clock.stage("load", f"{cfg.model} weights and tokenizer (first use dequantizes the GGUF, ~20 s)"):
        # one model: student and teacher share the weights (the runtime layer returns the same object)
        pair = load_pair(cfg.model, cfg.model, device=cfg.device, num_threads=cfg.num_threads)
        tokenizer, model = pair.tokenizer, pair.student
        prompts = read_prompts(cfg.prompts, limit=cfg.max_prompts)
        print(f"  {len(prompts)} prompts from {cfg.prompts}; "
              f"{sum(p.teacher_prompt is not None for p in prompts)} carry a privileged teacher prompt")

    with clock.stage("collect", f"{len(prompts)} prompts x {cfg.samples_per_prompt} rollouts, "
                                f"<= {cfg.max_new_tokens} new tokens, scored by student and teacher"):
        collect_cfg = CollectConfig(out=str(out), student=cfg.model, teacher=cfg.model, prompts=cfg.prompts,
                                    samples_per_prompt=cfg.samples_per_prompt, max_prompts=cfg.max_prompts,
                                    max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                    seed=cfg.seed, teacher_system_prompt=cfg.teacher_system_prompt,
                                    if_exists=cfg.if_exists, scoring=scoring)
        ds = collect(model, model, tokenizer, prompts, collect_cfg)
        rollouts = ds.read("rollouts", columns=["response_len", "finished", "reward"]).to_pandas()
        rewards = rollouts["reward"].dropna()
        summary["collect"] = {"n_rollouts": len(rollouts), "n_tokens": int(rollouts["response_len"].sum()),
                              "mean_response_len": float(rollouts["response_len"].mean()),
                              "finished_frac": float(rollouts["finished"].mean()),
                              "student_accuracy": float(rewards.mean()) if len(rewards) else None}
        acc = summary["collect"]["student_accuracy"]
        print(f"  {len(rollouts)} rollouts, {summary['collect']['n_tokens']} tokens, mean length "
              f"{summary['collect']['mean_response_len']:.1f}, {100 * summary['collect']['finished_frac']:.0f}% "
              f"finished" + (f", student accuracy {acc:.2f}" if acc is not None else ""))

    with clock.stage("fit", f"{len(cfg.metrics)} metrics x {cfg.bins} relative-position bins, "
                            f"{cfg.n_boot} rollout-bootstrap resamples"):
        fit_cfg = FitConfig(dataset=str(out), metric=cfg.metrics, out=str(out / "fit"), bins=cfg.bins,
                            n_boot=cfg.n_boot, seed=cfg.seed, if_exists="overwrite")
        fit = run_fit(fit_cfg)
        fit.write()
        print("  " + fit.summary().replace("\n", "\n  "))

    if cfg.probe:
        n_probe = min(cfg.probe_max_rollouts or summary["collect"]["n_rollouts"], summary["collect"]["n_rollouts"])
        with clock.stage("probe", f"cut {n_probe} rollouts at ratios {','.join(f'{r:g}' for r in cfg.probe_ratios)}; "
                                  f"{cfg.probe_continuations} teacher + student continuation(s) each, verified"):
            probe_cfg = ProbeConfig(dataset=str(out), out=str(out / "probe"), ratios=cfg.probe_ratios,
                                    continuations=cfg.probe_continuations, max_rollouts=cfg.probe_max_rollouts or None,
                                    seed=cfg.seed, n_boot=cfg.n_boot,
                                    if_exists="overwrite", scoring=scoring)
            probe_ds = probe(model, model, tokenizer, ds, probe_cfg)
            analysis = analyze(probe_ds, n_boot=cfg.n_boot, seed=cfg.seed)
            analysis.write(probe_ds.root)
            print("  " + analysis.summary().replace("\n", "\n  "))
            summary["probe"] = {"direction": analysis.direction.to_dict(),
                                "sentence": analysis.teacher_sentence,
                                "reliability": analysis.reliability_sentence,
                                "rel_position_auroc": analysis.aurocs.get("rel_position"),
                                "accuracy": analysis.accuracy.to_dict("records")}

    with clock.stage("recommend", "a schedule from the measured supervision quality"):
        try:
            rec, spec_path, _sidecar = recommend_from_config(RecommendConfig(
                dataset=str(out), out=str(out / "schedule.json"), gamma=cfg.gamma, n_boot=cfg.n_boot,
                seed=cfg.seed, force=True))
        except Exception as exc:
            # A failure here must not cost the collect and probe minutes already spent: say so and go on.
            print(f"  RECOMMEND FAILED: {type(exc).__name__}: {exc}\n  (no schedule.json written; rerun "
                  f"`drift schedule recommend {out} --out {out / 'schedule.json'}` once fixed)")
            summary["recommend"] = {"error": f"{type(exc).__name__}: {exc}"}
        else:
            print("  " + rec.report().replace("\n", "\n  "))
            summary["recommend"] = {"choice": rec.choice, "evidence": rec.evidence,
                                    "schedule": rec.schedule.to_dict(), "decile_weights": rec.decile_weights,
                                    "path": str(spec_path)}

    html = out / "report.html"
    if cfg.report:
        with clock.stage("report", f"drift report -> {html}"):
            made = run_report(out, html, cfg)
            if not made:
                print("  `drift report` is not available in this checkout; skipped (the numbers are in fit/, "
                      "probe/ and schedule.recommendation.json)")
        summary["report"] = str(html) if made else None

    verdicts = {}
    for metric in cfg.metrics:
        direction = fit.headline(metric).direction.to_dict()
        first, last = _ends(fit.bins, metric)
        verdicts[metric] = {**direction, "first_bin": first, "last_bin": last,
                            "sentence": _verdict_sentence(metric, direction, first, last, cfg.bins)}
    summary.update(verdicts=verdicts, timings_s=clock.seconds, wall_s=round(clock.total, 1))
    save_config(cfg, out / "demo_real.json", summary=json.loads(json.dumps(summary, default=_plain)))
    _print_conclusion(summary)
    return summary


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


def _print_conclusion(summary: dict[str, Any]) -> None:
    print("\n" + "=" * 100)
    print("Direction of drift along the response (relative position t/T, 95% rollout-bootstrap intervals):")
    for v in summary["verdicts"].values():
        print(f"  - {v['sentence']}")
    if "probe" in summary:
        d = summary["probe"]["direction"]
        print(f"  - {summary['probe']['sentence']}: Spearman rho {_rho_text(d)} (continuation probe)")
        a = summary["probe"]["rel_position_auroc"] or {}
        if all(a.get(k) is not None and math.isfinite(a[k]) for k in ("auroc", "ci_low", "ci_high")):
            print(f"  - {summary['probe']['reliability']}: AUROC of t/T for teacher continuation success "
                  f"{a['auroc']:.2f} [{a['ci_low']:.2f}, {a['ci_high']:.2f}]")
    rec = summary["recommend"]
    if "error" in rec:
        print(f"Recommended schedule: none (recommend failed: {rec['error']})")
    else:
        print(f"Recommended schedule: {rec['choice']} (evidence: {rec['evidence']}); mean weight per decile "
              + " ".join(f"{w:.2f}" for w in rec["decile_weights"]))
    times = ", ".join(f"{k} {v:.0f}s" for k, v in summary["timings_s"].items())
    print(f"Wall time {summary['wall_s'] / 60:.1f} min ({times}).")
    where = summary.get("report") or "not written (--report false, or `drift report` unavailable)"
    print(f"Report: {where}; everything else in {summary['out']} (summary in demo_real.json)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DemoRealConfig)
    cfg = config_from_namespace(DemoRealConfig, parser.parse_args(argv))
    run_demo(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
