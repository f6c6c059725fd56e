"""Label maps to polygon layers (GeoPackage or GeoJSON), block by block.

Regions are traced by rasterio's ``features.shapes`` (4-connected) in global pixel
coordinates, where every block edge falls on whole numbers, so the pieces of a region cut
by block edges join exactly: pieces touching an inner block edge wait, and each class's
waiting pieces are merged with shapely's ``unary_union`` at the end. Memory is one block
plus those pieces, whatever the raster's size.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..fileio import publish, temporary_beside
from ..geometry import tile_grid
from .scenes import pixel_area_m2

# --vector choice -> (OGR driver, file suffix)
VECTOR_FORMATS = {'gpkg': ('GPKG', '.gpkg'), 'geojson': ('GeoJSON', '.geojson')}
SCHEMA = {'geometry': 'Polygon', 'properties': {'class_id': 'int', 'class_name': 'str',
                                                'pixels': 'int', 'area_m2': 'float'}}


def vector_format(name: str) -> Tuple[str, str]:
    """The OGR driver and suffix of a ``--vector`` choice; the error lists the choices."""
    try:
        return VECTOR_FORMATS[name]
    except KeyError:
        raise ValueError(f'unknown vector format {name!r}; choose one of '
                         f'{", ".join(VECTOR_FORMATS)}') from None


def check_shaping(min_area: float, simplify: float) -> None:
    """Refuse a negative ``--min-area`` or ``--simplify``."""
    if min_area < 0 or simplify < 0:
        raise ValueError(f'--min-area and --simplify must be >= 0, got {min_area} and '
                         f'{simplify}')


def _regions(labels: np.ndarray, nodata: int, window) -> Iterator[Tuple[object, int]]:
    """``(shapely polygon in global pixel coordinates, class)`` of each 4-connected region
    of one block ``[h, w]``; no-data pixels give none."""
    from rasterio import features
    from rasterio.transform import Affine
    from shapely.geometry import shape
    y1, _, x1, _ = window
    mask = labels != nodata
    if not mask.any():
        return
    for geometry, value in features.shapes(labels, mask=mask, connectivity=4,
                                           transform=Affine.translation(x1, y1)):
        yield shape(geometry), int(value)


def _parts(geometry) -> List:
    return list(getattr(geometry, 'geoms', [geometry]))


def label_polygons(dataset, block: int = 1024, progress: bool = False
                   ) -> Iterator[Tuple[object, int]]:
    """Every connected region of an open single-band label raster, as ``(polygon in pixel
    coordinates, class)``; regions cut by block edges come out whole (after the others)."""
    from rasterio.windows import Window as RWindow
    from shapely.ops import unary_union
    from tqdm import tqdm
    height, width = dataset.height, dataset.width
    nodata = dataset.nodata
    nodata = -1 if nodata is None else int(nodata)
    waiting: Dict[int, list] = {}
    blocks = tile_grid(height, width, block, 0)
    for window in tqdm(blocks, desc='polygons', unit='block', disable=not progress):
        y1, y2, x1, x2 = window
        labels = dataset.read(1, window=RWindow(x1, y1, x2 - x1, y2 - y1))
        for polygon, value in _regions(labels, nodata, window):
            minx, miny, maxx, maxy = polygon.bounds
            if (minx == x1 > 0) or (miny == y1 > 0) or (maxx == x2 < width) or \
                    (maxy == y2 < height):
                waiting.setdefault(value, []).append(polygon)
            else:
                yield polygon, value
    for value in sorted(waiting):
        for polygon in _parts(unary_union(waiting.pop(value))):
            yield polygon, value


def vectorize_labels(label_path, out_path, class_names: Sequence[str], fmt: str = 'gpkg',
                     min_area: float = 0.0, simplify: float = 0.0, block: int = 1024,
                     progress: bool = False, batch: int = 4096) -> int:
    """Write the polygons of a label raster to ``out_path``: one feature per connected
    region (no-data gives none), with ``class_id``, ``class_name``, ``pixels`` and
    ``area_m2`` (None unless the CRS is projected in metres), in the raster's CRS.

    ``min_area`` drops regions smaller than it (m^2 when the CRS is in metres, else pixels).
    ``simplify`` (map units) smooths outlines as a coverage (shapely's
    ``coverage_simplify``): an edge two regions share is simplified once, so neighbours
    neither overlap nor gap; this holds every polygon in memory until written. Features are
    written ``batch`` at a time (one transaction each), under a temporary name renamed when
    complete. Returns the number of features.
    """
    import fiona
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    driver, _ = vector_format(fmt)
    check_shaping(min_area, simplify)
    tmp = temporary_beside(out_path)
    tmp.unlink()  # the driver creates the file itself
    count = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            dataset = rasterio.open(label_path)
        with dataset:
            area = pixel_area_m2(dataset.crs, dataset.transform)
            crs = dataset.crs.to_wkt() if dataset.crs else None
            features = _Features(dataset.transform, area, min_area)
            # the layer is named after the output, not the temporary file
            with fiona.Env(), fiona.open(tmp, 'w', driver=driver, schema=SCHEMA, crs_wkt=crs,
                                         layer=Path(out_path).stem) as sink:
                for item in label_polygons(dataset, block, progress):
                    features.add(*item)
                    if not simplify and len(features) >= batch:
                        count += features.write(sink, class_names)
                if simplify:
                    features.simplify(simplify)
                count += features.write(sink, class_names)
        publish(tmp, Path(out_path))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


class _Features:
    """Polygons waiting to be written: kept if at least ``min_area``, moved from pixel to
    map coordinates (``transform``) as a batch."""

    def __init__(self, transform, area: Optional[float], min_area: float):
        self.transform, self.area, self.min_area = transform, area, min_area
        self.geometries, self.values, self.pixels = [], [], []
        self.mapped = False  # geometries already in map coordinates (simplified)

    def __len__(self) -> int:
        return len(self.geometries)

    def add(self, polygon, value: int) -> None:
        pixels = int(round(polygon.area))  # exact: pixel-grid outlines
        if (pixels * self.area if self.area else pixels) >= self.min_area:
            self.geometries.append(polygon)
            self.values.append(value)
            self.pixels.append(pixels)

    def _map_coordinates(self):
        import shapely
        t = self.transform
        return shapely.transform(np.array(self.geometries, dtype=object), lambda xy: np.stack(
            [t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f], 1))

    def simplify(self, tolerance: float) -> None:
        import shapely
        if self.geometries:
            self.geometries = list(shapely.coverage_simplify(self._map_coordinates(),
                                                             tolerance))
            self.mapped = True

    def write(self, sink, class_names: Sequence[str]) -> int:
        from shapely.geometry import mapping
        if not self.geometries:
            return 0
        geometries = self.geometries if self.mapped else self._map_coordinates()
        sink.writerecords([{'geometry': mapping(g), 'properties': {
            'class_id': v, 'class_name': _name(class_names, v), 'pixels': n,
            'area_m2': None if self.area is None else n * self.area}}
            for g, v, n in zip(geometries, self.values, self.pixels)])
        count = len(self.geometries)
        self.geometries, self.values, self.pixels = [], [], []
        return count


def _name(class_names: Sequence[str], value: int) -> Optional[str]:
    return class_names[value] if 0 <= value < len(class_names) else None
