"""Overlay PNGs: the predicted contours on the windowed native image, one file per image.

The image is the windowed uint8 image ingest makes (percentile window, before CLAHE: what a reader sees),
scaled up by an integer factor to at least 256 pixels on its longer side (nearest neighbour: pixels stay
pixels); each structure's boundaries (`cv2.findContours` of its mask, scaled the same way; a ring has two) is drawn one
pixel wide in its colour from the report's Okabe–Ito palette (`segsweep.report.style`): the first structure
in the prediction colour, the next ones in the next palette colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from segsweep.io import write_bytes
from segsweep.report.style import OKABE_ITO, PRED_COLOUR

MIN_SIDE = 256


def colours(n: int) -> list[str]:
    """Hex colours of ``n`` structures: the prediction colour, then the palette in order."""
    rest = [c for c in OKABE_ITO if c not in (PRED_COLOUR, "#000000")]
    return [PRED_COLOUR, *rest][:n]


def _bgr(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return (b, g, r)


def render(u8: np.ndarray, mask: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """BGR uint8 image: ``u8`` [H, W] with the boundary of ``mask == v`` for each of ``values``."""
    f = max(1, -(-MIN_SIDE // max(u8.shape)))  # ceil
    img = cv2.resize(u8, (u8.shape[1] * f, u8.shape[0] * f), interpolation=cv2.INTER_NEAREST)
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    for v, c in zip(values, colours(len(values))):
        m = (mask == v).astype(np.uint8)
        if not m.any():
            continue
        m = cv2.resize(m, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(m, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(img, contours, -1, _bgr(c), thickness=1)
    return img


def write_png(path: Path, u8: np.ndarray, mask: np.ndarray, values: Sequence[int]) -> None:
    ok, buf = cv2.imencode(".png", render(u8, mask, values))
    if not ok:  # pragma: no cover - cv2 encodes any uint8 image
        raise RuntimeError(f"PNG encoding failed for {path}")
    write_bytes(path, buf.tobytes())
