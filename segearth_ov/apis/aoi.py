"""An area of interest: a vector file (any format OGR reads, any CRS) that limits where a
scene is computed. Tiles that do not touch it are skipped; pixels outside it are no data.

The file is read once, in bulk (pyogrio and shapely's vectorised functions), and checked
before any model is built: it must hold polygons and declare a CRS that places it on the
Earth. Its identity is what was read (the CRS and the geometry), not the file's bytes, so a
corrected ``.prj`` beside a shapefile counts as a new area. For each scene the area is
clipped to the scene's neighbourhood within the area of use of the scene's CRS and
densified before it is reprojected, so a world or continent polygon covers the scene
instead of collapsing.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from ..geometry import Window

# densified to at most this many degrees between vertices before reprojection
DENSIFY_DEGREES = 0.05


class AreaOfInterest:
    """The polygons of a vector file (their union is the area), with its CRS.

    Raises ``FileNotFoundError`` or ``ValueError`` naming the file when it is missing,
    unreadable, holds no polygon, or declares no CRS (or one that is not on the Earth).
    """

    def __init__(self, path, progress: bool = False):
        import pyogrio
        import shapely
        from pyproj import CRS
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f'--aoi {self.path} not found')
        start = time.perf_counter()
        try:
            info = pyogrio.read_info(self.path)
            if progress:
                print(f'reading --aoi {self.path.name}: {info["features"]} features',
                      flush=True)
            meta, _, wkb, _ = pyogrio.raw.read(self.path, columns=[], read_geometry=True)
        except Exception as error:  # pyogrio raises several types for a bad file
            raise ValueError(f'--aoi {self.path} cannot be read as a vector file: '
                             f'{error}') from error
        if not meta.get('crs'):
            raise ValueError(f'--aoi {self.path} declares no CRS; save it with one (GeoJSON '
                             f'files are WGS 84 by definition)')
        try:
            crs = CRS.from_user_input(meta['crs'])
        except Exception as error:
            raise ValueError(f'--aoi {self.path}: its CRS cannot be read ({error})') from error
        if not (crs.is_geographic or crs.is_projected) or crs.area_of_use is None:
            raise ValueError(f'--aoi {self.path}: its CRS ({crs.name}) does not place it on '
                             f'the Earth (unknown or local CRS); save it in a known CRS')
        geometries = shapely.from_wkb(np.asarray(wkb, dtype=object))
        kinds = shapely.get_type_id(geometries)
        polygons = geometries[(kinds == 3) | (kinds == 6)]  # Polygon, MultiPolygon
        polygons = polygons[~shapely.is_empty(polygons)]
        if not len(polygons):
            raise ValueError(f'--aoi {self.path} holds no polygon (only polygons delimit an '
                             f'area)')
        invalid = ~shapely.is_valid(polygons)
        polygons[invalid] = shapely.make_valid(polygons[invalid])
        if not shapely.area(polygons).sum() > 0:
            raise ValueError(f'--aoi {self.path}: its polygons enclose no area')
        self.crs, self.polygons = crs, polygons
        # the same area is the same key whatever the file: EPSG code where there is one,
        # rings in shapely's normal form (a shapefile's run clockwise, GeoJSON's not)
        crs_key = f'EPSG:{crs.to_epsg()}' if crs.to_epsg() else crs.to_wkt()
        digest = hashlib.sha256(crs_key.encode())
        for wkb in shapely.to_wkb(shapely.normalize(polygons)):
            digest.update(wkb)
        self.hash = f'sha256:{digest.hexdigest()[:12]}'
        self._index = None  # (polygons in lon/lat, their STRtree), built for the first scene
        if progress:
            print(f'--aoi {self.path.name}: {len(polygons)} polygons in '
                  f'{time.perf_counter() - start:.1f} s', flush=True)

    def for_scene(self, scene) -> 'SceneArea':
        """This area in the CRS and pixel grid of a georeferenced ``scene``: the polygons
        near the scene (its footprint in longitude and latitude, with a margin, within its
        CRS's area of use) unioned, clipped to that window, densified, then reprojected.
        Empty when the area misses the scene."""
        import shapely
        from pyproj import CRS, Transformer
        from rasterio.warp import transform_bounds
        if not getattr(scene, 'georeferenced', False):
            name = getattr(scene, 'path', 'the image')
            raise ValueError(f'--aoi needs georeferenced inputs; {name} has no CRS')
        target = CRS.from_user_input(scene.crs.to_wkt())
        west, south, east, north = transform_bounds(scene.crs, 'EPSG:4326', *scene.bounds(),
                                                    densify_pts=21)
        margin = max(east - west, north - south) * 0.05 + 1e-6
        use = target.area_of_use
        window = shapely.box(max(west - margin, -180), max(south - margin, -90),
                             min(east + margin, 180), min(north + margin, 90))
        if use is not None:
            window = window.intersection(shapely.box(use.west, use.south, use.east, use.north))
        lonlat, tree = self._lonlat_index()
        near = lonlat[tree.query(window, predicate='intersects')]
        clipped = shapely.intersection(shapely.union_all(near), window) if len(near) else \
            shapely.Polygon()
        to_scene = Transformer.from_crs('EPSG:4326', target, always_xy=True)
        geometry = shapely.transform(shapely.segmentize(clipped, DENSIFY_DEGREES),
                                     lambda xy: np.stack(to_scene.transform(xy[:, 0], xy[:, 1]),
                                                         axis=1))
        return SceneArea(shapely.make_valid(geometry), scene.transform)

    def _lonlat_index(self):
        """The polygons in longitude and latitude (densified in their own CRS first) and a
        spatial index of them, computed once."""
        import shapely
        from pyproj import CRS, Transformer
        if self._index is None:
            wgs84 = CRS.from_epsg(4326)
            polygons = self.polygons
            if not self.crs.equals(wgs84, ignore_axis_order=True):
                minx, miny, maxx, maxy = shapely.total_bounds(polygons)
                polygons = shapely.segmentize(polygons, max(maxx - minx, maxy - miny) / 1024)
                to_lonlat = Transformer.from_crs(self.crs, wgs84, always_xy=True)
                polygons = shapely.make_valid(shapely.transform(polygons, lambda xy: np.stack(
                    to_lonlat.transform(xy[:, 0], xy[:, 1]), axis=1)))
            self._index = (polygons, shapely.STRtree(polygons))
        return self._index


class SceneArea:
    """An area of interest in a scene's CRS: which tiles to compute and which pixels keep."""

    def __init__(self, geometry, transform):
        from shapely.prepared import prep
        self.geometry, self.transform = geometry, transform
        self._prepared = prep(geometry)

    def touches(self, window: Window) -> bool:
        """Whether the window's footprint meets the area."""
        from shapely.geometry import Polygon
        y1, y2, x1, x2 = window
        corners = [self.transform @ (x, y) for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]
        return self._prepared.intersects(Polygon(corners))

    def inside(self, window: Window) -> np.ndarray:
        """``[h, w]`` bool: pixels whose centre lies in the area."""
        from rasterio.features import geometry_mask
        from rasterio.transform import Affine
        y1, y2, x1, x2 = window
        return geometry_mask([self.geometry], out_shape=(y2 - y1, x2 - x1),
                             transform=self.transform @ Affine.translation(x1, y1), invert=True)
