"""Tile probabilities blended across overlaps, released cell by cell.

Peak memory depends on the tile size: a scene is read one tile at a time, and blended
probabilities are kept only for the cells of the scene still waiting for a neighbouring
tile (at most one tile row plus an ``overlap``-high strip of the scene width).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np

from ..geometry import Window, check_tiling, tile_grid

# [B, h, w, 3] uint8 RGB tiles -> [B, C, h, w] float32 class probabilities
ProbabilityFn = Callable[[np.ndarray], np.ndarray]


def edge_ramp(start: int, end: int, size: int, overlap: int) -> np.ndarray:
    """Blend weights ``[end - start]`` along one axis: rising linearly over ``overlap``
    pixels from each edge that lies inside the scene, 1 elsewhere (never 0)."""
    weights = np.ones(end - start, np.float32)
    if overlap == 0:
        return weights
    ramp = np.minimum(1.0, (np.arange(end - start, dtype=np.float32) + 0.5) / overlap)
    if start > 0:
        weights = np.minimum(weights, ramp)
    if end < size:
        weights = np.minimum(weights, ramp[::-1])
    return weights


@dataclass
class _Cell:
    num: np.ndarray   # [C, h, w] sum of weight * probability
    den: np.ndarray   # [h, w] sum of weights
    seen: int = 0


class TileBlender:
    """Weighted average of overlapping tile probabilities, released cell by cell.

    The scene is cut at every tile edge into cells; a cell is released (and forgotten) as
    soon as every tile that covers it has been added, so only cells waiting for a later
    tile are held.
    """

    def __init__(self, height: int, width: int, tiles: Sequence[Window], overlap: int):
        self.height, self.width, self.overlap = height, width, overlap
        self.y_cuts = sorted({v for y1, y2, _, _ in tiles for v in (y1, y2)})
        self.x_cuts = sorted({v for _, _, x1, x2 in tiles for v in (x1, x2)})
        self.expected: Dict[Tuple[int, int], int] = {}
        for y1, y2, x1, x2 in tiles:
            for cell in self._cells(y1, y2, x1, x2):
                self.expected[cell] = self.expected.get(cell, 0) + 1
        self.pending: Dict[Tuple[int, int], _Cell] = {}

    def _cells(self, y1, y2, x1, x2) -> Iterator[Tuple[int, int]]:
        rows = range(self.y_cuts.index(y1), self.y_cuts.index(y2))
        cols = range(self.x_cuts.index(x1), self.x_cuts.index(x2))
        return ((r, c) for r in rows for c in cols)

    def add(self, window: Window, probs: np.ndarray) -> List[Tuple[Window, np.ndarray]]:
        """Add tile probabilities ``[C, h, w]``; returns the released cells as
        ``(window, blended probabilities [C, h', w'])``."""
        y1, y2, x1, x2 = window
        weight = np.outer(edge_ramp(y1, y2, self.height, self.overlap),
                          edge_ramp(x1, x2, self.width, self.overlap))
        released = []
        for r, c in self._cells(y1, y2, x1, x2):
            cy1, cy2 = self.y_cuts[r], self.y_cuts[r + 1]
            cx1, cx2 = self.x_cuts[c], self.x_cuts[c + 1]
            w = weight[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
            p = probs[:, cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
            cell = self.pending.get((r, c))
            if cell is None:
                cell = self.pending[(r, c)] = _Cell(np.zeros(p.shape, np.float32),
                                                    np.zeros(w.shape, np.float32))
            cell.num += p * w
            cell.den += w
            cell.seen += 1
            if cell.seen == self.expected[(r, c)]:
                del self.pending[(r, c)]
                released.append(((cy1, cy2, cx1, cx2), cell.num / cell.den))
        return released


def blended_probabilities(scene, prob_fn: ProbabilityFn, tile: int, overlap: int,
                          scale: float = 1.0, batch_size: int = 1, progress=None
                          ) -> Iterator[Tuple[Window, np.ndarray]]:
    """Yield ``(window, probabilities [C, h, w])`` covering the scene exactly once.

    Tiles of ``tile`` scene pixels are read (resampled by ``scale`` for the model, the
    probabilities resized back), run ``batch_size`` at a time, and blended in the overlaps.
    """
    import torch
    import torch.nn.functional as F
    check_tiling(tile, overlap, scale, batch_size)
    tiles = tile_grid(scene.height, scene.width, tile, overlap)
    blender = TileBlender(scene.height, scene.width, tiles, overlap)
    for start in range(0, len(tiles), batch_size):
        group = tiles[start:start + batch_size]
        shapes = [(y2 - y1, x2 - x1) for y1, y2, x1, x2 in group]
        model_shapes = [(max(1, round(h * scale)), max(1, round(w * scale)))
                        for h, w in shapes]
        images = [scene.read(window, None if scale == 1 else shape)
                  for window, shape in zip(group, model_shapes)]
        if len(set(model_shapes)) == 1:
            probs = list(prob_fn(np.stack(images)))
        else:  # only when the scene is smaller than a tile along one axis
            probs = [prob_fn(image[None])[0] for image in images]
        for window, shape, p in zip(group, shapes, probs):
            if p.shape[-2:] != shape:
                p = F.interpolate(torch.from_numpy(np.ascontiguousarray(p))[None], shape,
                                  mode='bilinear', align_corners=False)[0].numpy()
            yield from blender.add(window, p)
        if progress is not None:
            progress(len(group))
