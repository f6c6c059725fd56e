"""Scene tiles through the model: probabilities blended across overlaps and released
cell by cell, or (for vocabularies too large to hold per pixel) the top class of each tile's
core.

Peak memory depends on the tile size: a scene is read one tile at a time, and blended
probabilities are kept only for the cells of the scene still waiting for a neighbouring
tile (at most one tile row plus an ``overlap``-high strip of the scene width). Tiles a
``keep`` predicate rejects (outside an area of interest) are not computed: cells no kept
tile covers come out as ``None``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..geometry import Window, check_tiling, tile_cores, tile_grid
from .scenes import Scene

# [B, h, w, 3] uint8 RGB tiles -> [B, C, h, w] float32 class probabilities
ProbabilityFn = Callable[[np.ndarray], np.ndarray]
# [B, h, w, 3] uint8 RGB tiles -> per tile (labels [h, w], top probability [h, w] float32)
TopClassFn = Callable[[np.ndarray], List[Tuple[np.ndarray, np.ndarray]]]
# whether a tile is computed at all
KeepFn = Callable[[Window], bool]


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
    num: Optional[np.ndarray] = None  # [C, h, w] sum of weight * probability
    den: Optional[np.ndarray] = None  # [h, w] sum of weights
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

    def add(self, window: Window, probs: Optional[np.ndarray]
            ) -> List[Tuple[Window, Optional[np.ndarray]]]:
        """Add tile probabilities ``[C, h, w]`` (``None``: a tile that was not computed);
        returns the released cells as ``(window, blended probabilities [C, h', w'])``, or
        ``None`` for a cell that no computed tile covers."""
        y1, y2, x1, x2 = window
        if probs is not None:
            weight = np.outer(edge_ramp(y1, y2, self.height, self.overlap),
                              edge_ramp(x1, x2, self.width, self.overlap))
        released = []
        for r, c in self._cells(y1, y2, x1, x2):
            cy1, cy2 = self.y_cuts[r], self.y_cuts[r + 1]
            cx1, cx2 = self.x_cuts[c], self.x_cuts[c + 1]
            cell = self.pending.setdefault((r, c), _Cell())
            if probs is not None:
                w = weight[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
                p = probs[:, cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
                if cell.num is None:
                    cell.num = np.zeros(p.shape, np.float32)
                    cell.den = np.zeros(w.shape, np.float32)
                cell.num += p * w
                cell.den += w
            cell.seen += 1
            if cell.seen == self.expected[(r, c)]:
                del self.pending[(r, c)]
                released.append(((cy1, cy2, cx1, cx2),
                                 None if cell.num is None else cell.num / cell.den))
        return released


def tile_outputs(scene: Scene, tiles: Sequence[Window], fn, scale: float, batch_size: int,
                  progress=None, keep: Optional[KeepFn] = None):
    """``(window, fn's output for the tile)`` for every tile, ``None`` for the tiles ``keep``
    rejects (given first). Tiles are read resampled by ``scale``, ``batch_size`` at a time;
    outputs are at the model's size (the caller resizes them back)."""
    kept = [t for t in tiles if keep is None or keep(t)]
    kept_set = set(kept)
    skipped = len(tiles) - len(kept)
    for window in tiles:
        if window not in kept_set:
            yield window, None
    if skipped and progress is not None:
        progress(skipped)
    for start in range(0, len(kept), batch_size):
        group = kept[start:start + batch_size]
        model_shapes = [(max(1, round((y2 - y1) * scale)), max(1, round((x2 - x1) * scale)))
                        for y1, y2, x1, x2 in group]
        images = [scene.read(window, None if scale == 1 else shape)
                  for window, shape in zip(group, model_shapes)]
        if len(set(model_shapes)) == 1:
            outputs = list(fn(np.stack(images)))
        else:  # only when the scene is smaller than a tile along one axis
            outputs = [fn(image[None])[0] for image in images]
        yield from zip(group, outputs)
        if progress is not None:
            progress(len(group))


def blended_probabilities(scene: Scene, prob_fn: ProbabilityFn, tile: int, overlap: int,
                          scale: float = 1.0, batch_size: int = 1, progress=None,
                          keep: Optional[KeepFn] = None
                          ) -> Iterator[Tuple[Window, Optional[np.ndarray]]]:
    """Yield ``(window, probabilities [C, h, w])`` covering the scene exactly once
    (``None`` where only tiles that ``keep`` rejects fall).

    Tiles of ``tile`` scene pixels are read (resampled by ``scale`` for the model, the
    probabilities resized back), run ``batch_size`` at a time, and blended in the overlaps.
    """
    check_tiling(tile, overlap, scale, batch_size)
    tiles = tile_grid(scene.height, scene.width, tile, overlap)
    yield from blend_tiles(scene.height, scene.width, tiles, overlap, tile_outputs(
        scene, tiles, prob_fn, scale, batch_size, progress, keep))


def blend_tiles(height: int, width: int, tiles: Sequence[Window], overlap: int,
                outputs: Iterable[Tuple[Window, Optional[np.ndarray]]]
                ) -> Iterator[Tuple[Window, Optional[np.ndarray]]]:
    """:func:`blended_probabilities` of tile probabilities ``(window, [C, h, w] at the
    model's size, or None)`` computed elsewhere (every tile of ``tiles``, in any order)."""
    import torch
    import torch.nn.functional as F
    blender = TileBlender(height, width, tiles, overlap)
    for window, p in outputs:
        shape = (window[1] - window[0], window[3] - window[2])
        if p is not None and p.shape[-2:] != shape:
            p = F.interpolate(torch.from_numpy(np.ascontiguousarray(p))[None], shape,
                              mode='bilinear', align_corners=False)[0].numpy()
        yield from blender.add(window, p)


def top_class_cores(scene: Scene, top_fn: TopClassFn, tile: int, overlap: int, scale: float = 1.0,
                    batch_size: int = 1, progress=None, keep: Optional[KeepFn] = None
                    ) -> Iterator[Tuple[Window, Optional[Tuple[np.ndarray, np.ndarray]]]]:
    """Yield ``(core window, (labels [h, w], top probability [h, w]))`` covering the scene
    exactly once: each pixel is taken from the tile whose centre is nearest (overlaps are
    cut in the middle, :func:`~segearth_ov.geometry.core_spans`), since a vocabulary of
    thousands of classes cannot be blended per class. ``None`` for tiles ``keep`` rejects.
    """
    import torch
    import torch.nn.functional as F
    check_tiling(tile, overlap, scale, batch_size)
    tiles = tile_grid(scene.height, scene.width, tile, overlap)
    cores = dict(zip(tiles, tile_cores(scene.height, scene.width, tile, overlap)))
    for window, out in tile_outputs(scene, tiles, top_fn, scale, batch_size, progress, keep):
        core = cores[window]
        if out is None:
            yield core, None
            continue
        y1, y2, x1, x2 = window
        labels, probs = out
        if labels.shape != (y2 - y1, x2 - x1):
            shape = (y2 - y1, x2 - x1)
            labels = F.interpolate(torch.from_numpy(labels.astype(np.float32))[None, None],
                                   shape, mode='nearest')[0, 0].numpy().astype(labels.dtype)
            probs = F.interpolate(torch.from_numpy(probs)[None, None], shape,
                                  mode='bilinear', align_corners=False)[0, 0].numpy()
        cy1, cy2, cx1, cx2 = core
        crop = (slice(cy1 - y1, cy2 - y1), slice(cx1 - x1, cx2 - x1))
        yield core, (labels[crop], probs[crop])
