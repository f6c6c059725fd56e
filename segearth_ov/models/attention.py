"""Attention variants of the modified last block, as pure functions.

Every function takes per-head projections ``q, k, v`` of shape ``[B, heads, N, hd]``
(``N = 1 + h * w`` tokens: [CLS] then the patch grid in row-major order) and returns the
attended values ``A @ v`` of the same shape. They differ only in the attention matrix ``A``
(``s = hd ** -0.5``):

=============  ============================================================
``SegEarth``   ``softmax(q q^T s) + softmax(k k^T s) + softmax(v v^T s)``
``SCLIP``      ``softmax(q q^T s) + softmax(k k^T s)``
``ClearCLIP``  ``softmax(q q^T s)``
``MaskCLIP``   identity (the values themselves)
``NACLIP``     ``softmax(k k^T s + G)``, ``G`` a Gaussian (std 1, in patch units) of the
               distance between two patches, 0 for pairs involving [CLS]
``vanilla``    ``softmax(q k^T s)``; in the segmentor ``vanilla`` keeps the whole original
               block (residual and MLP), i.e. plain CLIP
=============  ============================================================

``softmax(a b^T s) v`` is exactly ``scaled_dot_product_attention(a, b, v)``, so each term
runs through PyTorch's fused kernel and no ``N x N`` matrix is kept per term.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

ATTENTION_VARIANTS = ('SegEarth', 'SCLIP', 'ClearCLIP', 'MaskCLIP', 'NACLIP', 'vanilla')


def _sdpa(a: Tensor, b: Tensor, v: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    return F.scaled_dot_product_attention(a, b, v, attn_mask=bias)


def segearth_attention(q: Tensor, k: Tensor, v: Tensor, grid: Tuple[int, int]) -> Tensor:
    """q-q, k-k and v-v attention, summed (SegEarth-OV)."""
    return _sdpa(q, q, v) + _sdpa(k, k, v) + _sdpa(v, v, v)


def sclip_attention(q: Tensor, k: Tensor, v: Tensor, grid: Tuple[int, int]) -> Tensor:
    """q-q plus k-k attention (SCLIP)."""
    return _sdpa(q, q, v) + _sdpa(k, k, v)


def clearclip_attention(q: Tensor, k: Tensor, v: Tensor, grid: Tuple[int, int]) -> Tensor:
    """q-q attention (ClearCLIP)."""
    return _sdpa(q, q, v)


def maskclip_attention(q: Tensor, k: Tensor, v: Tensor, grid: Tuple[int, int]) -> Tensor:
    """The values alone (MaskCLIP)."""
    return v


def vanilla_attention(q: Tensor, k: Tensor, v: Tensor, grid: Tuple[int, int]) -> Tensor:
    """CLIP's own q-k attention."""
    return _sdpa(q, k, v)


def neighbourhood_bias(grid: Tuple[int, int], std: float = 1.0, *,
                       dtype: torch.dtype = torch.float32,
                       device: Optional[torch.device] = None) -> Tensor:
    """Gaussian neighbourhood term of NACLIP, ``[N, N]`` with ``N = 1 + gh * gw``.

    ``G[p, p'] = exp(-|pos(p) - pos(p')|^2 / (2 std^2))`` for two patches (positions in patch
    units), 0 in the [CLS] row and column.
    """
    gh, gw = grid
    ys, xs = torch.meshgrid(torch.arange(gh, device=device, dtype=dtype),
                            torch.arange(gw, device=device, dtype=dtype), indexing='ij')
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1)
    dist2 = (pos[:, None, :] - pos[None, :, :]).square().sum(-1)
    bias = torch.zeros(gh * gw + 1, gh * gw + 1, dtype=dtype, device=device)
    bias[1:, 1:] = torch.exp(-dist2 / (2 * std ** 2))
    return bias


def naclip_attention(q: Tensor, k: Tensor, v: Tensor, grid: Tuple[int, int]) -> Tensor:
    """k-k attention with a Gaussian neighbourhood bias (NACLIP)."""
    bias = neighbourhood_bias(grid, dtype=k.dtype, device=k.device)
    return _sdpa(k, k, v, bias)


_VARIANTS: Dict[str, Callable[..., Tensor]] = {
    'SegEarth': segearth_attention,
    'SCLIP': sclip_attention,
    'ClearCLIP': clearclip_attention,
    'MaskCLIP': maskclip_attention,
    'NACLIP': naclip_attention,
    'vanilla': vanilla_attention,
}


def get_attention(name: str) -> Callable[[Tensor, Tensor, Tensor, Tuple[int, int]], Tensor]:
    """The attention function called ``name``; a clear error for an unknown name."""
    try:
        return _VARIANTS[name]
    except KeyError:
        raise ValueError(f'unknown attention {name!r}; choose one of '
                         f'{", ".join(ATTENTION_VARIANTS)}') from None
