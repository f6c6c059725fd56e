"""Arithmetic precision of a segmentor's forward pass, by name: fp32, or fp16 / bf16
autocast on CUDA; ``auto`` (allowed where a segmentor says so) is bf16 on CUDA and fp32
elsewhere."""
from __future__ import annotations

import contextlib

import torch

PRECISIONS = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}


def check_precision(precision: str, allow_auto: bool = False) -> None:
    """Refuse a precision name that is not one of :data:`PRECISIONS` (or ``auto``)."""
    allowed = (('auto',) if allow_auto else ()) + tuple(PRECISIONS)
    if precision not in allowed:
        raise ValueError(f'precision must be one of {", ".join(allowed)}, got {precision!r}')


def autocast(precision: str, device: torch.device):
    """The context to run a forward pass in: none for fp32, CUDA autocast for fp16 / bf16
    (an error naming the device elsewhere)."""
    if precision == 'auto':
        precision = 'bf16' if device.type == 'cuda' else 'fp32'
    if precision == 'fp32':
        return contextlib.nullcontext()
    if device.type != 'cuda':
        raise ValueError(f'precision={precision} needs CUDA; use fp32 on {device.type}')
    return torch.autocast('cuda', dtype=PRECISIONS[precision])
