"""The SegEarthOV segmentor (mmseg ``BaseSegmentor``).

Call flow of :meth:`SegEarthOV.predict`, per batch::

    windows (sliding.py) -> dense CLIP features (dense_clip.py) -> cosine logits against the
    query embeddings (text.py) of the upsampled features (upsamplers.py, computed without
    building them) -> global bias (global_bias.py)
    -> stitch windows -> resize to the original size -> softmax, synonym max, threshold
    (postprocess.py)
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from ..weights import build_clip, weights_identity
from .data_preprocessor import RSDataPreProcessor
from .dense_clip import DenseCLIP, crop_padding, pad_to_multiple
from .global_bias import alleviate_global_bias
from .postprocess import (bare_samples, class_chunks, queries_to_classes, running_top,
                          threshold_to_background, to_original_size)
from .precision import autocast, check_precision
from .sliding import slide_logits, stitch_windows, window_batches
from .text import (cached_query_embeddings, check_query_lengths, openai_imagenet_templates,
                   segmentor_classes)
from .upsamplers import build_upsampler

CLIP_CONTEXT = 77  # tokens of CLIP's text encoder

# (cls [N, D], patches [N, D, h, w], padded crops [N, 3, H, W], padding) of a window batch
WindowFeatures = Tuple[Tensor, Tensor, Tensor, Tuple[int, int, int, int]]


@MODELS.register_module()
class SegEarthOV(BaseSegmentor):
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
        name_path: class-name file (one class per line, commas separate synonyms).
        classes: the same as lines, a ``"a,b;c"`` string or a parsed ``ClassQueries``,
            instead of ``name_path``.
        prob_thd: pixels whose top class probability is below this get ``bg_idx``.
        bg_idx: background class index for thresholded pixels.
        logit_scale: temperature applied before the softmax over queries.
        slide_crop, slide_stride: sliding-window size and step; ``slide_crop=0`` runs the
            whole image in one pass.
        window_batch_size: windows per forward pass (across all images of a batch).
        prompt_templates: list of ``'{}'`` strings or callables; None = CLIP's 80 ImageNet
            templates.
        precision: ``fp32`` (default) or, on CUDA only, ``fp16`` / ``bf16`` (autocast).
        text_cache: keep query embeddings on disk, keyed by the weights' content (see
            ``models/text.py``; ``SEGEARTH_OV_TEXT_CACHE`` moves or disables it).
        data_preprocessor: defaults to ``RSDataPreProcessor`` (CLIP mean/std, RGB, band rule).
        pretrained, train_cfg, test_cfg: accepted because mmseg's ``init_model`` sets them
            (to None); a training-free model has no use for them.
    """

    METHOD = 'SegEarth-OV'

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
        if pretrained is not None:
            raise ValueError('SegEarthOV takes its CLIP weights from clip=dict(pretrained=...); '
                             f'model.pretrained={pretrained!r} is not used')
        if data_preprocessor is None:
            data_preprocessor = dict(type=RSDataPreProcessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.class_queries = segmentor_classes(name_path, classes, bg_idx)
        self.prompt_templates = (list(prompt_templates) if prompt_templates is not None
                                 else openai_imagenet_templates())
        check_query_lengths(self.class_queries.queries, CLIP_CONTEXT, self.prompt_templates)
        check_precision(precision)
        if window_batch_size < 1:
            raise ValueError(f'window_batch_size must be >= 1, got {window_batch_size}')
        clip = dict(clip)
        arch, pretrained = clip.pop('arch', 'ViT-B-16'), clip.pop('pretrained', 'openai')
        clip_model, self.tokenizer = build_clip(arch, pretrained, **clip)
        self.weights_key = weights_identity(arch, pretrained, clip.get('quick_gelu')) \
            if text_cache else None
        self.clip = clip_model
        self.dense_clip = DenseCLIP(clip_model.visual, attention, attention_layers)
        self.upsampler = build_upsampler(upsampler, self.dense_clip.embed_dim,
                                         self.dense_clip.patch_size)
        if self.upsampler is not None:
            self.upsampler.requires_grad_(False)
        self.cls_token_lambda = cls_token_lambda
        self.prob_thd = prob_thd
        self.bg_idx = bg_idx
        self.logit_scale = logit_scale
        self.slide_crop = slide_crop
        self.slide_stride = slide_stride
        self.window_batch_size = window_batch_size
        self.precision = precision
        self._query_embeddings: Optional[Tensor] = None

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
        return cls, patches, padded, pad

    def features_logits(self, features: WindowFeatures, text: Tensor) -> Tensor:
        """Logits ``[N, Q, h, w]`` of :meth:`window_features` against ``text`` ``[Q, D]``."""
        cls, patches, padded, pad = features
        if self.upsampler is not None:  # exact, without the D x H x W feature map
            logits = self.upsampler.cosine_logits(patches, padded, text)
        else:
            logits = torch.einsum('ndhw,qd->nqhw', F.normalize(patches.float(), dim=1), text)
        logits = alleviate_global_bias(logits, cls.float(), text, self.cls_token_lambda)
        if logits.shape[-2:] != padded.shape[-2:]:
            logits = F.interpolate(logits, padded.shape[-2:], mode='bilinear', align_corners=False)
        return crop_padding(logits, pad)

    def window_logits(self, crops: Tensor) -> Tensor:
        """Query logits of normalised crops ``[N, 3, h, w]`` -> ``[N, Q, h, w]``."""
        return self.features_logits(self.window_features(crops), self.query_embeddings)

    @staticmethod
    def _check_inputs(inputs: Tensor) -> None:
        if inputs.dim() != 4 or inputs.shape[1] != 3:
            raise ValueError(f'SegEarthOV expects normalised RGB batches [B, 3, H, W], got '
                             f'{tuple(inputs.shape)}; the data preprocessor applies the band '
                             f'rule (1 band is replicated, more than 3 need bands=...)')

    def encode_decode(self, inputs: Tensor, batch_img_metas: Optional[List[dict]] = None) -> Tensor:
        """Stitched query logits ``[B, Q, H, W]`` at the size of ``inputs`` ``[B, 3, H, W]``."""
        self._check_inputs(inputs)
        with torch.inference_mode(), autocast(self.precision, inputs.device):
            return slide_logits(inputs, self.window_logits, self.slide_crop,
                                self.slide_stride, self.window_batch_size)

    def predict(self, inputs: Tensor, data_samples: Optional[List[SegDataSample]] = None
                ) -> List[SegDataSample]:
        """Segment a batch. ``inputs`` ``[B, 3, H, W]`` normalised.

        Returns one ``SegDataSample`` per image with ``seg_logits`` (class probabilities
        ``[C, H0, W0]``, after the synonym max) and ``pred_sem_seg`` (``[1, H0, W0]``), at the
        original size ``ori_shape``.
        """
        if self.training:
            self.eval()
        if data_samples is None:
            data_samples = bare_samples(inputs)
        logits = self.encode_decode(inputs, [s.metainfo for s in data_samples])
        return self.postprocess_result(logits, data_samples)

    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: List[SegDataSample]) -> List[SegDataSample]:
        """Resize query logits to ``ori_shape``, softmax over queries at ``logit_scale``,
        synonym max, argmax with the background threshold."""
        queries = self.class_queries
        with torch.inference_mode():
            for logits, sample in zip(seg_logits, data_samples):
                logits = to_original_size(logits, sample.metainfo)
                probs = (self.logit_scale * logits).softmax(dim=0)
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
        fit in memory. ``inputs`` ``[B, 3, H, W]`` normalised; returns per image ``(labels,
        probability)`` at ``ori_shape``: labels ``[H0, W0]`` int64 with the background
        threshold and probability ``[H0, W0]`` float32, :meth:`predict`'s ``pred_sem_seg``
        and ``seg_logits.max(0)``.

        CLIP runs once per window; each chunk re-runs the upsampler and the scoring. The
        softmax over all queries is kept as a running log-sum-exp, and the classes as a
        running max / argmax of the scaled synonym-max logit, since
        ``max_q softmax(s)_q = exp(max_q s_q - logsumexp(s))``.
        """
        self._check_inputs(inputs)
        if self.training:
            self.eval()
        queries = self.class_queries
        owner = torch.as_tensor(queries.query_to_class, device=inputs.device)
        chunks = class_chunks(owner, queries.num_classes, class_chunk)
        metas = [s.metainfo for s in data_samples or bare_samples(inputs)]
        text = self.query_embeddings
        top = [None] * inputs.shape[0]  # (best scaled logit, class)
        lse = [None] * inputs.shape[0]  # log-sum-exp of every query's scaled logit
        with torch.inference_mode(), autocast(self.precision, inputs.device):
            features = [(jobs, self.window_features(crops)) for jobs, crops in window_batches(
                inputs, self.slide_crop, self.slide_stride, self.window_batch_size)]
            for first, last, picked in chunks:
                logits = stitch_windows(inputs.shape, (
                    (jobs, self.features_logits(f, text[picked])) for jobs, f in features))
                for index, meta in enumerate(metas):
                    scaled = to_original_size(logits[index], meta).mul_(self.logit_scale)
                    chunk_lse = scaled.logsumexp(dim=0)
                    lse[index] = chunk_lse if lse[index] is None else \
                        torch.logaddexp(lse[index], chunk_lse)
                    if len(picked) > last - first:  # synonyms: their max per class first
                        scaled = queries_to_classes(scaled, (owner[picked] - first).tolist(),
                                                    last - first)
                    best, label = scaled.max(dim=0)
                    top[index] = running_top(top[index], best, label + first)
        results = []
        for (best, label), image_lse in zip(top, lse):
            prob = (best - image_lse).exp()
            results.append((torch.where(prob < self.prob_thd,
                                        torch.full_like(label, self.bg_idx), label), prob))
        return results

    def extract_feat(self, inputs: Tensor):
        """Dense features of whole images: ``(cls [B, D], patches [B, D, h, w])``."""
        padded, _ = pad_to_multiple(inputs, self.dense_clip.patch_size)
        with torch.inference_mode():
            return self.dense_clip(padded)

    def _forward(self, inputs: Tensor, data_samples=None) -> Tensor:
        return self.encode_decode(inputs)

    def loss(self, inputs: Tensor, data_samples: List[SegDataSample]) -> dict:
        raise NotImplementedError('SegEarthOV is training-free: it has no loss to train')
