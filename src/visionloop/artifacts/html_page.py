"""The small HTML helpers of the project's own report pages (validation, evaluation).

A page is one self-contained file: CSS inline, images as data: URIs, no JavaScript and no
URL outside the file, so it renders the same offline, from a copy, or from an MLflow
artifact. Its Content-Security-Policy tells the browser to load nothing else either.
Every value is escaped: labels and file names come from users. Markup built here is an
`Html` (a str marked safe); anything else given to a helper is escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from visionloop.atomic import write_text_atomic

# The browser may apply inline styles and show data: images; it may fetch nothing.
CONTENT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1f2328; background: #fff; margin: 0 auto; padding: 24px 32px; max-width: 1200px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
p.meta { color: #59636e; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; max-width: 100%; }
.badge { display: inline-block; padding: 1px 10px; border-radius: 10px; font-weight: 600; }
.passed { background: #dafbe1; color: #116329; }
.failed { background: #ffebe9; color: #a40e26; }
.warning { background: #fff8c5; color: #7d4e00; }
.headline { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.figure { border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 16px; min-width: 140px; }
.figure .value { font-size: 26px; font-weight: 600; font-variant-numeric: tabular-nums; }
.figure .label { color: #59636e; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.plots figure { margin: 0; }
.plots img { max-width: 100%; border: 1px solid #d0d7de; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
"""


class Html(str):
    """Markup that is already safe: the helpers pass it through unescaped."""


def esc(value: Any) -> Html:
    """`value` as HTML text; an Html is kept as it is."""
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def tag(name: str, content: Any = "", **attributes: Any) -> Html:
    """<name attr="...">content</name>; `class_` for class. Attributes and content escaped."""
    attrs = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{esc(value)}"'
        for key, value in attributes.items()
        if value is not None
    )
    return Html(f"<{name}{attrs}>{esc(content)}</{name}>")


def join(parts: Iterable[Any]) -> Html:
    return Html("".join(esc(part) for part in parts))


def badge(text: str, kind: str) -> Html:
    """A coloured label: kind is passed, failed or warning."""
    return tag("span", text, class_=f"badge {kind}")


def link(href: str, text: Any) -> Html:
    """A link to a file beside the page (relative, so a copied folder keeps working)."""
    return tag("a", text, href=href)


def number(value: Any, digits: int = 4) -> Html:
    """A table cell for a number, right-aligned; '' when missing."""
    if value is None:
        shown = ""
    elif isinstance(value, float):
        shown = f"{value:.{digits}f}"
    else:
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
    return tag("td", shown, class_="num")


def table(headers: Sequence[Any], rows: Iterable[Sequence[Any]]) -> Html:
    """A table; a cell that is already a <td> (see `number`) is kept, others are escaped."""
    head = join(tag("th", h) for h in headers)
    body = join(tag("tr", join(c if _is_cell(c) else tag("td", c) for c in row)) for row in rows)
    return tag(
        "div",
        tag("table", join([tag("thead", tag("tr", head)), tag("tbody", body)])),
        class_="scroll",
    )


def figure(label: str, value: Any) -> Html:
    """One headline number with its label."""
    return tag(
        "div",
        join([tag("div", value, class_="value"), tag("div", label, class_="label")]),
        class_="figure",
    )


def png_image(data: bytes, alt: str) -> Html:
    """A PNG embedded in the page as a data: URI."""
    encoded = base64.b64encode(data).decode("ascii")
    return Html(f'<img alt="{esc(alt)}" src="data:image/png;base64,{encoded}">')


def document(title: str, body: Any) -> str:
    """A whole page: charset, the content policy, the inline CSS, then `body`."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
        f"<body>\n{esc(body)}\n</body></html>\n"
    )


def write_page(path: Path, title: str, body: Any) -> Path:
    return write_text_atomic(path, document(title, body))


def _is_cell(value: Any) -> bool:
    return isinstance(value, Html) and value.startswith(("<td", "<th"))
