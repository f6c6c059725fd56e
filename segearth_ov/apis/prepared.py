"""An image (or a region of a scene) prepared once, segmented with any vocabulary.

Open-vocabulary segmentation is used by trying words. What the model computes before the
class names enter (CLIP's dense features and the upsampler's text-free factors for
SegEarth-OV; SAM 3's vision features, and each prompt's fused map, for SegEarth-OV3) is
kept per tile, so a new vocabulary, threshold or background index costs only the text side
and the scoring. The numbers are those of a segmenter built with that vocabulary: the same
tiles, in the same batches, through the same functions.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..geometry import Window, tile_grid
from .blending import blend_tiles, tile_outputs
from .label_maps import label_dtype
from .scenes import ArrayScene, RasterScene, RegionScene, pixel_area_m2, raster_session


def _size(nbytes: int) -> str:
    return f'{nbytes / 2**30:.1f} GiB' if nbytes >= 2**30 else f'{nbytes / 2**20:.1f} MiB'


@dataclass
class Segmentation:
    """One vocabulary's result on a prepared image.

    ``labels`` ``[H, W]`` (``nodata`` where the image has none), ``confidence`` ``[H, W]``
    float32 (the winning class's probability, NaN where there is no data), ``pixels`` per
    class, ``area_m2`` per class (None without a projected CRS in metres), and
    ``from_prepared`` (False only for the pass that computed the image side)."""
    labels: np.ndarray
    confidence: np.ndarray
    class_names: List[str]
    class_lines: List[str]
    palette: np.ndarray
    nodata: int
    pixels: np.ndarray
    area_m2: Optional[List[float]]
    from_prepared: bool
    seconds: float


class PreparedImage:
    """The model's image side of ``image`` (an array ``[H, W(, C)]`` or an image file), or
    of its ``region`` ``(y1, y2, x1, x2)``, computed once by ``segmenter`` (an
    ``OpenVocabSegmenter``, whose tiling, scale and batch size it uses)."""

    def __init__(self, segmenter, image, region: Optional[Window] = None, progress=None):
        with raster_session():  # every pixel is read here, with the safe GDAL settings
            scene = RasterScene(image, segmenter.bands) if isinstance(image, (str, Path)) \
                else ArrayScene(image, segmenter.bands)
            if region is not None:
                scene = RegionScene(scene, region)
            self.segmenter, self.scene = segmenter, scene
            self.height, self.width = scene.height, scene.width
            self.crs = getattr(scene, 'crs', None) if scene.georeferenced else None
            self.transform = getattr(scene, 'transform', None) if scene.georeferenced else None
            self.tiles = tile_grid(scene.height, scene.width, segmenter.tile,
                                   segmenter.overlap)
            self.valid = scene.valid((0, self.height, 0, self.width))
            self._held, self._tiles_done = 0, 0  # bytes and tiles prepared so far
            # per tile: (the prepared batch it was computed in, its index there)
            self.parts = dict(tile_outputs(scene, self.tiles, self._prepare_batch,
                                           segmenter.scale, segmenter.batch_size, progress))
        self._segmented = False
        self._scored = None  # (the last vocabulary, its probabilities per tile batch)

    def _prepare_batch(self, tiles: np.ndarray) -> list:
        prepared = self.segmenter.model.prepare(self.segmenter.model_inputs(tiles))
        self._held += prepared.nbytes
        self._tiles_done += len(tiles)
        bound = self.segmenter.prepared.max_bytes
        if self._held > bound:
            raise ValueError(
                f'this {self.width} x {self.height} image would hold more than '
                f'{_size(bound)} prepared ({_size(self._held)} after {self._tiles_done} of '
                f'{len(self.tiles)} tiles): choose a smaller region, or raise the bound '
                f'(prepared_bytes; segearth-ov explore --prepared-gb)')
        return [(prepared, index) for index in range(len(tiles))]

    @property
    def nbytes(self) -> int:
        """Memory the prepared tiles hold, in bytes."""
        batches = {id(prepared): prepared for prepared, _ in self.parts.values()}
        scored = 0 if self._scored is None else sum(
            array.nbytes for arrays in self._scored[1].values() for array in arrays)
        return sum(prepared.nbytes for prepared in batches.values()) + scored

    def segment(self, classes, prob_thd: Optional[float] = None,
                bg_idx: Optional[int] = None) -> Segmentation:
        """Segment with ``classes`` (the CLI's syntax, lines, or a ``ClassQueries``), and
        the threshold and background index when given; the segmenter keeps them as its
        vocabulary afterwards."""
        segmenter = self.segmenter
        start = time.perf_counter()
        segmenter.set_classes(classes, prob_thd, bg_idx)
        if segmenter.large_vocabulary:
            raise ValueError(f'{segmenter.num_classes} classes: a prepared image segments at '
                             f'most --class-chunk ({segmenter.class_chunk}) classes; run '
                             f'predict for larger vocabularies')
        queries = segmenter.class_queries
        vocabulary = (tuple(queries.queries), tuple(queries.query_to_class))
        if self._scored is None or self._scored[0] != vocabulary:
            self._scored = vocabulary, self._probabilities()
        probabilities = self._scored[1]  # a new threshold alone re-labels the same maps
        labels = np.full((self.height, self.width), segmenter.nodata,
                         label_dtype(segmenter.num_classes))
        confidence = np.full((self.height, self.width), np.nan, np.float32)
        outputs = ((window, probabilities[id(prepared)][index])
                   for window, (prepared, index) in self.parts.items())
        for window, result in segmenter.labels_of_blended(blend_tiles(
                self.height, self.width, self.tiles, segmenter.overlap, outputs)):
            y1, y2, x1, x2 = window
            valid = self.valid[y1:y2, x1:x2]
            labels[y1:y2, x1:x2] = np.where(valid, result[0], segmenter.nodata)
            confidence[y1:y2, x1:x2] = np.where(valid, result[1], np.nan)
        pixels = np.bincount(labels.ravel(), minlength=segmenter.nodata + 1)[
            :segmenter.num_classes]
        area = pixel_area_m2(self.crs, self.transform) if self.crs is not None else None
        from_prepared, self._segmented = self._segmented, True
        return Segmentation(labels, confidence, list(segmenter.class_names),
                            list(segmenter.class_lines), segmenter.palette, segmenter.nodata,
                            pixels, None if area is None else [float(n) * area for n in pixels],
                            from_prepared, time.perf_counter() - start)

    def _probabilities(self) -> dict:
        """Each tile batch's class probabilities with the segmenter's vocabulary."""
        probabilities = {}
        for prepared, _ in self.parts.values():
            if id(prepared) not in probabilities:
                samples = self.segmenter.model.segment_prepared(prepared)
                probabilities[id(prepared)] = [s.seg_logits.data.float().cpu().numpy()
                                               for s in samples]
        return probabilities

    def close(self) -> None:
        self.scene.close()


class PreparedCache(OrderedDict):
    """Prepared images by key, the least recently used dropped first once they hold more
    than ``max_bytes`` (the newest is always kept)."""

    def __init__(self, max_bytes: int):
        super().__init__()
        if max_bytes < 0:
            raise ValueError(f'prepared_bytes must be >= 0, got {max_bytes}')
        self.max_bytes = max_bytes

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > 1 and self.nbytes > self.max_bytes:
            _, dropped = self.popitem(last=False)
            dropped.close()

    def clear(self) -> None:
        """Drop every prepared image, releasing the files they hold open."""
        while self:
            self.popitem(last=False)[1].close()

    @property
    def nbytes(self) -> int:
        return sum(prepared.nbytes for prepared in self.values())
