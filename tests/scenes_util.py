"""Shared helpers of the predict tests: generated scenes and GeoTIFFs."""
import numpy as np
import rasterio
from affine import Affine


def write_geotiff(path, array, crs='EPSG:32632', pixel=0.5, **kwargs):
    """``array`` ``[bands, H, W]``."""
    with rasterio.open(path, 'w', driver='GTiff', width=array.shape[2], height=array.shape[1],
                       count=array.shape[0], dtype=array.dtype, crs=crs,
                       transform=Affine(pixel, 0, 500000, 0, -pixel, 5650000), **kwargs) as ds:
        ds.write(array)


def smooth_scene(height, width):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                     ((x + y) % 256)]).astype(np.uint8)
