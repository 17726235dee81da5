"""Image grids with labels: validation samples, contact sheets, interpolation strips."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

_PAD = 4
_LABEL_H = 14


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _clip(text: str, width: int, font: ImageFont.ImageFont) -> str:
    """``text`` cut to fit ``width`` pixels, with "..." where it was cut: the longest prefix that fits,
    found by bisection (a 2000-word prompt took a minute cut one character at a time)."""
    if font.getlength(text) <= width:
        return text
    low, high = 0, len(text)  # the prefix of length `low` fits with the dots; `high + 1` does not
    while low < high:
        mid = (low + high + 1) // 2
        if font.getlength(text[:mid] + "...") <= width:
            low = mid
        else:
            high = mid - 1
    return text[:low] + "..."


def grid(
    rows: Sequence[Sequence[Image.Image]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    min_cell: int = 96,
    max_cell: int | None = None,
) -> Image.Image:
    """A labelled grid; small images are upscaled (nearest) to ``min_cell`` so they stay visible, and
    with ``max_cell`` large ones are scaled down to it (so a sheet of many big images stays small)."""
    n_rows = len(rows)
    n_cols = max(len(r) for r in rows)
    w = max(im.width for r in rows for im in r)
    h = max(im.height for r in rows for im in r)
    if max_cell is not None and max(w, h) > max_cell:
        shrink = max_cell / max(w, h)
        rows = [
            [im.resize((max(1, round(im.width * shrink)), max(1, round(im.height * shrink))), Image.Resampling.LANCZOS) for im in r]
            for r in rows
        ]
        w, h = max(1, round(w * shrink)), max(1, round(h * shrink))
    scale = max(1, -(-min_cell // max(w, h)))
    cw, ch = w * scale, h * scale
    font = _font()
    left = 0
    if row_labels:
        left = min(220, int(max(font.getlength(t) for t in row_labels)) + 2 * _PAD)
    top = _LABEL_H + _PAD if col_labels else 0
    sheet = Image.new("RGB", (left + n_cols * (cw + _PAD) + _PAD, top + n_rows * (ch + _PAD) + _PAD), "white")
    draw = ImageDraw.Draw(sheet)
    for j in range(n_cols):
        if col_labels:
            x = left + _PAD + j * (cw + _PAD)
            draw.text((x, 2), _clip(col_labels[j], cw, font), fill="black", font=font)
    for i, row in enumerate(rows):
        y = top + _PAD + i * (ch + _PAD)
        if row_labels:
            draw.text((_PAD, y + ch // 2 - 5), _clip(row_labels[i], left - 2 * _PAD, font), fill="black", font=font)
        for j, im in enumerate(row):
            x = left + _PAD + j * (cw + _PAD)
            cell = im.convert("RGB")
            if scale > 1:
                cell = cell.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
            sheet.paste(cell, (x, y))
    return sheet
