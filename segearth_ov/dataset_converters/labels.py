"""Label encodings of the raw datasets and their conversion to index maps."""
from __future__ import annotations

from typing import Dict, Iterator, Tuple

import numpy as np

from ..geometry import window_spans

Colour = Tuple[int, int, int]

# ISPRS 2D labelling colours (RGB); 0 is the boundary / unknown, ignored after
# reduce_zero_label, as in mmseg's converters.
ISPRS_COLOURS: Dict[Colour, int] = {
    (0, 0, 0): 0,        # boundary
    (255, 255, 255): 1,  # impervious surfaces
    (0, 0, 255): 2,      # building
    (0, 255, 255): 3,    # low vegetation
    (0, 255, 0): 4,      # tree
    (255, 255, 0): 5,    # car
    (255, 0, 0): 6,      # clutter / background
}

# UAVid colours (RGB) -> background, building, road, car, tree, vegetation, human
UAVID_COLOURS: Dict[Colour, int] = {
    (0, 0, 0): 0,        # clutter
    (128, 0, 0): 1,      # building
    (128, 64, 128): 2,   # road
    (192, 0, 192): 3,    # static car
    (64, 0, 128): 3,     # moving car, merged into car
    (0, 128, 0): 4,      # tree
    (128, 128, 0): 5,    # low vegetation
    (64, 64, 0): 6,      # human
}


def isaid_colours() -> Dict[Colour, int]:
    """iSAID semantic-mask colours (RGB), in the class order of mmseg's ``iSAIDDataset``."""
    from mmseg.datasets import iSAIDDataset
    return {tuple(colour): index
            for index, colour in enumerate(iSAIDDataset.METAINFO['palette'])}


def colour_to_index(rgb: np.ndarray, colours: Dict[Colour, int],
                    unknown: int) -> Tuple[np.ndarray, int]:
    """``[H, W, 3]`` uint8 colours -> ``[H, W]`` uint8 indices and the number of pixels
    whose colour is not in ``colours`` (set to ``unknown``)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected an [H, W, 3] colour label, got shape {rgb.shape}')
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) \
        | rgb[..., 2]
    out = np.full(rgb.shape[:2], unknown, dtype=np.uint8)
    matched = np.zeros(rgb.shape[:2], dtype=bool)
    for (r, g, b), index in colours.items():
        hit = packed == ((r << 16) | (g << 8) | b)
        out[hit] = index
        matched |= hit
    return out, int((~matched).sum())


def binarize(mask: np.ndarray, threshold: int = 128) -> np.ndarray:
    """0/255 masks (also JPEG-compressed ones) -> 0/1: ``mask >= threshold``."""
    return (mask >= threshold).astype(np.uint8)


def crops(array: np.ndarray, size: Tuple[int, int], stride: Tuple[int, int],
          pad_value: int = 0) -> Iterator[Tuple[Tuple[int, int, int, int], np.ndarray]]:
    """``((x1, y1, x2, y2), patch)`` over a ``[H, W, ...]`` array, ``size`` and ``stride``
    as ``(height, width)``. Windows follow :func:`window_spans` (the last row and column
    end at the border); an image smaller than ``size`` is padded at the bottom / right
    with ``pad_value``, and its box keeps the unpadded end."""
    height, width = array.shape[:2]
    for y1, y2 in window_spans(height, size[0], stride[0]):
        for x1, x2 in window_spans(width, size[1], stride[1]):
            patch = array[y1:y2, x1:x2]
            if patch.shape[:2] != tuple(size):
                pad = [(0, size[0] - patch.shape[0]), (0, size[1] - patch.shape[1])]
                patch = np.pad(patch, pad + [(0, 0)] * (array.ndim - 2),
                               constant_values=pad_value)
            yield (x1, y1, x2, y2), patch
