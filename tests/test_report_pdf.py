"""segsweep.report.pdf: inline SVG figures reach WeasyPrint as images, and the pages do not change."""

import base64
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from segsweep.report import pdf

SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" role="img" width="144pt" height="72pt" viewBox="0 0 144 72">'
    '<defs><clipPath id="f1c"><rect width="100" height="60"/></clipPath></defs>'
    '<rect x="4" y="4" width="120" height="50" style="fill:#0072B2" clip-path="url(#f1c)"/>'
    '<text x="10" y="66" style="font-size:10px;font-family:DejaVu Sans">val Dice 0.87</text></svg>'
)


def _decoded(img: str) -> str:
    return base64.b64decode(re.search(r"base64,([^\"]+)", img).group(1)).decode()


def test_each_inline_svg_becomes_an_image_of_the_same_document():
    bare = '<svg width="10" height="10"><circle cx="5" cy="5" r="4"/></svg>'
    html = f"<p>a</p>{SVG}<p>b &lt;svg&gt;</p>{bare}"
    out = pdf.svgs_as_images(html)
    imgs = re.findall(r"<img [^>]+>", out)
    assert len(imgs) == 2 and "<svg" not in out
    assert out.startswith("<p>a</p><img ") and "<p>b &lt;svg&gt;</p>" in out
    assert _decoded(imgs[0]) == SVG
    # an inline SVG without a namespace gets one: as a document of its own it needs it
    assert _decoded(imgs[1]) == bare.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1)


def test_a_nested_svg_stays_inline():
    nested = '<svg width="20" height="20"><svg x="2"><rect width="3" height="3"/></svg></svg>'
    assert pdf.svgs_as_images(nested) == nested


@pytest.mark.skipif(not shutil.which("pdftoppm"), reason="needs poppler-utils (pdftoppm)")
def test_pages_are_pixel_identical_to_the_inline_rendering(tmp_path):
    from weasyprint import HTML

    html = f"<html><body><h1>Figures</h1><figure>{SVG}<figcaption>one</figcaption></figure><p>{SVG}</p></body></html>"
    HTML(string=html, base_url=str(tmp_path)).write_pdf(tmp_path / "inline.pdf")
    pdf.write_pdf(html, tmp_path, tmp_path / "images.pdf")

    def pages(name):
        subprocess.run(["pdftoppm", "-r", "100", "-png", str(tmp_path / name), str(tmp_path / name[:-4])], check=True)
        return [np.asarray(Image.open(p)) for p in sorted(tmp_path.glob(f"{name[:-4]}-*.png"))]

    inline, images = pages("inline.pdf"), pages("images.pdf")
    assert len(inline) == len(images) == 1
    assert inline[0].shape == images[0].shape and (inline[0] != 255).any()  # something was drawn
    assert np.array_equal(inline[0], images[0])
