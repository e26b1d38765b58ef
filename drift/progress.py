"""Progress reporting that moves: token-level counts with rate and ETA, on a terminal or in a log.

:func:`make_progress` returns a :class:`Progress`. When stderr is a terminal it draws a ``tqdm`` bar; otherwise
(CI logs, ``2> file``, notebooks piping stderr) it prints a plain line to stderr at most every ``interval`` seconds,
with no carriage returns or cursor codes, e.g.::

    collect: sample: 1234/5000 tok (412 tok/s, ETA 9 s) | part 1/4

With ``n`` units done after ``t`` seconds the rate is ``n / t`` and ``ETA = (total - n) / rate``; both are shown only
once there is something to divide. ``total`` may be ``None`` (unknown) and may be changed while running (an upper
bound that shrinks as rollouts stop early, or a total that grows as parts are generated).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["Progress", "format_duration", "make_progress"]

PLAIN_INTERVAL_S = 5.0  # seconds between two plain lines


def format_duration(seconds: float) -> str:
    """``9 s``, ``3 min 05 s``, ``2 h 07 min``: a short human duration (seconds rounded)."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _is_tty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # closed or detached stream
        return False


class Progress:
    """A counter of work done, shown as a tqdm bar (terminal) or as plain periodic lines (anything else).

    Args:
        total: units expected (``None`` = unknown); settable later through :attr:`total`.
        desc: label printed in front (``"collect: sample"``).
        unit: unit name (``"tok"``, ``"rollout"``).
        enabled: ``False`` counts silently and prints nothing.
        stream: where to write (default ``sys.stderr``, looked up when the object is made).
        tty: force the bar (``True``) or the plain lines (``False``); default: ``stream.isatty()``.
        interval: minimum seconds between two plain lines (the first line waits one interval, so short jobs print
            only the final line at :meth:`close`).
        clock: monotonic time source in seconds (tests pass a fake one).
    """

    def __init__(self, total: int | None, desc: str, unit: str = "tok", enabled: bool = True, *,
                 stream: TextIO | None = None, tty: bool | None = None, interval: float = PLAIN_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.desc, self.unit, self.enabled = desc, unit, enabled
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.interval = float(interval)
        self.clock = clock
        self.n = 0
        self.postfix = ""
        self.closed = False
        self._total = None if total is None else int(total)
        self._start = clock()
        self._last_line = self._start
        self._printed_n: int | None = None
        self._bar: Any = None
        if enabled and (tty if tty is not None else _is_tty(self.stream)):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self._total, desc=desc, unit=unit, unit_scale=True, file=self.stream,
                             dynamic_ncols=True)

    @property
    def total(self) -> int | None:
        """Units expected, or ``None``; assigning updates the bar / the next line."""
        return self._total

    @total.setter
    def total(self, value: int | None) -> None:
        self._total = None if value is None else max(0, int(value))
        if self._bar is not None:
            self._bar.total = self._total
            self._bar.refresh()

    def add_total(self, n: int) -> None:
        """Change the total by ``n`` (negative: an upper bound shrank); an unknown total starts from 0."""
        self.total = (self._total or 0) + int(n)

    def update(self, n: int = 1) -> None:
        """Add ``n`` units done; a plain line is printed when ``interval`` seconds passed since the last one."""
        self.n += int(n)
        if not self.enabled or self.closed:
            return
        if self._bar is not None:
            self._bar.update(int(n))
            return
        now = self.clock()
        if now - self._last_line >= self.interval:
            self._emit(now)

    def set_postfix_str(self, s: str) -> None:
        """Text shown after the counts (``"part 2/4"``)."""
        self.postfix = s
        if self._bar is not None:
            self._bar.set_postfix_str(s)

    def line(self, now: float | None = None) -> str:
        """The plain progress line: ``desc: n/total unit (rate unit/s, ETA t) | postfix``."""
        now = self.clock() if now is None else now
        elapsed = now - self._start
        counts = f"{self.n}/{self._total}" if self._total is not None else f"{self.n}"
        extra = []
        if elapsed > 0 and self.n > 0:
            rate = self.n / elapsed
            extra.append(f"{rate:.0f} {self.unit}/s" if rate >= 10 else f"{rate:.2g} {self.unit}/s")
            if self._total is not None and not self.closed:
                extra.append(f"ETA {format_duration(max(0, self._total - self.n) / rate)}")
            elif self.closed:
                extra.append(f"took {format_duration(elapsed)}")
        text = f"{self.desc}: {counts} {self.unit}"
        if extra:
            text += f" ({', '.join(extra)})"
        if self.postfix:
            text += f" | {self.postfix}"
        return text

    def _emit(self, now: float) -> None:
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()
        self._last_line = now
        self._printed_n = self.n

    def close(self) -> None:
        """Finish: close the bar, or print a final plain line (once; only if something was counted or printed)."""
        if self.closed:
            return
        self.closed = True
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        elif self.n != self._printed_n and (self.n > 0 or self._printed_n is not None):
            self._emit(self.clock())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_progress(total: int | None, desc: str, unit: str = "tok", enabled: bool = True) -> Progress:
    """A :class:`Progress` on stderr: a tqdm bar on a terminal, plain lines every few seconds otherwise."""
    return Progress(total, desc, unit, enabled)
