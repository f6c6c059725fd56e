"""Label maps written window by window (GeoTIFF with the input's georeferencing, or PNG),
and the label types: uint8 or uint16 by vocabulary size, with a no-data label."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ..fileio import publish, temporary_beside
from ..geometry import Window
from .scenes import ellipsoid, geodesic_row_areas, pixel_area_m2


def label_dtype(num_classes: int) -> np.dtype:
    """uint8 for up to 255 classes, uint16 beyond: the largest value is the no-data label."""
    if num_classes > 65535:
        raise ValueError(f'{num_classes} classes do not fit a uint16 label map (65535 at most)')
    return np.dtype(np.uint8 if num_classes <= 255 else np.uint16)


def nodata_label(num_classes: int) -> int:
    """The label of no-data pixels: 255 (uint8 maps) or 65535 (uint16 maps)."""
    return int(np.iinfo(label_dtype(num_classes)).max)


# the confidence raster: the winning class's probability p stored as round(p * 254)
CONFIDENCE_SCALE = 254
CONFIDENCE_NODATA = 255


def confidence_to_uint8(probs: np.ndarray) -> np.ndarray:
    """Probabilities ``[h, w]`` in [0, 1] -> uint8 ``round(p * 254)``; 255 is no data."""
    return np.rint(np.clip(probs, 0, 1) * CONFIDENCE_SCALE).astype(np.uint8)


# Results of scenes without a CRS are PNGs up to this many pixels (a PNG is held in memory
# whole); larger ones are written as tiled GeoTIFFs without a CRS
PNG_PIXEL_LIMIT = 8192 * 8192


def raster_suffix(scene) -> str:
    """``'tif'`` or ``'png'``: the format of a result raster of ``scene``."""
    small = scene.width * scene.height <= PNG_PIXEL_LIMIT
    return 'png' if not getattr(scene, 'georeferenced', False) and small else 'tif'


class BandWriter:
    """A single-band raster written window by window, in the format of ``path``'s suffix.
    ``.tif``: a GeoTIFF with the scene's CRS and transform (if any) and the no-data value
    declared: a Cloud-Optimized GeoTIFF (internal 256-pixel tiles, overviews resampled with
    ``overview_resampling``, the colour table kept) unless ``cog=False``, then a plain tiled
    GeoTIFF; memory stays at a few tiles. ``.png``: held in memory until ``close`` (for
    scenes up to :data:`PNG_PIXEL_LIMIT`). Written under a temporary name and renamed by
    ``close``, so a failed run leaves no partial file."""

    def __init__(self, path: Path, scene, dtype, nodata: int, colormap: Optional[dict] = None,
                 cog: bool = True, overview_resampling: str = 'mode'):
        self.path = Path(path)
        self.windowed = self.path.suffix.lower() == '.tif'
        self.dtype, self.nodata = np.dtype(dtype), nodata
        self.cog, self.overview_resampling = cog, overview_resampling
        self.tmp = temporary_beside(self.path)
        if self.windowed:
            import rasterio
            from rasterio.errors import NotGeoreferencedWarning
            with warnings.catch_warnings():  # a band of an unreferenced scene
                warnings.simplefilter('ignore', NotGeoreferencedWarning)
                self.dataset = rasterio.open(
                    self.tmp, 'w', driver='GTiff', width=scene.width, height=scene.height,
                    count=1, dtype=self.dtype.name, crs=scene.crs, transform=scene.transform,
                    nodata=nodata, tiled=True, blockxsize=256, blockysize=256,
                    compress='deflate', bigtiff='if_safer')
            if colormap:
                self.dataset.write_colormap(1, colormap)
        else:
            self.array = np.full((scene.height, scene.width), nodata, self.dtype)

    def write(self, window: Window, values: np.ndarray) -> None:
        y1, y2, x1, x2 = window
        values = values.astype(self.dtype)
        if self.windowed:
            from rasterio.windows import Window as RWindow
            self.dataset.write(values[None], window=RWindow(x1, y1, x2 - x1, y2 - y1))
        else:
            self.array[y1:y2, x1:x2] = values

    def close(self) -> None:
        if self.windowed:
            self.dataset.close()
            if self.cog:  # the COG driver only copies: lay the finished raster out as a COG
                from rasterio.shutil import copy
                cog = temporary_beside(self.path)
                try:
                    copy(self.tmp, cog, driver='COG', compress='deflate', blocksize=256,
                         overview_resampling=self.overview_resampling, bigtiff='if_safer')
                except BaseException:
                    cog.unlink(missing_ok=True)
                    raise
                self.tmp.unlink()
                self.tmp = cog
        else:
            from PIL import Image
            Image.fromarray(self.array).save(self.tmp, format='PNG')
        publish(self.tmp, self.path)

    def abort(self) -> None:
        if self.windowed and not self.dataset.closed:
            self.dataset.close()
        self.tmp.unlink(missing_ok=True)


class LabelWriter(BandWriter):
    """The label map (:class:`BandWriter`): uint8 up to 255 classes, uint16 beyond
    (:func:`label_dtype`), a colour table of ``palette``, no-data pixels hold
    :func:`nodata_label` and are not counted in :attr:`counts`."""

    def __init__(self, path: Path, scene, palette: np.ndarray, cog: bool = True):
        super().__init__(path, scene, label_dtype(len(palette)), nodata_label(len(palette)),
                         {i: (*map(int, c), 255) for i, c in enumerate(palette)}, cog)
        self.counts = np.zeros(len(palette), np.int64)
        crs, self.transform = getattr(scene, 'crs', None), getattr(scene, 'transform', None)
        self.pixel_area = None if self.transform is None else pixel_area_m2(crs, self.transform)
        north_up = self.transform is not None and not (self.transform.b or self.transform.d)
        # a geographic grid: pixel areas vary by row, so they are summed as windows come
        self.geod = ellipsoid(crs) if self.pixel_area is None and north_up else None
        self._geodesic = np.zeros(len(palette)) if self.geod is not None else None

    @property
    def areas(self) -> Optional[np.ndarray]:
        """Ground area per class (m^2): pixels times the pixel area in a CRS projected in
        metres, geodesic in a geographic one; None otherwise."""
        if self.pixel_area is not None:
            return self.counts * self.pixel_area
        return self._geodesic

    def write(self, window: Window, labels: np.ndarray) -> None:
        labels = labels.astype(self.dtype)
        kept = labels != self.nodata
        counted = labels[kept]
        self.counts += np.bincount(counted.ravel(), minlength=len(self.counts))[:len(self.counts)]
        if self.geod is not None:
            rows = geodesic_row_areas(self.geod, self.transform, window[:2])
            weights = np.broadcast_to(rows[:, None], labels.shape)[kept]
            self._geodesic += np.bincount(counted.ravel(), weights=weights,
                                          minlength=len(self._geodesic))[:len(self._geodesic)]
        super().write(window, labels)


def write_windows(writers, windows) -> None:
    """Write ``(window, value, value, ...)`` items, one value per writer, and close the
    writers; on any failure every writer is aborted, so no partial file is left."""
    try:
        for window, *values in windows:
            for writer, value in zip(writers, values):
                writer.write(window, value)
        for writer in writers:
            writer.close()
    except BaseException:
        for writer in writers:
            writer.abort()
        raise


def read_labels_preview(path: Path, shape: Tuple[int, int]) -> np.ndarray:
    """The label map at ``shape`` (nearest neighbour), read without loading it whole."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.read(1, out_shape=shape, resampling=Resampling.nearest)
