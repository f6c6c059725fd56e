"""Scenes read window by window: a raster file through rasterio, or a NumPy array, both
with the same band rule, stretch and no-data mask."""
from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path
from typing import Optional, Protocol, Sequence, Tuple

import numpy as np

from ..fileio import INPUT_DRIVERS
from ..geometry import Window
from .bands import STATS_SIDE, choose_bands, stretch_limits, to_uint8

GDAL_CACHE_BYTES = 32 * 2 ** 20  # GDAL's default (5% of RAM) would dominate peak memory
# GDAL switches that let a VRT read raw bytes of any file or run Python code: off
SAFE_GDAL = dict(GDAL_VRT_ENABLE_RAWRASTERBAND='NO', GDAL_VRT_ENABLE_PYTHON='NO')


def raster_session():
    """The rasterio environment for scene I/O: a block cache bounded by
    :data:`GDAL_CACHE_BYTES`, so reading and writing large rasters keeps memory flat, and
    the VRT features that read other files (:data:`SAFE_GDAL`) off."""
    import rasterio
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES, **SAFE_GDAL)


def check_vrt(path: Path, root: Optional[Path] = None, depth: int = 0) -> None:
    """Refuse (``ValueError``, one line) a VRT that would read files outside its own folder
    tree (``root``, default the VRT's folder): raw-band VRTs, Python pixel functions,
    sources given as URLs or GDAL virtual paths, and sources outside the tree; VRT sources
    are checked likewise."""
    import xml.etree.ElementTree as ElementTree
    root = (root or path.parent).resolve()
    try:
        tree = ElementTree.parse(path)
    except (ElementTree.ParseError, OSError) as error:
        raise ValueError(f'input {path} is not a readable VRT: {error}') from error
    for band in tree.iter('VRTRasterBand'):
        if band.get('subClass') == 'VRTRawRasterBand':
            raise ValueError(f'input {path} is a raw-band VRT (it reads the bytes of any '
                             f'file); such inputs are refused')
    if any(True for _ in tree.iter('PixelFunctionCode')):
        raise ValueError(f'input {path} holds pixel-function code; such VRTs are refused')
    for element in [*tree.iter('SourceFilename'), *tree.iter('SourceDataset')]:
        name = (element.text or '').strip()
        # GDAL reads /vsi paths, URLs and driver prefixes (GTIFF_DIR:1:file) anywhere
        if not name or name.startswith('/vsi') or ':' in name:
            raise ValueError(f'input {path} reads {name!r}, which is not a file beside it; '
                             f'a VRT may only read files inside its own folder')
        # GDAL takes a source relative to the VRT only when it says so, else to the
        # working directory
        source = (path.parent / name if element.get('relativeToVRT') == '1'
                  else Path(name)).resolve()
        if not source.is_relative_to(root):
            raise ValueError(f'input {path} reads {name}, outside its folder {root}; a VRT '
                             f'may only read files inside its own folder')
        if source.suffix.lower() == '.vrt':
            if depth > 8:
                raise ValueError(f'input {path}: VRTs nested too deep')
            check_vrt(source, root, depth + 1)


def pixel_area_m2(crs, transform) -> Optional[float]:
    """Ground area of one pixel of a raster with ``crs`` and ``transform``, when the CRS is
    projected in metres (else None: areas are then known in pixels only)."""
    if crs is None or not crs.is_projected:
        return None
    if (crs.linear_units or '').lower() not in ('metre', 'meter', 'm', 'metres', 'meters'):
        return None
    return abs(transform.a * transform.e - transform.b * transform.d)


def ellipsoid(crs):
    """The ellipsoid (pyproj ``Geod``) of a geographic CRS, on which ground areas are
    geodesic; None for any other CRS."""
    if crs is None or not crs.is_geographic:
        return None
    from pyproj import CRS
    return CRS.from_wkt(crs.to_wkt()).get_geod()


