"""FeatUp's learned attention downsampler: high-res features back to the patch grid."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gaussian_blur(x: Tensor, size: int = 5, sigma: float = 1.0) -> Tensor:
    """Depthwise Gaussian blur of ``[B, C, H, W]`` with reflect padding."""
    offsets = torch.arange(size, dtype=x.dtype, device=x.device) - (size - 1) / 2
    g = torch.exp(-offsets.square() / (2 * sigma ** 2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, [size // 2] * 4, mode='reflect')
    x = F.conv2d(x, g.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    return F.conv2d(x, g.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)


class AttentionDownsampler(nn.Module):
    """Each output cell is a softmax-weighted mean of its ``kernel x kernel`` input patch.

    Weights: a per-pixel saliency logit (Dropout + Linear on the blurred features), scaled
    and shifted by learned per-position ``w`` and ``b``, softmax over the patch.
    ``[B, D, H, W]`` -> ``[B, D, H / kernel, W / kernel]``.
    """

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.attention = nn.Sequential(nn.Dropout(0.2), nn.Linear(dim, 1))
        self.w = nn.Parameter(torch.ones(kernel * kernel) + 0.01 * torch.randn(kernel * kernel))
        self.b = nn.Parameter(torch.zeros(kernel * kernel) + 0.01 * torch.randn(kernel * kernel))

    def forward(self, features: Tensor) -> Tensor:
        b, d, h, w = features.shape
        k = self.kernel
        if h % k or w % k:
            raise ValueError(f'features {h}x{w} are not a multiple of the kernel {k}')
        blurred = gaussian_blur(features)
        logits = self.attention(blurred.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [B,1,H,W]
        patches = F.unfold(blurred, k, stride=k).view(b, d, k * k, h // k, w // k)
        logits = F.unfold(logits, k, stride=k).view(b, 1, k * k, h // k, w // k)
        weights = torch.softmax(logits * self.w.view(1, 1, -1, 1, 1)
                                + self.b.view(1, 1, -1, 1, 1), dim=2)
        return (patches * weights).sum(2)
