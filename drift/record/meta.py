"""What a recorded dataset says about itself: ``config.json`` and the parquet metadata of its parts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drift import __version__

__all__ = ["config_payload", "parquet_metadata", "tokenizer_info"]


def tokenizer_info(tok: Any) -> dict[str, Any] | None:
    """The tokenizer's identity (hashes from :mod:`drift.models`, size, EOS), None without a tokenizer."""
    if tok is None:
        return None
    from drift.models import tokenizer_hash, vocab_hash

    return {"hash": tokenizer_hash(tok), "vocab_hash": vocab_hash(tok), "size": len(tok),
            "eos": getattr(tok, "eos_token", None), "chat_template": bool(getattr(tok, "chat_template", None)),
            "name": getattr(tok, "name_or_path", None) or None}


def config_payload(rec: Any) -> dict[str, Any]:
    """``config.json`` of a :class:`~drift.record.Recorder`'s dataset: command ``record``, the run id, support,
    the user's metadata, the tokenizer's identity and the versions."""
    import torch

    return {"command": "record", "run_id": rec.run_id, "support": rec.support, "metadata": rec.metadata,
            "tokenizer": rec._tok_info, "has_teacher": rec._has_teacher,
            "recorder": {"max_buffer_tokens": rec.max_buffer_tokens, "if_exists": rec.if_exists},
            "drift_version": __version__, "git_sha": rec._git_sha, "torch_version": torch.__version__}


def parquet_metadata(rec: Any) -> dict[str, Any]:
    """The drift metadata of every part (support ``sampled``, ``has_teacher``, source ``record``, what the dataset
    cannot show): the keys ``drift import`` writes, so stats and report read a recording like an import."""
    from drift.collect.metrics import K3_CLAMP, K3_MAX
    from drift.ingest.run import support_limits

    has_teacher = bool(rec._has_teacher)
    user = rec.metadata
    temperature = user.get("temperature")
    tok = rec._tok_info or {}
    return {
        "estimator": "sampled", "support": rec.support, "k": None, "has_teacher": has_teacher,
        "teacher_source": "trainer" if has_teacher else None, "source_format": "record",
        "temperature": temperature, "score_temperature": temperature, "k3_clamp": K3_CLAMP, "k3_max": K3_MAX,
        "run_id": rec.run_id, "student": _as_dict(user.get("student")), "teacher": _as_dict(user.get("teacher")),
        "tokenizer": tok.get("hash"), "vocab_hash": tok.get("vocab_hash"),
        "missing_analyses": support_limits(rec.support, has_teacher, str(rec.out)),
        "drift_version": __version__, "user": user,
    }


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    return dict(value) if isinstance(value, Mapping) else {"source": str(value)}
