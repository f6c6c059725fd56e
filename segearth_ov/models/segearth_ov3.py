"""The SegEarthOV3 segmentor (mmseg ``BaseSegmentor``): training-free open-vocabulary
segmentation with SAM 3 (transformers' ``Sam3Model``), as published by SegEarth-OV3.

Call flow of :meth:`SegEarthOV3.predict`, per batch::

    views (sliding.py; whole image by default) -> 1008 x 1008 SAM 3 input (sam3_fusion.py)
    -> vision features once per view -> per prompt (every synonym, plain text, encoded once
    per model) the grounding outputs -> fused score map (sam3_fusion.py)
    -> views averaged -> synonym max, threshold (postprocess.py)
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.structures import PixelData
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from ..weights import SAM3_CHECKPOINT, build_sam3
from .data_preprocessor import RSDataPreProcessor
from .postprocess import (bare_samples, class_chunks, queries_to_classes, running_top,
                          threshold_to_background, to_original_size)
from .precision import autocast, check_precision
from .sam3_fusion import fuse_prompt_maps, resize_views
from .sliding import stitch_windows, window_batches
from .text import bpe_tokenizer, check_query_lengths, segmentor_classes

CONTEXT_LENGTH = 32  # SAM 3's text context


def tokenize_prompts(prompts: Sequence[str]) -> Tuple[Tensor, Tensor]:
    """``(token ids [P, 32], attention mask [P, 32])`` with the CLIP BPE vocabulary that
    open_clip ships (no download): start token, tokens, end token, zero padding."""
    ids = bpe_tokenizer()(list(prompts), context_length=CONTEXT_LENGTH)
    return ids, (ids != 0).long()


# transformers marks a padding box with this label (Sam3Model.forward)
PADDING_BOX_LABEL = -10


def empty_geometry_prompt(batch: int, device) -> dict:
    """``Sam3Model`` keyword arguments for the empty geometric prompt of ``batch`` prompts:
    one padding box each (masked out). The published pipeline always passes Meta's empty
    geometric prompt, which the geometry encoder turns into one token (its CLS token,
    encoded against the image) appended after the text tokens. transformers runs the
    geometry encoder only when a box is given; a padding box is masked out of every
    attention and pooling, so this adds exactly that one valid token."""
    return dict(input_boxes=torch.zeros(batch, 1, 4, device=device),
                input_boxes_labels=torch.full((batch, 1), PADDING_BOX_LABEL, device=device))


def _repeat_views(vision, times: int):
    """SAM 3 vision outputs of ``N`` views repeated for ``times`` prompts each (view-major)."""
    def repeat(value):
        if isinstance(value, Tensor):
            return value.repeat_interleave(times, dim=0)
        if isinstance(value, tuple):
            return tuple(repeat(v) for v in value)
        return value
    return type(vision)(**{key: repeat(value) for key, value in vision.items()})


@MODELS.register_module()
class SegEarthOV3(BaseSegmentor):
    """SegEarth-OV3: SAM 3's instance and semantic outputs fused per prompt.

    Args:
        checkpoint: SAM 3 weights (Meta's ``sam3.pt``, a transformers ``model.safetensors``
            or its folder), loaded strictly; None gives random weights (tests, smoke runs).
        sam3_config: overrides of transformers' ``Sam3Config`` (a shrunken test model).
        name_path / classes: the class list (as for ``SegEarthOV``); every synonym is its own
            plain-text prompt, ``background`` included.
        confidence_threshold: instance queries scoring above it enter the fused map.
        prob_thd: pixels whose best class score is below it get ``bg_idx``.
        bg_idx: background class index for thresholded pixels.
        slide_crop, slide_stride: view size and step in image pixels; 0 = whole image.
        image_size: SAM 3's input side (views are resized to it, aspect not kept).
        view_batch_size: views per vision pass.
        prompt_batch_size: prompts decoded together per view.
        mask_chunk: kept instance masks resized at a time (bounds the fusion's memory).
        precision: ``auto`` (fp32 on CPU, bf16 on CUDA), ``fp32``, or on CUDA ``fp16`` /
            ``bf16`` (autocast).
        data_preprocessor: defaults to RGB 0..255 with the band rule, no normalisation.
        pretrained, train_cfg, test_cfg: accepted because mmseg's ``init_model`` sets them.
    """

    METHOD = 'SegEarth-OV3'

    def __init__(self,
                 checkpoint: Optional[str] = str(SAM3_CHECKPOINT),
                 sam3_config: Optional[dict] = None,
                 name_path: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None,
                 confidence_threshold: float = 0.5,
                 prob_thd: float = 0.0,
                 bg_idx: int = 0,
                 slide_crop: int = 0,
                 slide_stride: int = 0,
                 image_size: int = 1008,
                 view_batch_size: int = 1,
                 prompt_batch_size: int = 4,
                 mask_chunk: int = 16,
                 precision: str = 'auto',
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None):
        if pretrained is not None:
            raise ValueError('SegEarthOV3 takes its weights from checkpoint=...; '
                             f'model.pretrained={pretrained!r} is not used')
        if data_preprocessor is None:
            data_preprocessor = dict(type=RSDataPreProcessor, mean=None, std=None)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.class_queries = segmentor_classes(name_path, classes, bg_idx)
        check_query_lengths(self.class_queries.queries, CONTEXT_LENGTH, method='SAM 3')
        check_precision(precision, allow_auto=True)
        for name, value in (('view_batch_size', view_batch_size),
                            ('prompt_batch_size', prompt_batch_size),
                            ('mask_chunk', mask_chunk), ('image_size', image_size)):
            if value < 1:
                raise ValueError(f'{name} must be >= 1, got {value}')
        self.sam3 = build_sam3(checkpoint, sam3_config).requires_grad_(False)
        self.confidence_threshold = confidence_threshold
        self.prob_thd, self.bg_idx = prob_thd, bg_idx
        self.slide_crop, self.slide_stride = slide_crop, slide_stride
        self.image_size = image_size
        self.view_batch_size, self.prompt_batch_size = view_batch_size, prompt_batch_size
        self.mask_chunk, self.precision = mask_chunk, precision
        self._prompts: Optional[Tuple[Tensor, Tensor]] = None

    # text side ---------------------------------------------------------------------------
    @property
    def prompt_embeddings(self) -> Tuple[Tensor, Tensor]:
        """``(features [Q, 32, D], attention mask [Q, 32])`` of every query, encoded once
        and reused for every view and image."""
        device = next(self.sam3.parameters()).device
        if self._prompts is None or self._prompts[0].device != device:
            ids, mask = tokenize_prompts(self.class_queries.queries)
            ids, mask = ids.to(device), mask.to(device)
            with torch.inference_mode(False), torch.no_grad():
                features = torch.cat([
                    self.sam3.get_text_features(input_ids=ids[i:i + 64],
                                                attention_mask=mask[i:i + 64]).pooler_output
                    for i in range(0, len(ids), 64)])
            self._prompts = (features, mask)
        return self._prompts

    # image side --------------------------------------------------------------------------
    def window_features(self, crops: Tensor):
        """SAM 3 vision outputs of views ``[N, 3, h, w]`` (RGB 0..255), with the view size."""
        pixels = resize_views(crops, self.image_size)
        return self.sam3.get_vision_features(pixel_values=pixels), tuple(crops.shape[-2:])

    def features_logits(self, features, prompts: Tensor) -> Tensor:
        """Fused score maps ``[N, P, h, w]`` of the queries ``prompts`` (indices) on the
        views of :meth:`window_features`."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        vision, size = features
        text, mask = self.prompt_embeddings
        views = vision.fpn_hidden_states[0].shape[0]
        maps = []
        for start in range(0, len(prompts), self.prompt_batch_size):
            picked = prompts[start:start + self.prompt_batch_size]
            count = len(picked)
            out = self.sam3(vision_embeds=_repeat_views(vision, count),
                            text_embeds=BaseModelOutputWithPooling(
                                pooler_output=text[picked].repeat(views, 1, 1)),
                            attention_mask=mask[picked].repeat(views, 1),
                            **empty_geometry_prompt(views * count, text.device))
            fused = fuse_prompt_maps(out.pred_logits, out.presence_logits, out.pred_masks,
                                     out.semantic_seg, size, self.confidence_threshold,
                                     self.mask_chunk)
            maps.append(fused.view(views, count, *size))
        return torch.cat(maps, dim=1)

    def _views(self, inputs: Tensor):
        """``(jobs, vision features)`` of every view batch, computed once."""
        return [(jobs, self.window_features(crops)) for jobs, crops in window_batches(
            inputs, self.slide_crop, self.slide_stride, self.view_batch_size)]

    @staticmethod
    def _check_inputs(inputs: Tensor) -> None:
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise ValueError(f'SegEarthOV3 expects RGB batches [B, 3, H, W] (0..255), got '
                             f'{tuple(inputs.shape)}')

    def encode_decode(self, inputs: Tensor, batch_img_metas: Optional[List[dict]] = None
                      ) -> Tensor:
        """Query score maps ``[B, Q, H, W]``, averaged where views overlap."""
        self._check_inputs(inputs)
        prompts = torch.arange(len(self.class_queries.queries), device=inputs.device)
        with torch.inference_mode(), autocast(self.precision, inputs.device):
            views = self._views(inputs)
            return stitch_windows(inputs.shape, ((jobs, self.features_logits(f, prompts))
                                                 for jobs, f in views))

    def predict(self, inputs: Tensor, data_samples: Optional[List[SegDataSample]] = None
                ) -> List[SegDataSample]:
        """Segment a batch ``[B, 3, H, W]`` (RGB 0..255). Returns one ``SegDataSample`` per
        image with ``seg_logits`` (class scores ``[C, H, W]``, the max over each class's
        synonyms) and ``pred_sem_seg`` (argmax, ``bg_idx`` below ``prob_thd``)."""
        if self.training:
            self.eval()
        if data_samples is None:
            data_samples = bare_samples(inputs)
        return self.postprocess_result(self.encode_decode(inputs), data_samples)

    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: List[SegDataSample]) -> List[SegDataSample]:
        queries = self.class_queries
        with torch.inference_mode():
            for scores, sample in zip(seg_logits, data_samples):
                scores = to_original_size(scores, sample.metainfo)
                class_scores = queries_to_classes(scores, queries.query_to_class,
                                                  queries.num_classes)
                pred = threshold_to_background(class_scores, self.prob_thd, self.bg_idx)
                sample.set_data(dict(seg_logits=PixelData(data=class_scores),
                                     pred_sem_seg=PixelData(data=pred[None])))
        return data_samples

    def top_classes(self, inputs: Tensor, class_chunk: int = 64,
                    data_samples: Optional[List[SegDataSample]] = None
                    ) -> List[Tuple[Tensor, Tensor]]:
        """Per image ``(labels [H0, W0], best class score [H0, W0])``, computed
        ``class_chunk`` classes at a time (vision features once per view): the
        ``pred_sem_seg`` and ``seg_logits.max(0)`` of :meth:`predict` without a map of the
        whole vocabulary."""
        self._check_inputs(inputs)
        queries = self.class_queries
        owner = torch.as_tensor(queries.query_to_class, device=inputs.device)
        chunks = class_chunks(owner, queries.num_classes, class_chunk)
        metas = [s.metainfo for s in data_samples or bare_samples(inputs)]
        top = [None] * inputs.shape[0]  # (best class score, class)
        with torch.inference_mode(), autocast(self.precision, inputs.device):
            views = self._views(inputs)
            for first, last, picked in chunks:
                scores = stitch_windows(inputs.shape, ((jobs, self.features_logits(f, picked))
                                                       for jobs, f in views))
                for index, meta in enumerate(metas):
                    best, label = queries_to_classes(
                        to_original_size(scores[index], meta),
                        (owner[picked] - first).tolist(), last - first).max(dim=0)
                    top[index] = running_top(top[index], best, label + first)
        return [(torch.where(best < self.prob_thd, torch.full_like(label, self.bg_idx), label),
                 best) for best, label in top]

    def extract_feat(self, inputs: Tensor):
        """SAM 3 vision outputs of whole images (RGB 0..255)."""
        with torch.inference_mode():
            return self.window_features(inputs)[0]

    def _forward(self, inputs: Tensor, data_samples=None) -> Tensor:
        return self.encode_decode(inputs)

    def loss(self, inputs: Tensor, data_samples: List[SegDataSample]) -> dict:
        raise NotImplementedError('SegEarthOV3 is training-free: it has no loss to train')
