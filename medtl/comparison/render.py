"""Rendering the comparison report: one list of blocks (headings, paragraphs, tables, images) to Markdown and HTML.

:mod:`medtl.comparison.report` decides what the report says; this module decides only how it looks, so
report.md and report.html are made from the same blocks and never disagree. User text (arm labels, errors) is
escaped in both: it shows literally and cannot open a heading, a list, a link or a script.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Block", "md_escape", "render_md", "render_html"]


@dataclass
class Block:
    """One piece of the report."""

    kind: str  # "h1" | "h2" | "p" | "ul" | "table" | "img" | "pre"
    text: str = ""
    items: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    path: Path | None = None


_MD_INLINE = re.compile(r"([\\`*_\[\]|~$])")
_MD_MARKER = re.compile(r"^(\s*)([#+-])(?=\s|$)")
_MD_NUMBERED = re.compile(r"^(\s*\d+)([.)])(?=\s|$)")


def md_escape(text: str, *, block: bool = True) -> str:
    """Text as Markdown shows it literally: what report.html does with ``html.escape``, for report.md.

    ``&``, ``<`` and ``>`` become entities (so ``<script>`` is text, not HTML); Markdown's inline
    punctuation (backslash, backtick, ``*``, ``_``, brackets, ``|``, ``~``, and ``$`` which starts math on
    GitHub) is backslash-escaped and line breaks become spaces. With ``block`` (text that starts a line:
    a paragraph, a list item, a heading), a leading ``#``, ``+``, ``-`` or ``1.`` marker is escaped too,
    so user text cannot open a heading or a list; table cells need no such escape.
    """
    s = html.escape(str(text), quote=False)
    s = _MD_INLINE.sub(r"\\\1", s)
    s = re.sub(r"\s*[\r\n]+\s*", " ", s)
    if block:
        s = _MD_NUMBERED.sub(r"\1\\\2", _MD_MARKER.sub(r"\1\\\2", s))
    return s


def _md_fence(text: str) -> str:
    """A code fence longer than any run of backticks inside ``text``, so the text cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_md(blocks: list[Block], base: Path) -> str:
    """Markdown; images are linked relative to ``base`` (the comparison folder)."""
    e = md_escape
    out: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {e(b.text)}\n")
        elif b.kind == "h2":
            out.append(f"## {e(b.text)}\n")
        elif b.kind == "p":
            out.append(f"{e(b.text)}\n")
        elif b.kind == "ul":
            out.append("\n".join(f"- {e(i)}" for i in b.items) + "\n")
        elif b.kind == "pre":
            fence = _md_fence(b.text)
            out.append(f"{fence}\n" + b.text.rstrip() + f"\n{fence}\n")
        elif b.kind == "table":
            out.append("| " + " | ".join(e(h, block=False) for h in b.header) + " |")
            out.append("|" + "---|" * len(b.header))
            out.extend("| " + " | ".join(e(c, block=False) for c in row) + " |" for row in b.rows)
            out.append("")
        elif b.kind == "img" and b.path is not None:
            out.append(f"![{e(b.text)}]({b.path.relative_to(base).as_posix()})\n")
    return "\n".join(out)


# Long unbroken cells (a SHA-256, a URL, a file path, a load report line) may break anywhere, and "anywhere" also
# lowers the width a table asks for, so every table fits the page (1100 px) instead of running off a 1280 px screen.
_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.9em;max-width:100%}th,td{border:1px solid #ccc;"
    "padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere;word-break:break-word}"
    "th{background:#f3f3f3}img{max-width:100%}"
    "pre{background:#f6f6f6;padding:0.8em;white-space:pre-wrap;overflow-wrap:anywhere}li{margin:0.3em 0}"
)


def render_html(blocks: list[Block]) -> str:
    """One self-contained HTML page: the images are embedded as base64 data."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<style>{_CSS}</style>"]
    title = next((b.text for b in blocks if b.kind == "h1"), "medtl report")
    out.append(f"<title>{e(title)}</title></head><body>")
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "pre":
            out.append(f"<pre>{e(b.text)}</pre>")
        elif b.kind == "table":
            out.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in b.header) + "</tr></thead><tbody>")
            out.extend("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append("</tbody></table>")
        elif b.kind == "img" and b.path is not None:
            data = base64.b64encode(b.path.read_bytes()).decode()
            out.append(f'<p><img alt="{e(b.text)}" src="data:image/png;base64,{data}"></p>')
    out.append("</body></html>")
    return "\n".join(out)
