"""The base of every open-vocabulary segmentor (mmseg ``BaseSegmentor``).

As mmseg's ``BaseSegmentor`` owns ``predict`` while a subclass owns ``encode_decode``, this
class owns what every method does the same way: the class list, precision, input checks,
the windows, ``predict``, ``postprocess_result`` and the chunked :meth:`top_classes`. A
method supplies three things::

    window_features(crops [N, 3, h, w]) -> features   # the text-independent part
    features_maps(features, queries [q]) -> [N, q, h, w]   # per-query maps of the views
    probabilities                          # maps -> probabilities (postprocess.py)

and declares what the upper layers need (its command-line name, its user options, how it
builds itself for ``segearth-ov predict``, how a results row describes it); the method
table (``methods.py``) collects them.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.structures import PixelData
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.structures import SegDataSample
from torch import Tensor

from .data_preprocessor import RSDataPreProcessor
from .methods import MethodOption
from .postprocess import (bare_samples, class_chunks, queries_to_classes, running_top,
                          threshold_to_background, to_original_size)
from .precision import autocast, check_precision
from .sliding import stitch_windows, window_batches
from .text import check_query_lengths, segmentor_classes


@dataclass
class PreparedViews:
    """A batch prepared by :meth:`OpenVocabSegmentor.prepare`: its shape ``(B, 3, H, W)``
    and ``(jobs, prepared features)`` of every batch of views."""
    shape: Tuple[int, ...]
    views: List[tuple]

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes (every tensor reached)."""
        return tensor_bytes(self.views)


def tensor_bytes(value) -> int:
    """The bytes of every tensor in nested tuples, lists, dicts and dataclasses."""
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    if is_dataclass(value):
        return sum(tensor_bytes(getattr(value, f.name)) for f in fields(value))
    return 0


