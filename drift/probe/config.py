"""Config of the continuation probe: :class:`ProbeConfig` (``drift probe``).

Every model, sampling and prompt setting defaults to ``None`` = "what the probed dataset used" (read from its
``config.json``); :func:`resolve_config` fills them in, and the resolved config is what ``OUT/config.json`` records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from drift.collect.config import CHAT_MODES, IF_EXISTS, ScoringOptions
from drift.config import Checks, opt
from drift.errors import ConfigError
from drift.verifiers import VERIFIERS

__all__ = ["BUDGETS", "DEFAULT_RATIOS", "ProbeConfig", "parse_ratios", "resolve_config"]

DEFAULT_RATIOS: tuple[float, ...] = tuple(round(i / 10, 10) for i in range(11))
"""0, 0.1, ..., 1.0: the paper's grid (§3.1)."""

BUDGETS = ("remaining", "full")


def parse_ratios(text: str) -> tuple[float, ...]:
    """Parse ``"0,0.5,1"`` or an arithmetic range ``"0,0.1,...,1"`` (first two values give the step).

    Raises:
        ConfigError: on anything that is not a list of numbers (or a well-formed ``a,b,...,c`` range).
    """
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        if "..." in parts:
            if len(parts) != 4 or parts[2] != "...":
                raise ValueError("a range is written FIRST,SECOND,...,LAST")
            a, b, last = float(parts[0]), float(parts[1]), float(parts[3])
            step = b - a
            if step <= 0 or last < a:
                raise ValueError("a range must increase")
            n = math.floor((last - a) / step + 1e-6)
            values = [round(a + i * step, 10) for i in range(n + 1)]
            if abs(values[-1] - last) > 1e-6:
                raise ValueError(f"{last} is not on the grid {a} + k*{step:g}")
            return tuple(values)
        return tuple(float(p) for p in parts)
    except ValueError as exc:
        raise ConfigError("ProbeConfig", [f"ratios: cannot parse {text!r} ({exc}); write e.g. 0,0.5,1 or "
                                          "0,0.1,...,1"]) from None


