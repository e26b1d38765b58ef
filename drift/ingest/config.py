"""``ImportConfig``: the one frozen config of ``drift import`` (every source format; flags map 1:1 onto it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from drift.collect.config import CHAT_MODES, IF_EXISTS, ScoringOptions
from drift.config import Checks, opt

__all__ = ["ADVANTAGES", "IMPORT_SOURCES", "TEXT_FORMATS", "ImportConfig"]

#: Source formats of ``drift import SOURCE PATH``.
IMPORT_SOURCES: tuple[str, ...] = ("slime", "nemo-rl", "completions", "vllm", "tokens")
#: Text dumps ``drift import completions --format`` reads (re-tokenized and re-scored).
TEXT_FORMATS: tuple[str, ...] = ("trl", "verl", "swift")
#: What NeMo RL's dumped ``advantages`` are: unknown (``none``: no teacher is derived) or pure distillation.
ADVANTAGES: tuple[str, ...] = ("none", "distillation")


@dataclass(frozen=True)
class ImportConfig:
    """``drift import``: turn a training framework's per-token logs into an ordinary drift dataset."""

    source: str = opt("", "the source format: slime, nemo-rl, completions, vllm, tokens", cli=False,
                      choices=IMPORT_SOURCES)
    path: str = opt("", "what to import: a dump folder, one file, or the trainer's output_dir", cli=False)
    out: str = opt("", "output folder for the imported dataset")
    format: str | None = opt(None, "completions only: which trainer wrote the text dump (trl, verl, swift)",
                             choices=TEXT_FORMATS)
    student: str | None = opt(None, "student checkpoint: completions re-score with it; for the other formats a "
                                    "sample of rollouts is re-scored to check the imported student log-probs "
                                    "(sign, one-token shift)")
    teacher: str | None = opt(None, "teacher checkpoint: completions re-score with it; otherwise the imported "
                                    "teacher log-probs are checked against it like --student")
    tokenizer: str | None = opt(None, "tokenizer folder (default: the dump's own, e.g. slime DIR/tokenizer, else "
                                      "the student's); without one the text columns stay empty")
    advantages: str = opt("none", "nemo-rl only: 'distillation' says the run's advantages are pure teacher-minus-"
                                  "student gaps, so teacher = prev_logprobs + advantages; 'none' imports student "
                                  "and sampler log-probs only", choices=ADVANTAGES)
    rollouts: str | None = opt(None, "vllm only: the drift dataset whose rollouts the vLLM teacher scored")
    step: int | None = opt(None, "training step for sources that do not record one (default 0); a source's own "
                                 "step always wins")
    run_id: str | None = opt(None, "run identifier (default: the output folder's name)")
    teacher_id: str | None = opt(None, "name of the teacher that scored the source (recorded per row)")
    teacher_revision: str | None = opt(None, "the teacher's revision / checkpoint (recorded per row)")
    temperature: float | None = opt(None, "temperature the source's log-probs were computed at, when known; the "
                                          "re-score check divides the logits by it (slime and NeMo RL score the "
                                          "student, and slime its SGLang teacher, at the rollout temperature; verl "
                                          "forces 1.0)")
    chat_template: str = opt("auto", "completions only: how prompt text is rendered when it lacks the template: "
                                     "auto, always, never", choices=CHAT_MODES)
    allow_pickle: bool = opt(False, "load .pt dumps with full unpickling (weights_only=False). This EXECUTES CODE "
                                    "stored in the file: use it only on files you wrote yourself")
    check_rollouts: int = opt(8, "rollouts re-scored with --student/--teacher to check the imported log-probs "
                                 "(0 = no check)")
    check_tolerance: float = opt(0.05, "median |imported - re-scored| log-prob allowed by that check (nats; "
                                       "sampler and trainer numerics differ)")
    part_size: int = opt(64, "rollouts per parquet part (the unit of atomic writes and resume)")
    if_exists: str = opt("fail", "when --out exists: fail, overwrite, or resume an interrupted import",
                         choices=IF_EXISTS)
    scoring: ScoringOptions = field(default_factory=ScoringOptions,
                                   metadata={"help": "scoring options (completions re-scoring and the checks)"})

    def __post_init__(self) -> None:
        c = Checks("ImportConfig")
        c.choice("source", self.source, IMPORT_SOURCES)
        c.check(bool(self.path), "path is required: drift import SOURCE PATH --out OUT")
        c.check(bool(self.out), "out is required: pass --out FOLDER")
        c.choice("if_exists", self.if_exists, IF_EXISTS)
        c.choice("advantages", self.advantages, ADVANTAGES)
        c.choice("chat_template", self.chat_template, CHAT_MODES)
        c.positive("part_size", self.part_size)
        c.check(self.check_rollouts >= 0, f"check_rollouts must be >= 0, got {self.check_rollouts}")
        c.positive("check_tolerance", self.check_tolerance)
        c.positive("temperature", self.temperature, allow_none=True)
        c.check(self.step is None or self.step >= 0, f"step must be >= 0, got {self.step}")
        if self.source == "completions":
            c.check(self.temperature is None, "completions are scored by drift itself: set its temperature with "
                                              "--score-temperature, not --temperature (which describes log-probs "
                                              "a source computed)")
            c.check(self.format is not None, "completions needs --format trl, verl or swift (which trainer wrote "
                                             "the text)")
            for name in ("student", "teacher"):
                c.check(bool(getattr(self, name)), f"completions are text: they are re-tokenized and re-scored, "
                                                   f"so --{name} PATH is required")
        else:
            c.check(self.format is None, f"--format is for `drift import completions`; {self.source} has one "
                                         "layout")
        if self.source == "vllm":
            c.check(bool(self.rollouts), "vllm needs --rollouts DATASET: the drift dataset whose rollouts the "
                                         "vLLM teacher scored (its token ids are matched)")
        else:
            c.check(self.rollouts is None, "--rollouts is for `drift import vllm`")
        c.check(self.advantages == "none" or self.source == "nemo-rl",
                "--advantages is for `drift import nemo-rl` (other sources dump the teacher's log-probs or none)")
        c.raise_if_any()