class OpenVocabSegmentor(BaseSegmentor):
    """Shared arguments of every method (each subclass documents its own as well):

    Args:
        name_path: class-name file (one class per line, commas separate synonyms).
        classes: the same as lines, a ``"a,b;c"`` string or a parsed ``ClassQueries``,
            instead of ``name_path``.
        prob_thd: pixels whose best class probability is below this get ``bg_idx``.
        bg_idx: background class index for thresholded pixels.
        slide_crop, slide_stride: view size and step in image pixels; 0 = whole image.
        window_batch: views per forward pass (across all images of a batch).
        precision: ``fp32``, or on CUDA ``fp16`` / ``bf16`` (autocast); ``auto`` where the
            method allows it.
        data_preprocessor: defaults to :class:`RSDataPreProcessor` with the method's
            :attr:`PIXEL_NORMALISATION`.
        pretrained, train_cfg, test_cfg: accepted because mmseg's ``init_model`` sets them
            (to None); a training-free model has no use for them.
    """

    METHOD = ''  # name in summaries, overlays and the workbook
    CLI_NAME = ''  # --method
    SUMMARY = ''  # one line for --help
    WEIGHTS_ARGUMENT = ''  # the argument that names the weights, for a clear error
    TEXT_ENCODER = 'CLIP'  # whose text encoder, for a too-long class name
    TEXT_CONTEXT = 77  # its tokens, prompt template included
    ALLOW_AUTO_PRECISION = False
    PIXEL_NORMALISATION: Dict[str, object] = {}  # mean/std overrides of the preprocessor
    OPTIONS: Tuple[MethodOption, ...] = ()  # what a user chooses (weights, backbone)
    CONFIG_SETTINGS: Tuple[str, ...] = ()  # model settings a config lends to a class list
    WORKBOOK_COLUMNS: Tuple[str, ...] = ()  # results columns of :meth:`describe`
    PUBLISHED_MIOU: Dict[str, float] = {}  # the paper's mIoU per benchmark config

    def __init__(self, name_path=None, classes=None, prob_thd: float = 0.0, bg_idx: int = 0,
                 slide_crop: int = 0, slide_stride: int = 0, window_batch: int = 1,
                 precision: str = 'fp32', templates: Sequence = ('{}',),
                 data_preprocessor: Optional[dict] = None, init_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None):
        if pretrained is not None:
            raise ValueError(f'{type(self).__name__} takes its weights from '
                             f'{self.WEIGHTS_ARGUMENT}=...; model.pretrained={pretrained!r} '
                             f'is not used')
        if data_preprocessor is None:
            data_preprocessor = dict(type=RSDataPreProcessor, **self.PIXEL_NORMALISATION)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.class_queries = segmentor_classes(name_path, classes, bg_idx)
        self.text_templates = list(templates)
        check_query_lengths(self.class_queries.queries, self.TEXT_CONTEXT, templates,
                            method=self.TEXT_ENCODER)
        check_precision(precision, allow_auto=self.ALLOW_AUTO_PRECISION)
        if window_batch < 1:
            raise ValueError(f'the views per pass must be >= 1, got {window_batch}')
        self.prob_thd, self.bg_idx = prob_thd, bg_idx
        self.slide_crop, self.slide_stride = slide_crop, slide_stride
        self.window_batch, self.precision = window_batch, precision

    # what a method supplies --------------------------------------------------------------
    def window_features(self, crops: Tensor):
        """The text-independent computation on views ``[N, 3, h, w]``."""
        raise NotImplementedError

    def features_maps(self, features, queries: Optional[Tensor] = None) -> Tensor:
        """Per-query maps ``[N, q, h, w]`` of the views of :meth:`window_features`, for the
        query indices ``queries`` ``[q]`` (None: every query)."""
        raise NotImplementedError

    def prepare_features(self, features):
        """What of :meth:`window_features` a new vocabulary can reuse, beyond the features
        themselves (e.g. an upsampler's text-free factors); by default the features."""
        return features

    def prepared_maps(self, prepared, queries: Optional[Tensor] = None) -> Tensor:
        """:meth:`features_maps` of :meth:`prepare_features` output: the same numbers."""
        return self.features_maps(prepared, queries)

    def vocabulary_changed(self) -> None:
        """Drop what was computed from the previous class list (its text embeddings)."""

    @property
    def probabilities(self):
        """Maps to probabilities: ``rule(maps [Q, H, W]) -> [Q, H, W]`` and
        ``rule.running()`` for chunks (see ``postprocess.py``)."""
        raise NotImplementedError

    @classmethod
    def build_for_predict(cls, classes, options: dict, settings: dict
                          ) -> Tuple['OpenVocabSegmentor', str, Optional[str]]:
        """``(model, backbone, weights source or None for random)`` for
        ``segearth-ov predict``: ``options`` are this method's :attr:`OPTIONS` as the user
        gave them, ``settings`` the model arguments (a config's :attr:`CONFIG_SETTINGS` and
        the caller's)."""
        raise NotImplementedError

    @classmethod
    def describe(cls, model: dict) -> Dict[str, object]:
        """``backbone``, ``weights`` and the :attr:`WORKBOOK_COLUMNS` of a config's model
        settings (the class defaults filled in), for a results row."""
        raise NotImplementedError

    # what every method does the same way --------------------------------------------------
    def _check_inputs(self, inputs: Tensor) -> None:
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise ValueError(f'{type(self).__name__} expects RGB batches [B, 3, H, W] from its '
                             f'data preprocessor, got {tuple(inputs.shape)}; the preprocessor '
                             f'applies the band rule (1 band is replicated, more than 3 need '
                             f'bands=...)')

    def view_features(self, inputs: Tensor) -> List[tuple]:
        """``(jobs, features)`` of every batch of views of ``inputs`` ``[B, 3, H, W]``."""
        return [(jobs, self.window_features(crops)) for jobs, crops in window_batches(
            inputs, self.slide_crop, self.slide_stride, self.window_batch)]

    def stitched_maps(self, shape, views: List[tuple], queries: Optional[Tensor] = None
                      ) -> Tensor:
        """Query maps ``[B, q, H, W]`` of :meth:`view_features`, averaged where views
        overlap."""
        return stitch_windows(shape, ((jobs, self.features_maps(features, queries))
                                      for jobs, features in views))

    def window_logits(self, crops: Tensor) -> Tensor:
        """Every query's maps of views ``[N, 3, h, w]`` -> ``[N, Q, h, w]``."""
        return self.features_maps(self.window_features(crops))

    def encode_decode(self, inputs: Tensor, batch_img_metas: Optional[List[dict]] = None
                      ) -> Tensor:
        """Stitched query maps ``[B, Q, H, W]`` at the size of ``inputs`` ``[B, 3, H, W]``."""
        self._check_inputs(inputs)
        with torch.inference_mode(), autocast(self.precision, inputs.device):
            return self.stitched_maps(inputs.shape, self.view_features(inputs))

    def predict(self, inputs: Tensor, data_samples: Optional[List[SegDataSample]] = None
                ) -> List[SegDataSample]:
        """Segment a batch ``[B, 3, H, W]`` (preprocessed). Returns one ``SegDataSample``
        per image with ``seg_logits`` (class probabilities ``[C, H0, W0]``, the max over
        each class's synonyms) and ``pred_sem_seg`` (``[1, H0, W0]``), at ``ori_shape``."""
        if self.training:
            self.eval()
        if data_samples is None:
            data_samples = bare_samples(inputs.shape)
        maps = self.encode_decode(inputs, [s.metainfo for s in data_samples])
        return self.postprocess_result(maps, data_samples)

    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: List[SegDataSample]) -> List[SegDataSample]:
        """Query maps to ``ori_shape``, probabilities, synonym max, argmax with the
        background threshold."""
        queries = self.class_queries
        with torch.inference_mode():
            for maps, sample in zip(seg_logits, data_samples):
                probs = self.probabilities(to_original_size(maps, sample.metainfo))
                class_probs = queries_to_classes(probs, queries.query_to_class,
                                                 queries.num_classes)
                pred = threshold_to_background(class_probs, self.prob_thd, self.bg_idx)
                sample.set_data(dict(seg_logits=PixelData(data=class_probs),
                                     pred_sem_seg=PixelData(data=pred[None])))
        return data_samples

    def top_classes(self, inputs: Tensor, class_chunk: int = 64,
                    data_samples: Optional[List[SegDataSample]] = None
                    ) -> List[Tuple[Tensor, Tensor]]:
        """The labels and the winning class's probability of a batch, computed
        ``class_chunk`` classes at a time, for vocabularies whose ``[Q, H, W]`` map would not
        fit in memory. ``inputs`` ``[B, 3, H, W]``; returns per image ``(labels [H0, W0]
        int64 with the background threshold, probability [H0, W0])``: :meth:`predict`'s
        ``pred_sem_seg`` and ``seg_logits.max(0)``.

        :meth:`window_features` runs once per view; each chunk re-runs
        :meth:`features_maps` only, and the probabilities come from the method's running
        rule.
        """
        self._check_inputs(inputs)
        if self.training:
            self.eval()
        queries = self.class_queries
        owner = torch.as_tensor(queries.query_to_class, device=inputs.device)
        metas = [s.metainfo for s in data_samples or bare_samples(inputs.shape)]
        top = [None] * len(metas)  # (best score, class)
        rules = [self.probabilities.running() for _ in metas]
        with torch.inference_mode(), autocast(self.precision, inputs.device):
            views = self.view_features(inputs)
            for first, last, picked in class_chunks(owner, queries.num_classes, class_chunk):
                maps = self.stitched_maps(inputs.shape, views, picked)
                for index, meta in enumerate(metas):
                    scores = rules[index].scores(to_original_size(maps[index], meta))
                    best, label = queries_to_classes(
                        scores, (owner[picked] - first).tolist(), last - first).max(dim=0)
                    top[index] = running_top(top[index], best, label + first)
        results = []
        for (best, label), rule in zip(top, rules):
            prob = rule.probability(best)
            results.append((torch.where(prob < self.prob_thd,
                                        torch.full_like(label, self.bg_idx), label), prob))
        return results

    # a vocabulary tried on views computed once -------------------------------------------
    def set_vocabulary(self, classes, prob_thd: Optional[float] = None,
                       bg_idx: Optional[int] = None) -> None:
        """Segment with another class list (anything ``ClassQueries.parse`` takes) from now
        on, as if the model had been built with it; ``prob_thd`` and ``bg_idx`` too when
        given."""
        bg_idx = self.bg_idx if bg_idx is None else bg_idx
        queries = segmentor_classes(None, classes, bg_idx)
        check_query_lengths(queries.queries, self.TEXT_CONTEXT, self.text_templates,
                            method=self.TEXT_ENCODER)
        changed = (queries.queries, queries.query_to_class) != (
            self.class_queries.queries, self.class_queries.query_to_class)
        self.class_queries, self.bg_idx = queries, bg_idx
        if prob_thd is not None:
            self.prob_thd = prob_thd
        if changed:
            self.vocabulary_changed()

    def prepare(self, inputs: Tensor) -> 'PreparedViews':
        """The text-free computation on a batch ``[B, 3, H, W]`` (preprocessed), kept:
        :meth:`segment_prepared` then segments it with any vocabulary."""
        self._check_inputs(inputs)
        if self.training:
            self.eval()
        with torch.inference_mode(), autocast(self.precision, inputs.device):
            return PreparedViews(tuple(inputs.shape), [
                (jobs, self.prepare_features(features))
                for jobs, features in self.view_features(inputs)])

    def segment_prepared(self, prepared: 'PreparedViews',
                         data_samples: Optional[List[SegDataSample]] = None
                         ) -> List[SegDataSample]:
        """:meth:`predict` of the batch :meth:`prepare` saw, with the current vocabulary,
        threshold and background index: the same numbers, without the image side."""
        if data_samples is None:
            data_samples = bare_samples(prepared.shape)
        device = next(iter(self.parameters())).device
        with torch.inference_mode(), autocast(self.precision, device):
            maps = stitch_windows(prepared.shape, ((jobs, self.prepared_maps(features))
                                                   for jobs, features in prepared.views))
        return self.postprocess_result(maps, data_samples)

    def extract_feat(self, inputs: Tensor):
        """:meth:`window_features` of whole images."""
        with torch.inference_mode():
            return self.window_features(inputs)

    def _forward(self, inputs: Tensor, data_samples=None) -> Tensor:
        return self.encode_decode(inputs)

    def loss(self, inputs: Tensor, data_samples: List[SegDataSample]) -> dict:
        raise NotImplementedError(f'{type(self).__name__} is training-free: it has no loss '
                                  f'to train')
