"""Dense CLIP path: reuse of open_clip weights and the modified last block(s)."""
import copy

import pytest
import torch
import torch.nn.functional as F

from segearth_ov.models.dense_clip import (DenseCLIP, crop_padding, interpolate_pos_embed,
                                           pad_to_multiple)
from test_attention import reference_matrix


def test_vanilla_cls_equals_open_clip_encode_image(vit_b16):
    model, _ = vit_b16
    images = torch.randn(2, 3, 224, 224)
    dense = DenseCLIP(model.visual, attention='vanilla', attention_layers=1)
    with torch.no_grad():
        cls, patches = dense(images)
        expected = model.encode_image(images)
    rel = (cls - expected).norm() / expected.norm()
    assert rel < 1e-5, rel
    assert patches.shape == (2, 512, 14, 14)


def reference_dense(visual, images, name, layers):
    """float64 forward written from the method's formulas with explicit attention matrices."""
    blocks = visual.transformer.resblocks
    x = visual._embeds(images)                     # open_clip's own embedding at 14x14
    for block in blocks[:len(blocks) - layers]:
        x = block(x)
    total = 0
    for index in range(len(blocks) - layers, len(blocks)):
        block = blocks[index]
        attn = block.attn
        y = F.layer_norm(x, (x.shape[-1],), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
        qkv = y @ attn.in_proj_weight.t() + attn.in_proj_bias
        q, k, v = qkv.chunk(3, dim=-1)
        heads = attn.num_heads
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
        q, k, v = split(q), split(k), split(v)
        out = reference_matrix(name, q, k, v, (14, 14)) @ v
        out = out.transpose(1, 2).reshape(x.shape)
        total = total + out @ attn.out_proj.weight.t() + attn.out_proj.bias
        x = block(x)
    ln = visual.ln_post
    tokens = F.layer_norm(total, (total.shape[-1],), ln.weight, ln.bias, ln.eps) @ visual.proj
    return tokens[:, 0], tokens[:, 1:]


@pytest.mark.parametrize('name,layers', [('SegEarth', 1), ('SCLIP', 2), ('NACLIP', 1),
                                         ('ClearCLIP', 1), ('MaskCLIP', 3)])
def test_modified_blocks_match_float64_reference(small_clip, name, layers):
    visual = copy.deepcopy(small_clip[0].visual).double()
    images = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    with torch.no_grad():
        cls, patches = DenseCLIP(visual, name, layers)(images)
        ref_cls, ref_patches = reference_dense(visual, images, name, layers)
    torch.testing.assert_close(cls, ref_cls, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(patches.flatten(2).transpose(1, 2), ref_patches,
                               rtol=1e-9, atol=1e-9)


def test_positional_embedding_interpolation():
    pos = torch.randn(1 + 14 * 14, 8, dtype=torch.float64)
    assert interpolate_pos_embed(pos, (14, 14), (14, 14)) is pos
    out = interpolate_pos_embed(pos, (14, 14), (28, 20))
    assert out.shape == (1 + 28 * 20, 8)
    torch.testing.assert_close(out[0], pos[0])
    grid = pos[1:].reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, scale_factor=(28.1 / 14, 20.1 / 14), mode='bicubic',
                             align_corners=False)
    torch.testing.assert_close(out[1:], expected.permute(0, 2, 3, 1).reshape(-1, 8))
    constant = torch.ones(1 + 196, 4)
    torch.testing.assert_close(interpolate_pos_embed(constant, (14, 14), (9, 23)),
                               torch.ones(1 + 9 * 23, 4))


def test_any_grid_runs_and_rejects_non_multiples(small_clip):
    dense = DenseCLIP(small_clip[0].visual)
    with torch.no_grad():
        cls, patches = dense(torch.randn(1, 3, 160, 96))
    assert cls.shape == (1, 384) and patches.shape == (1, 384, 10, 6)
    with pytest.raises(ValueError, match='not a multiple of the patch size 16'):
        dense(torch.randn(1, 3, 100, 96))


def test_padding_is_split_evenly_and_undone():
    x = torch.randn(2, 3, 230, 225)
    padded, pad = pad_to_multiple(x, 16)
    assert padded.shape[-2:] == (240, 240) and pad == (5, 5, 7, 8)
    torch.testing.assert_close(crop_padding(padded, pad), x)
    assert padded[..., :5, :].abs().sum() == 0 and padded[..., :, -8:].abs().sum() == 0


def test_attention_layers_range_checked(small_clip):
    with pytest.raises(ValueError, match=r'attention_layers must be in \[1, 12\]'):
        DenseCLIP(small_clip[0].visual, attention_layers=13)
