"""Label maps written window by window (GeoTIFF with the input's georeferencing, or PNG),
and the label types: uint8 or uint16 by vocabulary size, with a no-data label."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Tuple

import numpy as np

from ..fileio import publish, temporary_beside
from ..geometry import Window


def label_dtype(num_classes: int) -> np.dtype:
    """uint8 for up to 255 classes, uint16 beyond: the largest value is the no-data label."""
    if num_classes > 65535:
        raise ValueError(f'{num_classes} classes do not fit a uint16 label map (65535 at most)')
    return np.dtype(np.uint8 if num_classes <= 255 else np.uint16)


def nodata_label(num_classes: int) -> int:
    """The label of no-data pixels: 255 (uint8 maps) or 65535 (uint16 maps)."""
    return int(np.iinfo(label_dtype(num_classes)).max)


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
