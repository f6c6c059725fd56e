"""Adaptive convolution and local correlation, the two ops of the joint-bilateral upsampler.

``out[b, c, y, x] = sum_{i, j < d} k[b, y, x, i, j] * in[b, c, y + i, x + j]``

``input`` ``[B, C, H + d - 1, W + d - 1]``, ``filters`` ``[B, H, W, d, d]`` (one kernel per
output pixel, shared by all channels, no flip), ``out`` ``[B, C, H, W]``.

:func:`local_correlation` (the JBU's neighbourhood affinity) is the adaptive convolution's
filter gradient and runs on the same kernels.

:func:`adaptive_conv` and :func:`local_correlation` are the entry points. They pick a
backend once per device type: ``cuda`` (compiled CUDA kernels) for CUDA tensors, ``cpu``
(compiled C++/OpenMP kernels) for CPU tensors, and ``torch`` (pure PyTorch) when the
compiled one is unavailable; the choice is logged once. ``SEGEARTH_OV_JBU_BACKEND=cuda|cpu|torch``
forces one.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

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


def _acc_dtype(t: Tensor) -> torch.dtype:
    return torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype


def _channel_chunk(c: int, h: int, w: int, budget: int = 1 << 26) -> int:
    return max(1, min(c, budget // max(1, h * w)))


def torch_forward(input: Tensor, filters: Tensor) -> Tensor:
    """Shifted multiply-add over the ``d^2`` offsets, accumulated in place (half types in
    float32): memory of the order of the output, never a ``C * d^2 * H * W`` buffer."""
    b, c, h, w, d = check_inputs(input, filters)
    acc_dtype = _acc_dtype(input)
    out = torch.zeros(b, c, h, w, dtype=acc_dtype, device=input.device)
    # [B, d, d, 1, H, W] with contiguous planes: a strided plane makes every addcmul_ a gather
    k = filters.to(acc_dtype).permute(0, 3, 4, 1, 2).contiguous().unsqueeze(3)
    step = _channel_chunk(c, h, w)
    for c0 in range(0, c, step):
        chunk = input[:, c0:c0 + step].to(acc_dtype)
        acc = out[:, c0:c0 + step]
        for i in range(d):
            for j in range(d):
                acc.addcmul_(chunk[:, :, i:i + h, j:j + w], k[:, i, j])
    return out.to(input.dtype)


def check_correlation_inputs(input: Tensor, query: Tensor) -> int:
    """Validate ``input [B, C, H+d-1, W+d-1]`` against ``query [B, C, H, W]``; return d."""
    if input.dim() != 4 or query.dim() != 4:
        raise ValueError(f'local_correlation: input and query must be rank 4, got '
                         f'{tuple(input.shape)} and {tuple(query.shape)}')
    d = input.shape[2] - query.shape[2] + 1
    if (input.shape[:2] != query.shape[:2] or d < 1 or d % 2 == 0
            or input.shape[3] - query.shape[3] + 1 != d):
        raise ValueError(f'local_correlation: input must be [B, C, H+d-1, W+d-1] with d odd for '
                         f'query [B, C, H, W] = {tuple(query.shape)}, got {tuple(input.shape)}')
    if input.device != query.device:
        raise ValueError(f'local_correlation: input is on {input.device}, query on {query.device}')
    if input.dtype != query.dtype:
        raise TypeError(f'local_correlation: input is {input.dtype}, query {query.dtype}')
    return d


def torch_grad_input(grad_out: Tensor, filters: Tensor) -> Tensor:
    """``grad_in[b,c,y+i,x+j] += grad_out[b,c,y,x] * k[b,y,x,i,j]`` by shifted adds."""
    b, c, h, w = grad_out.shape
    d = filters.shape[-1]
    acc = _acc_dtype(grad_out)
    grad_in = torch.zeros(b, c, h + d - 1, w + d - 1, dtype=acc, device=grad_out.device)
    k = filters.to(acc).permute(0, 3, 4, 1, 2).contiguous()  # [B, d, d, H, W]
    step = _channel_chunk(c, h, w)
    for i in range(d):
        for j in range(d):
            kij = k[:, i, j].unsqueeze(1)
            for c0 in range(0, c, step):
                grad_in[:, c0:c0 + step, i:i + h, j:j + w].addcmul_(
                    grad_out[:, c0:c0 + step].to(acc), kij)
    return grad_in.to(grad_out.dtype)


def torch_grad_filters(grad_out: Tensor, input: Tensor) -> Tensor:
    """``[B, H, W, d, d] = sum_c grad_out[b,c,y,x] * input[b,c,y+i,x+j]`` by shifted products."""
    b, c, h, w = grad_out.shape
    d = input.shape[2] - h + 1
    acc = _acc_dtype(input)
    out = torch.zeros(b, d, d, h, w, dtype=acc, device=input.device)  # contiguous planes
    step = _channel_chunk(c, h, w)
    for c0 in range(0, c, step):
        g = grad_out[:, c0:c0 + step].to(acc)
        chunk = input[:, c0:c0 + step].to(acc)
        for i in range(d):
            for j in range(d):
                out[:, i, j] += (chunk[:, :, i:i + h, j:j + w] * g).sum(1)
    return out.permute(0, 3, 4, 1, 2).contiguous().to(input.dtype)


class _TorchKernels:
    """The pure-PyTorch backend, with the compiled modules' function names."""
    forward = staticmethod(torch_forward)
    grad_input = staticmethod(torch_grad_input)
    grad_filters = staticmethod(torch_grad_filters)


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


