"""Large scenes, window by window: reading bands (stretched to 8 bit), the tile grid,
blending overlapping tile probabilities, and writing label maps that keep the input's
georeferencing.

Peak memory depends on the tile size: a scene is read one tile at a time, and blended
probabilities are kept only for the cells of the scene still waiting for a neighbouring
tile (at most one tile row plus an ``overlap``-high strip of the scene width).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..fileio import publish, temporary_beside
from ..models.sliding import window_spans

Window = Tuple[int, int, int, int]  # (y1, y2, x1, x2)
# [B, h, w, 3] uint8 RGB tiles -> [B, C, h, w] float32 class probabilities
ProbabilityFn = Callable[[np.ndarray], np.ndarray]

STRETCH_PERCENTILES = (2.0, 98.0)
GDAL_CACHE_BYTES = 32 * 2 ** 20  # GDAL's default (5% of RAM) would dominate peak memory
STATS_SIDE = 1024  # long side of the decimated read that the stretch percentiles come from


# ---------------------------------------------------------------------------------- bands
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
        low = np.array([l for l, _ in limits], np.float32)[:, None, None]
        high = np.array([h for _, h in limits], np.float32)[:, None, None]
        scaled = (array.astype(np.float32) - low) * (255.0 / (high - low))
        array = np.nan_to_num(scaled, nan=0.0).clip(0, 255).round().astype(np.uint8)
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    return np.ascontiguousarray(array.transpose(1, 2, 0))


# --------------------------------------------------------------------------------- labels
def label_dtype(num_classes: int) -> np.dtype:
    """uint8 for up to 255 classes, uint16 beyond: the largest value is the no-data label."""
    if num_classes > 65535:
        raise ValueError(f'{num_classes} classes do not fit a uint16 label map (65535 at most)')
    return np.dtype(np.uint8 if num_classes <= 255 else np.uint16)


def nodata_label(num_classes: int) -> int:
    """The label of no-data pixels: 255 (uint8 maps) or 65535 (uint16 maps)."""
    return int(np.iinfo(label_dtype(num_classes)).max)


# --------------------------------------------------------------------------------- scenes
def raster_session():
    """The rasterio environment for scene I/O: a block cache bounded by
    :data:`GDAL_CACHE_BYTES`, so reading and writing large rasters keeps memory flat."""
    import rasterio
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)


class RasterScene:
    """A raster file read window by window through rasterio (GeoTIFF, PNG, JPEG, ...)."""

    def __init__(self, path, bands: Optional[Sequence[int]] = None):
        import rasterio
        from rasterio.enums import ColorInterp
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f'input {self.path} not found')
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', NotGeoreferencedWarning)
                self.dataset = rasterio.open(self.path)
        except RasterioIOError as error:
            raise ValueError(f'cannot read {self.path} as an image: {error}') from error
        ds = self.dataset
        alpha = [i + 1 for i, c in enumerate(ds.colorinterp) if c == ColorInterp.alpha]
        self.bands = choose_bands(ds.count, bands, alpha, str(self.path))
        # a palette image (P-mode PNG, paletted GeoTIFF) holds indices: read its colours
        self.lut = None
        if not bands and len(self.bands) == 1 and ds.colorinterp[self.bands[0] - 1] == \
                ColorInterp.palette:
            colours = ds.colormap(self.bands[0])
            self.lut = np.zeros((max(colours) + 1, 3), np.uint8)
            for index, colour in colours.items():
                self.lut[index] = colour[:3]
        self.height, self.width = ds.height, ds.width
        self.crs, self.transform = ds.crs, ds.transform
        self.georeferenced = ds.crs is not None
        self.limits = None
        self.floating = np.issubdtype(np.dtype(ds.dtypes[self.bands[0] - 1]), np.floating)
        if ds.dtypes[self.bands[0] - 1] != 'uint8' and self.lut is None:
            scale = min(1.0, STATS_SIDE / max(self.height, self.width))
            shape = (len(self.bands), max(1, round(self.height * scale)),
                     max(1, round(self.width * scale)))
            sample = ds.read(self.bands, out_shape=shape, masked=True)
            self.limits = stretch_limits(np.ma.getdata(sample).astype(np.float64),
                                         ~np.ma.getmaskarray(sample))

    def read(self, window: Window, out_shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """``[h, w, 3]`` uint8 RGB of ``window`` (resampled bilinearly to ``out_shape``)."""
        from rasterio.enums import Resampling
        from rasterio.windows import Window as RWindow
        y1, y2, x1, x2 = window
        shape = None if out_shape is None else (len(self.bands), *out_shape)
        resampling = Resampling.nearest if self.lut is not None else Resampling.bilinear
        try:
            data = self.dataset.read(self.bands, window=RWindow(x1, y1, x2 - x1, y2 - y1),
                                     out_shape=shape, resampling=resampling)
        except Exception as error:  # rasterio raises several types for a damaged file
            raise ValueError(f'cannot read window {window} of {self.path}: {error}') from error
        if self.lut is not None:
            data = self.lut[np.minimum(data[0], len(self.lut) - 1)].transpose(2, 0, 1)
        return to_uint8(data, self.limits)

    def valid(self, window: Window) -> np.ndarray:
        """``[h, w]`` bool: pixels with data in every band read. No data is the raster's
        nodata value, a mask or alpha band, and (for float rasters) NaN or infinity."""
        from rasterio.windows import Window as RWindow
        y1, y2, x1, x2 = window
        rwindow = RWindow(x1, y1, x2 - x1, y2 - y1)
        try:
            valid = (self.dataset.read_masks(self.bands, window=rwindow) > 0).all(axis=0)
            if self.floating:
                data = self.dataset.read(self.bands, window=rwindow)
                valid &= np.isfinite(data).all(axis=0)
        except Exception as error:
            raise ValueError(f'cannot read window {window} of {self.path}: {error}') from error
        return valid

    def pixel_area_m2(self) -> Optional[float]:
        """Ground area of one pixel, when the CRS is projected in metres."""
        if not self.georeferenced or not self.crs.is_projected:
            return None
        units = (self.crs.linear_units or '').lower()
        if units not in ('metre', 'meter', 'm', 'metres', 'meters'):
            return None
        t = self.transform
        return abs(t.a * t.e - t.b * t.d)

    def close(self) -> None:
        self.dataset.close()


class ArrayScene:
    """A NumPy image ``[H, W]`` or ``[H, W, C]`` with the same band rule as files."""

    def __init__(self, image: np.ndarray, bands: Optional[Sequence[int]] = None):
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or min(image.shape) == 0:
            raise ValueError(f'expected an image [H, W] or [H, W, C], got shape {image.shape}')
        if image.shape[0] in (1, 3, 4) and image.shape[2] > 4:
            raise ValueError(f'the image has shape {image.shape}, which looks like channels '
                             f'first [C, H, W]; pass [H, W, C] (image.transpose(1, 2, 0))')
        self.image = image
        self.bands = choose_bands(image.shape[2], bands, source='the image')
        self.height, self.width = image.shape[:2]
        self.georeferenced = False
        self.limits = None
        if image.dtype != np.uint8:
            picked = image[..., [b - 1 for b in self.bands]].transpose(2, 0, 1)
            step = max(1, math.ceil(max(self.height, self.width) / STATS_SIDE))
            self.limits = stretch_limits(picked[:, ::step, ::step].astype(np.float64))

    def valid(self, window: Window) -> np.ndarray:
        """``[h, w]`` bool: pixels whose bands are all finite (NaN and infinity are no data)."""
        y1, y2, x1, x2 = window
        data = self.image[y1:y2, x1:x2][..., [b - 1 for b in self.bands]]
        if not np.issubdtype(data.dtype, np.floating):
            return np.ones(data.shape[:2], bool)
        return np.isfinite(data).all(axis=2)

    def read(self, window: Window, out_shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
        y1, y2, x1, x2 = window
        data = self.image[y1:y2, x1:x2][..., [b - 1 for b in self.bands]].transpose(2, 0, 1)
        rgb = to_uint8(data, self.limits)
        if out_shape is not None and tuple(out_shape) != rgb.shape[:2]:
            from PIL import Image
            rgb = np.asarray(Image.fromarray(rgb).resize(out_shape[::-1], Image.BILINEAR))
        return rgb

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ blending
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


# ------------------------------------------------------------------------------ outputs
class LabelWriter:
    """A single-band label map written window by window: a tiled GeoTIFF with the input's
    CRS, transform, a colour table and the no-data label declared when ``scene`` is
    georeferenced, else a PNG (held in memory until ``close``). uint8 up to 255 classes,
    uint16 beyond (:func:`label_dtype`); no-data pixels hold :func:`nodata_label` and are not
    counted. Written under a temporary name and renamed by ``close``, so a failed run leaves
    no partial file."""

    def __init__(self, path: Path, scene, palette: np.ndarray):
        self.path = Path(path)
        self.georeferenced = getattr(scene, 'georeferenced', False)
        self.dtype = label_dtype(len(palette))
        self.nodata = nodata_label(len(palette))
        self.counts = np.zeros(len(palette), np.int64)
        self.tmp = temporary_beside(self.path)
        if self.georeferenced:
            import rasterio
            self.dataset = rasterio.open(
                self.tmp, 'w', driver='GTiff', width=scene.width, height=scene.height,
                count=1, dtype=self.dtype.name, crs=scene.crs, transform=scene.transform,
                nodata=self.nodata, tiled=True, blockxsize=256, blockysize=256,
                compress='deflate')
            self.dataset.write_colormap(1, {i: (*map(int, c), 255)
                                            for i, c in enumerate(palette)})
        else:
            self.array = np.zeros((scene.height, scene.width), self.dtype)

    def write(self, window: Window, labels: np.ndarray) -> None:
        y1, y2, x1, x2 = window
        labels = labels.astype(self.dtype)
        counted = labels[labels != self.nodata]
        self.counts += np.bincount(counted.ravel(), minlength=len(self.counts))[:len(self.counts)]
        if self.georeferenced:
            from rasterio.windows import Window as RWindow
            self.dataset.write(labels[None], window=RWindow(x1, y1, x2 - x1, y2 - y1))
        else:
            self.array[y1:y2, x1:x2] = labels

    def close(self) -> None:
        if self.georeferenced:
            self.dataset.close()
        else:
            from PIL import Image
            Image.fromarray(self.array).save(self.tmp, format='PNG')
        publish(self.tmp, self.path)

    def abort(self) -> None:
        if self.georeferenced and not self.dataset.closed:
            self.dataset.close()
        if self.tmp.exists():
            self.tmp.unlink()


def read_labels_preview(path: Path, shape: Tuple[int, int]) -> np.ndarray:
    """The label map at ``shape`` (nearest neighbour), read without loading it whole."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(1, out_shape=shape, resampling=Resampling.nearest)
