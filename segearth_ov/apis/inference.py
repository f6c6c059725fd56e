"""``OpenVocabSegmenter``: SegEarth-OV on NumPy images and on image files of any size."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from ..fileio import atomic_path, stale_temporaries, writable_folder
from ..models.postprocess import threshold_to_background
from ..models.text import ClassQueries
from ..weights import clip_patch_size, resolve_clip, resolve_upsampler
from ..geometry import check_tiling, tile_grid
from ..visualize import class_palette, overlay_with_legend
from .blending import blended_probabilities
from .label_maps import LabelWriter, label_dtype, nodata_label, read_labels_preview
from .scenes import ArrayScene, RasterScene, raster_session

logger = logging.getLogger(__name__)

# a benchmark config's model settings that carry over to other classes (its prob_thd and
# bg_idx refer to the benchmark's own class list)
MODEL_OPTIONS_FROM_CONFIG = ('attention', 'attention_layers', 'cls_token_lambda', 'upsampler',
                             'logit_scale', 'slide_crop', 'slide_stride', 'window_batch_size',
                             'precision', 'clip')


def _model_options_from_config(config) -> dict:
    from mmengine.config import Config
    if not Path(config).is_file():
        raise FileNotFoundError(f'config {config} not found')
    model = Config.fromfile(str(config)).model
    return {key: model[key] for key in MODEL_OPTIONS_FROM_CONFIG if key in model}


class OpenVocabSegmenter:
    """SegEarth-OV for arrays and files.

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
        **model_options: any other ``SegEarthOV`` argument (``prob_thd``, ``attention``...).
    """

    def __init__(self, classes, config=None, clip: Optional[str] = None,
                 pretrained: Optional[str] = 'auto', upsampler: str = 'auto',
                 upsampler_checkpoint: Optional[str] = None, device: Optional[str] = None,
                 batch_size: int = 4, tile: int = 1024, overlap: int = 128, scale: float = 1.0,
                 bands: Optional[Sequence[int]] = None, **model_options):
        from ..models import SegEarthOV
        check_tiling(tile, overlap, scale, batch_size)  # before anything heavy is built
        if device == 'cuda' and not torch.cuda.is_available():
            raise ValueError('--device cuda: torch sees no CUDA device here (a CPU-only '
                             'machine, or a driver problem); use --device cpu')
        self.class_queries = ClassQueries.parse(classes)
        self.class_lines = list(self.class_queries.lines)
        self.class_names = list(self.class_queries.class_names)
        options = _model_options_from_config(config) if config else {}
        options.update(model_options)
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
        self.device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
        self.batch_size, self.tile, self.overlap, self.scale = batch_size, tile, overlap, scale
        self.bands = list(bands) if bands else None
        self.model = SegEarthOV(clip=clip_cfg, classes=self.class_queries, **options
                                ).to(self.device).eval()
        self.palette = class_palette(len(self.class_lines))
        self.nodata = nodata_label(self.num_classes)
        # what a finished output was computed with: a rerun with equal settings skips it
        self.settings = json.loads(json.dumps(dict(
            classes=self.class_lines, clip=clip_cfg['arch'], weights=self.weights_source,
            model=options, tile=tile, overlap=overlap, scale=scale, bands=self.bands),
            default=str))

    @property
    def num_classes(self) -> int:
        return len(self.class_lines)

    # ------------------------------------------------------------------ model on tiles
    def probabilities(self, tiles: np.ndarray) -> np.ndarray:
        """``[B, h, w, 3]`` uint8 RGB -> ``[B, C, h, w]`` float32 class probabilities."""
        inputs = [torch.from_numpy(np.ascontiguousarray(tile[..., ::-1])).permute(2, 0, 1)
                  for tile in tiles]  # the preprocessor takes BGR, as mmseg loads it
        batch = self.model.data_preprocessor(dict(inputs=inputs))['inputs'].to(self.device)
        samples = self.model.predict(batch)
        return np.stack([s.seg_logits.data.float().cpu().numpy() for s in samples])

    def labels_from_probabilities(self, probs: np.ndarray) -> np.ndarray:
        """``[C, h, w]`` -> ``[h, w]`` class indices (uint8, or uint16 beyond 255 classes),
        with the model's background threshold."""
        labels = threshold_to_background(torch.from_numpy(probs), self.model.prob_thd,
                                         self.model.bg_idx)
        return labels.numpy().astype(label_dtype(self.num_classes))

    def _window_labels(self, scene, window, probs: np.ndarray) -> np.ndarray:
        """Labels of one blended window, no-data pixels set to :attr:`nodata`."""
        labels = self.labels_from_probabilities(probs)
        labels[~scene.valid(window)] = self.nodata
        return labels

    # ------------------------------------------------------------------------- arrays
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Label map ``[H, W]`` of an image ``[H, W]`` or ``[H, W, C]`` (RGB order; other
        dtypes are stretched to 8 bit), tiled when larger than ``tile``. uint8 class
        indices (uint16 beyond 255 classes); NaN or infinite pixels get :attr:`nodata`."""
        scene = ArrayScene(image, self.bands)
        labels = np.zeros((scene.height, scene.width), label_dtype(self.num_classes))
        for window, probs in blended_probabilities(
                scene, self.probabilities, self.tile, self.overlap, self.scale,
                self.batch_size):
            y1, y2, x1, x2 = window
            labels[y1:y2, x1:x2] = self._window_labels(scene, window, probs)
        return labels

    # -------------------------------------------------------------------------- files
    @staticmethod
    def output_paths(out_dir, name: str) -> Dict[str, Path]:
        """Where the outputs of an input named ``name`` (a file name with its suffix, so
        ``t.png`` and ``t.tif`` do not collide) go: ``<name>.labels.tif`` (georeferenced
        inputs) or ``<name>.labels.png``, ``<name>.overlay.png`` and ``<name>.json``."""
        out_dir = Path(out_dir)
        return dict(labels_tif=out_dir / f'{name}.labels.tif',
                    labels_png=out_dir / f'{name}.labels.png',
                    overlay=out_dir / f'{name}.overlay.png', json=out_dir / f'{name}.json')

    def finished(self, out_dir, name: str) -> Optional[dict]:
        """The summary of a finished output computed with this segmenter's settings, or
        None when there is none (or only a killed run's leftovers). Raises
        ``FileExistsError`` for a finished output with other settings."""
        path = self.output_paths(out_dir, name)['json']
        try:
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if summary.get('settings') != self.settings:
            raise FileExistsError(f'{path} holds a result computed with other settings; pass '
                                  f'--overwrite (overwrite=True) to replace it, or choose '
                                  f'another output folder')
        outputs = [summary.get('labels'), summary.get('overlay')]
        return summary if all(p and Path(p).is_file() for p in outputs) else None

    def predict_file(self, path, out_dir, progress: bool = True, overlay_side: int = 2048,
                     name: Optional[str] = None, overwrite: bool = False) -> dict:
        """Segment one image file of any size into :meth:`output_paths` (``name`` defaults
        to the file's name): the label map (GeoTIFF with the input's georeferencing, a colour
        table and the no-data label, or PNG), an overlay (at most ``overlay_side`` pixels on
        the long side, with a legend) and the JSON summary of class areas, written last.

        A finished output with the same settings is returned as it is (``skipped`` set)
        unless ``overwrite``; one with other settings is refused. If the run fails, the
        outputs it started are removed. Returns the JSON summary.
        """
        path, out_dir = Path(path), Path(out_dir)
        name = name or path.name
        writable_folder(out_dir)
        if not overwrite:
            done = self.finished(out_dir, name)
            if done is not None:
                return dict(done, skipped=True)
        outputs = self.output_paths(out_dir, name)
        for output in outputs.values():
            for stale in stale_temporaries(output):  # a killed run's half-written files
                stale.unlink()
        try:
            with raster_session():
                return self._predict_file(path, outputs, progress, overlay_side)
        except BaseException:
            for key in ('labels_tif', 'labels_png', 'overlay'):
                outputs[key].unlink(missing_ok=True)
            raise

    def _predict_file(self, path: Path, outputs: Dict[str, Path], progress: bool,
                      overlay_side: int):
        from tqdm import tqdm
        scene = RasterScene(path, self.bands)
        try:
            label_path = outputs['labels_tif' if scene.georeferenced else 'labels_png']
            outputs['json'].unlink(missing_ok=True)  # replaced: stale until rewritten
            writer = LabelWriter(label_path, scene, self.palette)
            count = len(tile_grid(scene.height, scene.width, self.tile, self.overlap))
            start = time.perf_counter()
            with tqdm(total=count, desc=path.name, unit='tile', disable=not progress) as bar:
                try:
                    for window, probs in blended_probabilities(
                            scene, self.probabilities, self.tile, self.overlap, self.scale,
                            self.batch_size, bar.update):
                        writer.write(window, self._window_labels(scene, window, probs))
                    writer.close()
                except BaseException:
                    writer.abort()
                    raise
            seconds = time.perf_counter() - start
            self._overlay(scene, label_path, outputs['overlay'], overlay_side)
            summary = self._summary(path, scene, label_path, outputs['overlay'], writer.counts,
                                    count, seconds)
        finally:
            scene.close()
        with atomic_path(outputs['json']) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
        return summary

    def _overlay(self, scene, label_path: Path, overlay_path: Path, side: int) -> None:
        factor = min(1.0, side / max(scene.height, scene.width))
        shape = (max(1, round(scene.height * factor)), max(1, round(scene.width * factor)))
        rgb = scene.read((0, scene.height, 0, scene.width), None if factor == 1 else shape)
        labels = read_labels_preview(label_path, shape)
        image = overlay_with_legend(rgb, labels, self.class_names, self.palette,
                                    title='SegEarth-OV' + ('' if self.weights_source
                                                           else ' - RANDOM WEIGHTS'),
                                    nodata=self.nodata)
        with atomic_path(overlay_path) as tmp:
            image.save(tmp, format='PNG')

    def _summary(self, path, scene, label_path, overlay_path, counts, tiles, seconds) -> dict:
        total = int(counts.sum())
        area = scene.pixel_area_m2()
        classes = [dict(name=name, synonyms=line, pixels=int(n),
                        fraction=round(int(n) / total, 6) if total else 0.0,
                        area_m2=None if area is None else round(int(n) * area, 3))
                   for name, line, n in zip(self.class_names, self.class_lines, counts)]
        return dict(
            input=str(path), labels=str(label_path), overlay=str(overlay_path),
            width=scene.width, height=scene.height,
            crs=scene.crs.to_string() if scene.georeferenced else None,
            pixel_area_m2=area,
            area_note=None if area is not None else
            'no projected CRS in metres: areas are given in pixels only',
            bands=scene.bands, stretched=scene.limits is not None, tile=self.tile,
            overlap=self.overlap, scale=self.scale, tiles=tiles,
            seconds=round(seconds, 3), clip_weights=self.weights_source or 'RANDOM',
            nodata_label=self.nodata, nodata_pixels=scene.width * scene.height - total,
            classes=classes, settings=self.settings)
