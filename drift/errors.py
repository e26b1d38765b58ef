"""Every exception and warning drift raises, in one place.

Each error says what went wrong *and what to do about it*. Errors subclass the built-in type a caller would
naturally catch (``ValueError`` for bad input, ``FileExistsError`` for an existing output, ...) as well as
:class:`DriftError`, so ``except DriftError`` catches everything drift raises on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable


class DriftError(Exception):
    """Base class of every error drift raises on purpose."""


class ConfigError(DriftError, ValueError):
    """A configuration is invalid. Lists *every* problem found, not just the first.

    Args:
        where: the config class or command that was being built.
        problems: one human-readable line per problem, each naming the field and a fix.
    """

    def __init__(self, where: str, problems: Iterable[str]) -> None:
        self.where = where
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {where} ({len(self.problems)} problem(s)):\n{lines}")


class SchemaError(DriftError, ValueError):
    """A table or dataset does not have the expected columns or types. Lists every problem at once."""

    def __init__(self, what: str, problems: Iterable[str]) -> None:
        self.what = what
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{what} does not match the drift schema ({len(self.problems)} problem(s)):\n{lines}")


class InputFormatError(DriftError, ValueError):
    """A user-supplied input file (prompts, rollouts, a schedule) is malformed; names file, line and fix."""


class TokenizerMismatchError(DriftError, ValueError):
    """Student and teacher tokenizers differ, so per-token scores cannot be aligned."""


class AlignmentError(DriftError, RuntimeError):
    """The alignment self-check failed: teacher and student scores are not on the same response tokens."""


class DatasetExistsError(DriftError, FileExistsError):
    """The output folder already holds a drift dataset and ``--if-exists`` did not say what to do."""


class DatasetError(DriftError, ValueError):
    """A drift dataset on disk is missing, incomplete or inconsistent (manifest vs. part files)."""


class ModelLoadError(DriftError, OSError):
    """A model or tokenizer could not be loaded from the given local path."""


class ConvergenceError(DriftError, ValueError):
    """A curve fit did not converge; the message says what to try (other start values, bounds, a model)."""


class ScheduleError(DriftError, ValueError):
    """A weight schedule spec is invalid, or cannot be exported to the requested target."""


class ChatTemplateError(InputFormatError):
    """A prompt needs a chat template the tokenizer does not have (or ``--chat-template never`` forbids it)."""


class PromptTooLongError(InputFormatError):
    """A prompt plus its response budget does not fit in the models' context."""


class DeviceError(DriftError, ValueError):
    """The requested device (``--device``) does not exist or is not available on this machine."""


class DistributedError(DriftError, RuntimeError):
    """Another rank of a torchrun job failed (its error is quoted), or torch.distributed could not start."""


class DriftWarning(UserWarning):
    """Base class of drift's warnings."""


class TokenizerWarning(DriftWarning):
    """Student and teacher tokenizers are compatible but differ in a way worth knowing (EOS, template, padding)."""


class AlignmentWarning(DriftWarning):
    """A hint (not proof) that scores may be misaligned, e.g. the teacher fits a shifted offset better."""


class FitWarning(DriftWarning, RuntimeWarning):
    """A fit finished but something about it deserves a look (parameter at a bound, few bins, ...)."""


class DamagedPartError(DatasetError):
    """Part files of a drift dataset are damaged (truncated, not parquet, wrong row count, missing columns).

    Args:
        root: the dataset folder.
        problems: one line per damaged file, naming the file and what is wrong with it.
        repair: the shell command that regenerates the damaged parts (None when the dataset does not record the
            command that wrote it).
    """

    def __init__(self, root: str, problems: Iterable[str], repair: str | None) -> None:
        self.root = root
        self.problems = list(problems)
        self.repair = repair
        lines = "\n".join(f"  - {p}" for p in self.problems)
        if repair:
            fix = ("Regenerate the damaged parts (the intact ones are kept) with:\n  " + repair)
        else:
            fix = ("Its config.json records no drift command to rerun: replace or delete the damaged files, or "
                   "rerun the command that wrote this folder with --if-exists resume.")
        super().__init__(f"{root} has {len(self.problems)} damaged part file(s):\n{lines}\n{fix}")
