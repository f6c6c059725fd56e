"""Dense CLIP features: patch tokens that carry local semantics.

:class:`DenseCLIP` reads the weights of an open_clip ``VisionTransformer`` and runs all
blocks but the last ``attention_layers`` unchanged. Each of those last blocks is evaluated
once more in modified form, ``y = out_proj(A(ln_1(x)) v)`` with no residual and no MLP
(``A`` from :mod:`.attention`), while the running ``x`` still flows through the unmodified
block; the modified outputs are summed. ``ln_post`` and ``proj`` then map every token to
the joint embedding space: token 0 is the [CLS] feature, the rest the patch grid.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import get_attention


def interpolate_pos_embed(pos_embed: Tensor, trained_grid: Tuple[int, int],
                          grid: Tuple[int, int]) -> Tensor:
    """Resize the patch part of a positional embedding ``[1 + th * tw, C]`` to ``grid``.

    Bicubic, align_corners False, scale factors ``(g + 0.1) / t`` so the output is exactly
    ``gh x gw``; the [CLS] position is kept. Returns ``[1 + gh * gw, C]``.
    """
    if tuple(grid) == tuple(trained_grid):
        return pos_embed
    (th, tw), (gh, gw) = trained_grid, grid
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    patch_pos = patch_pos.reshape(1, th, tw, -1).permute(0, 3, 1, 2)
    if patch_pos.dtype != torch.float64:
        patch_pos = patch_pos.float()  # bicubic has no half-precision CPU kernel
    patch_pos = F.interpolate(patch_pos, scale_factor=((gh + 0.1) / th, (gw + 0.1) / tw),
                              mode='bicubic', align_corners=False).to(pos_embed.dtype)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(gh * gw, -1)
    return torch.cat([cls_pos, patch_pos], dim=0)


def pad_to_multiple(images: Tensor, multiple: int) -> Tuple[Tensor, Tuple[int, int, int, int]]:
    """Zero-pad ``[B, C, H, W]`` so H and W are multiples of ``multiple``, padding split evenly.

    Returns the padded tensor and ``(top, bottom, left, right)``.
    """
    h, w = images.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    pad = (pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2)
    if pad_h or pad_w:
        images = F.pad(images, (pad[2], pad[3], pad[0], pad[1]))
    return images, pad


def crop_padding(x: Tensor, pad: Tuple[int, int, int, int]) -> Tensor:
    """Undo :func:`pad_to_multiple` on ``[..., H, W]``."""
    top, bottom, left, right = pad
    return x[..., top:x.shape[-2] - bottom, left:x.shape[-1] - right]


class DenseCLIP(nn.Module):
    """Dense features of an open_clip ViT image tower.

    Args:
        visual: ``clip_model.visual``, an open_clip ``VisionTransformer``.
        attention: attention variant name (see :mod:`.attention`). ``'vanilla'`` keeps the
            original last block(s) unmodified (plain CLIP).
        attention_layers: how many last blocks get the modified attention (SegEarth-OV-2's
            ``ssa_last_n_layers``); their outputs are summed.
    """

    def __init__(self, visual: nn.Module, attention: str = 'SegEarth', attention_layers: int = 1):
        super().__init__()
        for attr in ('conv1', 'class_embedding', 'positional_embedding', 'transformer', 'ln_post'):
            if not hasattr(visual, attr):
                raise TypeError(f'DenseCLIP needs an open_clip VisionTransformer image tower; '
                                f'{type(visual).__name__} has no {attr!r}')
        if getattr(visual, 'attn_pool', None) is not None:
            raise TypeError('image towers with attentional pooling are not supported')
        num_blocks = len(visual.transformer.resblocks)
        if not 1 <= attention_layers <= num_blocks:
            raise ValueError(f'attention_layers must be in [1, {num_blocks}], got '
                             f'{attention_layers}')
        self.visual = visual
        self.attention = attention
        self.attention_fn = get_attention(attention)
        self.attention_layers = attention_layers
        self.patch_size = int(visual.conv1.stride[0])
        num_patches = visual.positional_embedding.shape[0] - 1
        side = int(round(num_patches ** 0.5))
        self.trained_grid = tuple(getattr(visual, 'grid_size', (side, side)))

    @property
    def embed_dim(self) -> int:
        proj = self.visual.proj
        return proj.shape[1] if proj is not None else self.visual.class_embedding.shape[0]

    def embed_tokens(self, images: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """Patch embed, prepend [CLS], add the (resized) positional embedding, ``ln_pre``.

        ``images`` ``[B, 3, H, W]`` with H, W multiples of the patch size.
        Returns tokens ``[B, 1 + gh * gw, width]`` and the grid ``(gh, gw)``.
        """
        h, w = images.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f'input {h}x{w} is not a multiple of the patch size '
                             f'{self.patch_size}; pad it with pad_to_multiple() first')
        v = self.visual
        x = v.conv1(images.to(v.conv1.weight.dtype))
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + interpolate_pos_embed(v.positional_embedding, self.trained_grid, grid).to(x.dtype)
        return v.ln_pre(x), grid

    def _block(self, block: nn.Module, x: Tensor) -> Tensor:
        if self.visual.transformer.batch_first:
            return block(x)
        return block(x.transpose(0, 1)).transpose(0, 1)

    def _modified_block(self, block: nn.Module, x: Tensor, grid: Tuple[int, int]) -> Tensor:
        """``out_proj(A v)`` of the block's attention on ``ln_1(x)``; ``x`` ``[B, N, width]``."""
        if self.attention == 'vanilla':
            return self._block(block, x)
        attn = block.attn
        b, n, width = x.shape
        heads = attn.num_heads
        qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        out = self.attention_fn(q, k, v, grid)
        return attn.out_proj(out.transpose(1, 2).reshape(b, n, width))

    def project(self, tokens: Tensor) -> Tensor:
        """``ln_post`` then ``proj`` on every token: ``[B, N, width] -> [B, N, D]``."""
        tokens = self.visual.ln_post(tokens)
        return tokens @ self.visual.proj if self.visual.proj is not None else tokens

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """``images`` ``[B, 3, H, W]`` (normalised, H and W multiples of the patch size).

        Returns ``(cls [B, D], patches [B, D, H / p, W / p])``.
        """
        x, grid = self.embed_tokens(images)
        blocks = self.visual.transformer.resblocks
        first_modified = len(blocks) - self.attention_layers
        for block in blocks[:first_modified]:
            x = self._block(block, x)
        dense = None
        for index in range(first_modified, len(blocks)):
            out = self._modified_block(blocks[index], x, grid)
            dense = out if dense is None else dense + out
            if index + 1 < len(blocks):
                x = self._block(blocks[index], x)
        tokens = self.project(dense)
        b, _, d = tokens.shape
        patches = tokens[:, 1:].transpose(1, 2).reshape(b, d, *grid)
        return tokens[:, 0], patches

    def penultimate_features(self, images: Tensor) -> Tensor:
        """Features an upsampler is trained to reproduce (SimFeatUp): the output of every
        block but the last, through ``ln_post`` and ``proj``. ``[B, 3, H, W]`` ->
        ``[B, D, H / p, W / p]``."""
        x, grid = self.embed_tokens(images)
        for block in self.visual.transformer.resblocks[:-1]:
            x = self._block(block, x)
        tokens = self.project(x)
        return tokens[:, 1:].transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
