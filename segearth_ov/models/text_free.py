"""What an upsampler computes before the text enters, and the cosine logits of that with any
text: the segmentor's cold path and a prepared image's new vocabulary both score through
:func:`text_free_logits`, so they give the same numbers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor


@dataclass
class TextFree:
    """An upsampler's output before the text: the normalised features ``features``
    ``[B, D, H, W]``, or (low rank) the propagated factor ``[B, r, H, W]`` with the
    features' norms ``[B, H, W]``, the basis ``[B, D, r]`` and the fixup shift ``[D]``
    (both float64)."""
    features: Tensor
    norm: Optional[Tensor] = None
    basis: Optional[Tensor] = None
    shift: Optional[Tensor] = None


def text_free_logits(factors: TextFree, text: Tensor) -> Tensor:
    """Cosine logits ``[B, Q, H, W]`` of an upsampler's ``text_free`` output with ``text``
    ``[Q, D]``."""
    if factors.norm is None:
        return torch.einsum('bdhw,qd->bqhw', factors.features, text.float())
    with torch.autocast(text.device.type, enabled=False):
        text64 = text.double()
        text_proj = torch.einsum('bdr,qd->brq', factors.basis, text64).float()
        text_shift = (text64 @ factors.shift).float()[:, None, None]
        dots = torch.einsum('brhw,brq->bqhw', factors.features, text_proj) + text_shift
        return dots / factors.norm[:, None]
