"""The report's building blocks and their rendering: figures saved once and embedded, tables, Jinja2 templates.

A report is a list of :class:`Section` objects, each an ordered list of blocks (:class:`FigureBlock`,
:class:`TableBlock`, :class:`TextBlock`, :class:`CodeBlock`, :class:`TokenViewBlock`). Sections only hold finished
content; the templates in ``drift/report/templates/`` (``report.html.j2``, ``report.md.j2``, and the pieces they
include) decide how it looks. Figures are written once by
:class:`FigureStore` as PNG (and SVG) files beside the report and embedded in the HTML as base64 ``data:`` URIs, so
the HTML file opens anywhere without a server, a network or its side folder.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["Block", "CodeBlock", "FigureBlock", "FigureStore", "Section", "TableBlock", "TextBlock",
           "TokenViewBlock", "md_table", "new_figure", "render"]


@dataclass(frozen=True)
class FigureBlock:
    """A saved figure: ``files`` are paths relative to the report's folder; ``png_b64`` is embedded in the HTML."""

    name: str
    title: str
    caption: str
    png_b64: str = field(repr=False)
    files: tuple[str, ...]
    kind: str = "figure"


@dataclass(frozen=True)
class TableBlock:
    """A table (cells already formatted as text); ``index`` shows the frame's index as the first column."""

    title: str
    frame: pd.DataFrame = field(repr=False)
    caption: str = ""
    index: bool = False
    kind: str = "table"


@dataclass(frozen=True)
class TextBlock:
    """Paragraphs of plain text (escaped in HTML); ``bullets`` renders them as a list."""

    paragraphs: tuple[str, ...]
    bullets: bool = False
    kind: str = "text"


@dataclass(frozen=True)
class CodeBlock:
    """Preformatted text (a rationale, an export, a command)."""

    title: str
    text: str
    caption: str = ""
    kind: str = "code"


@dataclass(frozen=True)
class TokenViewBlock:
    """Rollouts drawn token by token (:mod:`drift.report.tokens` builds it; ``templates/tokens.html.j2`` draws it).

    Attributes:
        name: HTML id stem; title, caption: as for a figure.
        scales: the colourings a reader can switch between (:class:`drift.report.tokens.ColorScale`).
        rollouts: the rollouts shown (:class:`drift.report.tokens.RolloutView`), each a tuple of tokens.
    """

    name: str
    title: str
    caption: str
    scales: tuple[Any, ...] = field(repr=False)
    rollouts: tuple[Any, ...] = field(repr=False)
    kind: str = "tokens"


Block = FigureBlock | TableBlock | TextBlock | CodeBlock | TokenViewBlock


@dataclass
class Section:
    """One section of the report.

    Attributes:
        id: HTML anchor (``metadata``, ``positions``, ...); title: heading; intro: what the section shows and how to
            read it, for newcomers.
        blocks: the content, in order. findings: one-line results, also collected at the top of the report.
        missing: when the inputs for this section do not exist, what to run to get them (the section is still
            rendered, with this hint). error: the message when building the section failed.
    """

    id: str
    title: str
    intro: str = ""
    blocks: list[Block] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    missing: str | None = None
    error: str | None = None

    @property
    def present(self) -> bool:
        """Whether the section has content (it is rendered either way)."""
        return self.missing is None and self.error is None


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 5.2, height: float = 3.6,
               **kw: Any) -> tuple[Any, Any]:
    """A matplotlib Figure (not registered with pyplot, so nothing global changes) and its axes grid."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


class FigureStore:
    """Writes figures into ``folder`` as PNG (and SVG) and returns blocks that embed the PNG.

    Args:
        folder: the figures folder (``<stem>_files`` beside the report); created on first use.
        svg: also write an SVG of each figure.
        dpi: PNG resolution.
    """

    def __init__(self, folder: Path, *, svg: bool = True, dpi: int = 110) -> None:
        self.folder = Path(folder)
        self.svg = svg
        self.dpi = dpi
        self.paths: list[Path] = []
        self._names: set[str] = set()

    def add(self, fig: Any, name: str, title: str, caption: str = "") -> FigureBlock:
        """Save ``fig`` as ``name.png`` (+ ``name.svg``) and return its block; the figure is then released."""
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        if name in self._names:
            raise ValueError(f"figure name {name!r} used twice in one report")
        self._names.add(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=self.dpi, bbox_inches="tight")
        png = buf.getvalue()
        (self.folder / f"{name}.png").write_bytes(png)
        files = [f"{self.folder.name}/{name}.png"]
        self.paths.append(self.folder / f"{name}.png")
        if self.svg:
            fig.savefig(self.folder / f"{name}.svg", format="svg", bbox_inches="tight")
            files.append(f"{self.folder.name}/{name}.svg")
            self.paths.append(self.folder / f"{name}.svg")
        fig.clear()
        return FigureBlock(name, title, caption, base64.b64encode(png).decode("ascii"), tuple(files))


def md_table(frame: pd.DataFrame, index: bool = False) -> str:
    """A GitHub-flavoured Markdown table of ``frame`` (cells as text; pipes escaped)."""
    df = frame.reset_index() if index else frame

    def cell(v: Any) -> str:
        text = "—" if v is None or (isinstance(v, float) and v != v) else str(v)
        return text.replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def _html_table(frame: pd.DataFrame, index: bool = False) -> Any:
    from markupsafe import Markup

    # to_html escapes every cell; the markup is then safe to insert unescaped.
    return Markup(frame.to_html(index=index, border=0, classes="tbl", na_rep="—", escape=True))


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["html_table"] = _html_table
    env.filters["md_table"] = md_table
    return env


def render(template: str, **context: Any) -> str:
    """Render one of the report templates (``report.html.j2``, ``report.md.j2``) with ``context``."""
    return _environment().get_template(template).render(**context)
