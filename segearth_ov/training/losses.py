"""The SimFeatUp training losses."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def random_projection(dim: int, out_dim: int, generator: torch.Generator,
                      device=None) -> Tensor:
    """``[dim, out_dim]`` Gaussian projection with unit-norm columns."""
    proj = torch.randn(dim, out_dim, generator=generator).to(device)
    return proj / proj.norm(dim=0, keepdim=True)


def project(features: Tensor, proj: Tensor) -> Tensor:
    """``[B, D, H, W]`` x ``[D, K]`` -> ``[B, K, H, W]``."""
    return torch.einsum('bdhw,dk->bkhw', features, proj)


def uncertainty_loss(pred: Tensor, target: Tensor, log_scale: Tensor) -> Tensor:
    """Mean over pixels of ``mse / (2 s^2) + log s`` with ``s = exp(log_scale)``;
    ``mse`` is the per-pixel mean over channels. ``log_scale`` ``[B, 1, H, W]``."""
    mse = (pred - target).square().mean(1, keepdim=True)
    return (mse * torch.exp(-2 * log_scale) / 2 + log_scale).mean()


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of ``[B, C, H, W]``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ImageHead(nn.Module):
    """SimFeatUp's image reconstruction from upsampled features: Conv1x1(D->D),
    LayerNorm2d, GELU, Conv1x1(D->3), Tanh. ``[B, D, H, W]`` -> ``[B, 3, H, W]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(dim, dim, 1), LayerNorm2d(dim), nn.GELU(),
                                 nn.Conv2d(dim, 3, 1), nn.Tanh())

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)
