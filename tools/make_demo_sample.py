"""Regenerate demo/sample.png: a synthetic aerial-like scene drawn from scratch.

Deterministic (fixed seed); no third-party imagery. Fields, a river, roads, a block of
roofs and tree clumps, with sensor-like noise.
"""
import argparse

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def make_scene(size: int = 448, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.new('RGB', (size, size), (118, 140, 82))
    draw = ImageDraw.Draw(img)
    for x0, y0, x1, y1, colour in [(0, 0, 200, 180, (150, 160, 90)),
                                   (220, 250, 448, 448, (170, 150, 100)),
                                   (0, 260, 180, 448, (104, 138, 70))]:
        draw.rectangle([x0, y0, x1, y1], fill=colour)
    pts = [(x, 215 + 30 * np.sin(x / 55)) for x in range(0, size + 1, 8)]
    draw.line(pts, fill=(52, 82, 112), width=26)
    draw.line([(300, 0), (300, size)], fill=(128, 128, 124), width=12)
    draw.line([(0, 120), (size, 95)], fill=(132, 130, 126), width=10)
    for row in range(4):
        for col in range(3):
            x, y = 320 + col * 40, 20 + row * 42
            fill = (176, 84, 66) if (row + col) % 2 else (150, 150, 160)
            draw.rectangle([x, y, x + 28, y + 30], fill=fill)
    for _ in range(40):
        cx, cy, r = rng.integers(20, 200), rng.integers(270, 430), rng.integers(5, 12)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(46, 82, 40))
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32)
    arr += rng.normal(0, 6, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out', default='demo/sample.png')
    args = parser.parse_args()
    make_scene().save(args.out, optimize=True)
    print(f'wrote {args.out}')
