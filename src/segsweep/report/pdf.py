"""The report's A4 PDF: WeasyPrint lays out the report's HTML with its print stylesheet.

Inline SVG figures reach WeasyPrint as images (``<img src="data:image/svg+xml;base64,...">``, `svgs_as_images`):
the same SVG renderer draws them, and the demo report's 38 pages come out pixel-identical (pdftoppm at
100 dpi), but their thousands of elements stay out of the HTML style cascade and box tree: 1.8 of the 12 CPU s
the demo's PDF takes, on the last job of every run. The HTML report keeps its inline SVGs (text selectable,
styled by the page).
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path

from segsweep.io import atomic_path

_SVG = re.compile(r"<svg\b.*?</svg>", re.S)
_XMLNS = 'xmlns="http://www.w3.org/2000/svg"'


def _as_image(match: re.Match) -> str:
    svg = match.group(0)
    if "<svg" in svg[4:]:  # a nested <svg>: the match ends inside it; leave the markup as it is
        return svg
    head = svg[: svg.index(">")]
    if "xmlns=" not in head:  # inline SVG may omit it; a standalone SVG document needs it
        svg = svg.replace("<svg", f"<svg {_XMLNS}", 1)
    data = base64.b64encode(svg.encode()).decode()
    return f'<img src="data:image/svg+xml;base64,{data}">'


def svgs_as_images(html: str) -> str:
    """``html`` with each inline ``<svg>...</svg>`` replaced by an ``<img>`` of the same SVG document."""
    return _SVG.sub(_as_image, html)


def write_pdf(html: str, base_url: Path, out_pdf: Path) -> None:
    """Render ``html`` (relative URLs against ``base_url``) to ``out_pdf``, atomically."""
    from weasyprint import HTML  # 0.5 s: only the report job imports it, when it writes the PDF

    # WeasyPrint logs every unsupported CSS property (e.g. screen-only rules) as a warning; not news.
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    with atomic_path(out_pdf) as tmp:
        HTML(string=svgs_as_images(html), base_url=str(base_url)).write_pdf(tmp)
