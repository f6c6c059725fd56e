"""One scene split across the processes of a run: each computes a band of tile rows
(:func:`~segearth_ov.geometry.row_bands`) into a plain GeoTIFF in the run folder, and
process 0 reads the bands back, in order, as it would read its own tiles."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Tuple

import numpy as np

from ..geometry import Window, row_bands, tile_grid
from .label_maps import CONFIDENCE_NODATA, BandWriter, label_dtype, write_windows
from .run_folder import scratch_path
from .scenes import RasterScene


@dataclass(frozen=True)
class ScenePart:
    """This process's share of a scene split across ``world`` processes: ``agree(ok)``
    returns True when every process's ``ok`` is True (a collective call, e.g. an
    all-reduce)."""
    rank: int
    world: int
    agree: Callable[[bool], bool]


class SceneRows:
    """Rows ``(y1, y2)`` of a scene, as the scene-like target of a :class:`BandWriter`."""

    def __init__(self, scene, rows: Tuple[int, int]):
        from rasterio.transform import Affine
        self.width, self.height = scene.width, rows[1] - rows[0]
        self.crs = scene.crs
        self.transform = scene.transform @ Affine.translation(0, rows[0])


def part_paths(outputs: Dict[str, Path], rank: int) -> Dict[str, Path]:
    """Where process ``rank`` leaves its band of the label and confidence maps."""
    return {key: scratch_path(outputs, f'{key}.rank{rank}.tif')
            for key in ('labels', 'confidence')}


def compute_part(segmenter, path: Path, outputs: Dict[str, Path], part: ScenePart,
                 progress: bool, area) -> None:
    """This process's band of rows of the label (and confidence) map of ``path``, computed
    by ``segmenter`` (an ``OpenVocabSegmenter``); every process learns whether all
    succeeded, and a failure anywhere removes every band."""
    from tqdm import tqdm
    paths = part_paths(outputs, part.rank)
    error = None
    try:
        scene = RasterScene(path, segmenter.bands)
        try:
            rows = row_bands(scene.height, segmenter.tile, segmenter.overlap,
                             part.world)[part.rank]
            if rows[1] > rows[0]:
                band = SceneRows(scene, rows)
                writers = [BandWriter(paths['labels'], band, label_dtype(segmenter.num_classes),
                                      segmenter.nodata, cog=False)]
                if segmenter.keeps_confidence:
                    writers.append(BandWriter(paths['confidence'], band, np.uint8,
                                              CONFIDENCE_NODATA, cog=False))
                count = len(tile_grid(scene.height, scene.width, segmenter.tile,
                                      segmenter.overlap))
                with tqdm(total=count, desc=f'{path.name} rows {rows[0]}-{rows[1]}',
                          unit='tile', disable=not progress) as bar:
                    write_windows(writers, (
                        ((y1 - rows[0], y2 - rows[0], x1, x2), *values)
                        for (y1, y2, x1, x2), *values in segmenter.scene_labels(
                            scene, bar.update, area, rows)))
        finally:
            scene.close()
    except Exception as err:  # the others must hear of it, not wait for this band
        error = err
    if not part.agree(error is None):
        for leftover in paths.values():
            leftover.unlink(missing_ok=True)
        raise error or RuntimeError(f'another process failed on {path}; see its error')


def assembled_parts(scene, outputs: Dict[str, Path], tile: int, overlap: int, world: int,
                    with_confidence: bool
                    ) -> Iterator[Tuple[Window, np.ndarray, np.ndarray]]:
    """The processes' bands read back in 256-row strips (then removed), as ``(window,
    labels, confidence)``; confidence 255 when the bands have none."""
    import rasterio
    for rank, (r0, r1) in enumerate(row_bands(scene.height, tile, overlap, world)):
        if r1 <= r0:
            continue
        paths = part_paths(outputs, rank)
        try:
            with contextlib.ExitStack() as files:
                labels_ds = files.enter_context(rasterio.open(paths['labels']))
                confidence_ds = files.enter_context(rasterio.open(paths['confidence'])) \
                    if with_confidence else None
                for start in range(r0, r1, 256):
                    stop = min(start + 256, r1)
                    strip = rasterio.windows.Window(0, start - r0, scene.width, stop - start)
                    labels = labels_ds.read(1, window=strip)
                    confidence = np.full_like(labels, CONFIDENCE_NODATA, np.uint8) \
                        if confidence_ds is None else confidence_ds.read(1, window=strip)
                    yield (start, stop, 0, scene.width), labels, confidence
        finally:
            for leftover in paths.values():
                leftover.unlink(missing_ok=True)
