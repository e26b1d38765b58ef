"""Lazy re-exports for package ``__init__`` modules: ``from drift.train import train`` keeps working, while
``import drift.train`` (what the CLI's parser needs) loads no torch until such a name is first used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: Mapping[str, str], namespace: dict[str, Any],
                 exported: Iterable[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of ``package`` for ``names`` (name -> submodule).

    Args:
        package: the package's dotted name (``drift.train``).
        names: each lazily exported name and the submodule (relative to ``package``) that defines it.
        namespace: the package's ``globals()``: a name is cached there once loaded.
        exported: the package's ``__all__``.
    """
    listed = tuple(exported)

    def module_getattr(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(f"{package}.{names[name]}"), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def module_dir() -> list[str]:
        return sorted({*namespace, *listed})

    return module_getattr, module_dir
