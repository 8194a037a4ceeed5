"""Patch prototypes as pictures: each prototype drawn as the training image it was pushed
onto, with a box around the patch's receptive field (ProtoPNet's "this looks like that").

Takes plain arrays (numpy, no torch) and writes a PNG with Pillow: one tile per
prototype, in a grid of ``per_row`` columns, each tile the image scaled up
(nearest neighbour, so pixels stay pixels) with the box drawn in red and a
caption naming the prototype, its class and the training example.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TILE = 128  # pixels per tile side
CAPTION = 14  # pixels of caption under each tile
BOX = (220, 30, 30)


@dataclass
class Tile:
    image: Any  # numpy array [H, W] (grey) or [C, H, W] (C = 1 or 3), raw pixel values
    box: Sequence[int]  # [top, bottom, left, right) in the image's pixels
    caption: str


def _to_rgb(image: Any) -> Any:
    """An [H, W, 3] uint8 array, min-max scaled (a constant image is mid grey)."""
    import numpy as np

    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.moveaxis(a[:3], 0, -1)
    lo, hi = float(a.min()), float(a.max())
    scaled = (a - lo) / (hi - lo) if hi > lo else np.full_like(a, 0.5)
    grey = scaled.ndim == 2
    if grey:  # digits are dark strokes on light ground: draw ink dark
        scaled = 1.0 - scaled
    u8 = (scaled * 255).round().astype(np.uint8)
    return np.repeat(u8[..., None], 3, axis=-1) if grey else u8


def render(tiles: Sequence[Tile], title: str, per_row: int = 10) -> bytes:
    """The PNG of ``tiles`` in a grid, with ``title`` on top."""
    from PIL import Image, ImageDraw

    rows = max(1, -(-len(tiles) // per_row))
    cols = min(per_row, max(1, len(tiles)))
    head = 18
    sheet = Image.new("RGB", (cols * TILE, head + rows * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), title, fill="black")
    for i, tile in enumerate(tiles):
        rgb = _to_rgb(tile.image)
        h, w = rgb.shape[:2]
        scale = (TILE - 8) / max(h, w)
        img = Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.NEAREST)
        x0, y0 = (i % per_row) * TILE + 4, head + (i // per_row) * (TILE + CAPTION) + 4
        sheet.paste(img, (x0, y0))
        if len(tile.box) == 4:
            top, bottom, left, right = tile.box
            draw.rectangle([x0 + left * scale, y0 + top * scale, x0 + right * scale - 1, y0 + bottom * scale - 1],
                           outline=BOX, width=2)
        draw.text((x0, y0 + TILE - 6), tile.caption, fill="black")
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()
