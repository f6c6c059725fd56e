"""SegEarth-OV3's per-prompt score map from SAM 3's grounding outputs, and the view
preprocessing it is computed on.

For one prompt on one view, with ``presence = sigmoid(presence logit)`` and
``score_i = sigmoid(query logit_i) * presence`` for the decoder's queries::

    m = max(0, max_{i: score_i > threshold} sigmoid(up(mask_i)) * score_i)
    m = max(m, sigmoid(up(semantic)))
    m = m * presence

where ``up`` resizes the 288 x 288 logits bilinearly (``align_corners=False``) to the view
size *before* the sigmoid. Presence enters the instance branch twice, as published.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

SAM3_MEAN = 0.5
SAM3_STD = 0.5


def resize_views(crops: Tensor, size: int) -> Tensor:
    """Views ``[N, 3, h, w]`` (RGB, 0..255) -> SAM 3 input ``[N, 3, size, size]``: resized
    without keeping the aspect ratio (bilinear, antialiased, on uint8 as published: the
    result is rounded to whole grey levels), scaled to [0, 1] and normalised with mean and
    std 0.5. CPU uses torch's uint8 kernel; other devices resize in float and round (the
    two differ by at most one grey level on a few pixels)."""
    pixels = crops.round().clamp(0, 255)
    if pixels.device.type == 'cpu':
        resized = F.interpolate(pixels.to(torch.uint8), (size, size), mode='bilinear',
                                antialias=True, align_corners=False).float()
    else:
        resized = F.interpolate(pixels.float(), (size, size), mode='bilinear', antialias=True,
                                align_corners=False).round().clamp(0, 255)
    return (resized / 255 - SAM3_MEAN) / SAM3_STD


def fuse_prompt_maps(query_logits: Tensor, presence_logits: Tensor, mask_logits: Tensor,
                     semantic_logits: Tensor, size: Tuple[int, int],
                     confidence_threshold: float, chunk: int = 16) -> Tensor:
    """The score maps ``[B, H, W]`` of ``B`` (view, prompt) pairs (formula in the module
    docstring).

    Args:
        query_logits: ``[B, Q]`` query classification logits.
        presence_logits: ``[B, 1]``.
        mask_logits: ``[B, Q, h, w]`` instance mask logits.
        semantic_logits: ``[B, 1, h, w]`` semantic head logits.
        size: the view size ``(H, W)``.
        confidence_threshold: queries scoring above it are kept.
        chunk: kept masks resized at a time; the running max keeps memory at ``chunk``
            maps of the view, however many queries are kept.
    """
    query_logits, presence_logits = query_logits.float(), presence_logits.float()
    presence = presence_logits.sigmoid()[:, 0]
    scores = query_logits.sigmoid() * presence[:, None]
    fused = semantic_logits.new_zeros((query_logits.shape[0], *size), dtype=torch.float32)
    for b in range(query_logits.shape[0]):
        kept = (scores[b] > confidence_threshold).nonzero().squeeze(1)
        for start in range(0, kept.numel(), chunk):
            idx = kept[start:start + chunk]
            masks = F.interpolate(mask_logits[b, idx][None].float(), size, mode='bilinear',
                                  align_corners=False)[0]
            masks.sigmoid_().mul_(scores[b, idx, None, None])  # in place: one chunk in memory
            torch.maximum(fused[b], masks.amax(0), out=fused[b])
    semantic = F.interpolate(semantic_logits.float(), size, mode='bilinear',
                             align_corners=False)[:, 0].sigmoid()
    return torch.maximum(fused, semantic) * presence[:, None, None]
