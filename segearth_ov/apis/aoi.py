"""An area of interest: a vector file (any format OGR reads, any CRS) that limits where a
scene is computed. Tiles that do not touch it are skipped; pixels outside it are no data."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..fileio import content_hash
from ..geometry import Window


class AreaOfInterest:
    """The union of every polygon of a vector file, with its CRS.

    Raises ``FileNotFoundError`` or ``ValueError`` naming the file when it is missing,
    unreadable, holds no polygon, or declares no CRS.
    """

    def __init__(self, path):
        import fiona
        from shapely.geometry import shape
        from shapely.ops import unary_union
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f'--aoi {self.path} not found')
        try:
            with fiona.open(self.path) as source:
                crs = source.crs
                geometries = [shape(f.geometry) for f in source if f.geometry is not None]
        except Exception as error:  # fiona raises several types for a bad file
            raise ValueError(f'--aoi {self.path} cannot be read as a vector file: '
                             f'{error}') from error
        polygons = [g for g in geometries if g.geom_type in ('Polygon', 'MultiPolygon')]
        if not polygons:
            raise ValueError(f'--aoi {self.path} holds no polygon (only polygons delimit an '
                             f'area)')
        if not crs:
            raise ValueError(f'--aoi {self.path} declares no CRS; save it with one (GeoJSON '
                             f'files are WGS 84 by definition)')
        self.crs = crs.to_wkt() if hasattr(crs, 'to_wkt') else crs
        self.geometry = unary_union([p.buffer(0) if not p.is_valid else p for p in polygons])
        self.hash = content_hash(self.path)

    def for_scene(self, scene) -> 'SceneArea':
        """This area in the CRS and pixel grid of a georeferenced ``scene``."""
        from rasterio.warp import transform_geom
        from shapely.geometry import mapping, shape
        if not getattr(scene, 'georeferenced', False):
            name = getattr(scene, 'path', 'the image')
            raise ValueError(f'--aoi needs georeferenced inputs; {name} has no CRS')
        geometry = shape(transform_geom(self.crs, scene.crs, mapping(self.geometry)))
        return SceneArea(geometry, scene.transform)


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
