"""Shared machinery for drift's per-stage configs.

Every stage has one flat, frozen dataclass (``CollectConfig``, ``ScoreConfig``, ``FitConfig``, ...). Fields carry a
one-line help text in ``metadata["help"]``; ``__post_init__`` collects *all* problems and raises one
:class:`~drift.errors.ConfigError`. The helpers here turn such a dataclass into argparse flags (1:1, so the CLI and
the Python API cannot drift apart), back from parsed flags, and into the ``config.json`` written beside every output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from drift.errors import ConfigError

C = TypeVar("C")

__all__ = [
    "Checks",
    "add_config_arguments",
    "config_from_dict",
    "config_from_namespace",
    "config_to_dict",
    "git_sha",
    "opt",
    "save_config",
]


def opt(default: Any, help: str, *, choices: Iterable[Any] | None = None, cli: bool = True,
        flag: str | None = None) -> Any:
    """Declare a config field with its help text (and optional fixed choices) in one line.

    Args:
        default: the default value (lists/dicts are wrapped in a ``default_factory``).
        help: one line for ``--help``, saying what the knob does and its unit.
        choices: allowed values; enforced by argparse and by :class:`Checks.choice`.
        cli: whether the field becomes a command-line flag.
        flag: override the flag name (default: ``--field-name``).
    """
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "cli": cli, "flag": flag}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Checks:
    """Collects validation problems so a config reports all of them at once.

    Example:
        >>> c = Checks("CollectConfig")
        >>> c.check(2 > 1, "never shown")
        >>> c.raise_if_any()
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[str] = []

    def check(self, ok: bool, problem: str) -> None:
        """Record ``problem`` unless ``ok``."""
        if not ok:
            self.problems.append(problem)

    def positive(self, name: str, value: float | None, *, allow_none: bool = False) -> None:
        """Require ``value > 0``."""
        if value is None and allow_none:
            return
        self.check(value is not None and value > 0, f"{name} must be > 0, got {value!r}")

    def in_range(self, name: str, value: float | None, lo: float, hi: float, *, allow_none: bool = False) -> None:
        """Require ``lo <= value <= hi``."""
        if value is None and allow_none:
            return
        self.check(value is not None and lo <= value <= hi, f"{name} must be in [{lo}, {hi}], got {value!r}")

    def choice(self, name: str, value: Any, choices: Iterable[Any]) -> None:
        """Require ``value`` to be one of ``choices``."""
        choices = tuple(choices)
        self.check(value in choices, f"{name} must be one of {list(choices)}, got {value!r}")

    def raise_if_any(self) -> None:
        """Raise :class:`ConfigError` listing every recorded problem."""
        if self.problems:
            raise ConfigError(self.where, self.problems)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """Return (inner type, is_optional) for ``X | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, exclude: Iterable[str] = (),
                         group: str | None = None) -> None:
    """Add one ``--flag`` per field of config dataclass ``cls`` (defaults left to the dataclass).

    Flags default to ``argparse.SUPPRESS`` so :func:`config_from_namespace` can tell "given" from "not given";
    the dataclass default therefore lives in exactly one place.
    """
    exclude = set(exclude)
    hints = typing.get_type_hints(cls)
    target = parser.add_argument_group(group) if group else parser
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.metadata.get("cli", True):
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):  # a nested options block: its fields become flat flags too
            add_config_arguments(parser, tp, exclude=exclude, group=f.metadata.get("help") or f.name)
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        if (default is not None and default != "" and not isinstance(default, (list, tuple))) or default is False:
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        origin = typing.get_origin(tp)
        if tp is bool:
            if default is False and not optional:
                kwargs["action"] = "store_true"
            else:
                kwargs["type"] = _parse_bool
                kwargs["metavar"] = "BOOL"
        elif origin in (tuple, list):
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
            kwargs["type"] = _comma_list(inner)
            kwargs["metavar"] = "A,B,..."
        elif tp in (int, float, str):
            kwargs["type"] = tp
        target.add_argument(flag, **kwargs)


def _comma_list(inner: type) -> Callable[[str], tuple[Any, ...]]:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(inner(x) for x in text.split(",") if x.strip() != "")

    return parse


def config_from_namespace(cls: type[C], ns: argparse.Namespace, **overrides: Any) -> C:
    """Build config ``cls`` from parsed flags: only flags the user gave override the dataclass defaults."""
    given = {**vars(ns), **overrides}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp, _ = _unwrap_optional(hints[f.name])
        if f.name in given:
            kwargs[f.name] = given[f.name]
        elif dataclasses.is_dataclass(tp):
            kwargs[f.name] = config_from_namespace(tp, argparse.Namespace(**given))
    return cls(**kwargs)


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild config ``cls`` from :func:`config_to_dict` output (nested blocks and tuples restored)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        tp, _ = _unwrap_optional(hints[f.name])
        value = data[f.name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = config_from_dict(tp, value)
        elif typing.get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-JSON dict of a config dataclass (tuples become lists, paths become strings)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return config_to_dict(v)
        return v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def git_sha(path: str | os.PathLike[str] | None = None) -> str | None:
    """Commit of the drift checkout (or ``path``), or None outside a git work tree."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def save_config(cfg: Any, path: str | os.PathLike[str], **extra: Any) -> Path:
    """Write ``{"config": ..., **extra}`` as JSON to ``path`` atomically (temp file + rename)."""
    from drift import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"config_type": type(cfg).__name__, "config": config_to_dict(cfg),
               "drift_version": __version__, "git_sha": git_sha(), **extra}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path
