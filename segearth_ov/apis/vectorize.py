"""Label maps to polygon layers (GeoPackage, GeoJSON, Shapefile), block by block.

The label raster is read in blocks that partition it (:func:`~segearth_ov.geometry.block_grid`:
every pixel is read once). In each block the 4-connected regions of each class are found
(``scipy.ndimage.label``) and traced by rasterio's ``features.shapes`` in global pixel
coordinates, where every block edge falls on whole numbers, so the pieces of a region cut by
block edges join exactly: pieces touching an inner block edge wait, and each class's waiting
pieces are merged with shapely's ``unary_union`` at the end, their pixel counts and
confidence sums added up. Memory is one block plus those pieces, whatever the raster's size.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..fileio import publish, temporary_beside
from ..geometry import block_grid
from .scenes import ellipsoid, pixel_area_m2

# --vector choice -> (OGR driver, file suffix, layer creation options)
VECTOR_FORMATS = {
    'gpkg': ('GPKG', '.gpkg', {}),
    'geojson': ('GeoJSON', '.geojson', {'RFC7946': 'YES'}),  # WGS 84, as the standard says
    'geojson-crs': ('GeoJSON', '.geojson', {}),  # the scene's CRS, declared in the file
    'shp': ('ESRI Shapefile', '.shp', {}),
}
FIELDS = {'class_id': 'int', 'class_name': 'str', 'pixels': 'int', 'area_m2': 'float',
          'mean_confidence': 'float', 'min_confidence': 'float'}
# Shapefile field names hold 10 characters
SHAPEFILE_NAMES = {'mean_confidence': 'mean_conf', 'min_confidence': 'min_conf'}
CONFIDENCE_SCALE = 254  # confidence rasters hold round(p * 254); 255 is no data


def vector_format(name: str) -> Tuple[str, str, dict]:
    """The OGR driver, suffix and layer options of a ``--vector`` choice; the error lists the
    choices."""
    try:
        return VECTOR_FORMATS[name]
    except KeyError:
        raise ValueError(f'unknown vector format {name!r}; choose one of '
                         f'{", ".join(VECTOR_FORMATS)}') from None


def field_names(fmt: str) -> Dict[str, str]:
    """Each attribute's name in a layer of format ``fmt``."""
    renamed = SHAPEFILE_NAMES if fmt == 'shp' else {}
    return {name: renamed.get(name, name) for name in FIELDS}


def check_shaping(min_area: float, simplify: float) -> None:
    """Refuse a negative or non-finite ``--min-area`` or ``--simplify``."""
    if not (np.isfinite(min_area) and np.isfinite(simplify)) or min_area < 0 or simplify < 0:
        raise ValueError(f'--min-area and --simplify must be finite and >= 0, got {min_area} '
                         f'and {simplify}')


@dataclass
class Region:
    """A connected region (or a piece of one cut by block edges), in pixel coordinates,
    with its pixel count and the sum and minimum of its pixels' confidence (0..254)."""
    polygon: object
    value: int
    pixels: int
    confidence_sum: float = 0.0
    confidence_min: float = np.inf


def _regions(labels: np.ndarray, confidence: Optional[np.ndarray], nodata: int, window
             ) -> Iterator[Region]:
    """The 4-connected regions of each class in one block ``[h, w]``; no data gives none."""
    from rasterio import features
    from rasterio.transform import Affine
    from scipy import ndimage
    from shapely.geometry import shape
    y1, _, x1, _ = window
    ids = np.zeros(labels.shape, np.int32)
    owner = [0]
    for value in np.unique(labels):
        if value == nodata:
            continue
        found, count = ndimage.label(labels == value)  # 4-connectivity by default
        ids[found > 0] = found[found > 0] + len(owner) - 1
        owner += [int(value)] * count
    if len(owner) == 1:
        return
    pixels = np.bincount(ids.ravel(), minlength=len(owner))
    if confidence is not None:
        sums = np.bincount(ids.ravel(), weights=confidence.ravel(), minlength=len(owner))
        mins = np.full(len(owner), np.inf)
        np.minimum.at(mins, ids.ravel(), confidence.ravel())
    for geometry, index in features.shapes(ids, mask=ids > 0, connectivity=4,
                                           transform=Affine.translation(x1, y1)):
        index = int(index)
        region = Region(shape(geometry), owner[index], int(pixels[index]))
        if confidence is not None:
            region.confidence_sum, region.confidence_min = float(sums[index]), mins[index]
        yield region


