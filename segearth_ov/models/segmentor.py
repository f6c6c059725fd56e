"""The SegEarthOV segmentor: SegEarth-OV as an :class:`OpenVocabSegmentor`.

Call flow of :meth:`SegEarthOV.predict`, per batch::

    windows (sliding.py) -> dense CLIP features (dense_clip.py) -> cosine logits against the
    query embeddings (text.py) of the upsampled features (upsamplers.py, computed without
    building them) -> global bias (global_bias.py)
    -> stitch windows -> resize to the original size -> softmax, synonym max, threshold
    (postprocess.py)
"""
from __future__ import annotations

import argparse
import hashlib
import logging
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..weights import (build_clip, clip_patch_size, describe_weights, resolve_clip,
                       resolve_upsampler, weights_identity)
from .dense_clip import DenseCLIP, crop_padding, pad_to_multiple
from .global_bias import alleviate_global_bias
from .methods import MethodOption, register_method
from .open_vocab import OpenVocabSegmentor
from .postprocess import SoftmaxProbabilities
from .shared_kernels import SharedKernels
from .text import cached_query_embeddings, openai_imagenet_templates, parse_prompt_templates
from .text_free import TextFree, text_free_logits
from .upsamplers import KernelsOf, build_upsampler

logger = logging.getLogger(__name__)


class WindowFeatures(NamedTuple):
    """The text-free outputs of a batch of windows: the [CLS] features ``[N, D]``, the
    patch features ``[N, D, h, w]``, the padded crops ``[N, 3, H, W]`` (the upsampler's
    guidance), their padding, and where the windows' upsampler kernels come from (None:
    from the crops)."""
    cls: Tensor
    patches: Tensor
    padded: Tensor
    pad: Tuple[int, int, int, int]
    kernels: Optional[KernelsOf] = None


