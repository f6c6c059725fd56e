"""Joint-bilateral feature upsamplers: SimFeatUp (``jbu_one``) and FeatUp (``jbu_stack``).

Both lift a ``[B, D, h, w]`` patch-feature grid x16 to ``[B, D, 16h, 16w]``, guided by the
normalised RGB image. Checkpoints are PyTorch-Lightning files (tensors under
``state_dict``, keys prefixed ``upsampler.``) and load strictly.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import adaptive_conv, local_correlation
from ..weights import describe_key_mismatch, read_upsampler_state

logger = logging.getLogger('segearth_ov')

def spatial_kernel(diameter: int, sigma: Tensor) -> Tensor:
    """Gaussian over offsets on a ``linspace(-1, 1, d)`` grid: ``[d * d]`` (row-major)."""
    offsets = torch.linspace(-1, 1, diameter, device=sigma.device, dtype=sigma.dtype)
    dist2 = offsets[:, None].square() + offsets[None, :].square()
    return torch.exp(-dist2 / (2 * sigma.square())).reshape(-1)


def pad_neighbourhood(x: Tensor, radius: int) -> Tensor:
    """Reflect-pad ``[B, C, H, W]`` by ``radius``; grids no larger than the radius (tiny
    images, where reflection is undefined) are replicate-padded instead."""
    mode = 'reflect' if min(x.shape[-2:]) > radius else 'replicate'
    return F.pad(x, [radius] * 4, mode=mode)


def neighbour_affinity(keys: Tensor, radius: int) -> Tensor:
    """Dot product of each pixel's key with its ``d x d`` reflect-padded neighbours.

    ``keys`` ``[B, K, H, W]`` -> ``[B, d * d, H, W]``, neighbour index ``i * d + j`` for
    offset ``(i - r, j - r)``; never materialises ``K * d^2 * H * W``.
    """
    b, _, h, w = keys.shape
    corr = local_correlation(pad_neighbourhood(keys, radius), keys)  # [B, H, W, d, d]
    return corr.reshape(b, h, w, -1).permute(0, 3, 1, 2)


class JBU(nn.Module):
    """One x2 joint-bilateral upsampling step (FeatUp's JBU).

    The kernel is shared by all feature channels, so the step has no feature-size weights.

    Args:
        radius: neighbourhood radius ``r``; the kernel is ``d x d`` with ``d = 2r + 1``.
        guidance_dim: guidance channels (3 for RGB). key_dim: range-projection width.
    """

    def __init__(self, radius: int, guidance_dim: int = 3, key_dim: int = 32):
        super().__init__()
        self.radius = radius
        self.diameter = d = 2 * radius + 1
        self.range_temp = nn.Parameter(torch.tensor(0.0))
        self.sigma_spatial = nn.Parameter(torch.tensor(1.0))
        self.range_proj = nn.Sequential(
            nn.Conv2d(guidance_dim, key_dim, 1), nn.GELU(), nn.Dropout2d(0.1),
            nn.Conv2d(key_dim, key_dim, 1))
        self.fixup_proj = nn.Sequential(
            nn.Conv2d(guidance_dim + d * d, d * d, 1), nn.GELU(), nn.Dropout2d(0.1),
            nn.Conv2d(d * d, d * d, 1))

    def kernel(self, guidance: Tensor) -> Tensor:
        """Per-pixel kernels ``[B, H, W, d, d]`` from guidance ``[B, 3, H, W]``."""
        b, _, h, w = guidance.shape
        keys = self.range_proj(guidance)
        temperature = self.range_temp.exp().clamp(1e-4, 1e4)
        range_k = F.softmax(temperature * neighbour_affinity(keys, self.radius), dim=1)
        k = range_k * spatial_kernel(self.diameter, self.sigma_spatial).view(1, -1, 1, 1)
        k = k / k.sum(1, keepdim=True).clamp(min=1e-7)
        k = k + 0.1 * self.fixup_proj(torch.cat([k, guidance], dim=1))
        return k.permute(0, 2, 3, 1).reshape(b, h, w, self.diameter, self.diameter)

    def forward(self, source: Tensor, guidance: Tensor) -> Tensor:
        """``source`` ``[B, D, h, w]``, ``guidance`` ``[B, 3, H, W]`` -> ``[B, D, 2h, 2w]``."""
        if source.shape[0] != guidance.shape[0]:
            raise ValueError(f'JBU: source batch {source.shape[0]} != guidance batch '
                             f'{guidance.shape[0]}')
        size = (source.shape[-2] * 2, source.shape[-1] * 2)
        guidance = F.adaptive_avg_pool2d(guidance, size)
        k = self.kernel(guidance)
        hr = F.interpolate(source, size, mode='bicubic', align_corners=False)
        hr = pad_neighbourhood(hr, self.radius)
        return adaptive_conv(hr, k.to(hr.dtype))


class _Upsampler(nn.Module):
    """Shared structure: x2 JBU steps up to the patch size (a final bilinear resize when it
    is not a power of two, e.g. x14), then ``x + 0.1 * fixup(x)``."""

    def __init__(self, feat_dim: int):
        super().__init__()
        self.feat_dim = feat_dim
        self.fixup_proj = nn.Sequential(nn.Dropout2d(0.2), nn.Conv2d(feat_dim, feat_dim, 1))

    def steps(self):
        raise NotImplementedError

    def forward(self, source: Tensor, guidance: Tensor) -> Tensor:
        """``source`` ``[B, D, h, w]``, guidance ``[B, 3, H, W]`` -> ``[B, D, H, W]``."""
        if source.shape[1] != self.feat_dim:
            raise ValueError(f'{type(self).__name__} was built for {self.feat_dim}-dim '
                             f'features, got {source.shape[1]}')
        x = source
        for step in self.steps():
            x = step(x, guidance)
        if x.shape[-2:] != guidance.shape[-2:]:
            x = F.interpolate(x, guidance.shape[-2:], mode='bilinear', align_corners=False)
        return x + 0.1 * self.fixup_proj(x)


class JBUOne(_Upsampler):
    """SimFeatUp: ONE 11x11 JBU applied with shared weights ``ceil(log2(patch_size))`` times
    (4 for patch 16, 5 for 32); the weights do not depend on the step count."""

    def __init__(self, feat_dim: int = 512, radius: int = 5, patch_size: int = 16):
        super().__init__(feat_dim)
        self.up = JBU(radius)
        self.num_steps = max(1, math.ceil(math.log2(patch_size)))

    def steps(self):
        return [self.up] * self.num_steps


class JBUStack(_Upsampler):
    """FeatUp: four distinct 7x7 JBU modules ``up1..up4`` (x16: patch-16 backbones only)."""
    scale = 16

    def __init__(self, feat_dim: int = 512, radius: int = 3):
        super().__init__(feat_dim)
        self.up1, self.up2, self.up3, self.up4 = (JBU(radius) for _ in range(4))

    def steps(self):
        return [self.up1, self.up2, self.up3, self.up4]


UPSAMPLERS = {'jbu_one': JBUOne, 'jbu_stack': JBUStack}


def load_upsampler_checkpoint(upsampler: nn.Module, path: str) -> None:
    """Strictly load a Lightning-style checkpoint (``state_dict`` with ``upsampler.`` keys)."""
    state = read_upsampler_state(path)
    expected = upsampler.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f'upsampler checkpoint {path} does not fit '
                         f'{type(upsampler).__name__} ("upsampler." prefix stripped): '
                         f'{describe_key_mismatch(missing, unexpected)}')
    wrong = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}'
             for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise ValueError(f'upsampler checkpoint {path} has wrong shapes: ' + '; '.join(wrong))
    upsampler.load_state_dict(state, strict=True)


def build_upsampler(cfg: Optional[dict], feat_dim: int, patch_size: int,
                    warn_random: bool = True) -> Optional[nn.Module]:
    """Build ``cfg = dict(type='jbu_one' | 'jbu_stack', checkpoint=path or None)``; None -> None.

    The one factory for inference and training. Refuses an upsampler whose x16 scale does
    not match the backbone's patch size; without a checkpoint the weights are random (logged
    unless ``warn_random`` is False, as in training).
    """
    if cfg is None:
        return None
    cfg = dict(cfg)
    name = cfg.pop('type', None)
    checkpoint = cfg.pop('checkpoint', None)
    if name not in UPSAMPLERS:
        raise ValueError(f'unknown upsampler {name!r}; choose one of '
                         f'{", ".join(UPSAMPLERS)} or None')
    cls = UPSAMPLERS[name]
    if cls is JBUStack and patch_size != JBUStack.scale:
        raise ValueError(f'upsampler jbu_stack upsamples x16 but the CLIP backbone has patch '
                         f'size {patch_size}: use jbu_one (any patch size; train it with '
                         f'tools/train_upsampler.py) or upsampler=None')
    if cls is JBUOne:
        cfg.setdefault('patch_size', patch_size)
    upsampler = cls(feat_dim=feat_dim, **cfg)
    if checkpoint:
        load_upsampler_checkpoint(upsampler, checkpoint)
    elif warn_random:
        logger.warning('upsampler %s has RANDOM WEIGHTS (no checkpoint given)', name)
    return upsampler.eval()
