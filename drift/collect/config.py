"""Configs of the collect stage: ``CollectConfig`` (sample + score) and ``ScoreConfig`` (score existing rollouts).

Both are flat to the user (every field is one ``--flag``); the scoring knobs they share live in one nested
:class:`ScoringOptions` block so the two commands cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from drift.config import Checks, opt

__all__ = ["CHAT_MODES", "DEVICE_MAP_STRATEGIES", "IF_EXISTS", "CollectConfig", "ScoreConfig", "ScoringOptions",
           "parse_device_map", "parse_max_memory"]

IF_EXISTS = ("fail", "overwrite", "resume")
CHAT_MODES = ("auto", "never", "always")
TRUNCATE = ("none", "left")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# accelerate's strategies for a device map it computes itself (transformers' from_pretrained(device_map=...)).
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
               "GIB": 2**30, "TIB": 2**40}

DeviceMap = str | dict[str, int | str]


def _map_device(text: object, where: str) -> int | str:
    """One device-map value in accelerate's form: a GPU index (int), ``cpu``, ``disk`` or ``mps``."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ValueError(f"{where}: {text!r} is not a device; use a GPU index (0, 1, ...), cuda:N, cpu or disk")
    if isinstance(text, int) and text < 0:
        raise ValueError(f"{where}: GPU index {text} is negative; use 0, 1, ... (or cpu, disk)")
    if isinstance(text, int) or text.strip().isdigit():
        return int(text)
    low = text.strip().lower()
    if low in ("cpu", "disk", "mps"):
        return low
    if low == "cuda":
        return 0
    match = re.fullmatch(r"cuda:(\d+)", low)
    if match:
        return int(match.group(1))
    extra = " (meta holds no weights: offload with cpu or disk)" if low == "meta" else ""
    raise ValueError(f"{where}: {text!r} is not a device; use a GPU index (0, 1, ...), cuda:N, cpu or disk{extra}")


def parse_device_map(text: str | Mapping[str, object] | None, flag: str = "--teacher-device-map"
                     ) -> DeviceMap | None:
    """Parse a ``--*-device-map`` value (no torch import: this runs while a config is built).

    Accepted forms: ``auto`` / ``balanced`` / ``balanced_low_0`` / ``sequential`` (accelerate computes the map);
    one device (``cpu``, ``cuda:1``, ``0``: the whole model there, as ``{"": device}``); a JSON object mapping
    module names to devices, inline or in a ``.json`` file (values: GPU indices, ``cuda:N``, ``cpu``, ``disk``);
    or such a mapping itself (values may also be ``torch.device`` objects).

    Returns:
        None for no map, the strategy name, or a ``{module: device}`` dict in accelerate's value form.

    Raises:
        ValueError: the text is none of those forms (the message names ``flag`` and the fix).
    """
    if isinstance(text, Mapping):
        if not text:
            raise ValueError(f"{flag}: a device map must map at least one module to a device")
        return {str(k): _map_device(v if isinstance(v, (int, str)) else str(v), f"{flag} module {k!r}")
                for k, v in text.items()}
    if text is None or not str(text).strip():
        return None
    value = str(text).strip()
    if value in DEVICE_MAP_STRATEGIES:
        return value
    if value.startswith("{") or value.endswith(".json"):
        if not value.startswith("{"):
            path = Path(value).expanduser()
            if not path.is_file():
                raise ValueError(f"{flag} {value}: no such file; give a JSON file mapping module names to devices")
            value = path.read_text(encoding="utf-8")
        try:
            raw = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{flag}: not valid JSON ({exc.msg}); give an object such as "
                             '{"model.embed_tokens": 0, "model.layers": 0, "model.norm": 1, "lm_head": 1}') from None
        if not isinstance(raw, dict) or not raw:
            raise ValueError(f"{flag}: a JSON device map must be a non-empty object {{module name: device}}")
        return {str(k): _map_device(v, f"{flag} module {k!r}") for k, v in raw.items()}
    return {"": _map_device(value, f"{flag} {value}")}


