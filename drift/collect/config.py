"""Configs of the collect stage: ``CollectConfig`` (sample + score) and ``ScoreConfig`` (score existing rollouts).

Both are flat to the user (every field is one ``--flag``); the scoring knobs they share live in one nested
:class:`ScoringOptions` block so the two commands cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drift.config import Checks, opt

__all__ = ["CHAT_MODES", "IF_EXISTS", "CollectConfig", "ScoreConfig", "ScoringOptions"]

IF_EXISTS = ("fail", "overwrite", "resume")
CHAT_MODES = ("auto", "never", "always")
TRUNCATE = ("none", "left")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ScoringOptions:
    """How student and teacher score response tokens (shared by ``collect`` and ``score``)."""

    chunk_size: int = opt(1024, "positions per LM-head chunk; the head weights are read once per chunk")
    vocab_chunk: int = opt(2048, "vocabulary ids per tile; head-phase memory grows as chunk_size x vocab_chunk")
    max_batch_tokens: int = opt(16384, "cap on rollouts x padded length per body forward pass")
    topk: int = opt(16, "k of the top-k overlap metric")
    score_temperature: float = opt(1.0, "both models' logits are divided by this before scoring (1 = as is)")
    device: str = opt("auto", "auto (CUDA if available), cpu, cuda, cuda:1, ...")
    dtype: str = opt("auto", "model dtype: auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16",
                     choices=DTYPES)
    num_threads: int | None = opt(None, "torch CPU threads (default: torch's choice; 1 is often fastest for tiny "
                                        "models)")
    self_check: bool = opt(False, "run the alignment self-check first (self-scoring gives 0 KL; a one-token "
                                  "teacher shift is detected); abort on failure")
    progress: bool = opt(True, "show progress bars")

    def __post_init__(self) -> None:
        c = Checks("ScoringOptions")
        c.positive("chunk_size", self.chunk_size)
        c.positive("vocab_chunk", self.vocab_chunk)
        c.positive("max_batch_tokens", self.max_batch_tokens)
        c.positive("topk", self.topk)
        c.positive("score_temperature", self.score_temperature)
        c.positive("num_threads", self.num_threads, allow_none=True)
        c.choice("dtype", self.dtype, DTYPES)
        c.raise_if_any()


@dataclass(frozen=True)
class CollectConfig:
    """``drift collect``: sample student rollouts and score them with student and teacher."""

    out: str = opt("", "output folder for the dataset (rollouts/, tokens/, manifest.json, config.json)")
    student: str = opt("", "student checkpoint: a save_pretrained folder, a .gguf file, or 'smollm2'")
    teacher: str = opt("", "teacher checkpoint (same forms); must share the student's tokenizer")
    prompts: str = opt("", "prompt file (JSON Lines: prompt, optional id, answer, teacher_prompt, task)")
    preset: str | None = opt(None, "fill student/teacher/prompts/world from a preset; 'toy' = the oracle world",
                             choices=("toy",))
    tokenizer: str | None = opt(None, "tokenizer folder (default: the student's)")
    world: str | None = opt(None, "oracle world (world.json) enabling oracle_* columns and the world verifier")
    samples_per_prompt: int = opt(4, "rollouts sampled per prompt")
    max_prompts: int | None = opt(None, "use only the first N prompts")
    max_new_tokens: int = opt(512, "response length cap (tokens)")
    temperature: float = opt(1.0, "sampling temperature (0 = greedy)")
    top_p: float = opt(1.0, "nucleus sampling threshold (1 = full distribution)")
    seed: int = opt(0, "sampling seed; parts are seeded from (seed, part) so resumed runs match")
    step: int = opt(0, "training step / checkpoint label written to every token row")
    run_id: str | None = opt(None, "run identifier (default: the output folder's name)")
    teacher_system_prompt: str | None = opt(None, "the teacher's system turn (privileged; replaces the template's "
                                                  "default system prompt for the teacher only)")
    student_system_prompt: str | None = opt(None, "the student's system turn (replaces the template's default "
                                                  "system prompt for the student only)")
    chat_template: str = opt("auto", "auto: apply the tokenizer's chat template whenever it has one (a text prompt "
                                     "becomes one user turn); never: raw text; always: require a template",
                             choices=CHAT_MODES)
    truncate_prompt: str = opt("none", "a prompt longer than the context minus --max-new-tokens: none = stop with "
                                       "an error; left = keep its last tokens", choices=TRUNCATE)
    verifier: str = opt("auto", "reward verifier: auto, none, answer, numeric, exact, world",
                        choices=("auto", "none", "answer", "numeric", "exact", "world"))
    gen_batch_size: int = opt(32, "prompts per generate() call")
    part_size: int = opt(256, "rollouts per parquet part (the unit of atomic writes and resume)")
    if_exists: str = opt("fail", "when --out exists: fail, overwrite, or resume an interrupted run",
                         choices=IF_EXISTS)
    scoring: ScoringOptions = field(default_factory=ScoringOptions,
                                   metadata={"help": "scoring options (shared by drift collect and drift score)"})

    def __post_init__(self) -> None:
        c = Checks("CollectConfig")
        c.check(bool(self.out), "out is required: pass --out FOLDER")
        if self.preset is None:
            for name in ("student", "teacher", "prompts"):
                c.check(bool(getattr(self, name)), f"{name} is required: pass --{name} PATH (or --preset toy)")
        c.positive("samples_per_prompt", self.samples_per_prompt)
        c.positive("max_prompts", self.max_prompts, allow_none=True)
        c.positive("max_new_tokens", self.max_new_tokens)
        c.check(self.temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        c.check(0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}")
        c.positive("gen_batch_size", self.gen_batch_size)
        c.positive("part_size", self.part_size)
        c.choice("if_exists", self.if_exists, IF_EXISTS)
        c.choice("chat_template", self.chat_template, CHAT_MODES)
        c.choice("truncate_prompt", self.truncate_prompt, TRUNCATE)
        c.raise_if_any()


@dataclass(frozen=True)
class ScoreConfig:
    """``drift score``: score existing rollouts (a drift dataset or a jsonl) with a student and a teacher."""

    rollouts: str = opt("", "a drift dataset folder, or a jsonl with prompt+response text or prompt_ids+"
                            "response_ids (optional teacher_prompt / teacher_prompt_ids)")
    out: str = opt("", "output folder for the re-scored dataset")
    student: str = opt("", "student checkpoint (e.g. a later training checkpoint)")
    teacher: str = opt("", "teacher checkpoint; must share the student's tokenizer")
    tokenizer: str | None = opt(None, "tokenizer folder (default: the student's)")
    world: str | None = opt(None, "oracle world (world.json) enabling oracle_* columns")
    step: int = opt(0, "training step / checkpoint label written to every token row")
    run_id: str | None = opt(None, "run identifier (default: kept from the input dataset, else the --out name)")
    teacher_system_prompt: str | None = opt(None, "privileged system prompt only the teacher sees (re-renders "
                                                  "teacher prompts from the stored source prompts)")
    chat_template: str = opt("auto", "how prompts in a jsonl are rendered: auto (the tokenizer's chat template "
                                     "whenever it has one), always, never", choices=CHAT_MODES)
    part_size: int = opt(256, "rollouts per parquet part (the unit of atomic writes and resume)")
    if_exists: str = opt("fail", "when --out exists: fail, overwrite, or resume an interrupted run",
                         choices=IF_EXISTS)
    scoring: ScoringOptions = field(default_factory=ScoringOptions,
                                   metadata={"help": "scoring options (shared by drift collect and drift score)"})

    def __post_init__(self) -> None:
        c = Checks("ScoreConfig")
        for name in ("rollouts", "out", "student", "teacher"):
            c.check(bool(getattr(self, name)), f"{name} is required: pass --{name} PATH")
        c.positive("part_size", self.part_size)
        c.choice("if_exists", self.if_exists, IF_EXISTS)
        c.raise_if_any()
