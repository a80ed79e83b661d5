"""The page of a dataset card: one self-contained HTML document from plain string templates.

Everything is inline: the style sheet, and every image as a ``data:`` URI; no script, no font
file, no address outside the page, so the card opens offline in any browser and prints. The
helpers here escape every text they are given (:func:`esc`), so that a field or class name
cannot break the page.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from string import Template

from gpuds.report.figures import DPI, Png

__all__ = ["Cell", "document", "esc", "figure", "image", "num", "table"]

Cell = str | tuple[str, str]
"""A table cell: its HTML, or ``(html, class)`` (``num`` right-aligns a number)."""

_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="gpuds $version">
<title>$title</title>
<style>
$style
</style>
</head>
<body>
<header class="top">
<div class="wrap">
<p class="eyebrow">gpuds dataset card</p>
<h1>$title</h1>
<p class="sub">$subtitle</p>
</div>
</header>
<nav><div class="wrap">$nav</div></nav>
<main class="wrap">
$body
</main>
<footer><div class="wrap">$footer</div></footer>
</body>
</html>
""")

STYLE = """
:root {
  --fg: #1f2328; --muted: #5b6470; --line: #e3e6ea; --soft: #f5f7f9; --accent: #3b6fb6;
  --accent-soft: #e8eef8; --ok: #2f7d46; --bad: #b5534f;
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
    "Noto Sans", "Liberation Sans", "DejaVu Sans", sans-serif;
}
.wrap { max-width: 1120px; margin: 0 auto; padding: 0 32px; }
header.top { background: linear-gradient(180deg, #f3f6fb, #fff);
  border-bottom: 1px solid var(--line); padding: 26px 0 18px; }
.eyebrow { margin: 0; font-size: 12px; letter-spacing: .08em; text-transform: uppercase;
  color: var(--accent); font-weight: 600; }
h1 { font-size: 30px; line-height: 1.2; margin: 4px 0 6px; word-break: break-all; }
.sub { margin: 0; color: var(--muted); font-size: 14px; }
nav { position: sticky; top: 0; z-index: 2; background: rgba(255, 255, 255, .96);
  border-bottom: 1px solid var(--line); }
nav .wrap { display: flex; flex-wrap: wrap; gap: 4px 20px; padding-top: 9px; padding-bottom: 9px;
  font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; }
nav a:hover { text-decoration: underline; }
main { padding-top: 8px; padding-bottom: 48px; }
section { margin-top: 34px; scroll-margin-top: 52px; }
h2 { font-size: 21px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 8px; }
p { margin: 8px 0; }
.note { color: var(--muted); font-size: 13.5px; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px;
  margin: 18px 0 8px; }
.tile { background: var(--soft); border: 1px solid var(--line); border-radius: 10px;
  padding: 10px 14px; }
.tile .k { font-size: 12px; letter-spacing: .05em; text-transform: uppercase; color: var(--muted); }
.tile .v { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }
.tile .d { font-size: 12.5px; color: var(--muted); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13.5px; margin: 6px 0 14px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv th { width: 190px; background: none; color: var(--muted); font-weight: 500; }
tbody tr:hover { background: #fafbfc; }
td.name { white-space: nowrap; }
td.name code { word-break: normal; }
.pair { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 8px 28px;
  align-items: start; }
.pair > * { min-width: 0; }
@media (max-width: 900px) { .pair { grid-template-columns: minmax(0, 1fr); } }
code { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono",
  "DejaVu Sans Mono", monospace; background: var(--soft); padding: 1px 5px; border-radius: 4px;
  word-break: break-word; }
figure { margin: 10px 0 20px; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.grid td { vertical-align: middle; }
.grid td.label { white-space: nowrap; width: 1%; font-weight: 600; }
.grid img { display: block; image-rendering: pixelated; max-width: 100%; height: auto; }
.chip { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.missing { color: var(--bad); }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: 12.5px;
  font-weight: 600; background: var(--accent-soft); color: var(--accent); }
ol.ops { padding-left: 22px; }
ol.ops > li { margin: 0 0 14px; }
ol.timeline { list-style: none; margin: 0 0 0 8px; padding: 0; border-left: 3px solid var(--line); }
ol.timeline > li { position: relative; padding: 0 0 22px 24px; }
ol.timeline > li::before { content: ""; position: absolute; left: -10px; top: 3px; width: 17px;
  height: 17px; border-radius: 50%; background: var(--accent); border: 4px solid #fff; }
.when { color: var(--muted); font-size: 13px; margin-left: 8px; }
ul.facts { margin: 6px 0; padding-left: 20px; }
ul.facts li { margin: 2px 0; }
details { margin: 6px 0; }
summary { cursor: pointer; color: var(--accent); font-size: 13px; }
pre { overflow: auto; max-height: 360px; background: var(--soft); padding: 10px 12px;
  border-radius: 6px; font-size: 12px; }
footer { border-top: 1px solid var(--line); color: var(--muted); font-size: 13px;
  padding: 14px 0 28px; }
@media print {
  nav { display: none; }
  header.top { background: none; }
  .wrap { max-width: none; padding: 0 8mm; }
  figure, table, .tile, ol.timeline > li { break-inside: avoid; }
  pre { max-height: none; }
  details > *:not(summary) { display: block; }
}
"""


