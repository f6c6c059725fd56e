"""Sliding-window inference: the window grid, batched crops and logit stitching."""
from __future__ import annotations

from typing import Iterable, Iterator, List, Tuple

import torch
from torch import Tensor

from ..geometry import Window, window_grid

# (image index, window) of every crop of one window_fn call
WindowJobs = List[Tuple[int, Window]]


def window_batches(images: Tensor, crop: int, stride: int, batch_size: int = 8
                   ) -> Iterator[Tuple[WindowJobs, Tensor]]:
    """Crops of every window of every image, ``batch_size`` at a time: ``(jobs, crops
    [N, C, h, w])``; windows of all images of ``images`` ``[B, C, H, W]`` are batched together.
    ``crop <= 0`` gives one whole-image window."""
    b, _, h, w = images.shape
    windows = window_grid(h, w, crop, stride)
    jobs = [(index, win) for index in range(b) for win in windows]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        yield chunk, torch.stack([images[i, :, y1:y2, x1:x2] for i, (y1, y2, x1, x2) in chunk])


def stitch_windows(shape, batches: Iterable[Tuple[WindowJobs, Tensor]]) -> Tensor:
    """Average window logits ``[N, Q, h, w]`` over the windows covering each pixel:
    ``[B, Q, H, W]`` float32 for images of ``shape`` ``(B, C, H, W)``."""
    b, _, h, w = shape
    logits = count = None
    for chunk, out in batches:
        out = out.float()
        if logits is None:
            logits = out.new_zeros(b, out.shape[1], h, w)
            count = out.new_zeros(b, 1, h, w)
        for (i, (y1, y2, x1, x2)), window_logits in zip(chunk, out):
            logits[i, :, y1:y2, x1:x2] += window_logits
            count[i, :, y1:y2, x1:x2] += 1
    return logits / count

