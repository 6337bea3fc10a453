"""One self-contained HTML page (inline CSS, figures as base64 PNG)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html import escape
from typing import Any, Sequence

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#1d2430;line-height:1.45;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;border-bottom:1px solid #d0d7de;padding-bottom:4px;
margin-top:32px}h3{font-size:15px;margin:18px 0 6px}
.sub{color:#57606a;margin-top:0}.note{background:#fff8c5;border:1px solid #e5d47a;padding:6px 10px;
border-radius:4px;font-size:13px;margin:6px 0}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #d0d7de;padding:4px 9px;
text-align:right}th{background:#f3f5f7}td.l,th.l{text-align:left}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:10px 0}.card{border:1px solid #d0d7de;border-radius:6px;
padding:8px 14px;min-width:150px}.card .v{font-size:22px;font-weight:600}.card .k{font-size:12px;color:#57606a}
.bad{color:#b42318}.good{color:#1a7f37}figure{margin:10px 0 22px}figure img{max-width:100%;
border:1px solid #eaeef2}figcaption{font-size:13px;color:#57606a;max-width:1000px}
code{background:#f3f5f7;padding:1px 4px;border-radius:3px;font-size:12px}
.explain{font-size:14px;max-width:1000px}.kv{font-size:13px;color:#33404d;max-width:1100px}
summary{cursor:pointer;font-size:13px;color:#0b5cad;margin:4px 0}
"""


@dataclass
class Section:
    """A titled block of already-rendered HTML."""

    title: str
    body: str


@dataclass
class Page:
    """The report: title, subtitle, sections."""

    title: str
    subtitle: str
    sections: list[Section] = field(default_factory=list)

    def render(self) -> str:
        parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(self.title)}"
                 f"</title><style>{CSS}</style></head><body>", f"<h1>{escape(self.title)}</h1>",
                 f"<p class=\"sub\">{escape(self.subtitle)}</p>"]
        for s in self.sections:
            parts.append(f"<h2>{escape(s.title)}</h2>\n{s.body}")
        parts.append("</body></html>\n")
        return "\n".join(parts)


def fmt(value: Any, digits: int = 2) -> str:
    """Numbers rounded, everything else escaped; None as a dash."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return escape(str(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1, digits: int = 2) -> str:
    """A table whose first ``left`` columns are left-aligned text."""
    head = "".join(f"<th class=\"l\">{escape(h)}</th>" if i < left else f"<th>{escape(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = "".join(f"<td class=\"l\">{fmt(v, digits)}</td>" if i < left else f"<td>{fmt(v, digits)}</td>"
                        for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def cards(items: Sequence[tuple[str, str, str]]) -> str:
    """Big-number cards: (label, value, css class)."""
    return "<div class=\"cards\">" + "".join(
        f"<div class=\"card\"><div class=\"v {cls}\">{escape(v)}</div><div class=\"k\">{escape(k)}</div></div>"
        for k, v, cls in items) + "</div>"


def figure(png: bytes, caption: str, alt: str) -> str:
    """An inlined PNG with its caption (caption is trusted HTML built by the report)."""
    data = base64.b64encode(png).decode("ascii")
    return (f"<figure><img alt=\"{escape(alt)}\" src=\"data:image/png;base64,{data}\">"
            f"<figcaption>{caption}</figcaption></figure>")


def note(text: str) -> str:
    """A highlighted remark (plain text)."""
    return f"<div class=\"note\">{escape(text)}</div>"