def _kernels(backend: str):
    return _TorchKernels if backend == 'torch' else _native(backend)


class _AdaptiveConv(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input: Tensor, filters: Tensor, backend: str) -> Tensor:
        input, filters = input.contiguous(), filters.contiguous()
        ctx.backend = backend
        ctx.save_for_backward(input, filters)
        return _kernels(backend).forward(input, filters)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        input, filters = ctx.saved_tensors
        kernels, grad_out = _kernels(ctx.backend), grad_out.contiguous()
        grad_in = kernels.grad_input(grad_out, filters) if ctx.needs_input_grad[0] else None
        grad_k = kernels.grad_filters(grad_out, input) if ctx.needs_input_grad[1] else None
        return grad_in, grad_k, None


class _LocalCorrelation(torch.autograd.Function):
    """``corr[b,y,x,i,j] = sum_c query[b,c,y,x] * input[b,c,y+i,x+j]``: the adaptive
    convolution's filter gradient, so its own gradients are the other two kernels."""

    @staticmethod
    def forward(ctx, input: Tensor, query: Tensor, backend: str) -> Tensor:
        input, query = input.contiguous(), query.contiguous()
        ctx.backend = backend
        ctx.save_for_backward(input, query)
        return _kernels(backend).grad_filters(query, input)

    @staticmethod
    def backward(ctx, grad_corr: Tensor):
        input, query = ctx.saved_tensors
        kernels, grad_corr = _kernels(ctx.backend), grad_corr.contiguous()
        grad_in = kernels.grad_input(query, grad_corr) if ctx.needs_input_grad[0] else None
        grad_q = kernels.forward(input, grad_corr) if ctx.needs_input_grad[1] else None
        return grad_in, grad_q, None


def _resolve_backend(backend: Optional[str], device_type: str) -> str:
    if backend is None:
        backend = adaptive_conv_backend(device_type)
    elif backend not in BACKENDS:
        raise ValueError(f'unknown adaptive_conv backend {backend!r}; choose one of '
                         f'{", ".join(BACKENDS)}')
    elif backend != 'torch' and _native(backend) is None:
        raise RuntimeError(f'the {backend} adaptive_conv extension is not available; see the '
                           f'log for the build error, or use backend="torch"')
    _log_once(backend, device_type)
    return backend


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
    return _AdaptiveConv.apply(input, filters, _resolve_backend(backend, input.device.type))


def local_correlation(input: Tensor, query: Tensor, backend: Optional[str] = None) -> Tensor:
    """Dot product of each query vector with its ``d x d`` neighbourhood; differentiable.

    Args:
        input: ``[B, C, H + d - 1, W + d - 1]``, the (already padded) keys.
        query: ``[B, C, H, W]``.
        backend: as for :func:`adaptive_conv` (the same compiled kernels).

    Returns:
        ``[B, H, W, d, d]`` with ``out[b,y,x,i,j] = sum_c query[b,c,y,x] * input[b,c,y+i,x+j]``.
    """
    check_correlation_inputs(input, query)
    if not input.is_floating_point():
        raise TypeError(f'local_correlation: floating-point tensors needed, got {input.dtype}')
    return _LocalCorrelation.apply(input, query, _resolve_backend(backend, input.device.type))