def _parse_size(text: str, where: str) -> int:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"{where}: {text!r} is not a size; use bytes or a number with a unit (80GiB, 500MB)")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_max_memory(text: str | Mapping[int | str, int | str] | None) -> dict[int | str, int] | None:
    """Parse ``--max-memory`` (``0=70GiB,1=75GiB,cpu=200GiB``) into accelerate's ``max_memory`` dict (bytes).

    Keys: GPU indices or ``cuda:N``, ``cpu``, ``mps``, ``disk``; sizes in bytes or with a unit (KB, MB, GB, TB:
    powers of 10; KiB, MiB, GiB, TiB: powers of 2).

    Raises:
        ValueError: an entry is not ``device=size``.
    """
    if isinstance(text, Mapping):
        text = ",".join(f"{k}={v}" for k, v in text.items())
    if text is None or not str(text).strip():
        return None
    out: dict[int | str, int] = {}
    for entry in str(text).split(","):
        if not entry.strip():
            continue
        key, sep, size = entry.partition("=")
        if not sep:
            raise ValueError(f"--max-memory entry {entry.strip()!r} is not device=size; e.g. 0=70GiB,cpu=200GiB")
        dev = _map_device(key, "--max-memory")
        out[dev] = _parse_size(size, f"--max-memory {key.strip()}")
    return out or None


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
    student_device_map: str | None = opt(
        None, "place the student with accelerate instead of on --device: auto (fill the GPUs in turn, then CPU "
              "RAM, then disk), balanced, sequential, one device (cpu, cuda:1), or a JSON map {module: device}, "
              "inline or a .json file (devices 0, cuda:1, cpu, disk). Memory: its weights (parameters x 2 bytes in "
              "bf16, x 4 in fp32) spread over the devices; layers on cpu or disk are copied to the GPU at every "
              "forward pass, and the student also samples (a forward per token), so keep it on GPUs when it fits")
    teacher_device_map: str | None = opt(
        None, "place the teacher across devices, for a teacher larger than one device (same forms as "
              "--student-device-map). Memory: GPUs + CPU RAM + disk together >= its weights (parameters x 2 bytes in "
              "bf16); the executing GPU also needs the largest offloaded layer (an offloaded LM head: vocab x "
              "hidden x 2 bytes) and the activations (see --max-memory)")
    max_memory: str | None = opt(None, "caps per device for the maps accelerate computes (auto, balanced, "
                                       "sequential), e.g. 0=70GiB,1=78GiB,cpu=200GiB, for each model separately. "
                                       "Leave each GPU room for activations: about max_batch_tokens x (hidden + 3 x "
                                       "intermediate size) x 2 bytes, plus 4 x chunk_size x vocab_chunk x 4 bytes")
    offload_folder: str | None = opt(None, "folder for the weights a device map sends to disk when they must be "
                                           "re-saved (a checkpoint not in safetensors; safetensors weights are read "
                                           "in place); needs free disk of their size (one subfolder per model)")
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
        self._check_placement(c)
        c.raise_if_any()

    def _check_placement(self, c: Checks) -> None:
        """Device maps parse, do not fight ``--device``, and ``--max-memory`` / ``--offload-folder`` have one."""
        mapped, maps = [], []
        for name in ("student_device_map", "teacher_device_map"):
            flag = "--" + name.replace("_", "-")
            try:
                parsed = parse_device_map(getattr(self, name), flag)
            except ValueError as exc:
                c.check(False, str(exc))
                continue
            if parsed is not None:
                mapped.append(flag)
                maps.append(parsed)
        try:
            parse_max_memory(self.max_memory)
        except ValueError as exc:
            c.check(False, str(exc))
        if mapped and self.device != "auto":
            other = "--teacher-device-map" if mapped == ["--student-device-map"] else "--student-device-map"
            fix = (f"to keep the other model on {self.device}, pass {other} {self.device}" if len(mapped) == 1
                   else "both models are placed by their maps")
            c.check(False, f"--device {self.device} cannot be combined with {' and '.join(mapped)}: a device map "
                           f"places its model itself. Drop --device (leave it at auto); {fix}")
        computed = [m for m in maps if isinstance(m, str)]
        if mapped and self.max_memory is not None and not computed:
            c.check(False, "--max-memory caps the maps accelerate computes (auto, balanced, balanced_low_0, "
                           "sequential); an explicit {module: device} map places every module itself. Drop "
                           "--max-memory or use --teacher-device-map auto")
        if not mapped:
            for name, value in (("--max-memory", self.max_memory), ("--offload-folder", self.offload_folder)):
                c.check(value is None, f"{name} applies only to device-mapped models; add --teacher-device-map auto "
                                       f"(or --student-device-map) or drop {name}")

    def device_maps(self) -> dict[str, DeviceMap | None]:
        """The parsed student and teacher device maps (None = the whole model on ``device``)."""
        return {"student": parse_device_map(self.student_device_map, "--student-device-map"),
                "teacher": parse_device_map(self.teacher_device_map, "--teacher-device-map")}

    def placement(self) -> dict[str, str | None]:
        """The placement keyword arguments of :func:`drift.runtime.loading.load_pair` (besides ``device``)."""
        return {"student_device_map": self.student_device_map, "teacher_device_map": self.teacher_device_map,
                "max_memory": self.max_memory, "offload_folder": self.offload_folder}

    def model_placement(self, role: str) -> dict[str, str | None]:
        """The placement keyword arguments of :func:`drift.models.load_model` for the ``student`` or ``teacher``:
        ``device`` alone without a map, else the map, ``max_memory`` (for a computed map) and the role's own
        offload subfolder (as :func:`~drift.runtime.loading.load_pair` places it)."""
        dmap = {"student": self.student_device_map, "teacher": self.teacher_device_map}[role]
        if dmap is None:
            return {"device": self.device}
        folder = str(Path(self.offload_folder).expanduser() / role) if self.offload_folder is not None else None
        computed = dmap.strip() in DEVICE_MAP_STRATEGIES  # max_memory caps only a map accelerate computes
        return {"device_map": dmap, "max_memory": self.max_memory if computed else None, "offload_folder": folder}


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
