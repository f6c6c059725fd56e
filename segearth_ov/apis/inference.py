"""``OpenVocabSegmenter``: SegEarth-OV on NumPy images and on image files of any size."""
from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..fileio import (atomic_path, checked_folder, file_identity, remove_temporary,
                      stale_temporaries, writable_folder)
from ..geometry import Window, check_tiling, row_bands, tile_grid
from ..models.postprocess import threshold_to_background
from ..models.text import ClassQueries
from ..visualize import class_palette, overlay_with_legend
from ..weights import (SAM3_CHECKPOINT, clip_patch_size, describe_weights, no_weights,
                       resolve_clip, resolve_upsampler)
from .aoi import AreaOfInterest, SceneArea
from .blending import blended_probabilities, top_class_cores
from .label_maps import (CONFIDENCE_NODATA, BandWriter, LabelWriter, confidence_to_uint8,
                         label_dtype, nodata_label, raster_suffix, read_labels_preview,
                         write_windows)
from .outputs import OutputOptions, output_paths
from .run_folder import FolderLock, WrittenFiles, changed_since, run_folder
from .scenes import ArrayScene, RasterScene, Scene, raster_session
from .stac_index import acquisition_time
from .styles import raster_style, vector_style
from .vectorize import vectorize_labels

logger = logging.getLogger(__name__)

# --method -> registered model class
METHODS = {'segearth-ov': 'SegEarthOV', 'segearth-ov3': 'SegEarthOV3'}
# a benchmark config's model settings that carry over to other classes (its prob_thd and
# bg_idx refer to the benchmark's own class list)
MODEL_OPTIONS_FROM_CONFIG = {
    'SegEarthOV': ('attention', 'attention_layers', 'cls_token_lambda', 'upsampler',
                   'logit_scale', 'slide_crop', 'slide_stride', 'window_batch_size',
                   'precision', 'clip'),
    'SegEarthOV3': ('checkpoint', 'sam3_config', 'confidence_threshold', 'slide_crop',
                    'slide_stride', 'image_size', 'view_batch_size', 'prompt_batch_size',
                    'mask_chunk', 'precision'),
}


def _model_type(method: Optional[str], config) -> Tuple[str, dict]:
    """The model class (``--method``, else the config's, else SegEarthOV) and the config's
    model settings that carry over."""
    if method is not None and method not in METHODS:
        raise ValueError(f'unknown method {method!r}; choose one of {", ".join(METHODS)}')
    options, config_type = {}, None
    if config:
        from mmengine.config import Config
        if not Path(config).is_file():
            raise FileNotFoundError(f'config {config} not found')
        model = Config.fromfile(str(config)).model
        config_type = model.get('type')
        if config_type not in MODEL_OPTIONS_FROM_CONFIG:
            raise ValueError(f'config {config} has a {config_type} model; predict runs '
                             f'{", ".join(MODEL_OPTIONS_FROM_CONFIG)}')
        options = {key: model[key] for key in MODEL_OPTIONS_FROM_CONFIG[config_type]
                   if key in model}
    model_type = METHODS[method] if method else (config_type or 'SegEarthOV')
    if config_type and config_type != model_type:
        raise ValueError(f'--method {method} runs {model_type}, but config {config} is a '
                         f'{config_type} config')
    return model_type, options


@dataclass(frozen=True)
class ScenePart:
    """This process's share of a scene split across ``world`` processes: ``agree(ok)``
    returns True when every process's ``ok`` is True (a collective call, e.g. an
    all-reduce)."""
    rank: int
    world: int
    agree: Callable[[bool], bool]


class _Band:
    """Rows ``(y1, y2)`` of a scene, as the scene-like target of a :class:`BandWriter`."""

    def __init__(self, scene, rows: Tuple[int, int]):
        from rasterio.transform import Affine
        self.width, self.height = scene.width, rows[1] - rows[0]
        self.crs = scene.crs
        self.transform = scene.transform @ Affine.translation(0, rows[0])


