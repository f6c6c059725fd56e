"""The files of one input: the label map (and confidence), its overlay and QGIS style, the
polygons, and the JSON summary written last. Each file is published atomically and
reported to ``record`` at once, so a run killed half-way still knows which files are its
own."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from ..fileio import atomic_path
from ..geometry import tile_grid
from ..visualize import overlay_with_legend
from .label_maps import (CONFIDENCE_NODATA, BandWriter, LabelWriter, raster_suffix,
                         read_labels_preview, write_windows)
from .run_folder import scratch_path
from .scene_split import ScenePart, assembled_parts
from .scenes import RasterScene
from .stac_index import acquisition_time
from .styles import raster_style, vector_style
from .vectorize import vectorize_labels


def write_scene(segmenter, path: Path, outputs: Dict[str, Path], progress: bool,
                overlay_side: int, area=None, part: Optional[ScenePart] = None,
                record: Callable = lambda paths: None) -> dict:
    """Segment ``path`` with ``segmenter`` (an ``OpenVocabSegmenter``) into ``outputs``
    (or, with ``part``, assemble the bands the processes computed); returns the summary
    plus ``seconds``."""
    from tqdm import tqdm
    options = segmenter.outputs
    scene = RasterScene(path, segmenter.bands)
    scores = None  # the confidence raster the polygons' figures are read from
    try:
        kind = raster_suffix(scene)
        written = dict(labels=outputs[f'labels_{kind}'], overlay=outputs['overlay'])
        outputs['json'].unlink(missing_ok=True)  # replaced: stale until rewritten
        writers = [LabelWriter(written['labels'], scene, segmenter.palette, options.cog)]
        if options.confidence:
            written['confidence'] = scores = outputs[f'confidence_{kind}']
            writers.append(BandWriter(scores, scene, np.uint8, CONFIDENCE_NODATA,
                                      cog=options.cog, overview_resampling='average'))
        elif options.vector:  # kept only while the polygons are made
            scores = scratch_path(outputs, 'confidence.tif')
            writers.append(BandWriter(scores, scene, np.uint8, CONFIDENCE_NODATA, cog=False))
        count = len(tile_grid(scene.height, scene.width, segmenter.tile, segmenter.overlap))
        start = time.perf_counter()
        with tqdm(total=count, desc=path.name, unit='tile',
                  disable=not progress or part is not None) as bar:
            write_windows(writers, assembled_parts(
                scene, outputs, segmenter.tile, segmenter.overlap, part.world,
                segmenter.keeps_confidence) if part is not None else
                segmenter.scene_labels(scene, bar.update, area))
        record(written.values())
        write_overlay(segmenter, scene, written['labels'], outputs['overlay'], overlay_side)
        written['labels_style'] = outputs['labels_style']
        with atomic_path(outputs['labels_style']) as tmp:
            tmp.write_text(raster_style(segmenter.class_names, segmenter.palette))
        record(written.values())
        features = None
        if options.vector:
            features = _polygons(segmenter, written, outputs, scores, progress)
            record(written.values())
        summary = scene_summary(segmenter, path, scene, written, writers[0], count, features)
    finally:
        scene.close()
        if scores is not None and not options.confidence:
            scores.unlink(missing_ok=True)
    with atomic_path(outputs['json']) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, allow_nan=False))
    record([outputs['json']])
    return dict(summary, seconds=round(time.perf_counter() - start, 3))


def _polygons(segmenter, written: Dict[str, Path], outputs: Dict[str, Path], scores: Path,
              progress: bool) -> int:
    """The polygon layer and its QGIS style (also stored in a GeoPackage)."""
    options = segmenter.outputs
    style = vector_style(segmenter.class_names, segmenter.palette)
    count = vectorize_labels(written['labels'], outputs['vector'], segmenter.class_names,
                             options.vector, options.min_area, options.simplify,
                             progress=progress, confidence_path=scores, style=style)
    for key in outputs:
        if key.startswith('vector_') and key != 'vector_style':
            written[key] = outputs[key]  # a Shapefile's companion files
    written['vector'] = outputs['vector']
    written['vector_style'] = outputs['vector_style']
    with atomic_path(outputs['vector_style']) as tmp:
        tmp.write_text(style)
    return count


def write_overlay(segmenter, scene, label_path: Path, overlay_path: Path, side: int) -> None:
    """The scene with its labels and a legend, at most ``side`` pixels on the long side."""
    factor = min(1.0, side / max(scene.height, scene.width))
    shape = (max(1, round(scene.height * factor)), max(1, round(scene.width * factor)))
    rgb = scene.read((0, scene.height, 0, scene.width), None if factor == 1 else shape)
    labels = read_labels_preview(label_path, shape)
    title = segmenter.method + ('' if segmenter.weights_source else ' - RANDOM WEIGHTS')
    image = overlay_with_legend(rgb, labels, segmenter.class_names, segmenter.palette,
                                title=title, nodata=segmenter.nodata)
    with atomic_path(overlay_path) as tmp:
        image.save(tmp, format='PNG')


def scene_summary(segmenter, path, scene, written, label_writer, tiles, features) -> dict:
    """The JSON summary: what was read, how, what was written, and each class's area."""
    counts, areas = label_writer.counts, label_writer.areas
    total = int(counts.sum())
    area = label_writer.pixel_area
    class_areas = [None] * len(counts) if areas is None else \
        [round(float(a), 3) for a in areas]
    classes = [dict(name=name, synonyms=line, pixels=int(n),
                    fraction=round(int(n) / total, 6) if total else 0.0, area_m2=a)
               for name, line, n, a in zip(segmenter.class_names, segmenter.class_lines,
                                           counts, class_areas)]
    georeferenced = scene.georeferenced
    return dict(
        input=str(path), labels=written['labels'].name, overlay=written['overlay'].name,
        outputs={key: p.name for key, p in written.items()},
        width=scene.width, height=scene.height,
        crs=scene.crs.to_string() if georeferenced else None,
        transform=list(scene.transform)[:6] if georeferenced else None,
        bounds=list(scene.bounds()) if georeferenced else None,
        pixel_area_m2=area, acquired=acquisition_time(scene.dataset),
        area_note=None if area is not None else
        'no projected CRS in metres: areas are given in pixels only' if areas is None else
        'geographic CRS: areas are geodesic, on the CRS\'s ellipsoid',
        bands=scene.bands, stretched=scene.limits is not None, tile=segmenter.tile,
        overlap=segmenter.overlap, scale=segmenter.scale, tiles=tiles, polygons=features,
        method=segmenter.method, weights=segmenter.weights_source or 'RANDOM',
        nodata_label=segmenter.nodata,
        nodata_pixels=scene.width * scene.height - total, classes=classes,
        palette=segmenter.palette.tolist(), settings=segmenter.settings)
