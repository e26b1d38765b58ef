"""Loading a student/teacher pair: the one loader of collect, score, probe and train.

:func:`load_pair` resolves the device and dtype once, loads the tokenizer the prompts are rendered with (the
student's, or a ``--tokenizer`` override) *and* each model's own tokenizer, so :func:`~drift.collect.guards.
check_pair` can compare an override with what each checkpoint was trained with instead of trusting it. A teacher
path equal to the student's is the same object (self-teacher) unless ``share=False`` (the trainer, whose student
moves while the teacher must stay frozen).

Each model may instead be placed by a device map (``student_device_map`` / ``teacher_device_map``: accelerate's
``auto`` etc., one device, or an explicit ``{module: device}`` map), for a teacher larger than one device; both maps
and ``max_memory`` are validated before any weights are read, and each model offloads to disk in its own subfolder
of ``offload_folder``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["ModelPair", "load_pair", "set_threads"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelPair:
    """A loaded student/teacher pair and the tokenizers that describe it.

    Attributes:
        student, teacher: the causal LMs (eval mode, no grad; the teacher may be the student object).
        tokenizer: the tokenizer prompts are rendered and responses decoded with.
        own_tokenizers: each model's own tokenizer as shipped in its folder (None where it ships none), compared
            with ``tokenizer`` by the pair check. Empty when ``tokenizer`` is itself the student's.
        world: the oracle world, when one was named.
        tokenizer_source: where ``tokenizer`` came from (a path or model spec).
    """

    student: Any
    teacher: Any
    tokenizer: Any
    own_tokenizers: dict[str, Any] = field(default_factory=dict)
    world: Any | None = None
    tokenizer_source: str | None = None

    @property
    def teacher_tokenizer(self) -> Any | None:
        """The teacher's own tokenizer when it differs in object from ``tokenizer`` (for the pair check)."""
        return self.own_tokenizers.get("teacher")

    @property
    def context(self) -> int | None:
        """The smaller ``max_position_embeddings`` of the two models (None when neither config says)."""
        from drift.models import pair_context

        return pair_context(self.student, self.teacher)


def set_threads(num_threads: int | None) -> None:
    """``torch.set_num_threads`` when a count is given (one place, so every stage honours ``--num-threads``)."""
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))


def load_pair(student: str, teacher: str, *, tokenizer: str | None = None, device: str = "auto",
              dtype: str = "auto", student_dtype: str | None = None, num_threads: int | None = None,
              world: str | None = None, share: bool = True, student_device_map: Any = None,
              teacher_device_map: Any = None, max_memory: Any = None, offload_folder: str | None = None) -> ModelPair:
    """Load student, teacher, tokenizers and (optionally) an oracle world from local paths.

    Args:
        student, teacher: model specs (``save_pretrained`` folders, ``.gguf`` files or ``smollm2``).
        tokenizer: a tokenizer folder overriding the student's (any folder ``AutoTokenizer`` loads); it is
            compared with each model's own tokenizer by the pair check, not trusted blindly.
        device, dtype: as in :func:`drift.models.load_model` (validated before anything is loaded). ``device``
            places the models without a device map and must be ``auto`` when either has one.
        student_dtype: the student's dtype when it differs (the trainer keeps a float32 student).
        num_threads: torch CPU threads.
        world: an oracle world's ``world.json``.
        share: reuse one object when ``teacher == student`` with the same dtype and placement (False loads the
            teacher separately).
        student_device_map, teacher_device_map: place that model with accelerate instead of on ``device`` (see
            :func:`drift.collect.config.parse_device_map` for the forms; the text of the CLI flags is accepted).
        max_memory: per-device caps (``"0=70GiB,cpu=200GiB"`` or a dict) for each device-mapped model separately.
        offload_folder: where weights sent to disk are re-saved when needed; the student uses ``student/`` and the
            teacher ``teacher/`` inside it.

    Raises:
        ModelLoadError, DeviceError: a path, device, device map or dtype is wrong; nothing is loaded after the first
            error.
    """
    from drift.collect.config import parse_device_map, parse_max_memory
    from drift.errors import DeviceError
    from drift.models import check_placement, load_model, load_tokenizer, resolve_device, resolve_dtype
    from drift.worlds import load_world

    set_threads(num_threads)
    try:  # fail on a bad device or map before spending time on weights
        maps = {"student": parse_device_map(student_device_map, "student_device_map"),
                "teacher": parse_device_map(teacher_device_map, "teacher_device_map")}
        parse_max_memory(max_memory)
    except ValueError as exc:
        raise DeviceError(str(exc)) from None
    mapped = [name for name, m in maps.items() if m is not None]
    if mapped and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DeviceError("device maps place one process's models over the machine's devices; under torchrun each "
                          "rank loads its models on its own device. Drop --student-device-map / "
                          "--teacher-device-map, or run one process.")
    if mapped and device != "auto":
        raise DeviceError(f"device={device!r} cannot be combined with a {' and '.join(mapped)} device map: a map "
                          "places its model itself. Leave --device at auto (pass the other model's place as its "
                          f"own map, e.g. --student-device-map {device}).")
    if not mapped and (max_memory is not None or offload_folder is not None):
        raise DeviceError("max_memory / offload_folder apply only to device-mapped models; pass "
                          "--teacher-device-map auto (or --student-device-map) or drop them.")
    dev = resolve_device(device)
    resolve_dtype(dtype, dev)
    if tokenizer:
        tok = load_tokenizer(tokenizer)
        own = {"student": load_tokenizer(student, required=False), "teacher": load_tokenizer(teacher, required=False)}
    else:
        tok = load_tokenizer(student)
        own = {} if teacher == student else {"teacher": load_tokenizer(teacher)}

    def placement(name: str) -> dict[str, Any]:
        if maps[name] is None:
            return {"device": device}
        folder = str(Path(offload_folder).expanduser() / name) if offload_folder is not None else None
        computed = isinstance(maps[name], str)  # max_memory caps only a map accelerate computes
        return {"device_map": maps[name], "max_memory": max_memory if computed else None, "offload_folder": folder}

    for name, spec in (("student", student), ("teacher", teacher)):
        if maps[name] is not None:  # an explicit map is checked against the model's modules (meta device, no weights)
            check_placement(spec, **placement(name))
    s_model = load_model(student, dtype=student_dtype or dtype, **placement("student"))
    if share and teacher == student and (student_dtype or dtype) == dtype and maps["teacher"] == maps["student"]:
        t_model = s_model
    else:
        t_model = load_model(teacher, dtype=dtype, **placement("teacher"))
    w = load_world(world) if world else None
    return ModelPair(s_model, t_model, tok, own, w, tokenizer or student)
