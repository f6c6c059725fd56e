"""Colour label maps and draw overlays with a legend."""
from __future__ import annotations

import colorsys
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def class_palette(num_classes: int) -> np.ndarray:
    """``[num_classes, 3]`` uint8 colours, evenly spread in hue and stable for a given count."""
    colours = []
    for index in range(num_classes):
        hue = (index * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbours apart
        value = 0.95 if index % 2 == 0 else 0.75
        colours.append([round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.75, value)])
    return np.asarray(colours, dtype=np.uint8)


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``[H, W]`` integer labels -> ``[H, W, 3]`` uint8 colours."""
    if labels.min() < 0 or labels.max() >= len(palette):
        raise ValueError(f'labels span {labels.min()}..{labels.max()} but the palette has '
                         f'{len(palette)} colours')
    return palette[labels]


def overlay_with_legend(image: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                        palette: Optional[np.ndarray] = None, alpha: float = 0.5,
                        title: Optional[str] = None, nodata: Optional[int] = None
                        ) -> Image.Image:
    """Blend colour labels over an RGB image ``[H, W, 3]`` and add a legend panel.

    The legend lists every class with its colour and the share of the labelled pixels it
    covers; pixels labelled ``nodata`` show the image unblended and are not counted.
    """
    if image.shape[:2] != labels.shape:
        raise ValueError(f'image {image.shape[:2]} and labels {labels.shape} differ in size')
    palette = class_palette(len(class_names)) if palette is None else palette
    labelled = np.ones(labels.shape, bool) if nodata is None else labels != nodata
    colours = colorize(np.where(labelled, labels, 0), palette)
    weight = alpha * labelled[..., None]
    blend = (1 - weight) * image.astype(np.float32) + weight * colours
    canvas_img = Image.fromarray(blend.clip(0, 255).astype(np.uint8))

    font = ImageFont.load_default()
    row, pad, swatch = 18, 10, 12
    counts = np.bincount(labels[labelled].ravel(), minlength=len(class_names))
    total = max(int(labelled.sum()), 1)
    lines = [f'{name} ({100 * n / total:.1f}%)' for name, n in zip(class_names, counts)]
    text_w = max(int(font.getlength(line)) for line in lines + [title or ''])
    legend_w = pad * 3 + swatch + text_w
    height = max(image.shape[0], pad * 2 + row * (len(lines) + (1 if title else 0)))
    canvas = Image.new('RGB', (image.shape[1] + legend_w, height), (255, 255, 255))
    canvas.paste(canvas_img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x0, y = image.shape[1] + pad, pad
    if title:
        draw.text((x0, y), title, fill=(0, 0, 0), font=font)
        y += row
    for colour, line in zip(palette, lines):
        draw.rectangle([x0, y, x0 + swatch, y + swatch], fill=tuple(int(c) for c in colour),
                       outline=(0, 0, 0))
        draw.text((x0 + swatch + pad, y), line, fill=(0, 0, 0), font=font)
        y += row
    return canvas
