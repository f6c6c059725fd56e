"""Bicubic x2 upsampling, and a JBU propagation step: the adaptive convolution of the
padded x2 grid, ``bicubic_conv(source, filters) = adaptive_conv(bicubic_x2(source, pad=r),
filters)`` for ``d x d`` filters, ``r = (d - 1) / 2``.

Both the upsampling and the padding are fixed linear maps along each axis, so the ``d`` x2
rows an output row reads are weighted sums of ``E`` source rows (9 for d = 11):
:func:`fold_taps`. The CPU extension folds those weights into each pixel's filter and
convolves the source directly (``csrc/bicubic_conv_cpu.cpp``); other devices, dtypes,
gradients and the ``torch`` backend compose the two steps.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .adaptive_conv import _native, adaptive_conv, adaptive_conv_backend

NATIVE_SPANS = (7, 9)  # the E the CPU kernel is instantiated for (d = 7 and 11)


def upsample_matrix(size: int, device=None, dtype=torch.float32, pad: int = 0,
                    mode: str = 'reflect') -> Tensor:
    """``[2 size + 2 pad, size]``: bicubic x2 upsampling along one axis (align_corners
    False, borders clamped) as a matrix, read off ``F.interpolate`` applied to the unit
    vectors, followed by ``pad`` rows of reflect (or replicate) padding on each side."""
    eye = torch.eye(size, device=device, dtype=dtype).view(size, 1, size, 1)
    matrix = F.interpolate(eye, (2 * size, 1), mode='bicubic', align_corners=False)[:, 0, :, 0].T
    if pad:
        index = torch.arange(-pad, 2 * size + pad, device=device)
        last = 2 * size - 1
        if mode == 'reflect':
            index = torch.where(index < 0, -index, index)
            index = torch.where(index > last, 2 * last - index, index)
        else:
            index = index.clamp(0, last)
        matrix = matrix[index]
    return matrix


def padding_mode(height: int, width: int, pad: int) -> str:
    """How the upsampler pads a ``[height, width]`` grid by ``pad``: reflect, or replicate
    where the grid is no larger than the padding (tiny images, where reflection is
    undefined)."""
    return 'reflect' if min(height, width) > pad else 'replicate'


def bicubic_x2(x: Tensor, pad: int = 0) -> Tensor:
    """``F.interpolate(x, scale_factor=2, mode='bicubic')`` for ``[B, C, h, w]``, then padded
    by ``pad`` (:func:`padding_mode`), as two small matrix products (bicubic interpolation
    is separable, padding selects rows): several times faster on CPU."""
    h, w = x.shape[-2:]
    mode = padding_mode(2 * h, 2 * w, pad)
    rows = upsample_matrix(h, x.device, x.dtype, pad, mode)
    cols = upsample_matrix(w, x.device, x.dtype, pad, mode)
    return torch.matmul(rows, torch.matmul(x, cols.T))


class FoldedTaps(NamedTuple):
    """``taps`` ``[2 size, d, E]``: padded x2 row ``Y + i`` (output row ``Y``'s ``i``-th
    neighbour) is ``sum_e taps[Y, i, e] * source[Y // 2 + e - offset]``."""
    taps: Tensor
    offset: int


@functools.lru_cache(maxsize=64)
def fold_taps(size: int, radius: int, mode: str, device=None,
              dtype=torch.float64) -> FoldedTaps:
    """The x2 rows each output row reads, as weights on the source rows from ``Y // 2 -
    offset``: the smallest ``E`` and ``offset`` that hold every row's weights, borders
    included (where reflection and clamping gather them on fewer rows). Cached: every
    window of a scene asks for the same few; callers must not modify the result."""
    d = 2 * radius + 1
    matrix = upsample_matrix(size, device, dtype, radius, mode)  # [2 size + 2r, size]
    y = torch.arange(2 * size, device=device)
    neighbours = matrix[y[:, None] + torch.arange(d, device=device)]  # [2 size, d, size]
    used = (neighbours != 0).any(1)  # [2 size, size]
    source = torch.arange(size, device=device)
    first = torch.where(used, source, size).amin(1) - y // 2
    last = torch.where(used, source, -1).amax(1) - y // 2
    offset = int(-first.min())
    span = int(last.max()) + offset + 1
    columns = y[:, None] // 2 - offset + torch.arange(span, device=device)  # [2 size, E]
    inside = (columns >= 0) & (columns < size)
    taps = neighbours.gather(2, columns.clamp(0, size - 1)[:, None, :].expand(-1, d, -1))
    return FoldedTaps(taps * inside[:, None, :], offset)


def _native_fold(source: Tensor, filters: Tensor):
    """The CPU extension when it can run this step (else None)."""
    if source.device.type != 'cpu' or source.dtype not in (torch.float32, torch.float64):
        return None
    if torch.is_grad_enabled() and (source.requires_grad or filters.requires_grad):
        return None
    if adaptive_conv_backend('cpu') != 'cpu':
        return None
    return _native('cpu')


def bicubic_conv(source: Tensor, filters: Tensor) -> Tensor:
    """``adaptive_conv(bicubic_x2(source, pad=r), filters)``: ``source`` ``[B, C, h, w]``,
    ``filters`` ``[B, 2h, 2w, d, d]`` (``d = 2r + 1``, same dtype) -> ``[B, C, 2h, 2w]``.

    On CPU in float32 and float64 without gradients, the upsampling is folded into the
    filters (module docstring); the result equals the composition up to rounding."""
    b, c, h, w = source.shape
    if filters.dim() != 5 or tuple(filters.shape[:3]) != (b, 2 * h, 2 * w):
        raise ValueError(f'bicubic_conv: filters must be [B, 2h, 2w, d, d] = [{b}, {2 * h}, '
                         f'{2 * w}, d, d] for source {tuple(source.shape)}, got '
                         f'{tuple(filters.shape)}')
    radius = (filters.shape[-1] - 1) // 2
    native = _native_fold(source, filters)
    if native is not None:
        mode = padding_mode(2 * h, 2 * w, radius)
        rows = fold_taps(h, radius, mode, source.device, source.dtype)
        cols = fold_taps(w, radius, mode, source.device, source.dtype)
        span = rows.taps.shape[-1]
        if span in NATIVE_SPANS and cols.offset == rows.offset and cols.taps.shape[-1] == span:
            lanes = 32 // source.element_size()
            width = -(-w // lanes) * lanes + span - 1
            padded = F.pad(source, (rows.offset, width - w - rows.offset,
                                    rows.offset, span - 1 - rows.offset))
            return native.bicubic_conv(padded.contiguous(), filters.contiguous(),
                                       rows.taps.contiguous(), cols.taps.contiguous())
    return adaptive_conv(bicubic_x2(source, pad=radius), filters)