@dataclass(frozen=True)
class ProbeConfig:
    """``drift probe``: continue student rollouts from prefixes with teacher and student, verify, write rows."""

    dataset: str = opt("", "the drift dataset to probe (a folder written by drift collect / drift score)")
    out: str | None = opt(None, "output folder (default: DATASET/probe)")
    ratios: tuple[float, ...] = opt(DEFAULT_RATIOS, "prefix ratios in [0, 1]: keep floor(ratio * T') response "
                                                    "tokens (T' = length without the final EOS); e.g. 0,0.5,1 or "
                                                    "0,0.1,...,1 (default: 0,0.1,...,1)")
    continuations: int = opt(4, "continuations k sampled per (rollout, ratio, model)")
    max_new_tokens: int | None = opt(None, "the response cap N (default: the dataset's max_new_tokens)")
    budget: str = opt("remaining", "continuation budget: remaining = max(1, N - keep) tokens, so prefix + "
                                   "continuation is never longer than an original response; full = N",
                      choices=BUDGETS)
    temperature: float | None = opt(None, "sampling temperature (default: the dataset's; 0 = greedy)")
    top_p: float | None = opt(None, "nucleus threshold (default: the dataset's)")
    seed: int = opt(0, "seed of continuation sampling (parts seeded from (seed, part, model, batch)) and of the "
                       "bootstrap")
    student: str | None = opt(None, "student checkpoint (default: the dataset's)")
    teacher: str | None = opt(None, "teacher checkpoint (default: the dataset's)")
    tokenizer: str | None = opt(None, "tokenizer folder (default: the dataset's, else the student's)")
    world: str | None = opt(None, "oracle world.json for the world verifier (default: the dataset's)")
    prompts: str | None = opt(None, "prompt file to recover each prompt's task/answer (default: the dataset's)")
    verifier: str | None = opt(None, "verifier of continuation success (default: the dataset's, else auto)",
                               choices=VERIFIERS)
    teacher_system_prompt: str | None = opt(None, "re-render the teacher's prompts with this privileged system "
                                                  "prompt (default: the teacher prompts stored in the dataset)")
    chat_template: str | None = opt(None, "chat mode used to re-render teacher prompts (default: the dataset's)",
                                    choices=CHAT_MODES)
    max_rollouts: int | None = opt(None, "probe only the first N rollouts of the dataset")
    gen_batch_size: int = opt(64, "continuations per generate() call")
    part_size: int = opt(64, "rollouts per parquet part (the unit of atomic writes and resume)")
    n_boot: int = opt(1000, "rollout-bootstrap resamples for the intervals (0: point estimates only)")
    ci: float = opt(0.95, "interval level")
    cluster: str = opt("prompt", "resampling unit of the analysis: prompt (all rollouts of a prompt together; "
                                 "their ratio-0 cuts are near-duplicates) or rollout", choices=("prompt", "rollout"))
    min_clusters: int = opt(10, "fewer clusters than this give the verdict 'insufficient'")
    if_exists: str = opt("fail", "when --out exists: fail, overwrite, or resume an interrupted probe",
                         choices=IF_EXISTS)
    scoring: ScoringOptions = field(default_factory=ScoringOptions,
                                   metadata={"help": "model options (device, dtype, threads, progress); "
                                                     "num_threads defaults to the dataset's"})

    def __post_init__(self) -> None:
        c = Checks("ProbeConfig")
        c.check(bool(self.dataset), "dataset is required: pass the folder written by drift collect")
        c.check(len(self.ratios) > 0, "ratios must not be empty")
        for r in self.ratios:
            c.check(isinstance(r, (int, float)) and 0.0 <= float(r) <= 1.0, f"ratios must lie in [0, 1], got {r!r}")
        c.check(len(set(self.ratios)) == len(self.ratios), f"ratios must be distinct, got {list(self.ratios)}")
        c.positive("continuations", self.continuations)
        c.positive("max_new_tokens", self.max_new_tokens, allow_none=True)
        c.choice("budget", self.budget, BUDGETS)
        c.check(self.temperature is None or self.temperature >= 0,
                f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        c.check(self.top_p is None or 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        if self.verifier is not None:
            c.choice("verifier", self.verifier, VERIFIERS)
        if self.chat_template is not None:
            c.choice("chat_template", self.chat_template, CHAT_MODES)
        c.positive("max_rollouts", self.max_rollouts, allow_none=True)
        c.positive("gen_batch_size", self.gen_batch_size)
        c.positive("part_size", self.part_size)
        c.check(self.n_boot >= 0, f"n_boot must be >= 0, got {self.n_boot}")
        c.check(0 < self.ci < 1, f"ci must be in (0, 1), got {self.ci}")
        c.choice("cluster", self.cluster, ("prompt", "rollout"))
        c.check(isinstance(self.min_clusters, int) and self.min_clusters >= 1,
                f"min_clusters must be an integer >= 1, got {self.min_clusters!r}")
        c.choice("if_exists", self.if_exists, IF_EXISTS)
        c.raise_if_any()


def resolve_config(config: ProbeConfig, dataset_config: dict[str, Any]) -> ProbeConfig:
    """Fill every ``None`` default from the probed dataset's ``config.json`` (its ``"config"`` block).

    Raises:
        ConfigError: when a setting is neither given nor recorded in the dataset (e.g. a jsonl-scored dataset
            has no ``max_new_tokens``), naming the flag to pass.
    """
    from pathlib import Path

    src = dict(dataset_config.get("config") or {})
    sampling = dict(dataset_config.get("sampling") or {})
    problems: list[str] = []

    def pick(name: str, *fallbacks: Any, flag: str | None = None) -> Any:
        value = getattr(config, name)
        if value is not None:
            return value
        for fb in fallbacks:
            if fb is not None:
                return fb
        if flag:
            problems.append(f"{name} is not recorded in the dataset's config.json: pass {flag}")
        return None

    tok_default = src.get("tokenizer")
    values = {
        "out": config.out or str(Path(config.dataset) / "probe"),
        "student": pick("student", src.get("student"), flag="--student PATH"),
        "teacher": pick("teacher", src.get("teacher"), flag="--teacher PATH"),
        "tokenizer": pick("tokenizer", tok_default),
        "world": pick("world", src.get("world")),
        "prompts": pick("prompts", src.get("prompts") if src.get("prompts") not in ("", "inline") else None),
        "max_new_tokens": pick("max_new_tokens", src.get("max_new_tokens"), sampling.get("max_new_tokens"),
                               flag="--max-new-tokens N"),
        "temperature": pick("temperature", src.get("temperature"), sampling.get("temperature"), 1.0),
        "top_p": pick("top_p", src.get("top_p"), sampling.get("top_p"), 1.0),
        "verifier": pick("verifier", src.get("verifier"), "auto"),
        "chat_template": pick("chat_template", src.get("chat_template"), "auto"),
    }
    if problems:
        raise ConfigError("ProbeConfig", problems)
    threads = (src.get("scoring") or {}).get("num_threads")
    if config.scoring.num_threads is None and threads is not None:  # e.g. the toy preset's 1 thread
        values["scoring"] = replace(config.scoring, num_threads=int(threads))
    return replace(config, **values)
