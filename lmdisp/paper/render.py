"""Rendering the report's blocks twice: Markdown (report.md) and one self-contained HTML page
(report.html: images inlined, links relative to the report, opens from disk).

A block is ("h1"|"h2"|"h3", text), ("p", pieces), ("img", path, alt), ("table", header, rows) with
cells as pieces, ("mdtable", markdown text of a pipe table, as `lmdisp report` wrote it), or
("section", id). Pieces: text, or (number text, source path) rendered as a link.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}
a{color:#1f4e9c;text-decoration:none}a:hover{text-decoration:underline}.v{font-weight:bold}
.supported{color:#1b7a2e}.not{color:#a8231c}.ns{color:#a86b00}.nt{color:#777}code{background:#f5f5f5}"""


def _rel(path: str, base: Path) -> str:
    return os.path.relpath(Path(path).resolve(), base.resolve()) if path else ""


def pieces_md(pieces, base: Path) -> str:
    out = []
    for p in pieces if isinstance(pieces, list) else [pieces]:
        if isinstance(p, tuple):
            out.append(f"[{p[0]}]({_rel(p[1], base).replace(' ', '%20')})")
        else:
            out.append(str(p))
    return "".join(out)


def pieces_html(pieces, base: Path) -> str:
    out = []
    for p in pieces if isinstance(pieces, list) else [pieces]:
        if isinstance(p, tuple):
            out.append(f'<a href="{html.escape(_rel(p[1], base))}">{html.escape(p[0])}</a>')
        else:
            text = html.escape(str(p))
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text))
    return "".join(out)


def to_markdown(blocks: list[tuple], base: Path) -> str:
    lines: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            lines += [f"{'#' * int(kind[1])} {b[1]}", ""]
        elif kind == "p":
            lines += [pieces_md(b[1], base), ""]
        elif kind == "img":
            lines += [f"![{b[2]}]({_rel(b[1], base)})", ""]
        elif kind == "table":
            lines.append("| " + " | ".join(b[1]) + " |")
            lines.append("|" + "---|" * len(b[1]))
            lines += ["| " + " | ".join(pieces_md(c, base) for c in row) + " |" for row in b[2]]
            lines.append("")
        elif kind == "mdtable":
            lines += [b[1].rstrip(), ""]
    return "\n".join(lines)


def _md_table_html(text: str) -> str:
    rows = [r for r in text.splitlines() if r.startswith("|")]
    out = []
    for i, row in enumerate(rows):
        if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", row.replace(" ", "")):
            continue
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        tag = "th" if i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{pieces_html(c, Path('.'))}</{tag}>" for c in cells) + "</tr>")
    rest = [r for r in text.splitlines() if r and not r.startswith("|")]
    notes = "".join(f"<p><small>{html.escape(r)}</small></p>" for r in rest)
    return f"<table>{''.join(out)}</table>{notes}"


def _img(path: str, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<p><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></p>'


def to_html(blocks: list[tuple], base: Path, title: str) -> str:
    body: list[str] = []
    open_section = False
    for b in blocks:
        kind = b[0]
        if kind == "section":
            body.append(("</section>" if open_section else "") + f'<section id="{html.escape(b[1])}">')
            open_section = True
        elif kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{pieces_html(b[1], base)}</p>")
        elif kind == "img":
            body.append(_img(b[1], b[2]))
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{pieces_html(c, base)}</td>" for c in row) + "</tr>"
                           for row in b[2])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif kind == "mdtable":
            body.append(_md_table_html(b[1]))
    if open_section:
        body.append("</section>")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
