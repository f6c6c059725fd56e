"""Joint-bilateral feature upsamplers: SimFeatUp (``jbu_one``) and FeatUp (``jbu_stack``).

Both lift a ``[B, D, h, w]`` patch-feature grid x16 to ``[B, D, 16h, 16w]``, guided by the
normalised RGB image. Checkpoints are PyTorch-Lightning files (tensors under
``state_dict``, keys prefixed ``upsampler.``) and load strictly.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops import bicubic_conv, local_correlation
from ..ops.bicubic_conv import padding_mode
from ..weights import describe_key_mismatch, read_upsampler_state
from .text_free import TextFree, text_free_logits

logger = logging.getLogger(__name__)

# step kernels of windows [start, stop) of a batch: one [n, H', W', d, d] tensor per step
KernelsOf = Callable[[int, int], List[Tensor]]


def spatial_kernel(diameter: int, sigma: Tensor) -> Tensor:
    """Gaussian over offsets on a ``linspace(-1, 1, d)`` grid: ``[d * d]`` (row-major)."""
    offsets = torch.linspace(-1, 1, diameter, device=sigma.device, dtype=sigma.dtype)
    dist2 = offsets[:, None].square() + offsets[None, :].square()
    return torch.exp(-dist2 / (2 * sigma.square())).reshape(-1)


def pad_neighbourhood(x: Tensor, radius: int) -> Tensor:
    """Pad ``[B, C, H, W]`` by ``radius``, reflecting (:func:`padding_mode`)."""
    return F.pad(x, [radius] * 4, mode=padding_mode(*x.shape[-2:], radius))


def neighbour_affinity(keys: Tensor, radius: int) -> Tensor:
    """Dot product of each pixel's key with its ``d x d`` reflect-padded neighbours.

    ``keys`` ``[B, K, H, W]`` -> ``[B, d * d, H, W]``, neighbour index ``i * d + j`` for
    offset ``(i - r, j - r)``; never materialises ``K * d^2 * H * W``. Under autocast the
    padding may come back in another dtype than the keys: both are read in the padding's.
    """
    b, _, h, w = keys.shape
    padded = pad_neighbourhood(keys, radius)
    corr = local_correlation(padded, keys.to(padded.dtype))  # [B, H, W, d, d]
    return corr.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def squared_norms(y: Tensor, shift: Tensor, shift_norm2: float, block: int = 16) -> Tensor:
    """``|y + shift|^2`` over the channels of ``y`` ``[B, r, H, W]`` as ``|y|^2 + 2 y . shift
    + shift_norm2`` (``shift`` ``[B, r]``): ``[B, H, W]``. Summed ``block`` channels at a time,
    so the squares are a small buffer the allocator reuses, not a fresh one of ``y``'s size
    (whose page faults cost more than the sums)."""
    b, r = y.shape[:2]
    flat = y.reshape(b, r, -1)
    out = torch.bmm(shift.unsqueeze(1), flat).squeeze(1).mul_(2).add_(shift_norm2)
    for start in range(0, r, block):
        part = flat[:, start:start + block]
        out += (part * part).sum(1)
    return out.view(b, *y.shape[2:])


class JBU(nn.Module):
    """One x2 joint-bilateral upsampling step (FeatUp's JBU).

    The kernel is shared by all feature channels, so the step has no feature-size weights.

    Args:
        radius: neighbourhood radius ``r``; the kernel is ``d x d`` with ``d = 2r + 1``.
        guidance_dim: guidance channels (3 for RGB). key_dim: range-projection width.
    """

    CHUNK_PIXELS = 4096  # pixels per pass of padded_kernel: its temporaries stay in cache

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
        """Per-pixel kernels ``[B, H, W, d, d]`` from guidance ``[B, 3, H, W]``.

        In eval mode the kernel is computed channels last (:meth:`padded_kernel`: the
        neighbours on the last axis, the fixup's 1x1 convolutions as matrix products, a few
        rows at a time); training keeps the channels-first modules, whose dropout needs
        them. Both compute the same."""
        if not self.training:
            return self.padded_kernel(pad_neighbourhood(guidance, self.radius))
        b, _, h, w = guidance.shape
        keys = self.range_proj(guidance)
        temperature = self.range_temp.exp().clamp(1e-4, 1e4)
        range_k = F.softmax(temperature * neighbour_affinity(keys, self.radius), dim=1)
        k = range_k * spatial_kernel(self.diameter, self.sigma_spatial).view(1, -1, 1, 1)
        k = k / k.sum(1, keepdim=True).clamp(min=1e-7)
        k = k + 0.1 * self.fixup_proj(torch.cat([k, guidance], dim=1))
        return k.permute(0, 2, 3, 1).reshape(b, h, w, self.diameter, self.diameter)

    def padded_kernel(self, padded: Tensor) -> Tensor:
        """Eval-mode kernels ``[B, H, W, d, d]`` of the centre of a guidance ``[B, 3, H + 2r,
        W + 2r]`` already padded by the radius: where the padding rows are real neighbours
        (a band of a larger image), the kernels are that image's. The range keys are
        pointwise, so keys of the padded guidance are the padded keys.

        Computed a few thousand pixels at a time: the temporaries stay in cache and in
        memory the allocator reuses (a fresh large buffer costs a page fault per 4 KiB).
        Under autocast the kernels are still computed in float32 (the in-place steps
        need one dtype, and the guidance is three channels: fp16 saves nothing here)."""
        if padded.dtype in (torch.float16, torch.bfloat16):
            padded = padded.float()
        with torch.autocast(padded.device.type, enabled=False):
            return self._padded_kernel(padded)

    def _padded_kernel(self, padded: Tensor) -> Tensor:
        r, d2 = self.radius, self.diameter ** 2
        b, _, h, w = padded.shape
        h, w = h - 2 * r, w - 2 * r
        temperature = self.range_temp.exp().clamp(1e-4, 1e4)
        spatial = spatial_kernel(self.diameter, self.sigma_spatial)
        first, last = self.fixup_proj[0], self.fixup_proj[3]
        weight = first.weight.view(d2, -1)  # [d2, d2 + 3]: the kernel's and the guidance's
        kernel_weight, guide_weight = weight[:, :d2].T.contiguous(), weight[:, d2:].T
        out_weight = last.weight.view(d2, d2).T.contiguous()
        out = padded.new_empty(b, h, w, d2)
        rows = max(1, self.CHUNK_PIXELS // w)
        for i in range(b):
            for top in range(0, h, rows):
                bottom = min(top + rows, h)
                keys = self._range_keys(padded[i, :, top:bottom + 2 * r])
                corr = local_correlation(keys, keys[:, :, r:r + bottom - top, r:r + w])
                # softmax, times the spatial kernel, renormalised: with e = exp(t a - max),
                # k = e s / max(sum(e s), 1e-7 sum(e)), the channels-first formula in one
                # pass less
                k = corr.view(-1, d2).mul_(temperature)
                k = k.sub_(k.amax(-1, keepdim=True)).exp_()
                total = k.sum(-1, keepdim=True)
                k.mul_(spatial)
                k.div_(torch.maximum(k.sum(-1, keepdim=True), 1e-7 * total))
                pixels = padded[i, :, top + r:bottom + r, r:r + w].reshape(3, -1).T
                hidden = torch.addmm(first.bias, pixels, guide_weight)
                hidden.addmm_(k, kernel_weight)
                k.add_(last.bias, alpha=0.1)
                torch.addmm(k, F.gelu(hidden), out_weight, alpha=0.1,
                            out=out[i, top:bottom].view(-1, d2))
        return out.view(b, h, w, self.diameter, self.diameter)

    def _range_keys(self, guidance: Tensor) -> Tensor:
        """``range_proj`` (eval) of one image's guidance ``[3, H, W]`` -> ``[1, K, H, W]``,
        its 1x1 convolutions as matrix products on the ``[3, H W]`` pixels: several times
        faster than the convolution calls for these few channels."""
        first, last = self.range_proj[0], self.range_proj[3]
        h, w = guidance.shape[-2:]
        hidden = torch.addmm(first.bias[:, None], first.weight[:, :, 0, 0],
                             guidance.reshape(guidance.shape[0], -1))
        keys = torch.addmm(last.bias[:, None], last.weight[:, :, 0, 0], F.gelu(hidden))
        return keys.view(1, -1, h, w)

    def guidance_kernel(self, guidance: Tensor, size) -> Tensor:
        """The kernels ``[B, H', W', d, d]`` of this step at output ``size``, from the
        guidance alone (pooled to ``size``)."""
        return self.kernel(F.adaptive_avg_pool2d(guidance, size))

    def propagate(self, source: Tensor, kernel: Tensor) -> Tensor:
        """The step's linear part: ``source`` ``[B, C, h, w]`` -> ``[B, C, 2h, 2w]``, bicubic
        x2, reflect-padded, adaptive convolution with ``kernel`` (:func:`bicubic_conv`). Any
        number of channels."""
        return bicubic_conv(source, kernel.to(source.dtype))

    def forward(self, source: Tensor, guidance: Tensor) -> Tensor:
        """``source`` ``[B, D, h, w]``, ``guidance`` ``[B, 3, H, W]`` -> ``[B, D, 2h, 2w]``."""
        if source.shape[0] != guidance.shape[0]:
            raise ValueError(f'JBU: source batch {source.shape[0]} != guidance batch '
                             f'{guidance.shape[0]}')
        size = (source.shape[-2] * 2, source.shape[-1] * 2)
        return self.propagate(source, self.guidance_kernel(guidance, size))


class _Upsampler(nn.Module):
    """Shared structure: x2 JBU steps up to the patch size (a final bilinear resize when it
    is not a power of two, e.g. x14), then ``x + 0.1 * fixup(x)``.

    The upsampler is affine in its source features: the JBU kernels depend on the guidance
    alone (:meth:`step_kernels`), the rest is linear and acts on every channel alike
    (:meth:`propagate`), and the fixup is ``M x + c`` with ``M = I + 0.1 W``, ``c = 0.1 b``
    (dropout is off in eval). :meth:`cosine_logits` uses this to give the segmentor what it
    needs, exactly, without building the ``D x H x W`` feature map.
    """

    def __init__(self, feat_dim: int):
        super().__init__()
        self.feat_dim = feat_dim
        self.fixup_proj = nn.Sequential(nn.Dropout2d(0.2), nn.Conv2d(feat_dim, feat_dim, 1))

    def steps(self):
        raise NotImplementedError

    def step_kernels(self, source_size, guidance: Tensor) -> List[Tensor]:
        """Every step's kernels for a ``source_size`` ``(h, w)`` grid, from the guidance."""
        kernels, (h, w) = [], source_size
        for step in self.steps():
            h, w = 2 * h, 2 * w
            kernels.append(step.guidance_kernel(guidance, (h, w)))
        return kernels

    def propagate(self, source: Tensor, kernels: List[Tensor], size) -> Tensor:
        """The linear part: ``source`` ``[B, C, h, w]`` (any C) -> ``[B, C, H, W]``."""
        x = source
        for step, kernel in zip(self.steps(), kernels):
            x = step.propagate(x, kernel)
        if x.shape[-2:] != tuple(size):
            x = F.interpolate(x, size, mode='bilinear', align_corners=False)
        return x

    def _check(self, source: Tensor, guidance: Tensor) -> None:
        if source.shape[1] != self.feat_dim:
            raise ValueError(f'{type(self).__name__} was built for {self.feat_dim}-dim '
                             f'features, got {source.shape[1]}')
        if source.shape[0] != guidance.shape[0]:
            raise ValueError(f'{type(self).__name__}: source batch {source.shape[0]} != '
                             f'guidance batch {guidance.shape[0]}')

    def forward(self, source: Tensor, guidance: Tensor,
                kernels: Optional[List[Tensor]] = None) -> Tensor:
        """``source`` ``[B, D, h, w]``, guidance ``[B, 3, H, W]`` -> ``[B, D, H, W]``;
        ``kernels``: :meth:`step_kernels` when the caller has them."""
        self._check(source, guidance)
        if kernels is None:
            kernels = self.step_kernels(source.shape[-2:], guidance)
        x = self.propagate(source, kernels, guidance.shape[-2:])
        return x + 0.1 * self.fixup_proj(x)

    def feature_cosine_logits(self, source: Tensor, guidance: Tensor, text: Tensor,
                              kernels: Optional[KernelsOf] = None) -> Tensor:
        """:meth:`cosine_logits` computed the direct way, by building the ``[B, D, H, W]``
        upsampled features with each window's kernels from its own crop (``kernels`` is
        accepted and not used): what the fast path is measured against."""
        return text_free_logits(TextFree(F.normalize(self(source, guidance).float(), dim=1)),
                                text)

    def cosine_logits(self, source: Tensor, guidance: Tensor, text: Tensor,
                      chunk: int = 1, kernels: Optional[KernelsOf] = None) -> Tensor:
        """Cosine similarities ``[B, Q, H, W]`` of the upsampled features with ``text``
        ``[Q, D]`` (L2-normalised rows): ``normalize(self(source, guidance)) . text``;
        :meth:`text_free` then :func:`text_free_logits`, ``chunk`` windows at a time (which
        bounds the memory)."""
        return torch.cat([text_free_logits(part, text)
                          for part in self.text_free(source, guidance, chunk, kernels)])

    def text_free(self, source: Tensor, guidance: Tensor, chunk: int = 1,
                  kernels: Optional[KernelsOf] = None) -> List[TextFree]:
        """Everything :meth:`cosine_logits` computes before the text, per ``chunk`` windows
        of ``source`` ``[B, D, h, w]`` and ``guidance`` ``[B, 3, H, W]``. ``kernels(start,
        stop)`` gives :meth:`step_kernels` of windows ``[start, stop)`` where the caller has
        them (shared by overlapping windows: ``shared_kernels.py``).

        With ``X = M F`` (``F`` the ``[D, P]`` patch features of one window) factored as
        ``X = Q_ R`` (reduced QR, ``Q_`` ``[D, r]`` orthonormal, ``r = P``), each upsampled
        feature is ``u = Q_ y + c`` where ``y`` is ``R`` propagated (``r`` channels, not
        ``D``). So ``u . t = y . (Q_^T t) + c . t`` and
        ``|u|^2 = |y|^2 + 2 y . (Q_^T c) + |c|^2``: the same numbers as the feature path,
        kept as ``y``, ``|u|``, ``Q_`` and ``c``. Windows with at least as many patches as
        channels, and training, keep the normalised features instead (the smaller of the
        two).
        """
        self._check(source, guidance)
        b, d, h, w = source.shape
        if self.training:
            return [TextFree(F.normalize(self(source, guidance).float(), dim=1))]
        if kernels is None:
            def kernels(start: int, stop: int) -> List[Tensor]:
                return self.step_kernels((h, w), guidance[start:stop])
        if h * w >= d:
            return [TextFree(F.normalize(self(source, guidance, kernels(0, b)).float(), dim=1))]
        return [self._low_rank(source[i:i + chunk], guidance[i:i + chunk],
                               kernels(i, i + chunk)) for i in range(0, b, chunk)]

    def _low_rank(self, source: Tensor, guidance: Tensor, kernels: List[Tensor]) -> TextFree:
        b, d, h, w = source.shape
        no_autocast = torch.autocast(source.device.type, enabled=False)
        with no_autocast:  # the factorisation stays in float64 under fp16 / bf16 autocast
            conv = self.fixup_proj[1]
            mix = torch.eye(d, device=source.device, dtype=torch.float64) + \
                0.1 * conv.weight[:, :, 0, 0].double()
            shift = 0.1 * conv.bias.double()
            basis, coeffs = torch.linalg.qr(mix @ source.reshape(b, d, h * w).double())
            shift_proj = torch.einsum('bdr,d->br', basis, shift).float()
        y = self.propagate(coeffs.to(source.dtype).view(b, h * w, h, w), kernels,
                           guidance.shape[-2:]).float()
        with no_autocast:
            norm2 = squared_norms(y, shift_proj, float(shift.square().sum()))
            return TextFree(y, norm2.clamp(min=0).sqrt().clamp(min=1e-12), basis, shift)


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
