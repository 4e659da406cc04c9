"""One self-contained HTML page that shows a demo run's figures with captions and settings.

The page references its images by relative paths (open it from the folder it was written to, or
serve that folder). A small script checks on load that every image decoded and flags any that did
not, in the page and in ``document.body.dataset.imagesBroken``, which the tests read through a
headless browser.
"""

from __future__ import annotations

import dataclasses
import html
import re
from pathlib import Path

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #1f2328;
padding: 0 1rem; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .3rem;
margin-top: 2.5rem; }
nav a { margin-right: .9rem; } figure { margin: 1rem 0; } figcaption { color: #57606a; font-size:
.9rem; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
table { border-collapse: collapse; font-size: .85rem; margin: .6rem 0; }
td, th { border: 1px solid #d0d7de; padding: .25rem .5rem; text-align: left; }
.note { background: #fff8c5; padding: .5rem .8rem; border-radius: 6px; }
.broken { outline: 3px solid #cf222e; } .note:empty { display: none; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 0
1.2rem; }
"""

_CHECK_IMAGES = """
window.addEventListener('load', () => {
  const broken = [...document.images].filter(img => !(img.complete && img.naturalWidth > 0));
  broken.forEach(img => {
    img.classList.add('broken');
    img.alt = 'figure missing: ' + img.getAttribute('src');
  });
  document.body.dataset.imagesTotal = document.images.length;
  document.body.dataset.imagesBroken = broken.length;
  if (broken.length) {
    document.getElementById('status').textContent = broken.length + ' figure(s) failed to load.';
  }
});
"""


@dataclasses.dataclass
class Figure:
    path: str  # relative to the page
    caption: str = ""


@dataclasses.dataclass
class Section:
    title: str
    text: str = ""
    figures: list[Figure] = dataclasses.field(default_factory=list)
    tables: list[tuple[list[str], list[list]]] = dataclasses.field(
        default_factory=list
    )  # (header, rows)
    html_extra: str = ""  # trusted HTML written by this project (e.g. a converted leaderboard)


def _anchor(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_report(
    out_dir: str | Path,
    title: str,
    intro: str,
    sections: list[Section],
    settings: dict | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and return its path. Every figure path must exist under
    ``out_dir``."""
    out_dir = Path(out_dir)
    missing = [f.path for s in sections for f in s.figures if not (out_dir / f.path).is_file()]
    if missing:
        raise FileNotFoundError(f"report figures missing in {out_dir}: {', '.join(missing)}")
    parts = [
        f"<!doctype html><html lang='en'><head><meta "
        f"charset='utf-8'><title>{html.escape(title)}</title>",
        f"<meta name='viewport' content='width=device-width, "
        f"initial-scale=1'><style>{_STYLE}</style>",
        f"<script>{_CHECK_IMAGES}</script></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p><p id='status' class='note' "
        f"role='status'></p>",
        "<nav>"
        + "".join(f"<a href='#{_anchor(s.title)}'>{html.escape(s.title)}</a>" for s in sections)
        + "</nav>",
    ]
    for s in sections:
        parts.append(f"<section id='{_anchor(s.title)}'><h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{html.escape(s.text)}</p>")
        parts.extend(_table(h, r) for h, r in s.tables)
        parts.append(s.html_extra)
        parts.append("<div class='gallery'>" if len(s.figures) > 2 else "<div>")
        for f in s.figures:
            parts.append(
                f"<figure><img src='{html.escape(f.path)}' "
                f"alt='{html.escape(f.caption or f.path)}' "
                f"loading='eager'><figcaption>{html.escape(f.caption)}</figcaption></figure>"
            )
        parts.append("</div></section>")
    if settings:
        parts.append(
            "<section id='settings'><h2>Settings</h2>"
            + _table(["setting", "value"], [[k, v] for k, v in settings.items()])
            + "</section>"
        )
    parts.append("</body></html>")
    path = out_dir / "index.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(path)
    return path


def markdown_to_html(text: str) -> str:
    """The small Markdown subset the leaderboard uses: '#' headings, pipe tables, paragraphs,
    **bold**."""

    def inline(t: str) -> str:
        t = html.escape(t)
        t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", t)

    out, table = [], []

    def flush():
        if table:
            cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in table]
            rows = [r for r in cells if not all(set(c) <= set("-: ") for c in r)]
            head = "".join(f"<th>{inline(c)}</th>" for c in rows[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:]
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("#"):
            out.append(f"<h3>{inline(line.lstrip('#').strip())}</h3>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    return "\n".join(out)