def _templates_argument(text: str) -> List[str]:
    """``--prompt-templates``: :func:`parse_prompt_templates`, its error as argparse shows
    it in full (a plain ``ValueError`` would only be called an invalid value)."""
    try:
        return parse_prompt_templates(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _templates_description(templates) -> str:
    if templates is None:
        return 'openai-80'
    text = '\n'.join(str(t) for t in templates)
    return f'{len(templates)} sha256:{hashlib.sha256(text.encode()).hexdigest()[:12]}'


@register_method
class SegEarthOV(OpenVocabSegmentor):
    """Training-free open-vocabulary segmentation with a frozen, modified CLIP.

    Args:
        clip: ``dict(arch=open_clip name, pretrained=tag | checkpoint path | None,
            cache_dir=None)``. ``pretrained=None`` gives random weights (tests, smoke runs).
        attention: last-block attention, ``SegEarth | SCLIP | ClearCLIP | MaskCLIP | NACLIP |
            vanilla`` (``vanilla`` = unmodified CLIP block).
        attention_layers: how many last blocks get the modified attention; outputs summed
            (SegEarth-OV-2's ``ssa_last_n_layers``).
        cls_token_lambda: global-bias alleviation scale; 0 disables it.
        upsampler: ``dict(type='jbu_one' | 'jbu_stack', checkpoint=path)`` or None.
        logit_scale: temperature applied before the softmax over queries.
        window_batch_size: windows per forward pass (across all images of a batch).
        prompt_templates: list of ``'{}'`` strings or callables; None = CLIP's 80 ImageNet
            templates.
        text_cache: keep query embeddings on disk, keyed by the weights' content (see
            ``models/text.py``; ``SEGEARTH_OV_TEXT_CACHE`` moves or disables it).
        name_path, classes, prob_thd, bg_idx, slide_crop, slide_stride, precision,
            data_preprocessor: as for every :class:`OpenVocabSegmentor` (CLIP mean/std).
    """

    METHOD = 'SegEarth-OV'
    CLI_NAME = 'segearth-ov'
    SUMMARY = 'CLIP with SimFeatUp (the default)'
    WEIGHTS_ARGUMENT = 'clip=dict(pretrained'
    OPTIONS = (
        MethodOption('clip', None, 'open_clip architecture (default ViT-B-16)'),
        MethodOption('pretrained', 'auto', 'open_clip tag, checkpoint path, or none (random '
                     'weights); default: checkpoints/ViT-B-16.pt, then open_clip\'s cache'),
        MethodOption('upsampler', 'auto', 'auto: SimFeatUp when '
                     'checkpoints/xclip_jbu_one_million_aid.ckpt exists',
                     choices=('auto', 'jbu_one', 'jbu_stack', 'none')),
        MethodOption('upsampler_checkpoint', None, 'the upsampler\'s weights'),
        MethodOption('text_cache', True, 'do not read or write the text-embedding cache',
                     flag='--no-cache'),
        MethodOption('prompt_templates', None, 'prompt templates, {} where the class name '
                     'goes: "a satellite photo of {}.;an aerial view of {}" or a file with '
                     'one per line (default: CLIP\'s 80 ImageNet templates)',
                     type=_templates_argument),
    )
    CONFIG_SETTINGS = ('attention', 'attention_layers', 'cls_token_lambda', 'upsampler',
                       'logit_scale', 'slide_crop', 'slide_stride', 'window_batch_size',
                       'precision', 'clip')
    WORKBOOK_COLUMNS = ('attention', 'attention layers', 'upsampler', 'cls_token_lambda',
                        'logit_scale', 'templates')
    # mIoU (%) with CLIP ViT-B/16 as the paper reports them (Potsdam is cited as 47.1 or
    # 48.5; the first is used)
    PUBLISHED_MIOU = {
        'cfg_openearthmap': 40.3, 'cfg_loveda': 36.9, 'cfg_isaid': 21.7, 'cfg_uavid': 42.5,
        'cfg_udd5': 50.6, 'cfg_vdd': 45.3, 'cfg_potsdam': 47.1, 'cfg_vaihingen': 40.0,
        'cfg_whu_sat_ii': 28.4, 'cfg_massachusetts_road': 11.5,
    }

    def __init__(self,
                 clip: dict = dict(arch='ViT-B-16', pretrained='openai'),
                 attention: str = 'SegEarth',
                 attention_layers: int = 1,
                 cls_token_lambda: float = -0.3,
                 upsampler: Optional[dict] = None,
                 name_path: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None,
                 prob_thd: float = 0.0,
                 bg_idx: int = 0,
                 logit_scale: float = 50.0,
                 slide_crop: int = 224,
                 slide_stride: int = 112,
                 window_batch_size: int = 8,
                 prompt_templates: Optional[Sequence] = None,
                 precision: str = 'fp32',
                 text_cache: bool = True,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None):
        templates = (list(prompt_templates) if prompt_templates is not None
                     else openai_imagenet_templates())
        super().__init__(name_path, classes, prob_thd, bg_idx, slide_crop, slide_stride,
                         window_batch_size, precision, templates, data_preprocessor,
                         init_cfg, pretrained)
        self.prompt_templates = templates
        clip = dict(clip)
        arch, weights = clip.pop('arch', 'ViT-B-16'), clip.pop('pretrained', 'openai')
        clip_model, self.tokenizer = build_clip(arch, weights, **clip)
        self.weights_key = weights_identity(arch, weights, clip.get('quick_gelu')) \
            if text_cache else None
        self.clip = clip_model
        self.dense_clip = DenseCLIP(clip_model.visual, attention, attention_layers)
        self.upsampler = build_upsampler(upsampler, self.dense_clip.embed_dim,
                                         self.dense_clip.patch_size)
        if self.upsampler is not None:
            self.upsampler.requires_grad_(False)
        self.cls_token_lambda = cls_token_lambda
        self.logit_scale = logit_scale
        self.window_batch_size = window_batch_size
        self._query_embeddings: Optional[Tensor] = None

    @property
    def probabilities(self) -> SoftmaxProbabilities:
        return SoftmaxProbabilities(self.logit_scale)

    @classmethod
    def build_for_predict(cls, classes, options: dict, settings: dict):
        config_clip = dict(settings.pop('clip', None) or {})
        arch = options.get('clip') or config_clip.get('arch', 'ViT-B-16')
        pretrained = options.get('pretrained', 'auto')
        if pretrained == 'auto' and not options.get('clip') and \
                config_clip.get('pretrained') not in (None, 'openai'):
            pretrained = config_clip['pretrained']  # e.g. the SAR configs' AlignEarth file
        clip_cfg, source = resolve_clip(arch, pretrained)
        if source is None:
            logger.warning('CLIP has RANDOM weights: labels are a pipeline check, not a '
                           'segmentation')
        settings['upsampler'] = resolve_upsampler(
            options.get('upsampler', 'auto'), options.get('upsampler_checkpoint'),
            clip_patch_size(clip_cfg['arch']), settings.get('upsampler'))
        if not options.get('text_cache', True):
            settings['text_cache'] = False
        templates = options.get('prompt_templates')
        if templates is not None:
            settings['prompt_templates'] = parse_prompt_templates(templates) \
                if isinstance(templates, str) else list(templates)
        return cls(clip=clip_cfg, classes=classes, **settings), clip_cfg['arch'], source

    @classmethod
    def describe(cls, model: dict) -> Dict[str, object]:
        clip = model.get('clip') or {}
        backbone = clip.get('arch', 'ViT-B-16')
        if clip.get('quick_gelu') is not None:
            backbone = f'{backbone} quick_gelu={clip["quick_gelu"]}'
        upsampler = model.get('upsampler')
        if upsampler:
            upsampler = (f'{upsampler.get("type")} '
                         f'({describe_weights(upsampler.get("checkpoint"))})')
        return {'backbone': backbone, 'weights': describe_weights(clip.get('pretrained')),
                'attention': model.get('attention'),
                'attention layers': model.get('attention_layers'),
                'upsampler': upsampler or 'none',
                'cls_token_lambda': model.get('cls_token_lambda'),
                'logit_scale': model.get('logit_scale'),
                'templates': _templates_description(model.get('prompt_templates'))}

    # text side ---------------------------------------------------------------------------
    @property
    def query_embeddings(self) -> Tensor:
        """``[Q, D]`` L2-normalised query embeddings, encoded once and cached."""
        device = self.clip.logit_scale.device
        if self._query_embeddings is None:
            # a normal (not inference-mode) tensor, so it is usable in and out of predict()
            with torch.inference_mode(False):
                self._query_embeddings = cached_query_embeddings(
                    self.clip, self.tokenizer, self.class_queries.queries, self.prompt_templates,
                    self.weights_key, progress=True)
        if self._query_embeddings.device != device:
            self._query_embeddings = self._query_embeddings.to(device)
        return self._query_embeddings

    # image side --------------------------------------------------------------------------
    def window_features(self, crops: Tensor) -> WindowFeatures:
        """Dense CLIP outputs of normalised crops ``[N, 3, h, w]``: ``(cls [N, D], patches
        [N, D, h', w'], padded crops [N, 3, H', W'], padding)``; the text-independent part
        of :meth:`window_logits`."""
        padded, pad = pad_to_multiple(crops, self.dense_clip.patch_size)
        cls, patches = self.dense_clip(padded)
        return WindowFeatures(cls, patches, padded, pad)

    def view_features(self, inputs: Tensor) -> List[tuple]:
        """:meth:`window_features` of every batch of views; on images larger than a window
        along both sides, the upsampler's kernels shared by overlapping windows
        (``shared_kernels.py``)."""
        views = super().view_features(inputs)
        patch = self.dense_clip.patch_size
        if self.upsampler is None or self.slide_crop <= 0 or self.slide_crop % patch or \
                min(inputs.shape[-2:]) <= self.slide_crop:
            return views
        shared = SharedKernels(self.upsampler, inputs, (self.slide_crop // patch,) * 2,
                               (self.slide_crop,) * 2, self.slide_stride)
        return [(jobs, features._replace(kernels=shared.bind(jobs))) for jobs, features in views]

    def features_logits(self, features: WindowFeatures, text: Tensor) -> Tensor:
        """Logits ``[N, Q, h, w]`` of :meth:`window_features` against ``text`` ``[Q, D]``."""
        cls, patches, padded, pad, kernels = features
        if self.upsampler is not None:  # exact, without the D x H x W feature map
            # kernels only when shared: an upsampler's plain signature stays enough
            shared = {} if kernels is None else dict(kernels=kernels)
            logits = self.upsampler.cosine_logits(patches, padded, text, **shared)
        else:
            logits = text_free_logits(TextFree(F.normalize(patches.float(), dim=1)), text)
        return self._window_logits(logits, cls, text, padded.shape, pad)

    def _window_logits(self, logits: Tensor, cls: Tensor, text: Tensor, padded_shape,
                       pad) -> Tensor:
        """Cosine logits with the global bias, at the crops' size."""
        logits = alleviate_global_bias(logits, cls.float(), text, self.cls_token_lambda)
        if logits.shape[-2:] != padded_shape[-2:]:
            logits = F.interpolate(logits, padded_shape[-2:], mode='bilinear',
                                   align_corners=False)
        return crop_padding(logits, pad)

    def features_maps(self, features: WindowFeatures, queries: Optional[Tensor] = None
                      ) -> Tensor:
        """Logits ``[N, q, h, w]`` of the queries ``queries`` (indices; None: all)."""
        return self.features_logits(features, self._text(queries))

    def _text(self, queries: Optional[Tensor]) -> Tensor:
        text = self.query_embeddings
        return text if queries is None else text[queries]

    def prepare_features(self, features: WindowFeatures):
        """The text-free part of :meth:`features_logits`: the [CLS] features and the
        upsampler's :class:`~.upsamplers.TextFree` factors (or the normalised patch
        features), per window."""
        cls, patches, padded, pad, kernels = features
        factors = self.upsampler.text_free(patches, padded, kernels=kernels) \
            if self.upsampler is not None \
            else [TextFree(F.normalize(patches.float(), dim=1))]
        return cls, factors, padded.shape, pad

    def prepared_maps(self, prepared, queries: Optional[Tensor] = None) -> Tensor:
        cls, factors, padded_shape, pad = prepared
        text = self._text(queries)
        logits = torch.cat([text_free_logits(part, text) for part in factors])
        return self._window_logits(logits, cls, text, padded_shape, pad)

    def vocabulary_changed(self) -> None:
        self._query_embeddings = None