class OpenVocabSegmenter:
    """SegEarth-OV (or SegEarth-OV3) for arrays and files.

    Args:
        classes: class lines (``['building,roof', 'road']``), ``"building,roof;road"`` or a
            parsed list (``read_class_names(path)``); one parser for all of them.
        config: a benchmark config whose model settings to start from.
        clip: open_clip architecture (default ViT-B-16).
        pretrained: ``'auto'`` (local OpenAI file, then open_clip's cache, else a clear
            error), an open_clip tag, a checkpoint path, or ``'none'`` (random weights).
        upsampler: ``'auto'`` (SimFeatUp's jbu_one when its checkpoint is in
            ``checkpoints/`` and the backbone is patch-16), ``'jbu_one'``, ``'jbu_stack'``
            or ``'none'``.
        upsampler_checkpoint: path for the upsampler weights.
        device: ``'cpu'`` or ``'cuda'`` (default: cuda when available).
        batch_size: tiles per forward pass.
        tile, overlap: tile size and overlap in input pixels (files and large arrays).
        scale: resampling factor applied to the scene before the model.
        bands: 1-based bands to read, in R, G, B order (multispectral inputs).
        class_chunk: vocabularies of more classes than this are scored this many classes
            at a time (bounded memory; each pixel then comes from its nearest tile instead
            of a blend of the overlapping tiles).
        outputs: :class:`OutputOptions` (polygons, COG, confidence, area of interest).
        method: ``'segearth-ov'`` (CLIP, the default) or ``'segearth-ov3'`` (SAM 3); a
            config's model type chooses it too.
        sam3_checkpoint: SegEarth-OV3 weights: ``'auto'`` (the config's, else
            ``checkpoints/sam3.pt``), a path, or ``'none'`` (random weights).
        area: the :class:`~segearth_ov.apis.aoi.AreaOfInterest` of ``outputs.aoi``, when the
            caller has read it already.
        **model_options: any other argument of the model class (``prob_thd``,
            ``attention``, ``confidence_threshold``...).
    """

    def __init__(self, classes, config=None, clip: Optional[str] = None,
                 pretrained: Optional[str] = 'auto', upsampler: str = 'auto',
                 upsampler_checkpoint: Optional[str] = None, device: Optional[str] = None,
                 batch_size: int = 4, tile: int = 1024, overlap: int = 128, scale: float = 1.0,
                 bands: Optional[Sequence[int]] = None, class_chunk: int = 64,
                 outputs: OutputOptions = OutputOptions(), method: Optional[str] = None,
                 sam3_checkpoint: Optional[str] = 'auto', area: Optional[AreaOfInterest] = None,
                 **model_options):
        check_tiling(tile, overlap, scale, batch_size)  # before anything heavy is built
        if class_chunk < 1:
            raise ValueError(f'--class-chunk must be >= 1, got {class_chunk}')
        self.outputs = outputs
        if area is None and outputs.aoi:
            area = AreaOfInterest(outputs.aoi)
        self.aoi = area
        if str(device or '').startswith('cuda') and not torch.cuda.is_available():
            raise ValueError('--device cuda: torch sees no CUDA device here (a CPU-only '
                             'machine, or a driver problem); use --device cpu')
        self.class_queries = ClassQueries.parse(classes)
        self.class_lines = list(self.class_queries.lines)
        self.class_names = list(self.class_queries.class_names)
        model_type, options = _model_type(method, config)
        options.update(model_options)
        self.device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
        self.batch_size, self.tile, self.overlap, self.scale = batch_size, tile, overlap, scale
        self.bands = list(bands) if bands else None
        self.class_chunk = class_chunk
        if model_type == 'SegEarthOV3':
            if clip or pretrained != 'auto' or upsampler != 'auto' or upsampler_checkpoint:
                raise ValueError('--clip, --pretrained and --upsampler choose SegEarth-OV\'s '
                                 'CLIP; SegEarth-OV3 takes --sam3-checkpoint')
            self.model, backbone = self._build_segearth_ov3(sam3_checkpoint, options)
        else:
            if sam3_checkpoint != 'auto':
                raise ValueError('--sam3-checkpoint is for --method segearth-ov3')
            self.model, backbone = self._build_segearth_ov(clip, pretrained, upsampler,
                                                           upsampler_checkpoint, options)
        self.model = self.model.to(self.device).eval()
        self.palette = class_palette(len(self.class_lines))
        self.nodata = nodata_label(self.num_classes)
        # what a finished output was computed with: a rerun with equal settings skips it
        self.settings = json.loads(json.dumps(dict(
            method=self.model.METHOD, classes=self.class_lines, backbone=backbone,
            weights=self.weights_source, model=options, tile=tile, overlap=overlap, scale=scale,
            bands=self.bands,
            class_chunk=class_chunk if self.large_vocabulary else None,
            outputs=outputs.settings(self.aoi.hash if self.aoi else None)), default=str,
            allow_nan=False))

    def _build_segearth_ov(self, clip, pretrained, upsampler, upsampler_checkpoint, options):
        from ..models import SegEarthOV
        config_clip = dict(options.pop('clip', None) or {})
        arch = clip or config_clip.get('arch', 'ViT-B-16')
        if pretrained == 'auto' and not clip and config_clip.get('pretrained') not in (None,
                                                                                    'openai'):
            pretrained = config_clip['pretrained']  # e.g. the SAR configs' AlignEarth file
        clip_cfg, self.weights_source = resolve_clip(arch, pretrained)
        if self.weights_source is None:
            logger.warning('CLIP has RANDOM weights: labels are a pipeline check, not a '
                           'segmentation')
        options['upsampler'] = resolve_upsampler(upsampler, upsampler_checkpoint,
                                                 clip_patch_size(clip_cfg['arch']),
                                                 options.get('upsampler'))
        return SegEarthOV(clip=clip_cfg, classes=self.class_queries, **options), clip_cfg['arch']

    def _build_segearth_ov3(self, checkpoint, options):
        from ..models import SegEarthOV3
        if checkpoint == 'auto':
            checkpoint = options.pop('checkpoint', str(SAM3_CHECKPOINT))
        options.pop('checkpoint', None)
        checkpoint = None if no_weights(checkpoint) else str(checkpoint)
        self.weights_source = describe_weights(checkpoint) if checkpoint else None
        return SegEarthOV3(checkpoint=checkpoint, classes=self.class_queries, **options), 'SAM 3'

    @property
    def num_classes(self) -> int:
        return len(self.class_lines)

    @property
    def large_vocabulary(self) -> bool:
        """Whether the classes are scored in chunks (:meth:`top_classes`)."""
        return self.num_classes > self.class_chunk

    # ------------------------------------------------------------------ model on tiles
    def probabilities(self, tiles: np.ndarray) -> np.ndarray:
        """``[B, h, w, 3]`` uint8 RGB -> ``[B, C, h, w]`` float32 class probabilities."""
        inputs = [torch.from_numpy(np.ascontiguousarray(tile[..., ::-1])).permute(2, 0, 1)
                  for tile in tiles]  # the preprocessor takes BGR, as mmseg loads it
        batch = self.model.data_preprocessor(dict(inputs=inputs))['inputs'].to(self.device)
        samples = self.model.predict(batch)
        return np.stack([s.seg_logits.data.float().cpu().numpy() for s in samples])

    def top_classes(self, tiles: np.ndarray) -> List[Tuple[np.ndarray, np.ndarray]]:
        """``[B, h, w, 3]`` uint8 RGB -> per tile ``(labels [h, w], top probability [h, w])``,
        scored ``class_chunk`` classes at a time (no per-class map of the vocabulary)."""
        inputs = [torch.from_numpy(np.ascontiguousarray(tile[..., ::-1])).permute(2, 0, 1)
                  for tile in tiles]
        batch = self.model.data_preprocessor(dict(inputs=inputs))['inputs'].to(self.device)
        dtype = label_dtype(self.num_classes)
        return [(labels.cpu().numpy().astype(dtype), probs.float().cpu().numpy())
                for labels, probs in self.model.top_classes(batch, self.class_chunk)]

    def labels_from_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """``[C, h, w]`` -> ``[h, w]`` class indices (uint8, or uint16 beyond 255 classes),
        with the model's background threshold."""
        labels = threshold_to_background(torch.from_numpy(probs), self.model.prob_thd,
                                         self.model.bg_idx)
        return labels.numpy().astype(label_dtype(self.num_classes))

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
            results = ((window, None if probs is None else
                        (self.labels_from_probabilities(probs), probs.max(axis=0)))
                       for window, probs in blended_probabilities(
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
                    self._predict_part(path, outputs, part, progress, area)
                    if part.rank != 0:
                        return dict(part=part.rank)
                return self._predict_file(path, outputs, progress, overlay_side, area,
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
    def _keeps_confidence(self) -> bool:
        """Whether a scene's confidence is kept: asked for, or read by the polygons."""
        return self.outputs.confidence or bool(self.outputs.vector)

    @staticmethod
    def _scratch(outputs: Dict[str, Path], name: str) -> Path:
        """A working file of this input, in the output folder's run folder (``parts/``)."""
        folder = checked_folder(run_folder(outputs['json'].parent), 'parts')
        return folder / f'{outputs["json"].name[:-len(".json")]}.{name}'

    def _part_paths(self, outputs: Dict[str, Path], rank: int) -> Dict[str, Path]:
        """Where process ``rank`` leaves its band of the label and confidence maps."""
        return {key: self._scratch(outputs, f'{key}.rank{rank}.tif')
                for key in ('labels', 'confidence')}

    def _predict_part(self, path: Path, outputs: Dict[str, Path], part: 'ScenePart',
                      progress: bool, area: Optional[SceneArea]) -> None:
        """This process's band of rows of the label (and confidence) map, as plain
        GeoTIFFs for process 0 to assemble; every process learns whether all succeeded."""
        from tqdm import tqdm
        paths = self._part_paths(outputs, part.rank)
        error = None
        try:
            scene = RasterScene(path, self.bands)
            try:
                rows = row_bands(scene.height, self.tile, self.overlap, part.world)[part.rank]
                if rows[1] > rows[0]:
                    band = _Band(scene, rows)
                    writers = [BandWriter(paths['labels'], band, label_dtype(self.num_classes),
                                          self.nodata, cog=False)]
                    if self._keeps_confidence:
                        writers.append(BandWriter(paths['confidence'], band, np.uint8,
                                                  CONFIDENCE_NODATA, cog=False))
                    count = len(tile_grid(scene.height, scene.width, self.tile, self.overlap))
                    with tqdm(total=count, desc=f'{path.name} rows {rows[0]}-{rows[1]}',
                              unit='tile', disable=not progress) as bar:
                        write_windows(writers, (
                            ((y1 - rows[0], y2 - rows[0], x1, x2), *values)
                            for (y1, y2, x1, x2), *values in self.scene_labels(
                                scene, bar.update, area, rows)))
            finally:
                scene.close()
        except Exception as err:  # the others must hear of it, not wait for this band
            error = err
        if not part.agree(error is None):
            for leftover in paths.values():
                leftover.unlink(missing_ok=True)
            raise error or RuntimeError(f'another process failed on {path}; see its error')

    def _assembled_parts(self, scene, outputs: Dict[str, Path], world: int
                         ) -> Iterator[Tuple[Window, np.ndarray, np.ndarray]]:
        """The processes' bands read back in 256-row strips (then removed), in the form of
        :meth:`scene_labels`."""
        import rasterio
        bands = row_bands(scene.height, self.tile, self.overlap, world)
        for rank, (r0, r1) in enumerate(bands):
            if r1 <= r0:
                continue
            paths = self._part_paths(outputs, rank)
            try:
                with contextlib.ExitStack() as files:
                    labels_ds = files.enter_context(rasterio.open(paths['labels']))
                    confidence_ds = files.enter_context(rasterio.open(paths['confidence'])) \
                        if self._keeps_confidence else None
                    for start in range(r0, r1, 256):
                        stop = min(start + 256, r1)
                        rwindow = rasterio.windows.Window(0, start - r0, scene.width,
                                                          stop - start)
                        labels = labels_ds.read(1, window=rwindow)
                        confidence = np.full_like(labels, CONFIDENCE_NODATA, np.uint8) \
                            if confidence_ds is None else confidence_ds.read(1, window=rwindow)
                        yield (start, stop, 0, scene.width), labels, confidence
            finally:
                for leftover in paths.values():
                    leftover.unlink(missing_ok=True)

    def _predict_file(self, path: Path, outputs: Dict[str, Path], progress: bool,
                      overlay_side: int, area: Optional[SceneArea] = None,
                      part: Optional['ScenePart'] = None, record: Callable = lambda paths: None):
        """The outputs of one input; ``record`` is told of each file as soon as it is
        published, so a run killed half-way still knows which files are its own."""
        from tqdm import tqdm
        scene = RasterScene(path, self.bands)
        scores = None  # the confidence raster the polygons' figures are read from
        try:
            kind = raster_suffix(scene)
            written = dict(labels=outputs[f'labels_{kind}'], overlay=outputs['overlay'])
            outputs['json'].unlink(missing_ok=True)  # replaced: stale until rewritten
            writers = [LabelWriter(written['labels'], scene, self.palette, self.outputs.cog)]
            if self.outputs.confidence:
                written['confidence'] = scores = outputs[f'confidence_{kind}']
                writers.append(BandWriter(written['confidence'], scene, np.uint8,
                                          CONFIDENCE_NODATA, cog=self.outputs.cog,
                                          overview_resampling='average'))
            elif self.outputs.vector:  # kept only while the polygons are made
                scores = self._scratch(outputs, 'confidence.tif')
                writers.append(BandWriter(scores, scene, np.uint8, CONFIDENCE_NODATA,
                                          cog=False))
            count = len(tile_grid(scene.height, scene.width, self.tile, self.overlap))
            start = time.perf_counter()
            with tqdm(total=count, desc=path.name, unit='tile',
                      disable=not progress or part is not None) as bar:
                write_windows(writers, self._assembled_parts(scene, outputs, part.world)
                              if part is not None else
                              self.scene_labels(scene, bar.update, area))
            record(written.values())
            self._overlay(scene, written['labels'], outputs['overlay'], overlay_side)
            written['labels_style'] = outputs['labels_style']
            with atomic_path(outputs['labels_style']) as tmp:
                tmp.write_text(raster_style(self.class_names, self.palette))
            record(written.values())
            features = None
            if self.outputs.vector:
                features = self._polygons(written, outputs, scores, progress)
                record(written.values())
            summary = self._summary(path, scene, written, writers[0], count, features)
        finally:
            scene.close()
            if scores is not None and not self.outputs.confidence:
                scores.unlink(missing_ok=True)
        with atomic_path(outputs['json']) as tmp:
            tmp.write_text(json.dumps(summary, indent=2, allow_nan=False))
        record([outputs['json']])
        return dict(summary, seconds=round(time.perf_counter() - start, 3))

    def _polygons(self, written: Dict[str, Path], outputs: Dict[str, Path], scores: Path,
                  progress: bool) -> int:
        """The polygon layer and its QGIS style (also stored in a GeoPackage)."""
        style = vector_style(self.class_names, self.palette)
        count = vectorize_labels(written['labels'], outputs['vector'], self.class_names,
                                 self.outputs.vector, self.outputs.min_area,
                                 self.outputs.simplify, progress=progress,
                                 confidence_path=scores, style=style)
        for key in outputs:
            if key.startswith('vector_') and key != 'vector_style':
                written[key] = outputs[key]  # a Shapefile's companion files
        written['vector'] = outputs['vector']
        written['vector_style'] = outputs['vector_style']
        with atomic_path(outputs['vector_style']) as tmp:
            tmp.write_text(style)
        return count

    def _overlay(self, scene, label_path: Path, overlay_path: Path, side: int) -> None:
        factor = min(1.0, side / max(scene.height, scene.width))
        shape = (max(1, round(scene.height * factor)), max(1, round(scene.width * factor)))
        rgb = scene.read((0, scene.height, 0, scene.width), None if factor == 1 else shape)
        labels = read_labels_preview(label_path, shape)
        image = overlay_with_legend(rgb, labels, self.class_names, self.palette,
                                    title=self.model.METHOD + ('' if self.weights_source
                                                               else ' - RANDOM WEIGHTS'),
                                    nodata=self.nodata)
        with atomic_path(overlay_path) as tmp:
            image.save(tmp, format='PNG')

    def _summary(self, path, scene, written, label_writer, tiles, features) -> dict:
        counts, areas = label_writer.counts, label_writer.areas
        total = int(counts.sum())
        area = label_writer.pixel_area
        class_areas = [None] * len(counts) if areas is None else \
            [round(float(a), 3) for a in areas]
        classes = [dict(name=name, synonyms=line, pixels=int(n),
                        fraction=round(int(n) / total, 6) if total else 0.0, area_m2=a)
                   for name, line, n, a in zip(self.class_names, self.class_lines, counts,
                                               class_areas)]
        return dict(
            input=str(path), labels=written['labels'].name, overlay=written['overlay'].name,
            outputs={key: p.name for key, p in written.items()},
            width=scene.width, height=scene.height,
            crs=scene.crs.to_string() if scene.georeferenced else None,
            transform=list(scene.transform)[:6] if scene.georeferenced else None,
            bounds=list(scene.bounds()) if scene.georeferenced else None,
            pixel_area_m2=area, acquired=acquisition_time(scene.dataset),
            area_note=None if area is not None else
            'no projected CRS in metres: areas are given in pixels only' if areas is None else
            'geographic CRS: areas are geodesic, on the CRS\'s ellipsoid',
            bands=scene.bands, stretched=scene.limits is not None, tile=self.tile,
            overlap=self.overlap, scale=self.scale, tiles=tiles, polygons=features,
            method=self.model.METHOD, weights=self.weights_source or 'RANDOM',
            nodata_label=self.nodata,
            nodata_pixels=scene.width * scene.height - total, classes=classes,
            palette=self.palette.tolist(), settings=self.settings)