def geodesic_row_areas(geod, transform, rows: Tuple[int, int]) -> np.ndarray:
    """Ground area (m^2, on ``geod``) of one pixel in each row ``y1 .. y2 - 1`` of a north-up
    grid in longitude and latitude: the same along a row, shrinking towards the poles."""
    top = transform.f + transform.e * np.arange(rows[0], rows[1])
    west, east = transform.c, transform.c + transform.a
    return np.array([abs(geod.polygon_area_perimeter([west, east, east, west],
                                                     [y + transform.e, y + transform.e, y, y])[0])
                     for y in top])


class Scene(Protocol):
    """What tiling, blending and writing need of a scene (:class:`RasterScene`,
    :class:`ArrayScene`): its size, RGB windows and their no-data mask."""

    height: int
    width: int
    georeferenced: bool

    def read(self, window: Window, out_shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """``[h, w, 3]`` uint8 RGB of ``window`` (resampled to ``out_shape``)."""

    def valid(self, window: Window) -> np.ndarray:
        """``[h, w]`` bool: pixels with data."""

    def close(self) -> None:
        """Release the scene's file, if any."""


class RasterScene:
    """A raster file read window by window through rasterio (GeoTIFF, PNG, JPEG, ...)."""

    def __init__(self, path, bands: Optional[Sequence[int]] = None):
        import rasterio
        from rasterio.enums import ColorInterp
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f'input {self.path} not found')
        driver = INPUT_DRIVERS.get(self.path.suffix.lower())
        if driver is None:
            raise ValueError(f'input {self.path}: {self.path.suffix or "no suffix"} is not an '
                             f'image format segearth-ov reads ({", ".join(INPUT_DRIVERS)})')
        if driver == 'VRT':
            check_vrt(self.path)
        try:
            with warnings.catch_warnings(), rasterio.Env(**SAFE_GDAL):
                warnings.simplefilter('ignore', NotGeoreferencedWarning)
                self.dataset = rasterio.open(self.path, driver=driver)
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
        self.floating = np.issubdtype(np.dtype(ds.dtypes[self.bands[0] - 1]), np.floating)

    @functools.cached_property
    def limits(self) -> Optional[list]:
        """Per-band stretch limits of a 16-bit or float scene, from a decimated read of the
        whole scene (None for 8-bit and palette images). Computed on first use, so opening
        a scene to look at its size and place reads no pixels."""
        ds = self.dataset
        if ds.dtypes[self.bands[0] - 1] == 'uint8' or self.lut is not None:
            return None
        scale = min(1.0, STATS_SIDE / max(self.height, self.width))
        shape = (len(self.bands), max(1, round(self.height * scale)),
                 max(1, round(self.width * scale)))
        sample = ds.read(self.bands, out_shape=shape, masked=True)
        return stretch_limits(np.ma.getdata(sample).astype(np.float64),
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

    def bounds(self) -> Tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in the scene's CRS."""
        return tuple(self.dataset.bounds)

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


class RegionScene:
    """The window ``(y1, y2, x1, x2)`` of another scene, as a scene of its own: reads are
    the parent's (its stretch, its no-data), and a georeferenced parent gives the region
    its CRS and the transform of its top-left pixel."""

    def __init__(self, scene: Scene, window: Window):
        y1, y2, x1, x2 = window
        if not (0 <= y1 < y2 <= scene.height and 0 <= x1 < x2 <= scene.width):
            raise ValueError(f'region {tuple(window)} (y1, y2, x1, x2) is not inside the '
                             f'{scene.width} x {scene.height} scene')
        self.scene, self.offset = scene, (y1, x1)
        self.height, self.width = y2 - y1, x2 - x1
        self.georeferenced = scene.georeferenced
        self.crs = getattr(scene, 'crs', None)
        self.transform = None
        if self.georeferenced:
            from rasterio.transform import Affine
            self.transform = scene.transform @ Affine.translation(x1, y1)

    def _shifted(self, window: Window) -> Window:
        y1, y2, x1, x2 = window
        dy, dx = self.offset
        return y1 + dy, y2 + dy, x1 + dx, x2 + dx

    def read(self, window: Window, out_shape: Optional[Tuple[int, int]] = None) -> np.ndarray:
        return self.scene.read(self._shifted(window), out_shape)

    def valid(self, window: Window) -> np.ndarray:
        return self.scene.valid(self._shifted(window))

    def close(self) -> None:
        self.scene.close()
