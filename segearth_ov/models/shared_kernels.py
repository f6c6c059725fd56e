"""The upsampler's JBU kernels of overlapping sliding windows, computed once per image.

A JBU kernel at a pixel depends on the guidance pooled to the step's grid within the
kernel's radius, nothing else. Where a window's pooling blocks fall on the image's own
blocks (its offset a multiple of the block) and the pixel is at least the radius away from
every window edge inside the image, the window's kernel equals the kernel computed on the
whole image; the strips along inner edges, where the window reflects its own border, are
recomputed from the window's padded guidance. With 224-pixel windows every 112 pixels each
pixel is in up to four windows, so the large steps cost about a quarter as much.

The image's kernels are computed in bands of rows as windows ask for them, and bands above
the window asked for are dropped (windows come in row order), so what is held stays a few
bands, not the image. Steps whose grid is small next to the radius (the strips would be
most of the window), windows with another block offset, padded windows, and tiny grids are
computed per window, as the upsampler does alone.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..geometry import Window
from .sliding import WindowJobs
from .upsamplers import JBU, KernelsOf, pad_neighbourhood

STRIP_COLUMNS = 8  # the CPU kernels' float32 vector width


class StepBands:
    """One JBU step's kernels over a whole image grid, in bands of ``band`` rows.

    ``guidance`` ``[B, 3, H, W]`` is pooled in ``block x block`` blocks (the image's
    ``H // block`` full rows of blocks); :meth:`window` copies out a window's kernels.
    """

    def __init__(self, jbu: JBU, guidance: Tensor, block: int, band: int):
        h, w = guidance.shape[-2] // block, guidance.shape[-1] // block
        pooled = F.adaptive_avg_pool2d(guidance[..., :h * block, :w * block], (h, w))
        self.jbu, self.block, self.band = jbu, block, band
        self.shape = (h, w)
        self.padded = pad_neighbourhood(pooled, jbu.radius)
        self.bands: Dict[Tuple[int, int], Tensor] = {}

    def window(self, image: int, top: int, left: int, size: Tuple[int, int]) -> Tensor:
        """A fresh ``[h, w, d, d]`` copy of the kernels of grid rows ``[top, top + h)`` and
        columns ``[left, left + w)`` of image ``image``."""
        (h, w), d = size, self.jbu.diameter
        first, last = top // self.band, (top + h - 1) // self.band
        for key in [k for k in self.bands if k[0] != image or k[1] < first]:
            del self.bands[key]  # windows come in row order: nothing above is asked again
        out = self.padded.new_empty(h, w, d, d)
        for index in range(first, last + 1):
            start = index * self.band
            if (image, index) not in self.bands:
                stop = min(start + self.band, self.shape[0])
                self.bands[(image, index)] = self.jbu.padded_kernel(
                    self.padded[image:image + 1, :, start:stop + 2 * self.jbu.radius])[0]
            band = self.bands[(image, index)]
            y1, y2 = max(top, start), min(top + h, start + band.shape[0])
            out[y1 - top:y2 - top] = band[y1 - start:y2 - start, left:left + w]
        return out


class SharedKernels:
    """Every window's step kernels (``upsampler.step_kernels``) for the sliding windows of
    images ``guidance`` ``[B, 3, H, W]`` (the preprocessed images the windows are cut
    from), sharing what overlapping windows have in common.

    Args:
        upsampler: a JBU upsampler in eval mode (``steps()``).
        guidance: the images.
        source_size: the patch grid ``(h, w)`` of a full window.
        window_size: a full window's ``(H, W)`` in pixels.
        stride: the windows' step in pixels (bands are this tall).
    """

    def __init__(self, upsampler, guidance: Tensor, source_size: Tuple[int, int],
                 window_size: Tuple[int, int], stride: int):
        self.upsampler, self.guidance = upsampler, guidance
        self.source_size, self.window_size = tuple(source_size), tuple(window_size)
        self.steps: List[Optional[StepBands]] = []
        (h, w), (height, width) = self.source_size, self.window_size
        for step in upsampler.steps():
            h, w = 2 * h, 2 * w
            block = height // h
            shared = (height == block * h and width == block * w and min(h, w) >= 16 *
                      step.radius and stride % block == 0)
            self.steps.append(StepBands(step, guidance, block, stride // block)
                              if shared else None)

    def window(self, image: int, window: Window) -> List[Tensor]:
        """The step kernels ``[1, H', W', d, d]`` of one window ``(y1, y2, x1, x2)``."""
        y1, y2, x1, x2 = window
        crop = self.guidance[image:image + 1, :, y1:y2, x1:x2]
        if (y2 - y1, x2 - x1) != self.window_size:
            return self.upsampler.step_kernels(self.source_size, crop)
        kernels, (h, w) = [], self.source_size
        for step, bands in zip(self.upsampler.steps(), self.steps):
            h, w = 2 * h, 2 * w
            if bands is None or y1 % bands.block or x1 % bands.block:
                kernels.append(step.guidance_kernel(crop, (h, w)))
            else:
                kernels.append(self._shared(step, bands, image, y1 // bands.block,
                                            x1 // bands.block, (h, w), crop)[None])
        return kernels

    @staticmethod
    def _shared(step: JBU, bands: StepBands, image: int, top: int, left: int, size,
                crop: Tensor) -> Tensor:
        h, w = size
        r = step.radius
        kernel = bands.window(image, top, left, size)
        # strips along the edges inside the image: the window reflects its own border there
        inner = (top > 0, top + h < bands.shape[0], left > 0, left + w < bands.shape[1])
        if any(inner):
            padded = pad_neighbourhood(F.adaptive_avg_pool2d(crop, size), r)
            if inner[0]:
                kernel[:r] = step.padded_kernel(padded[:, :, :3 * r])[0]
            if inner[1]:
                kernel[h - r:] = step.padded_kernel(padded[:, :, h - r:])[0]
            # columns are computed STRIP_COLUMNS at least (and the extra ones dropped): a
            # narrower band would run the native local correlation's scalar tail
            c = min(max(r, STRIP_COLUMNS), w)
            if inner[2]:
                kernel[:, :r] = step.padded_kernel(padded[:, :, :, :c + 2 * r])[0, :, :r]
            if inner[3]:
                kernel[:, w - r:] = step.padded_kernel(padded[:, :, :, w - c:])[0, :, c - r:]
        return kernel

    def bind(self, jobs: WindowJobs) -> KernelsOf:
        """The kernels of windows ``[start, stop)`` of a batch of ``jobs``."""
        def kernels_of(start: int, stop: int) -> List[Tensor]:
            per_window = [self.window(image, window) for image, window in jobs[start:stop]]
            if len(per_window) == 1:
                return per_window[0]
            return [torch.cat(step) for step in zip(*per_window)]
        return kernels_of