def esc(text: object) -> str:
    """``text`` escaped for HTML (quotes included)."""
    return html.escape(str(text), quote=True)


def num(value: float, scale: float | None = None) -> str:
    """A statistic with 4 significant digits; ``0`` when it lies within a millionth of ``scale``
    of zero (the mean a standardised field is left with is rounding noise).

    Examples
    --------
    >>> num(74.434523), num(2.6e-09, scale=1.0), num(float("nan"))
    ('74.43', '0', 'NaN')
    """
    if value != value:
        return "NaN"
    if scale is not None and abs(value) < 1e-6 * abs(scale):
        return "0"
    return f"{value:.4g}"


def document(
    title: str,
    subtitle: str,
    sections: Sequence[tuple[str, str, str]],
    footer: str,
    version: str,
) -> str:
    """The page: ``sections`` are ``(id, heading, body html)``, linked from the navigation."""
    nav = "".join(f'<a href="#{esc(key)}">{esc(heading)}</a>' for key, heading, _ in sections)
    body = "\n".join(
        f'<section id="{esc(key)}">\n<h2>{esc(heading)}</h2>\n{content}\n</section>'
        for key, heading, content in sections
    )
    return _PAGE.substitute(
        title=esc(title),
        subtitle=subtitle,
        nav=nav,
        body=body,
        footer=footer,
        style=STYLE.strip(),
        version=esc(version),
    )


def image(data: bytes, alt: str, width: int | None = None, css: str = "") -> str:
    """An ``<img>`` holding ``data`` (PNG) as a ``data:`` URI."""
    encoded = base64.b64encode(data).decode("ascii")
    size = f' width="{width}"' if width else ""
    klass = f' class="{esc(css)}"' if css else ""
    return f'<img src="data:image/png;base64,{encoded}" alt="{esc(alt)}"{size}{klass}>'


def figure(png: Png, alt: str, caption: str = "") -> str:
    """A figure shown at 96 pixels per inch (its PNG holds :data:`~gpuds.report.figures.DPI`)."""
    width = round(png.width * 96 / DPI)
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure>{image(png.data, alt, width)}{cap}</figure>"


def table(
    headers: Sequence[Cell], rows: Iterable[Sequence[Cell]], css: str = "", caption: str = ""
) -> str:
    """A table; cells are HTML already (escape text with :func:`esc`)."""

    def cell(tag: str, value: Cell) -> str:
        text, klass = (value, "") if isinstance(value, str) else value
        return f'<{tag} class="{klass}">{text}</{tag}>' if klass else f"<{tag}>{text}</{tag}>"

    head = "".join(cell("th", h) for h in headers)
    body = "\n".join("<tr>" + "".join(cell("td", c) for c in row) + "</tr>" for row in rows)
    klass = f' class="{esc(css)}"' if css else ""
    cap = f'<caption class="note">{caption}</caption>' if caption else ""
    return (
        f'<div class="scroll"><table{klass}>{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>\n{body}\n</tbody></table></div>"
    )
