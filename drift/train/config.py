"""``TrainConfig``: one frozen, flat config for an on-policy distillation run (``drift train``).

Every field is one ``--flag`` (:func:`drift.config.add_config_arguments`); the scoring knobs shared with
``drift collect`` (device, dtype, threads, chunk size, progress bars) live in the nested
:class:`~drift.collect.config.ScoringOptions` block. ``preset="toy"`` fills the model, prompt and world paths
from the embedded oracle world (:func:`train_preset_values`).

Step convention (used everywhere in :mod:`drift.train`): training steps are **1-based**. Step ``k``
(1..``steps``) samples a batch from the student after ``k - 1`` updates and makes the ``k``-th update;
schedules receive ``step=k, total_steps=steps`` so an annealed schedule's progress is
``(k - 1) / (steps - 1)`` (verl's convention: 0 on the first update, 1 on the last). Evaluations,
checkpoints and drift collections labelled ``s`` describe the student *after* ``s`` updates; ``s = 0`` is the
initial student.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drift.collect.config import CHAT_MODES, ScoringOptions
from drift.config import Checks, opt

__all__ = ["ADVANTAGES", "IF_EXISTS", "LOSSES", "LR_SCHEDULES", "TrainConfig", "resolve_preset",
           "train_preset_values"]

LOSSES = ("sampled", "full_kl")
ADVANTAGES = ("token", "batch_mean")
LR_SCHEDULES = ("constant", "cosine")
IF_EXISTS = ("fail", "overwrite")
VERIFIERS = ("auto", "none", "answer", "numeric", "exact", "world")


@dataclass(frozen=True)
class TrainConfig:
    """``drift train``: on-policy distillation of a student towards a frozen teacher, with a token-weight schedule."""

    out: str = opt("", "run folder (metrics.jsonl/.parquet, config.json, checkpoints/, drift/); '' = keep "
                       "everything in memory (then collect_at must be empty and save_every 0)")
    student: str = opt("", "student checkpoint: a save_pretrained folder, a .gguf file, or 'smollm2'")
    teacher: str = opt("", "frozen teacher checkpoint (same forms); must share the student's tokenizer")
    prompts: str = opt("", "training prompts (JSON Lines: prompt, optional id, answer, teacher_prompt, task)")
    heldout_prompts: str = opt("", "held-out prompts for evaluation and drift collection (same format)")
    preset: str | None = opt(None, "fill student/teacher/prompts/heldout_prompts/world (and the toy sizes) from a "
                                   "preset; 'toy' = the oracle world", choices=("toy",))
    tokenizer: str | None = opt(None, "tokenizer folder (default: the student's)")
    world: str | None = opt(None, "oracle world (world.json): world verifier and oracle_* columns in drift data")
    schedule: str = opt("", "token-weight schedule: a JSON file or JSON text (drift schedule make); '' = uniform")
    loss: str = opt("sampled", "sampled: -sum w*sg(A)*log pi_S(y_t) / #tokens (IW-OPD, tinker); full_kl: "
                               "sum w*KL(pi_S||pi_T)_t / #tokens over the full vocabulary", choices=LOSSES)
    advantage: str = opt("token", "the sampled loss's advantage: token = A_t = log pi_T(y_t) - log pi_S(y_t) per "
                                  "token (OPD); batch_mean = every token gets the batch mean of A_t over valid "
                                  "tokens (the fixed-negative-advantage control; the schedule still sees the real "
                                  "A_t)", choices=ADVANTAGES)
    steps: int = opt(200, "optimizer updates")
    prompts_per_step: int = opt(8, "training prompts per step (cycled in seeded epochs)")
    samples_per_prompt: int = opt(4, "student rollouts per prompt per step")
    lr: float = opt(1e-4, "peak AdamW learning rate (1e-4 suits the oracle world's 0.3M-parameter student; "
                          "LLMs of 0.5-2B parameters usually want 1e-6 to 1e-5)")
    lr_schedule: str = opt("constant", "after warm-up: constant, or cosine decay to 0 at the last step",
                           choices=LR_SCHEDULES)
    warmup_steps: int = opt(0, "linear learning-rate warm-up steps")
    betas: tuple[float, float] = opt((0.9, 0.999), "AdamW betas")
    weight_decay: float = opt(0.0, "AdamW decoupled weight decay (matrices only; norms and biases never decay)")
    grad_clip: float | None = opt(1.0, "clip the global gradient norm to this (None = no clipping)")
    max_new_tokens: int = opt(512, "response length cap (tokens)")
    temperature: float = opt(1.0, "sampling temperature of the rollouts (> 0; the loss uses the models' own "
                                  "temperature-1 log-probs)")
    top_p: float = opt(1.0, "nucleus sampling threshold (1 = full distribution)")
    seed: int = opt(0, "seed of the prompt order, the rollouts and the evaluation samples")
    eval_every: int = opt(25, "evaluate on held-out prompts every N steps (always at step 0 and the last "
                              "step); 0 = only those two")
    eval_prompts: int = opt(64, "held-out prompts used for evaluation (the first N)")
    eval_samples: int = opt(2, "sampled rollouts per evaluation prompt (plus one greedy rollout)")
    collect_at: tuple[str, ...] = opt(("0", "final"), "steps at which to run the drift collector on the held-out "
                                                      "prompts into OUT/drift/step-XXXXXX (e.g. 0,100,final; "
                                                      "'' = never)")
    collect_prompts: int | None = opt(None, "held-out prompts per drift collection (default: all)")
    collect_samples: int = opt(4, "rollouts per prompt per drift collection")
    save_every: int = opt(0, "save a checkpoint every N steps (0 = only the final one)")
    if_exists: str = opt("fail", "when OUT already holds a run: fail, or overwrite it", choices=IF_EXISTS)
    teacher_system_prompt: str | None = opt(None, "the teacher's system turn (privileged; replaces the template's "
                                                  "default system prompt for the teacher only)")
    chat_template: str = opt("auto", "auto: apply the tokenizer's chat template whenever it has one (a text prompt "
                                     "becomes one user turn); never: raw text; always: require a template",
                             choices=CHAT_MODES)
    verifier: str = opt("auto", "reward verifier for accuracy: auto, none, answer, numeric, exact, world",
                        choices=VERIFIERS)
    gen_batch_size: int = opt(64, "rollouts per generate() call")
    scoring: ScoringOptions = field(default_factory=ScoringOptions,
                                   metadata={"help": "scoring options (device, dtype, threads; shared with "
                                                     "drift collect)"})

    def __post_init__(self) -> None:
        c = Checks("TrainConfig")
        if self.preset is None:
            for name in ("student", "teacher", "prompts", "heldout_prompts"):
                c.check(bool(getattr(self, name)), f"{name} is required: pass --{name.replace('_', '-')} PATH "
                                                   "(or --preset toy)")
        c.choice("loss", self.loss, LOSSES)
        c.choice("advantage", self.advantage, ADVANTAGES)
        c.check(self.advantage == "token" or self.loss == "sampled",
                f"advantage={self.advantage!r} applies to the sampled loss only (the full-KL loss has no advantage); "
                "pass --loss sampled or --advantage token")
        c.choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        c.choice("if_exists", self.if_exists, IF_EXISTS)
        c.choice("chat_template", self.chat_template, CHAT_MODES)
        c.choice("verifier", self.verifier, VERIFIERS)
        for name in ("steps", "prompts_per_step", "samples_per_prompt", "lr", "max_new_tokens", "temperature",
                     "eval_prompts", "eval_samples", "collect_samples", "gen_batch_size"):
            c.positive(name, getattr(self, name))
        c.positive("grad_clip", self.grad_clip, allow_none=True)
        c.positive("collect_prompts", self.collect_prompts, allow_none=True)
        c.check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        for name in ("warmup_steps", "eval_every", "save_every", "weight_decay"):
            c.check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)!r}")
        c.check(len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
                f"betas must be two numbers in [0, 1), e.g. 0.9,0.999; got {self.betas!r}")
        for s in self.collect_at:
            ok = s == "final" or (str(s).isdigit() and int(s) <= self.steps)
            c.check(ok, f"collect_at entries must be 'final' or a step in [0, steps={self.steps}], got {s!r}")
        if not self.out:
            c.check(not self.collect_at, "collect_at needs an output folder: pass --out FOLDER, or --collect-at '' "
                                         "for an in-memory run")
            c.check(self.save_every == 0, "save_every needs an output folder: pass --out FOLDER")
        c.raise_if_any()

    def collect_steps(self) -> list[int]:
        """The ``collect_at`` entries as sorted, distinct step numbers ('final' = ``steps``)."""
        return sorted({self.steps if s == "final" else int(s) for s in self.collect_at})


def train_preset_values(name: str) -> dict[str, Any]:
    """A preset's settings for ``drift train``: the collect preset with train / held-out prompts split.

    The collect preset's ``prompts`` are the held-out prompts; the training prompts are ``train.jsonl`` beside
    them.
    """
    from drift.errors import ConfigError
    from drift.presets import preset_values

    values = dict(preset_values(name))
    heldout = Path(values.pop("prompts"))
    train = heldout.with_name("train.jsonl")
    if not train.exists():
        raise ConfigError(f"preset {name}", [f"missing file {train}; regenerate with `make world`"])
    values.update(prompts=str(train), heldout_prompts=str(heldout))
    return values


def resolve_preset(cfg: TrainConfig) -> TrainConfig:
    """Fill a config's preset values: empty paths, and sizes still at their dataclass default.

    The CLI merges the preset *under* the flags the user gave; in Python a field left at its default is
    taken from the preset (e.g. ``max_new_tokens`` 64 and ``num_threads`` 1 for ``toy``).
    """
    if cfg.preset is None:
        return cfg
    from drift.presets import apply_preset

    return apply_preset(cfg, train_preset_values(cfg.preset))