def _merged(pieces: List[Region]) -> Iterator[Region]:
    """The regions that the pieces of one class form, each with its pieces' figures."""
    import shapely
    from shapely.ops import unary_union
    union = unary_union([p.polygon for p in pieces])
    parts = list(getattr(union, 'geoms', [union]))
    points = shapely.points([p.polygon.representative_point().coords[0] for p in pieces])
    tree = shapely.STRtree(parts)
    part_of, piece_of = tree.query(points, predicate='intersects')[::-1]
    merged = [Region(part, pieces[0].value, 0) for part in parts]
    for piece_index, part_index in zip(piece_of, part_of):
        piece, region = pieces[piece_index], merged[part_index]
        region.pixels += piece.pixels
        region.confidence_sum += piece.confidence_sum
        region.confidence_min = min(region.confidence_min, piece.confidence_min)
    yield from merged


def label_regions(dataset, confidence=None, block: int = 1024, progress: bool = False
                  ) -> Iterator[Region]:
    """Every connected region of an open single-band label raster (with the figures of an
    open ``confidence`` raster of the same grid); regions cut by block edges come out
    whole, after the others."""
    from rasterio.windows import Window as RWindow
    from tqdm import tqdm
    height, width = dataset.height, dataset.width
    nodata = -1 if dataset.nodata is None else int(dataset.nodata)
    waiting: Dict[int, List[Region]] = {}
    for window in tqdm(block_grid(height, width, block), desc='polygons', unit='block',
                       disable=not progress):
        y1, y2, x1, x2 = window
        rwindow = RWindow(x1, y1, x2 - x1, y2 - y1)
        labels = dataset.read(1, window=rwindow)
        scores = None if confidence is None else confidence.read(1, window=rwindow)
        for region in _regions(labels, scores, nodata, window):
            minx, miny, maxx, maxy = region.polygon.bounds
            if (minx == x1 > 0) or (miny == y1 > 0) or (maxx == x2 < width) or \
                    (maxy == y2 < height):
                waiting.setdefault(region.value, []).append(region)
            else:
                yield region
    for value in sorted(waiting):
        yield from _merged(waiting.pop(value))


def vectorize_labels(label_path, out_path, class_names: Sequence[str], fmt: str = 'gpkg',
                     min_area: float = 0.0, simplify: float = 0.0, block: int = 1024,
                     progress: bool = False, batch: int = 4096,
                     confidence_path=None, style: Optional[str] = None) -> int:
    """Write the polygons of a label raster to ``out_path``: one feature per connected
    region (no-data gives none), with ``class_id``, ``class_name``, ``pixels``, ``area_m2``
    (projected CRS in metres: pixels times the pixel area; geographic CRS: the geodesic area
    on the CRS's ellipsoid; else None) and, given ``confidence_path`` (the confidence raster
    of the same grid), ``mean_confidence`` and ``min_confidence`` of its pixels (0..1).

    ``fmt``: ``gpkg``, ``geojson`` (RFC 7946: WGS 84), ``geojson-crs`` (the raster's CRS),
    ``shp``. ``min_area`` drops regions smaller than it (m^2 when areas are known, else
    pixels). ``simplify`` (map units) smooths outlines as a coverage (shapely's
    ``coverage_simplify``): an edge two regions share is simplified once, so neighbours
    neither overlap nor gap; this holds every polygon in memory until written. ``style``: a
    QGIS style (QML) stored as the layer's default in a GeoPackage. Features are written
    ``batch`` at a time, under a temporary name renamed when complete. Returns the number of
    features.
    """
    import fiona
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    driver, suffix, options = vector_format(fmt)
    check_shaping(min_area, simplify)
    folder = temporary_beside(out_path)
    folder.unlink()
    folder.mkdir()  # a Shapefile is several files: all made inside, then moved out
    tmp = folder / Path(out_path).name
    count = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', NotGeoreferencedWarning)
            dataset = rasterio.open(label_path)
            scores = rasterio.open(confidence_path) if confidence_path else None
        with dataset:
            features = _Features(dataset.crs, dataset.transform, min_area, field_names(fmt),
                                 scores is not None)
            schema = dict(geometry='Polygon', properties={
                features.names[k]: t for k, t in FIELDS.items()
                if scores is not None or 'confidence' not in k})
            crs = dataset.crs.to_wkt() if dataset.crs else None
            if crs is None:  # pixel coordinates: nothing to reproject to WGS 84
                options = {}
            with fiona.Env(), fiona.open(tmp, 'w', driver=driver, schema=schema, crs_wkt=crs,
                                         layer=Path(out_path).stem, **options) as sink:
                for region in label_regions(dataset, scores, block, progress):
                    features.add(region)
                    if not simplify and len(features) >= batch:
                        count += features.write(sink, class_names)
                if simplify:
                    features.simplify(simplify)
                count += features.write(sink, class_names)
            if scores is not None:
                scores.close()
        if style is not None and driver == 'GPKG':
            from .styles import store_gpkg_style
            store_gpkg_style(tmp, Path(out_path).stem, style)
        parts = sorted(folder.iterdir())
        for part in parts:  # the .shp last: its presence marks a complete layer
            if part.suffix != suffix:
                publish(part, Path(out_path).with_name(part.name))
        publish(tmp, Path(out_path))
    finally:
        for leftover in folder.iterdir():
            leftover.unlink()
        folder.rmdir()
    return count


