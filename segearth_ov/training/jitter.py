"""FeatUp's multi-view jitter: reflect-pad, maybe zoom, crop back to size, maybe flip.

The same parameters are applied to an image and to the features upsampled from the
un-jittered image, so the upsampler must be consistent across views.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Jitter:
    """One random zoom, crop and flip of a training image."""

    zoom: float   # >= 1
    top: int      # crop offset in the padded (and zoomed) image
    left: int
    flip: bool


def sample_jitter(height: int, width: int, max_pad: int, max_zoom: float,
                  rng: random.Random, flips: bool = True) -> Jitter:
    """Zoom in [1, max_zoom] half of the time, a crop anywhere in the padded (zoomed) view,
    a horizontal flip half of the time."""
    zoom = 1.0 + rng.random() * (max_zoom - 1.0) if rng.random() > 0.5 else 1.0
    top_range = int((height + 2 * max_pad) * zoom) - height
    left_range = int((width + 2 * max_pad) * zoom) - width
    return Jitter(zoom, rng.randint(0, top_range), rng.randint(0, left_range),
                  flips and rng.random() > 0.5)


def apply_jitter(x: Tensor, max_pad: int, jitter: Jitter) -> Tensor:
    """``[B, C, H, W]`` -> the jittered view ``[B, C, H, W]``."""
    h, w = x.shape[-2:]
    view = F.pad(x, [max_pad] * 4, mode='reflect')
    if jitter.zoom > 1.0:
        size = (int(view.shape[-2] * jitter.zoom), int(view.shape[-1] * jitter.zoom))
        view = F.interpolate(view, size, mode='bilinear', align_corners=False)
    view = view[..., jitter.top:jitter.top + h, jitter.left:jitter.left + w]
    return view.flip(-1) if jitter.flip else view
