"""Config flags in titled ``--help`` groups, with no field left out."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Sequence

from drift.config import add_config_arguments

OTHER_TITLE = "other options"


def add_grouped_arguments(parser: argparse.ArgumentParser, cls: type,
                          groups: Sequence[tuple[str, Sequence[str]]], *, skip: Iterable[str] = ()) -> None:
    """Add the flags of config dataclass ``cls`` to ``parser``, one argument group per ``(title, field names)``.

    Fields named in no group and not in ``skip`` (the ones a command adds itself, e.g. a positional ``dataset``)
    go to a last group titled :data:`OTHER_TITLE`, so a field added to the config is a flag at once, as the
    1:1 rule between configs and flags requires, even before someone files it under a group.

    Args:
        parser: the subcommand's parser.
        cls: the stage's config dataclass.
        groups: ``(title, field names)`` in ``--help`` order.
        skip: fields the caller adds (or deliberately leaves out) itself.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    for title, fields in groups:
        add_config_arguments(parser, cls, exclude=names - set(fields), group=title)
    taken = {n for _, fields in groups for n in fields} | set(skip)
    rest = {f.name for f in dataclasses.fields(cls) if f.name not in taken and f.metadata.get("cli", True)}
    if rest:
        add_config_arguments(parser, cls, exclude=names - rest, group=OTHER_TITLE)
