"""Adaptive convolution, the op at the heart of the joint-bilateral upsampler.

``out[b, c, y, x] = sum_{i, j < d} k[b, y, x, i, j] * in[b, c, y + i, x + j]``

``input`` ``[B, C, H + d - 1, W + d - 1]``, ``filters`` ``[B, H, W, d, d]`` (one kernel per
output pixel, shared by all channels, no flip), ``out`` ``[B, C, H, W]``.

:func:`adaptive_conv` is the only entry point. It picks a backend once per device type:
``cuda`` (compiled CUDA kernel) for CUDA tensors, ``cpu`` (compiled C++/OpenMP kernel) for
CPU tensors, and ``torch`` (pure PyTorch) when the compiled one is unavailable; it logs the
choice once. ``SEGEARTH_OV_JBU_BACKEND=cuda|cpu|torch`` forces one.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

logger = logging.getLogger('segearth_ov')

BACKENDS = ('cuda', 'cpu', 'torch')
ENV_VAR = 'SEGEARTH_OV_JBU_BACKEND'
_logged = set()


def check_inputs(input: Tensor, filters: Tensor) -> Tuple[int, int, int, int, int]:
    """Validate shapes, dtypes and devices; return ``(B, C, H, W, d)``."""
    if input.dim() != 4:
        raise ValueError(f'adaptive_conv: input must be [B, C, H+d-1, W+d-1], got rank '
                         f'{input.dim()} shape {tuple(input.shape)}')
    if filters.dim() != 5:
        raise ValueError(f'adaptive_conv: filters must be [B, H, W, d, d], got rank '
                         f'{filters.dim()} shape {tuple(filters.shape)}')
    b, c, hp, wp = input.shape
    fb, h, w, d, d2 = filters.shape
    if d != d2:
        raise ValueError(f'adaptive_conv: filters must be square, got {d}x{d2}')
    if d % 2 == 0:
        raise ValueError(f'adaptive_conv: kernel size d must be odd, got {d}')
    if fb != b:
        raise ValueError(f'adaptive_conv: batch mismatch, input has {b}, filters has {fb}')
    if (hp, wp) != (h + d - 1, w + d - 1):
        raise ValueError(f'adaptive_conv: input spatial size {hp}x{wp} must be filters size '
                         f'plus d-1 = {h + d - 1}x{w + d - 1} (filters {h}x{w}, d={d})')
    if input.device != filters.device:
        raise ValueError(f'adaptive_conv: input is on {input.device}, filters on {filters.device}')
    if input.dtype != filters.dtype:
        raise TypeError(f'adaptive_conv: input is {input.dtype}, filters {filters.dtype}')
    if not input.is_floating_point():
        raise TypeError(f'adaptive_conv: floating-point tensors needed, got {input.dtype}')
    return b, c, h, w, d


def _channel_chunk(c: int, h: int, w: int, budget: int = 1 << 26) -> int:
    return max(1, min(c, budget // max(1, h * w)))


def torch_forward(input: Tensor, filters: Tensor) -> Tensor:
    """Shifted multiply-add over the ``d^2`` offsets, in the filters' precision.

    Extra memory is one output-sized product per offset; no ``C * d^2 * H * W`` buffer.
    """
    b, c, h, w, d = check_inputs(input, filters)
    acc_dtype = torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype
    out = torch.zeros(b, c, h, w, dtype=acc_dtype, device=input.device)
    k = filters.to(acc_dtype).permute(0, 3, 4, 1, 2).unsqueeze(3)  # [B, d, d, 1, H, W]
    step = _channel_chunk(c, h, w)
    for c0 in range(0, c, step):
        chunk = input[:, c0:c0 + step].to(acc_dtype)
        acc = out[:, c0:c0 + step]
        for i in range(d):
            for j in range(d):
                acc.addcmul_(chunk[:, :, i:i + h, j:j + w], k[:, i, j])
    return out.to(input.dtype)


def torch_backward(grad_out: Tensor, input: Tensor, filters: Tensor) -> Tuple[Tensor, Tensor]:
    """Both gradients by the same shifted multiply-add (SPEC §3 formulas)."""
    b, c, h, w, d = check_inputs(input, filters)
    acc_dtype = torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype
    go = grad_out.to(acc_dtype)
    k = filters.to(acc_dtype)
    grad_in = torch.zeros(input.shape, dtype=acc_dtype, device=input.device)
    grad_k = torch.zeros(filters.shape, dtype=acc_dtype, device=input.device)
    step = _channel_chunk(c, h, w)
    for i in range(d):
        for j in range(d):
            kij = k[:, :, :, i, j].unsqueeze(1)  # [B, 1, H, W]
            for c0 in range(0, c, step):
                g = go[:, c0:c0 + step]
                grad_in[:, c0:c0 + step, i:i + h, j:j + w].addcmul_(g, kij)
                patch = input[:, c0:c0 + step, i:i + h, j:j + w].to(acc_dtype)
                grad_k[:, :, :, i, j] += (g * patch).sum(1)
    return grad_in.to(input.dtype), grad_k.to(filters.dtype)


def _native(backend: str):
    from .build import load_extension
    return load_extension(backend)


def adaptive_conv_backend(device_type: str = 'cpu') -> str:
    """Name of the backend that :func:`adaptive_conv` uses for tensors on ``device_type``."""
    forced = os.environ.get(ENV_VAR, '').strip().lower()
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f'{ENV_VAR}={forced!r}; choose one of {", ".join(BACKENDS)}')
        if forced != 'torch' and forced != device_type:
            raise ValueError(f'{ENV_VAR}={forced} cannot run {device_type} tensors')
        return forced
    native = 'cuda' if device_type == 'cuda' else 'cpu' if device_type == 'cpu' else None
    if native is not None and _native(native) is not None:
        return native
    return 'torch'


def _log_once(backend: str, device_type: str) -> None:
    if (backend, device_type) not in _logged:
        _logged.add((backend, device_type))
        logger.info('adaptive_conv: %s tensors use the %s backend', device_type, backend)


class _AdaptiveConv(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input: Tensor, filters: Tensor, backend: str) -> Tensor:
        ctx.backend = backend
        ctx.save_for_backward(input, filters)
        if backend == 'torch':
            return torch_forward(input, filters)
        return _native(backend).forward(input.contiguous(), filters.contiguous())

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        input, filters = ctx.saved_tensors
        if ctx.backend == 'torch':
            grad_in, grad_k = torch_backward(grad_out, input, filters)
        else:
            ext = _native(ctx.backend)
            grad_in, grad_k = ext.backward(grad_out.contiguous(), input.contiguous(),
                                           filters.contiguous())
        return (grad_in if ctx.needs_input_grad[0] else None,
                grad_k if ctx.needs_input_grad[1] else None, None)


def adaptive_conv(input: Tensor, filters: Tensor, backend: Optional[str] = None) -> Tensor:
    """Adaptive convolution (see the module docstring); differentiable in both arguments.

    Args:
        input: ``[B, C, H + d - 1, W + d - 1]``, the (already padded) source.
        filters: ``[B, H, W, d, d]``, one ``d x d`` kernel per output pixel; d odd.
        backend: ``'cuda' | 'cpu' | 'torch'``; ``None`` chooses automatically.

    Returns:
        ``[B, C, H, W]`` in the input's dtype (half types accumulate in float32).
    """
    check_inputs(input, filters)
    device_type = input.device.type
    if backend is None:
        backend = adaptive_conv_backend(device_type)
    elif backend not in BACKENDS:
        raise ValueError(f'unknown adaptive_conv backend {backend!r}; choose one of '
                         f'{", ".join(BACKENDS)}')
    elif backend != 'torch' and _native(backend) is None:
        raise RuntimeError(f'the {backend} adaptive_conv extension is not available; see the '
                           f'log for the build error, or use backend="torch"')
    _log_once(backend, device_type)
    return _AdaptiveConv.apply(input, filters, backend)
