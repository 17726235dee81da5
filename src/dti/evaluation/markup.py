"""The Markdown the reports' own sections are written in, as HTML: the same text makes ``report.md``
and ``report.html``, so the page shows tables as tables and code as code (not raw Markdown in a
``<pre>``).

Only what the reports write: paragraphs, pipe tables, ``-`` lists, fenced code, and inline
```code```, ``**bold**``, ``[text](link)`` and ``![alt](image)``. Everything is escaped first; a
link or image keeps a relative path or an http(s) address only (a report opens from disk).
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _address(target: str) -> str | None:
    """A link target the page may use: relative (quoted as a path) or http(s); None otherwise."""
    if re.match(r"^https?://", target):
        return html.escape(target, quote=True)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("/", "\\")):
        return None  # javascript:, data:, file: and absolute paths are not followed
    return html.escape(quote(target, safe="/#.-_~"), quote=True)


def inline(text: str) -> str:
    """One line of Markdown as HTML (escaped; code spans are not formatted further)."""
    out, last = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[last : m.start()]))
        code, bold, bang, label, target = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<strong>{html.escape(bold)}</strong>")
        else:
            address = _address(target)
            if address is None:
                out.append(html.escape(m.group(0)))
            elif bang:
                out.append(f"<img src='{address}' alt='{html.escape(label, quote=True)}' loading='lazy'>")
            else:
                out.append(f"<a href='{address}'>{html.escape(label)}</a>")
        last = m.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def _cells(line: str) -> list[str]:
    body = line.strip().removeprefix("|").removesuffix("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def _table(lines: list[str]) -> str:
    rows = [_cells(line) for line in lines if not re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*", line.strip())]
    head, body = rows[0], rows[1:]
    out = "<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
    out += "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in body)
    return out + "</tbody></table>"


def to_html(text: str) -> str:
    """A section's Markdown as HTML blocks."""
    blocks: list[str] = []
    lines = text.strip("\n").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            blocks.append(f"<pre>{html.escape(chr(10).join(lines[i + 1 : end]))}</pre>")
            i = end + 1
            continue
        run = [line]
        kind = "table" if line.lstrip().startswith("|") else "list" if line.startswith("- ") else "p"
        i += 1
        while i < len(lines) and lines[i].strip() and not lines[i].startswith("```"):
            nxt = lines[i]
            nxt_kind = "table" if nxt.lstrip().startswith("|") else "list" if nxt.startswith("- ") else "p"
            if nxt_kind != kind and not (kind == "list" and nxt.startswith("  ")):
                break
            run.append(nxt)
            i += 1
        if kind == "table":
            blocks.append(_table(run))
        elif kind == "list":
            items: list[str] = []
            for item in run:
                if item.startswith("- "):
                    items.append(item[2:])
                else:  # a continuation line of the item above
                    items[-1] += " " + item.strip()
            blocks.append("<ul>" + "".join(f"<li>{inline(item)}</li>" for item in items) + "</ul>")
        else:
            blocks.append(f"<p>{inline(' '.join(s.strip() for s in run))}</p>")
    return "\n".join(blocks)
