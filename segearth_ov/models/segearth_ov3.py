"""The SegEarthOV3 segmentor (mmseg ``BaseSegmentor``): training-free open-vocabulary
segmentation with SAM 3 (transformers' ``Sam3Model``), as published by SegEarth-OV3.

Call flow of :meth:`SegEarthOV3.predict`, per batch::

    views (sliding.py; whole image by default) -> 1008 x 1008 SAM 3 input (sam3_fusion.py)
    -> vision features once per view -> per prompt (every synonym, plain text, encoded once
    per model) the grounding outputs -> fused score map (sam3_fusion.py)
    -> views averaged -> synonym max, threshold (postprocess.py)
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..weights import SAM3_CHECKPOINT, build_sam3, describe_weights, no_weights
from .methods import MethodOption, register_method
from .open_vocab import OpenVocabSegmentor
from .postprocess import IdentityProbabilities
from .sam3_fusion import fuse_prompt_maps, resize_views
from .text import bpe_tokenizer

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


@register_method
class SegEarthOV3(OpenVocabSegmentor):
    """SegEarth-OV3: SAM 3's instance and semantic outputs fused per prompt.

    Args:
        checkpoint: SAM 3 weights (Meta's ``sam3.pt``, a transformers ``model.safetensors``
            or its folder), loaded strictly; None gives random weights (tests, smoke runs).
        sam3_config: overrides of transformers' ``Sam3Config`` (a shrunken test model).
        confidence_threshold: instance queries scoring above it enter the fused map.
        image_size: SAM 3's input side (views are resized to it, aspect not kept).
        view_batch_size: views per vision pass.
        prompt_batch_size: prompts decoded together per view.
        mask_chunk: kept instance masks resized at a time (bounds the fusion's memory).
        precision: ``auto`` (fp32 on CPU, bf16 on CUDA), ``fp32``, or on CUDA ``fp16`` /
            ``bf16`` (autocast).
        name_path, classes, prob_thd, bg_idx, slide_crop, slide_stride, data_preprocessor:
            as for every :class:`OpenVocabSegmentor`; every synonym is its own plain-text
            prompt, ``background`` included; pixels stay RGB 0..255 (no normalisation).
    """

    METHOD = 'SegEarth-OV3'
    CLI_NAME = 'segearth-ov3'
    SUMMARY = 'SAM 3 (needs requirements-sam3.txt and the gated sam3.pt)'
    WEIGHTS_ARGUMENT = 'checkpoint'
    TEXT_ENCODER = 'SAM 3'
    TEXT_CONTEXT = CONTEXT_LENGTH
    ALLOW_AUTO_PRECISION = True
    PIXEL_NORMALISATION = dict(mean=None, std=None)
    OPTIONS = (
        MethodOption('sam3_checkpoint', 'auto', 'SegEarth-OV3 weights: sam3.pt or a '
                     'transformers model.safetensors; default checkpoints/sam3.pt; '
                     'none = random'),
    )
    CONFIG_SETTINGS = ('checkpoint', 'sam3_config', 'confidence_threshold', 'slide_crop',
                       'slide_stride', 'image_size', 'view_batch_size', 'prompt_batch_size',
                       'mask_chunk', 'precision')
    WORKBOOK_COLUMNS = ('confidence_threshold',)

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
        super().__init__(name_path, classes, prob_thd, bg_idx, slide_crop, slide_stride,
                         view_batch_size, precision, data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg, pretrained=pretrained)
        for name, value in (('prompt_batch_size', prompt_batch_size),
                            ('mask_chunk', mask_chunk), ('image_size', image_size)):
            if value < 1:
                raise ValueError(f'{name} must be >= 1, got {value}')
        self.sam3 = build_sam3(checkpoint, sam3_config).requires_grad_(False)
        self.confidence_threshold = confidence_threshold
        self.image_size = image_size
        self.view_batch_size, self.prompt_batch_size = view_batch_size, prompt_batch_size
        self.mask_chunk = mask_chunk
        self._prompts: Optional[Tuple[Tensor, Tensor]] = None

    @property
    def probabilities(self) -> IdentityProbabilities:
        return IdentityProbabilities()

    @classmethod
    def build_for_predict(cls, classes, options: dict, settings: dict):
        checkpoint = options.get('sam3_checkpoint', 'auto')
        config_checkpoint = settings.pop('checkpoint', str(SAM3_CHECKPOINT))
        if checkpoint == 'auto':
            checkpoint = config_checkpoint
        checkpoint = None if no_weights(checkpoint) else str(checkpoint)
        source = describe_weights(checkpoint) if checkpoint else None
        return cls(checkpoint=checkpoint, classes=classes, **settings), 'SAM 3', source

    @classmethod
    def describe(cls, model: dict) -> Dict[str, object]:
        return {'backbone': 'SAM 3', 'weights': describe_weights(model.get('checkpoint')),
                'confidence_threshold': model.get('confidence_threshold')}

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

    def prepare_features(self, features):
        """The views' vision features, and a map per prompt text filled as prompts are
        scored (a prompt a later vocabulary shares is decoded once)."""
        return dict(features=features, maps={})

    def prepared_maps(self, prepared, prompts: Optional[Tensor] = None) -> Tensor:
        texts = self.class_queries.queries
        picked = range(len(texts)) if prompts is None else prompts.tolist()
        kept = prepared['maps']
        missing = {}  # prompt text -> a query index of it
        for i in picked:
            if texts[i] not in kept:
                missing.setdefault(texts[i], i)
        if missing:
            device = next(self.sam3.parameters()).device
            maps = self.features_maps(prepared['features'],
                                      torch.as_tensor(list(missing.values()), device=device))
            kept.update(zip(missing, maps.unbind(dim=1)))
        return torch.stack([kept[texts[i]] for i in picked], dim=1)

    def vocabulary_changed(self) -> None:
        self._prompts = None

    def features_maps(self, features, prompts: Optional[Tensor] = None) -> Tensor:
        """Fused score maps ``[N, P, h, w]`` of the queries ``prompts`` (indices; None: all)
        on the views of :meth:`window_features`."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        vision, size = features
        text, mask = self.prompt_embeddings
        if prompts is None:
            prompts = torch.arange(len(text), device=text.device)
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
