"""Window and tile grids: where sliding windows, dataset crops and scene tiles fall.

All spans are ``(start, end)`` along one axis; a window is ``(y1, y2, x1, x2)``. The model's
sliding inference, the dataset converters and the scene tiling all use these.
"""
from __future__ import annotations

import math
from typing import List, Tuple

Window = Tuple[int, int, int, int]  # (y1, y2, x1, x2)


def window_spans(size: int, crop: int, stride: int) -> List[Tuple[int, int]]:
    """``(start, end)`` along one axis: ``max(size - crop + stride - 1, 0) // stride + 1``
    windows every ``stride``, the last shifted back inside; windows are
    ``min(crop, size)`` long. The sliding inference and the dataset converters share it."""
    if stride <= 0:
        raise ValueError(f'stride must be positive, got {stride}')
    count = max(size - crop + stride - 1, 0) // stride + 1
    spans = []
    for index in range(count):
        end = min(index * stride + crop, size)
        spans.append((max(end - crop, 0), end))
    return spans


def window_grid(height: int, width: int, crop: int, stride: int) -> List[Window]:
    """mmseg-style windows (see :func:`window_spans`); ``crop <= 0`` means one whole-image
    window. Every window has the same size, ``min(crop, H) x min(crop, W)``.
    """
    if crop <= 0:
        return [(0, height, 0, width)]
    if stride <= 0:
        raise ValueError(f'slide_stride must be positive, got {stride}')
    return [(y1, y2, x1, x2) for y1, y2 in window_spans(height, crop, stride)
            for x1, x2 in window_spans(width, crop, stride)]


def tile_spans(size: int, tile: int, overlap: int) -> List[Tuple[int, int]]:
    """``(start, end)`` along one axis: the fewest tiles of at most ``tile`` pixels whose
    neighbours overlap by at least ``overlap``, all of one length and evenly spread (so no
    last tile is shifted back over most of its neighbour)."""
    if size <= tile:
        return [(0, size)]
    count = math.ceil((size - overlap) / (tile - overlap))
    length = math.ceil((size + (count - 1) * overlap) / count)
    return window_spans(size, length, length - overlap)


def check_tiling(tile: int, overlap: int, scale: float = 1.0, batch_size: int = 1) -> None:
    """Refuse tiling arguments that cannot work, before any model is built or file opened."""
    if tile <= 0:
        raise ValueError(f'--tile must be positive, got {tile}')
    if not 0 <= overlap < tile:
        raise ValueError(f'--overlap must be in [0, tile), got {overlap} for tile {tile}')
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f'--scale must be a positive finite number, got {scale}')
    if round(tile * scale) < 1:
        raise ValueError(f'--scale {scale} shrinks a {tile}-pixel tile to nothing')
    if batch_size < 1:
        raise ValueError(f'--batch-size must be >= 1, got {batch_size}')


def tile_grid(height: int, width: int, tile: int, overlap: int) -> List[Window]:
    """Tiles covering the scene (see :func:`tile_spans`), row by row."""
    check_tiling(tile, overlap)
    return [(y1, y2, x1, x2) for y1, y2 in tile_spans(height, tile, overlap)
            for x1, x2 in tile_spans(width, tile, overlap)]


def block_grid(height: int, width: int, block: int) -> List[Window]:
    """Blocks of at most ``block`` pixels that partition the scene (no overlap, the last
    ones shorter), row by row: for work that must see every pixel exactly once."""
    if block < 1:
        raise ValueError(f'block must be >= 1, got {block}')
    return [(y, min(y + block, height), x, min(x + block, width))
            for y in range(0, height, block) for x in range(0, width, block)]


def core_spans(spans: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """The part of each span nearer to it than to its neighbours: overlaps are cut in the
    middle, so the cores of :func:`tile_spans` partition the axis."""
    cuts = [spans[0][0]] + [(end + start) // 2 for (_, end), (start, _) in
                            zip(spans, spans[1:])] + [spans[-1][1]]
    return list(zip(cuts, cuts[1:]))


def tile_cores(height: int, width: int, tile: int, overlap: int) -> List[Window]:
    """The core (:func:`core_spans`) of each tile of :func:`tile_grid`, in the same order."""
    check_tiling(tile, overlap)
    return [(y1, y2, x1, x2) for y1, y2 in core_spans(tile_spans(height, tile, overlap))
            for x1, x2 in core_spans(tile_spans(width, tile, overlap))]


def row_bands(height: int, tile: int, overlap: int, parts: int) -> List[Tuple[int, int]]:
    """``parts`` contiguous row ranges ``(y1, y2)`` that cover the scene, cut where tile rows'
    cores meet (:func:`core_spans`), as even in tile rows as they can be; a part gets an
    empty range ``(y, y)`` when there are fewer tile rows than parts."""
    cores = core_spans(tile_spans(height, tile, overlap))
    bands = []
    for part in range(parts):
        first, last = part * len(cores) // parts, (part + 1) * len(cores) // parts
        start = cores[first][0] if first < len(cores) else height
        bands.append((start, cores[last - 1][1] if last > first else start))
    return bands