def vector_companions(path, fmt: str) -> List[Path]:
    """The files a layer of format ``fmt`` at ``path`` consists of besides ``path``."""
    if fmt != 'shp':
        return []
    path = Path(path)
    return [path.with_suffix(s) for s in ('.shx', '.dbf', '.prj', '.cpg')]


class _Features:
    """Polygons waiting to be written: kept if at least ``min_area``, moved from pixel to
    map coordinates (``transform``) as a batch."""

    def __init__(self, crs, transform, min_area: float, names: Dict[str, str],
                 confidence: bool):
        self.transform, self.min_area, self.names = transform, min_area, names
        self.pixel_area = pixel_area_m2(crs, transform)
        self.geod = ellipsoid(crs)
        self.confidence = confidence
        self.regions: List[Region] = []
        self.areas: List[Optional[float]] = []
        self.geometries = None  # map coordinates, once simplified

    def __len__(self) -> int:
        return len(self.regions)

    def area(self, region: Region) -> Optional[float]:
        if self.pixel_area is not None:
            return region.pixels * self.pixel_area
        if self.geod is not None:
            return abs(self.geod.geometry_area_perimeter(self._map([region.polygon])[0])[0])
        return None

    def add(self, region: Region) -> None:
        area = self.area(region)
        if (region.pixels if area is None else area) >= self.min_area:
            self.regions.append(region)
            self.areas.append(area)

    def _map(self, polygons):
        import shapely
        t = self.transform
        return shapely.transform(np.array(polygons, dtype=object), lambda xy: np.stack(
            [t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f], 1))

    def simplify(self, tolerance: float) -> None:
        import shapely
        if self.regions:
            self.geometries = list(shapely.coverage_simplify(
                self._map([r.polygon for r in self.regions]), tolerance))

    def write(self, sink, class_names: Sequence[str]) -> int:
        from shapely.geometry import mapping
        if not self.regions:
            return 0
        geometries = self.geometries if self.geometries is not None else \
            self._map([r.polygon for r in self.regions])
        records = []
        for geometry, region, area in zip(geometries, self.regions, self.areas):
            properties = {'class_id': region.value, 'class_name': _name(class_names,
                                                                      region.value),
                          'pixels': region.pixels, 'area_m2': area}
            if self.confidence:
                properties.update(
                    mean_confidence=region.confidence_sum / region.pixels / CONFIDENCE_SCALE,
                    min_confidence=float(region.confidence_min) / CONFIDENCE_SCALE)
            records.append({'geometry': mapping(geometry), 'properties': {
                self.names[k]: v for k, v in properties.items()}})
        sink.writerecords(records)
        count = len(self.regions)
        self.regions, self.areas, self.geometries = [], [], None
        return count


def _name(class_names: Sequence[str], value: int) -> Optional[str]:
    return class_names[value] if 0 <= value < len(class_names) else None
