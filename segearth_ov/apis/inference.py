"""``OpenVocabSegmenter``: any registered method on NumPy images and on image files of any
size. Which method runs, and how it gets its weights, comes from the method table
(``models/methods.py``); how a file's outputs are written from ``scene_files.py``, and how a
scene is split across processes from ``scene_split.py``."""
from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..fileio import file_identity, remove_temporary, stale_temporaries, writable_folder
from ..geometry import Window, check_tiling
from ..models.methods import choose_method, split_options
from ..models.postprocess import threshold_to_background
from ..models.text import ClassQueries
from ..visualize import class_palette
from .aoi import AreaOfInterest, SceneArea
from .blending import blended_probabilities, top_class_cores
from .label_maps import (CONFIDENCE_NODATA, confidence_to_uint8, label_dtype, nodata_label,
                         raster_suffix)
from .outputs import OutputOptions, output_paths
from .prepared import PreparedCache, PreparedImage
from .run_folder import FolderLock, WrittenFiles, changed_since
from .scene_files import write_scene
from .scene_split import ScenePart, compute_part
from .scenes import ArrayScene, RasterScene, Scene, raster_session

logger = logging.getLogger(__name__)

__all__ = ['OpenVocabSegmenter', 'ScenePart']


class OpenVocabSegmenter:
    """A registered open-vocabulary method for arrays and files.

    Args:
        classes: class lines (``['building,roof', 'road']``), ``"building,roof;road"`` or a
            parsed list (``read_class_names(path)``); one parser for all of them.
        config: a benchmark config whose model settings to start from.
        method: a registered method's name (``models.method_names()``: ``segearth-ov``, the
            default, or ``segearth-ov3``); a config's model chooses it too.
        device: ``'cpu'`` or ``'cuda'`` (default: cuda when available).
        batch_size: tiles per forward pass.
        tile, overlap: tile size and overlap in input pixels (files and large arrays).
        scale: resampling factor applied to the scene before the model.
        bands: 1-based bands to read, in R, G, B order (multispectral inputs).
        class_chunk: vocabularies of more classes than this are scored this many classes
            at a time (bounded memory; each pixel then comes from its nearest tile instead
            of a blend of the overlapping tiles).
        outputs: :class:`OutputOptions` (polygons, COG, confidence, area of interest).
        area: the :class:`~segearth_ov.apis.aoi.AreaOfInterest` of ``outputs.aoi``, when the
            caller has read it already.
        prepared_bytes: the memory that images kept by :meth:`prepare` may hold (4 GiB).
        **options: the method's own options (its ``OPTIONS``: for SegEarth-OV ``clip``,
            ``pretrained``, ``upsampler``, ``upsampler_checkpoint``, ``text_cache``,
            ``prompt_templates``; for SegEarth-OV3 ``sam3_checkpoint``) and any other
            argument of its model class
            (``prob_thd``, ``attention``, ``confidence_threshold``...).
    """

    def __init__(self, classes, config=None, method: Optional[str] = None,
                 device: Optional[str] = None, batch_size: int = 4, tile: int = 1024,
                 overlap: int = 128, scale: float = 1.0, bands: Optional[Sequence[int]] = None,
                 class_chunk: int = 64, outputs: OutputOptions = OutputOptions(),
                 area: Optional[AreaOfInterest] = None, prepared_bytes: int = 4 << 30,
                 **options):
        check_tiling(tile, overlap, scale, batch_size)  # before anything heavy is built
        if class_chunk < 1:
            raise ValueError(f'--class-chunk must be >= 1, got {class_chunk}')
        method_class, settings = choose_method(method, config)
        user_options, model_options = split_options(method_class, options)
        self.outputs = outputs
        if area is None and outputs.aoi:
            area = AreaOfInterest(outputs.aoi)
        self.aoi = area
        if str(device or '').startswith('cuda') and not torch.cuda.is_available():
            raise ValueError('--device cuda: torch sees no CUDA device here (a CPU-only '
                             'machine, or a driver problem); use --device cpu')
        self._use_classes(ClassQueries.parse(classes))
        settings.update(model_options)
        self.device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
        self.batch_size, self.tile, self.overlap, self.scale = batch_size, tile, overlap, scale
        self.bands = list(bands) if bands else None
        self.class_chunk = class_chunk
        model, backbone, self.weights_source = method_class.build_for_predict(
            self.class_queries, user_options, settings)
        self.model = model.to(self.device).eval()
        self.method = method_class.METHOD
        self.prepared = PreparedCache(prepared_bytes)
        # what a finished output was computed with: a rerun with equal settings skips it
        self.settings = json.loads(json.dumps(dict(
            method=self.method, classes=self.class_lines, backbone=backbone,
            weights=self.weights_source, model=settings, tile=tile, overlap=overlap, scale=scale,
            bands=self.bands,
            class_chunk=class_chunk if self.large_vocabulary else None,
            outputs=outputs.settings(self.aoi.hash if self.aoi else None)), default=str,
            allow_nan=False))

    def _use_classes(self, queries: ClassQueries) -> None:
        self.class_queries = queries
        self.class_lines = list(queries.lines)
        self.class_names = list(queries.class_names)
        self.palette = class_palette(len(self.class_lines))
        self.nodata = nodata_label(self.num_classes)

    def set_classes(self, classes, prob_thd: Optional[float] = None,
                    bg_idx: Optional[int] = None) -> None:
        """Segment with another class list from now on (and threshold, background index
        when given), as if built with them: the model's text side changes, its weights and
        the prepared images do not."""
        queries = ClassQueries.parse(classes)
        self.model.set_vocabulary(queries, prob_thd, bg_idx)
        self._use_classes(queries)
        self.settings = dict(self.settings, classes=self.class_lines, model=dict(
            self.settings['model'], **{k: v for k, v in (('prob_thd', prob_thd),
                                                         ('bg_idx', bg_idx)) if v is not None}),
            class_chunk=self.class_chunk if self.large_vocabulary else None)

    def prepare(self, image, region: Optional[Window] = None, key=None,
                progress=None) -> PreparedImage:
        """``image`` (an array ``[H, W(, C)]`` or an image file) or its ``region``
        ``(y1, y2, x1, x2)`` with the model's image side computed and kept:
        ``prepared.segment(classes)`` then segments it with any vocabulary, exactly as a
        segmenter built with those classes would, at the cost of the text side. With a
        ``key`` (e.g. the file and region), a prepared image is kept in :attr:`prepared`
        (least recently used dropped first, within the memory bound) and returned again."""
        if key is not None and key in self.prepared:
            return self.prepared[key]
        prepared = PreparedImage(self, image, region, progress)
        if key is not None:
            self.prepared[key] = prepared
        return prepared

    @property
    def num_classes(self) -> int:
        return len(self.class_lines)

    @property
    def large_vocabulary(self) -> bool:
        """Whether the classes are scored in chunks (:meth:`top_classes`)."""
        return self.num_classes > self.class_chunk

    # ------------------------------------------------------------------ model on tiles
    def model_inputs(self, tiles: np.ndarray) -> torch.Tensor:
        """``[B, h, w, 3]`` uint8 RGB -> the model's preprocessed ``[B, 3, h, w]``."""
        inputs = [torch.from_numpy(np.ascontiguousarray(tile[..., ::-1])).permute(2, 0, 1)
                  for tile in tiles]  # the preprocessor takes BGR, as mmseg loads it
        return self.model.data_preprocessor(dict(inputs=inputs))['inputs'].to(self.device)

    def probabilities(self, tiles: np.ndarray) -> np.ndarray:
        """``[B, h, w, 3]`` uint8 RGB -> ``[B, C, h, w]`` float32 class probabilities."""
        samples = self.model.predict(self.model_inputs(tiles))
        return np.stack([s.seg_logits.data.float().cpu().numpy() for s in samples])

    def top_classes(self, tiles: np.ndarray) -> List[Tuple[np.ndarray, np.ndarray]]:
        """``[B, h, w, 3]`` uint8 RGB -> per tile ``(labels [h, w], top probability [h, w])``,
        scored ``class_chunk`` classes at a time (no per-class map of the vocabulary)."""
        dtype = label_dtype(self.num_classes)
        return [(labels.cpu().numpy().astype(dtype), probs.float().cpu().numpy())
                for labels, probs in self.model.top_classes(self.model_inputs(tiles),
                                                            self.class_chunk)]

    def labels_from_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """``[C, h, w]`` -> ``[h, w]`` class indices (uint8, or uint16 beyond 255 classes),
        with the model's background threshold."""
        labels = threshold_to_background(torch.from_numpy(probs), self.model.prob_thd,
                                         self.model.bg_idx)
        return labels.numpy().astype(label_dtype(self.num_classes))

    def labels_of_blended(self, blended: Iterator[Tuple[Window, Optional[np.ndarray]]]
                          ) -> Iterator[Tuple[Window, Optional[Tuple[np.ndarray, np.ndarray]]]]:
        """``(window, (labels, top probability))`` of blended probabilities (None stays)."""
        for window, probs in blended:
            yield window, None if probs is None else (self.labels_from_probabilities(probs),
                                                      probs.max(axis=0))

    def scene_labels(self, scene: Scene, progress=None, area=None,
                     rows: Optional[Tuple[int, int]] = None
                     ) -> Iterator[Tuple[Window, np.ndarray, np.ndarray]]:
        """``(window, labels [h, w], confidence [h, w] uint8)`` covering ``scene`` once (or
        its ``rows`` ``(y1, y2)``, computing only the tiles that reach them): probabilities
        blended across tile overlaps (or, for a large vocabulary, each pixel's nearest tile).
        No-data pixels, pixels outside ``area`` (a :class:`~segearth_ov.apis.aoi.SceneArea`)
        and skipped tiles get :attr:`nodata` and confidence 255."""
        def keep(window: Window) -> bool:
            return ((rows is None or (window[0] < rows[1] and window[1] > rows[0])) and
                    (area is None or area.touches(window)))
        dtype = label_dtype(self.num_classes)
        if self.large_vocabulary:
            results = top_class_cores(scene, self.top_classes, self.tile, self.overlap,
                                      self.scale, self.batch_size, progress, keep)
        else:
            results = self.labels_of_blended(blended_probabilities(
                scene, self.probabilities, self.tile, self.overlap, self.scale,
                self.batch_size, progress, keep))
        for window, result in results:
            if rows is not None:  # the part of the window inside the rows
                top, bottom = max(window[0], rows[0]), min(window[1], rows[1])
                if top >= bottom:
                    continue
                if result is not None:
                    crop = slice(top - window[0], bottom - window[0])
                    result = (result[0][crop], result[1][crop])
                window = (top, bottom, window[2], window[3])
            y1, y2, x1, x2 = window
            if result is None:
                yield (window, np.full((y2 - y1, x2 - x1), self.nodata, dtype),
                       np.full((y2 - y1, x2 - x1), CONFIDENCE_NODATA, np.uint8))
                continue
            labels, confidence = result[0].copy(), confidence_to_uint8(result[1])
            valid = scene.valid(window)
            if area is not None:
                valid &= area.inside(window)
            labels[~valid] = self.nodata
            confidence[~valid] = CONFIDENCE_NODATA
            yield window, labels, confidence

    # ------------------------------------------------------------------------- arrays
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Label map ``[H, W]`` of an image ``[H, W]`` or ``[H, W, C]`` (RGB order; other
        dtypes are stretched to 8 bit), tiled when larger than ``tile``. uint8 class
        indices (uint16 beyond 255 classes); NaN or infinite pixels get :attr:`nodata`."""
        scene = ArrayScene(image, self.bands)
        labels = np.zeros((scene.height, scene.width), label_dtype(self.num_classes))
        for (y1, y2, x1, x2), window_labels, _ in self.scene_labels(scene):
            labels[y1:y2, x1:x2] = window_labels
        return labels

    # -------------------------------------------------------------------------- files
    def output_paths(self, out_dir, name: str) -> Dict[str, Path]:
        """:func:`~segearth_ov.apis.outputs.output_paths` with this segmenter's outputs."""
        return output_paths(out_dir, name, self.outputs)

    def finished(self, out_dir, name: str) -> Optional[dict]:
        """The summary of a finished output computed with this segmenter's settings, or
        None when there is none (or only a killed run's leftovers, or an output it lists is
        missing from ``out_dir``). Raises ``FileExistsError`` for a finished output with
        other settings."""
        path = self.output_paths(out_dir, name)['json']
        if path.is_symlink():
            return None
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(summary, dict):
            return None
        if summary.get('settings') != self.settings:
            raise FileExistsError(f'{path} holds a result computed with other settings; pass '
                                  f'--overwrite (overwrite=True) to replace it, or choose '
                                  f'another output folder')
        # outputs are listed by name beside the summary: a copied folder is checked as is
        written = [Path(out_dir) / Path(p).name for p in summary.get('outputs', {}).values()
                   if p]
        return summary if written and all(p.is_file() and not p.is_symlink()
                                          for p in written) else None

    def predict_file(self, path, out_dir, progress: bool = True, overlay_side: int = 2048,
                     name: Optional[str] = None, overwrite: bool = False,
                     part: Optional[ScenePart] = None, locked: bool = False,
                     written: Optional[WrittenFiles] = None) -> dict:
        """Segment one image file of any size into :meth:`output_paths` (``name`` defaults
        to the file's name): the label map (a Cloud-Optimized GeoTIFF with the input's
        georeferencing, a colour table and the no-data label, or PNG), an overlay (at most
        ``overlay_side`` pixels on the long side, with a legend), the outputs of
        :class:`OutputOptions` and the JSON summary of class areas, written last. The
        summary names its outputs relative to ``out_dir``.

        A finished output with the same settings is returned as it is (``skipped`` set)
        unless ``overwrite``; one with other settings is refused, and so is a file at an
        output name that this tool did not write (``FileExistsError``). If the run fails,
        the outputs it wrote are removed and nothing else. Returns the JSON summary plus
        ``seconds`` (kept out of the file, so equal runs write equal files).

        The call holds ``out_dir``'s lock (:class:`~segearth_ov.apis.run_folder.FolderLock`)
        unless ``locked`` says the caller holds it for the whole run; ``written`` is that
        run's record of the files it wrote (else read from ``out_dir``).

        With ``part`` (:class:`ScenePart`), every process of a group calls this for the same
        file: each computes a band of tile rows (:func:`~segearth_ov.geometry.row_bands`),
        and process 0 assembles the bands into the outputs, identical to one process's;
        the others return ``{'part': rank}``.
        """
        path, out_dir = Path(path), Path(out_dir)
        name = name or path.name
        writable_folder(out_dir)
        with contextlib.ExitStack() as stack:
            if not locked:
                stack.enter_context(FolderLock(out_dir))
            written = written or WrittenFiles(out_dir, part.rank if part else 0)
            return self._predict_locked(path, out_dir, name, progress, overlay_side,
                                        overwrite, part, written)

    def _predict_locked(self, path: Path, out_dir: Path, name: str, progress: bool,
                        overlay_side: int, overwrite: bool, part: Optional[ScenePart],
                        written: WrittenFiles) -> dict:
        if not overwrite:
            done = self.finished(out_dir, name)
            if done is not None:
                return dict(done, skipped=True)
        kind, area, outside = self._look_at(path)
        if outside:
            logger.warning('%s lies outside the area of interest: nothing computed', path)
            return dict(status='outside-aoi', outputs={})
        outputs = {key: output for key, output in self.output_paths(out_dir, name).items()
                   if not key.endswith(('_tif', '_png')) or key.endswith(kind)}
        if not overwrite:
            foreign = written.foreign(outputs.values())
            if foreign:
                raise FileExistsError(
                    f'{", ".join(map(str, foreign))} exist{"s" if len(foreign) == 1 else ""} '
                    f'and {"was" if len(foreign) == 1 else "were"} not written by '
                    f'segearth-ov; this input is left alone: move '
                    f'{"it" if len(foreign) == 1 else "them"}, pass --overwrite, or choose '
                    f'another output folder')
        for output in outputs.values():
            for stale in stale_temporaries(output):  # a killed run's (the lock is ours)
                remove_temporary(stale)
        before = {key: file_identity(output) for key, output in outputs.items()}
        split = part is not None and part.world > 1
        try:
            with raster_session():
                if split:
                    compute_part(self, path, outputs, part, progress, area)
                    if part.rank != 0:
                        return dict(part=part.rank)
                return write_scene(self, path, outputs, progress, overlay_side, area,
                                   part if split else None, written.record)
        except BaseException:
            for output in changed_since(before, outputs):  # only what this call wrote
                output.unlink(missing_ok=True)
            raise

    def _look_at(self, path: Path) -> Tuple[str, Optional[SceneArea], bool]:
        """``(raster format of the results, the area of interest in the scene's grid,
        whether that area misses the scene)`` of the input at ``path``, from its metadata
        (no pixel is read)."""
        with raster_session():
            scene = RasterScene(path, self.bands)
        try:
            area = self.aoi.for_scene(scene) if self.aoi is not None else None
            outside = area is not None and not area.touches((0, scene.height, 0, scene.width))
            return raster_suffix(scene), area, outside
        finally:
            scene.close()

    @property
    def keeps_confidence(self) -> bool:
        """Whether a scene's confidence is kept: asked for, or read by the polygons."""
        return self.outputs.confidence or bool(self.outputs.vector)
