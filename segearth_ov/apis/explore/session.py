"""What ``segearth-ov explore`` works on, apart from the web: the inputs it may read (those
named on the command line and uploads it stored itself), one segmenter at a time with its
prepared images, and the results it wrote into its own folder. Nothing else is read or
served; the page names inputs and results by id, never by path."""
from __future__ import annotations

import shlex
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from ...dataset_converters.writer import encode_image
from ...fileio import IMAGE_SUFFIXES, atomic_path, checked_folder
from ...geometry import Window, tile_grid
from ...models.text import ClassQueries
from ..label_maps import LabelWriter, raster_suffix, write_windows
from ..prepared import Segmentation
from ..scenes import RasterScene, raster_session
from ..styles import vector_style
from ..vectorize import vectorize_labels

PREVIEW_SIDE = 1024  # the long side of the page's view of an input
WHOLE_IMAGE_SIDE = 1024  # larger inputs start with a region of this side at their centre
KEPT_RESULTS = 20  # results kept for download; older ones (ours) are removed
DOWNLOADS = ('overlay.png', 'confidence.png', 'classes.png', 'labels.tif', 'labels.png',
             'polygons.gpkg', 'command.txt')


@dataclass
class InputImage:
    """An image the page may segment."""
    path: Path
    name: str
    width: int
    height: int
    georeferenced: bool


