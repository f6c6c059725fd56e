"""Which bands of a raster become the model's RGB, and how non-8-bit data are stretched."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

STRETCH_PERCENTILES = (2.0, 98.0)
STATS_SIDE = 1024  # long side of the decimated read that the stretch percentiles come from


def choose_bands(count: int, bands: Optional[Sequence[int]], alpha: Sequence[int] = (),
                 source: str = 'input') -> List[int]:
    """1-based band numbers to read, in R, G, B order (one band: replicated to grey RGB).

    Default: the one band, or the three bands, that are not alpha; more bands need an
    explicit choice (``--bands 4,3,2`` for Sentinel-2 true colour).
    """
    if bands:
        bands = [int(b) for b in bands]
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise ValueError(f'--bands {",".join(map(str, bands))}: {source} has {count} '
                             f'band(s), so {bad} is out of range (bands count from 1)')
        if len(bands) not in (1, 3):
            raise ValueError(f'--bands takes 1 or 3 band numbers, got {len(bands)}')
        return bands
    colour = [b for b in range(1, count + 1) if b not in set(alpha)]
    if len(colour) in (1, 3):
        return colour
    raise ValueError(f'{source} has {len(colour)} bands; choose three (R,G,B order) with '
                     f'--bands, e.g. --bands 4,3,2 for Sentinel-2 true colour, or one for SAR')


def stretch_limits(sample: np.ndarray, valid: Optional[np.ndarray] = None
                   ) -> List[Tuple[float, float]]:
    """Per-band ``(low, high)`` = the 2nd and 98th percentiles of ``sample`` ``[N, h, w]``."""
    limits = []
    for index, band in enumerate(sample):
        values = band[valid[index]] if valid is not None else band.ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            limits.append((0.0, 1.0))
            continue
        low, high = np.percentile(values, STRETCH_PERCENTILES)
        limits.append((float(low), float(high) if high > low else float(low) + 1.0))
    return limits


def to_uint8(array: np.ndarray, limits: Optional[List[Tuple[float, float]]]) -> np.ndarray:
    """``[N, h, w]`` -> ``[h, w, 3]`` uint8 RGB: stretched by ``limits`` (None: already
    8-bit), a single band replicated."""
    if limits is not None:
        low = np.array([lo for lo, _ in limits], np.float32)[:, None, None]
        high = np.array([h for _, h in limits], np.float32)[:, None, None]
        scaled = (array.astype(np.float32) - low) * (255.0 / (high - low))
        array = np.nan_to_num(scaled, nan=0.0).clip(0, 255).round().astype(np.uint8)
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    return np.ascontiguousarray(array.transpose(1, 2, 0))