def default_region(image: InputImage) -> Window:
    """The whole image, or a :data:`WHOLE_IMAGE_SIDE` square at the centre of a larger one."""
    side = WHOLE_IMAGE_SIDE
    if max(image.width, image.height) <= side:
        return 0, image.height, 0, image.width
    y1, x1 = max(0, (image.height - side) // 2), max(0, (image.width - side) // 2)
    return y1, min(image.height, y1 + side), x1, min(image.width, x1 + side)


class ExploreSession:
    """The page's state.

    Args:
        inputs: image files named on the command line.
        out: the app's own folder (uploads and results go there, nowhere else).
        build: ``build(method, choices)`` -> an ``OpenVocabSegmenter``; called when the
            page asks for another method or another choice of its options (``choices``:
            option name -> value, e.g. ``{'upsampler': 'none'}``).
        method, choices: the first segmenter's.
        predict_options: the command line's options that a ``segearth-ov predict`` of the
            page's settings must repeat (``--clip ViT-B-16``...).
    """

    def __init__(self, inputs: List[Path], out: Path, build: Callable, method: str,
                 choices: Optional[dict] = None, predict_options: List[str] = ()):
        self.out = Path(out)
        self.uploads = checked_folder(self.out, 'uploads')
        self.results_dir = checked_folder(self.out, 'results')
        self.build, self.predict_options = build, list(predict_options)
        self.lock = threading.Lock()  # one model, requests in turn
        self.progress = dict(phase='idle', done=0, total=0)
        self.inputs: Dict[str, InputImage] = {}
        self.results: 'OrderedDict[str, dict]' = OrderedDict()
        for path in inputs:
            self.add_input(Path(path))
        self.settings = (method, dict(choices or {}))
        self.segmenter = build(*self.settings)

    # inputs ------------------------------------------------------------------------------
    def add_input(self, path: Path, name: Optional[str] = None) -> str:
        """Register an image file (read once to check it is one); returns its id."""
        with raster_session():
            scene = RasterScene(path)
            try:
                image = InputImage(path, name or path.name, scene.width, scene.height,
                                   scene.georeferenced)
            finally:
                scene.close()
        key = f'i{len(self.inputs)}'
        self.inputs[key] = image
        return key

    def upload(self, filename: str, data: bytes) -> str:
        """Store an uploaded image in the app's folder and register it; a file that is not
        an image is removed again and refused."""
        suffix = Path(filename or '').suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            raise ValueError(f'{filename or "the upload"}: {suffix or "no suffix"} is not an '
                             f'image format segearth-ov reads ({", ".join(IMAGE_SUFFIXES)})')
        path = self.uploads / f'upload-{uuid.uuid4().hex[:12]}{suffix}'
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        try:
            return self.add_input(path, Path(filename).name)
        except Exception:
            path.unlink(missing_ok=True)
            raise

    def image(self, key: str) -> InputImage:
        if key not in self.inputs:
            raise ValueError(f'no input {key!r}; open an image first')
        return self.inputs[key]

    def preview(self, key: str) -> bytes:
        """The input at most :data:`PREVIEW_SIDE` pixels on its long side, as PNG."""
        image = self.image(key)
        factor = min(1.0, PREVIEW_SIDE / max(image.width, image.height))
        shape = (max(1, round(image.height * factor)), max(1, round(image.width * factor)))
        with raster_session():
            scene = RasterScene(image.path, self.segmenter.bands)
            try:
                return encode_image(scene.read((0, image.height, 0, image.width), shape), '.png')
            finally:
                scene.close()

    # segmenting --------------------------------------------------------------------------
    def _segmenter(self, method: str, choices: dict):
        if (method, choices) != self.settings:
            self.close()
            self.segmenter = self.build(method, choices)
            self.settings = (method, choices)
        return self.segmenter

    def _tick(self, count: int) -> None:
        self.progress['done'] += count

    def segment(self, key: str, classes: str, prob_thd: Optional[float] = None,
                region: Optional[Window] = None, method: Optional[str] = None,
                choices: Optional[dict] = None) -> dict:
        """Segment an input's region (the image side from the prepared image when this
        region was seen with these settings); returns what the page shows."""
        image = self.image(key)
        region = tuple(int(v) for v in region) if region else default_region(image)
        with self.lock:
            segmenter = self._segmenter(method or self.settings[0],
                                        self.settings[1] if choices is None else dict(choices))
            self.progress.update(phase='preparing', done=0, total=len(tile_grid(
                region[1] - region[0], region[3] - region[2], segmenter.tile,
                segmenter.overlap)))
            try:
                with raster_session():
                    prepared = segmenter.prepare(image.path, region, key=(key, region),
                                                 progress=self._tick)
                    self.progress['phase'] = 'scoring'
                    result = prepared.segment(ClassQueries.parse(classes, source='classes'),
                                              prob_thd)
                    rid = self._store(image, prepared, result)
            finally:
                self.progress['phase'] = 'idle'
        return self._describe(rid, image, region, result, classes, prob_thd)

    def _store(self, image: InputImage, prepared, result: Segmentation) -> str:
        """Write a result's views and label raster into ``results/<id>/``."""
        rid = uuid.uuid4().hex[:16]
        folder = checked_folder(self.results_dir, rid)
        valid = result.labels != result.nodata
        rgb = prepared.scene.read((0, prepared.height, 0, prepared.width))
        colours = result.palette[np.where(valid, result.labels, 0)]
        overlay = np.where(valid[..., None], (0.45 * rgb + 0.55 * colours), rgb)
        confidence = np.where(valid, np.nan_to_num(result.confidence) * 255, 0)
        index = np.zeros((*result.labels.shape, 3), np.uint8)  # class under the pointer
        index[..., 0] = result.labels & 255
        index[..., 1] = result.labels.astype(np.int64) >> 8
        for name, array in (('overlay.png', overlay), ('confidence.png', confidence),
                            ('classes.png', index)):
            with atomic_path(folder / name) as tmp:
                tmp.write_bytes(encode_image(np.rint(array).astype(np.uint8), '.png'))
        kind = raster_suffix(prepared.scene)
        writer = LabelWriter(folder / f'labels.{kind}', prepared.scene, result.palette)
        write_windows([writer], [((0, prepared.height, 0, prepared.width), result.labels)])
        self.results[rid] = dict(folder=folder, labels=folder / f'labels.{kind}',
                                 names=result.class_names, palette=result.palette)
        while len(self.results) > KEPT_RESULTS:
            _, old = self.results.popitem(last=False)
            shutil.rmtree(old['folder'], ignore_errors=True)
        return rid

    def _describe(self, rid: str, image: InputImage, region: Window, result: Segmentation,
                  classes: str, prob_thd: Optional[float]) -> dict:
        total = int(result.pixels.sum())
        legend = [dict(index=i, name=name, synonyms=line, pixels=int(n),
                       share=round(100 * int(n) / total, 2) if total else 0.0,
                       area_m2=None if result.area_m2 is None else round(result.area_m2[i], 2),
                       colour='#%02x%02x%02x' % tuple(int(c) for c in result.palette[i]))
                  for i, (name, line, n) in enumerate(zip(result.class_names,
                                                          result.class_lines, result.pixels))]
        command = self.command(image, classes, prob_thd)
        with atomic_path(self.results[rid]['folder'] / 'command.txt') as tmp:
            tmp.write_text(command + '\n')
        return dict(result=rid, input=image.name, region=list(region), legend=legend,
                    nodata=result.nodata, from_prepared=result.from_prepared,
                    seconds=round(result.seconds, 3), command=command,
                    labels=self.results[rid]['labels'].name, method=self.settings[0],
                    choices=self.settings[1], georeferenced=image.georeferenced)

    def command(self, image: InputImage, classes: str, prob_thd: Optional[float]) -> str:
        """The ``segearth-ov predict`` command line that applies the page's settings to the
        whole input (an upload is named by the file the app stored)."""
        from ...models import method_options
        method, choices = self.settings
        flags = method_options()
        words = ['segearth-ov', 'predict', str(image.path), '--classes', classes,
                 '--out', 'segearth_ov_out', '--method', method, *self.predict_options]
        for name, value in choices.items():
            words += [flags[name].cli_flag, str(value)]
        if prob_thd is not None:
            words += ['--prob-thd', str(prob_thd)]
        return shlex.join(words)

    def download(self, rid: str, name: str) -> Path:
        """A result's file (the polygons are made on first request)."""
        if rid not in self.results or name not in DOWNLOADS:
            raise FileNotFoundError(f'no result file {name!r} for {rid!r}')
        result = self.results[rid]
        path = result['folder'] / name
        if name == 'polygons.gpkg' and not path.exists():
            with self.lock:
                vectorize_labels(result['labels'], path, result['names'], 'gpkg',
                                 style=vector_style(result['names'], result['palette']))
        if not path.is_file():
            raise FileNotFoundError(f'no result file {name!r} for {rid!r}')
        return path

    def status(self) -> dict:
        return dict(self.progress, time=time.time())

    def close(self) -> None:
        """Release the prepared images (and the files they hold open)."""
        self.segmenter.prepared.clear()

