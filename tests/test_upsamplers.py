"""JBU upsamplers against a naive float64 loop of the JBU formulas, and strict checkpoint
loading."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import (assert_same_segmentation, feature_path, potsdam_batch, shared_path,
                      small_segmentor)
from segearth_ov.models.upsamplers import JBU, JBUOne, JBUStack, build_upsampler


def reflect_index(size, shift):
    """Indices of ``arange(size) + shift`` mirrored at the borders (edge not repeated)."""
    idx = torch.arange(size) + shift
    idx = torch.where(idx < 0, -idx, idx)
    return torch.where(idx >= size, 2 * (size - 1) - idx, idx)


def naive_jbu(step: JBU, source, guidance):
    """One JBU step written from its formulas with explicit neighbour indices (float64)."""
    r, d = step.radius, step.diameter
    b, c, h, w = source.shape
    H, W = 2 * h, 2 * w
    guide = F.adaptive_avg_pool2d(guidance, (H, W))
    keys = step.range_proj(guide)
    temp = min(max(math.exp(step.range_temp.item()), 1e-4), 1e4)
    sigma = step.sigma_spatial.item()
    offsets = [-1 + 2 * t / (d - 1) for t in range(d)]
    hr = F.interpolate(source, (H, W), mode='bicubic', align_corners=False)
    logits, spatial, neighbours = [], [], []
    for i in range(d):
        for j in range(d):
            rows, cols = reflect_index(H, i - r), reflect_index(W, j - r)
            logits.append((keys[:, :, rows][:, :, :, cols] * keys).sum(1) * temp)
            spatial.append(math.exp(-(offsets[i] ** 2 + offsets[j] ** 2) / (2 * sigma ** 2)))
            neighbours.append(hr[:, :, rows][:, :, :, cols])
    k = torch.softmax(torch.stack(logits, 1), dim=1)
    k = k * torch.tensor(spatial, dtype=k.dtype).view(1, -1, 1, 1)
    k = k / k.sum(1, keepdim=True).clamp(min=1e-7)
    k = k + 0.1 * step.fixup_proj(torch.cat([k, guide], dim=1))
    out = torch.zeros(b, c, H, W, dtype=source.dtype)
    for index, neighbour in enumerate(neighbours):
        out += k[:, index:index + 1] * neighbour
    return out


def naive_upsampler(up, source, guidance):
    x = source
    for step in up.steps():
        x = naive_jbu(step, x, guidance)
    return x + 0.1 * up.fixup_proj(x)


def perturb(module):
    """Move every weight off its init so no term can hide (range_temp 0, sigma 1)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return module


def test_jbu_one_seeded_matches_naive_loop():
    up = perturb(JBUOne(feat_dim=6)).double().eval()
    source = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    guidance = torch.randn(2, 3, 48, 64, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(up(source, guidance), naive_upsampler(up, source, guidance))


def test_jbu_stack_real_checkpoint_matches_naive_loop():
    ckpt = shared_path('weights', 'clip_jbu_stack_cocostuff.ckpt')
    up = build_upsampler(dict(type='jbu_stack', checkpoint=str(ckpt)), 512, 16).double()
    source = torch.randn(2, 512, 2, 3, dtype=torch.float64)
    guidance = torch.randn(2, 3, 32, 48, dtype=torch.float64)
    with torch.no_grad():
        out = up(source, guidance)
        torch.testing.assert_close(out, naive_upsampler(up, source, guidance))
    assert out.shape == (2, 512, 32, 48)


def test_real_checkpoints_load_strictly_with_every_key():
    for name in ('clip_jbu_stack_cocostuff.ckpt', 'maskclip_jbu_stack_cocostuff.ckpt'):
        ckpt = shared_path('weights', name)
        up = build_upsampler(dict(type='jbu_stack', checkpoint=str(ckpt)), 512, 16)
        raw = torch.load(ckpt, map_location='cpu', weights_only=True)['state_dict']
        assert len(raw) == 42 == len(up.state_dict())
        for key, value in up.state_dict().items():
            torch.testing.assert_close(value, raw['upsampler.' + key])


def test_eval_mode_is_deterministic_despite_dropout():
    up = build_upsampler(dict(type='jbu_one'), 8, 16)
    source, guidance = torch.randn(1, 8, 3, 3), torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(up(source, guidance), up(source, guidance))


def lightning_checkpoint(up, path, rename=None):
    state = {'upsampler.' + k: v for k, v in up.state_dict().items()}
    if rename:
        state[rename[1]] = state.pop(rename[0])
    torch.save({'epoch': 0, 'state_dict': state}, path)


def test_jbu_one_checkpoint_round_trip(tmp_path):
    up = perturb(JBUOne(feat_dim=512))
    lightning_checkpoint(up, tmp_path / 'one.ckpt')
    loaded = build_upsampler(dict(type='jbu_one', checkpoint=str(tmp_path / 'one.ckpt')), 512, 16)
    shapes = {k: tuple(v.shape) for k, v in loaded.state_dict().items()}
    assert shapes['up.fixup_proj.0.weight'] == (121, 124, 1, 1)
    assert len(shapes) == 12
    for key, value in up.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / 'cut.ckpt'
    lightning_checkpoint(JBUOne(feat_dim=16), path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='cut.ckpt cannot be read'):
        build_upsampler(dict(type='jbu_one', checkpoint=str(path)), 16, 16)


def test_wrong_keys_are_listed(tmp_path):
    path = tmp_path / 'renamed.ckpt'
    lightning_checkpoint(JBUOne(feat_dim=16), path, rename=('upsampler.up.range_temp',
                                                           'upsampler.up.range_temperature'))
    with pytest.raises(ValueError, match=r'1 missing key\(s\): up.range_temp; '
                                         r'1 unexpected key\(s\): up.range_temperature'):
        build_upsampler(dict(type='jbu_one', checkpoint=str(path)), 16, 16)
    with pytest.raises(ValueError, match='does not fit JBUStack'):
        build_upsampler(dict(type='jbu_stack', checkpoint=str(path)), 16, 16)


def test_wrong_feature_dim_is_reported(tmp_path):
    path = tmp_path / 'dim.ckpt'
    lightning_checkpoint(JBUOne(feat_dim=16), path)
    with pytest.raises(ValueError, match=r'wrong shapes: fixup_proj.1.weight: checkpoint '
                                         r'\(16, 16, 1, 1\) vs model \(32, 32, 1, 1\)'):
        build_upsampler(dict(type='jbu_one', checkpoint=str(path)), 32, 16)


def test_missing_checkpoint_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match='xclip_jbu_one_million_aid.ckpt.*SegEarth-OV'):
        build_upsampler(dict(type='jbu_one', checkpoint=str(tmp_path / 'x.ckpt')), 512, 16)


def test_unknown_upsampler_and_scale_mismatch():
    with pytest.raises(ValueError, match="unknown upsampler 'bilinear'.*jbu_one, jbu_stack"):
        build_upsampler(dict(type='bilinear'), 512, 16)
    with pytest.raises(ValueError, match='jbu_stack upsamples x16 but the CLIP backbone has '
                                         'patch size 32.*jbu_one'):
        build_upsampler(dict(type='jbu_stack'), 512, 32)
    assert build_upsampler(None, 512, 32) is None


@pytest.mark.parametrize('patch,steps', [(16, 4), (32, 5), (14, 4), (8, 3)])
def test_jbu_one_scale_follows_the_patch_size(patch, steps):
    up = build_upsampler(dict(type='jbu_one'), 8, patch).eval()
    assert up.num_steps == steps
    assert set(up.state_dict()) == set(JBUOne(feat_dim=8).state_dict())  # same checkpoints
    calls, propagate = [], up.up.propagate

    def spy(source, kernel):
        out = propagate(source, kernel)
        calls.append(out.shape[-2:])
        return out
    up.up.propagate = spy
    with torch.no_grad():
        out = up(torch.randn(1, 8, 2, 3), torch.randn(1, 3, 2 * patch, 3 * patch))
    assert out.shape == (1, 8, 2 * patch, 3 * patch) and torch.isfinite(out).all()
    assert calls[-1] == (2 * 2 ** steps, 3 * 2 ** steps)  # x2 per step, then resized


def test_grids_smaller_than_the_radius_fall_back_to_replicate_padding():
    up = build_upsampler(dict(type='jbu_one'), 8, 16)
    with torch.no_grad():
        out = up(torch.randn(1, 8, 1, 2), torch.randn(1, 3, 16, 32))
    assert out.shape == (1, 8, 16, 32) and torch.isfinite(out).all()


def test_batch_mismatch_between_source_and_guidance():
    with pytest.raises(ValueError, match='source batch 2 != guidance batch 1'):
        JBU(1)(torch.randn(2, 4, 2, 2), torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match='built for 8-dim features, got 4'):
        JBUStack(feat_dim=8)(torch.randn(1, 4, 1, 1), torch.randn(1, 3, 16, 16))


# --- the segmentor's upsampled-logits path equals the feature path -------------------------------

@pytest.mark.parametrize('kind', ['jbu_one', 'jbu_stack'])
@pytest.mark.parametrize('lam', [-0.3, 0.0])
def test_fast_path_probabilities_equal_the_feature_path(kind, lam):
    """On a real labelled tile (cropped to 224 x 336: three sliding windows), the class
    probabilities agree to 1e-5 and the labels are identical except at exact ties."""
    checkpoint = shared_path('weights', 'clip_jbu_stack_cocostuff.ckpt') \
        if kind == 'jbu_stack' else None
    model = small_segmentor(clip=dict(arch='ViT-B-16', pretrained=None), cls_token_lambda=lam,
                            upsampler=dict(type=kind, checkpoint=checkpoint and str(checkpoint)))
    if checkpoint is None:  # random jbu_one weights, large enough to matter
        with torch.no_grad():
            for p in model.upsampler.parameters():
                p.add_(0.05 * torch.randn_like(p))
    batch = potsdam_batch(model, 224, 336)
    fast = model.predict(batch)[0]
    model.upsampler.cosine_logits = feature_path(model.upsampler)
    assert_same_segmentation(fast, model.predict(batch)[0])


def test_fast_path_falls_back_for_large_windows():
    """More patches than channels: the feature path is taken (and agrees)."""
    up = JBUOne(feat_dim=8).eval()
    source, guidance = torch.randn(1, 8, 3, 4), torch.randn(1, 3, 48, 64)
    text = F.normalize(torch.randn(5, 8), dim=-1)
    with torch.no_grad():
        expected = feature_path(up)(source, guidance, text)
        torch.testing.assert_close(up.cosine_logits(source, guidance, text), expected)


def load_selfcheck():
    import importlib.util

    from conftest import REPO
    spec = importlib.util.spec_from_file_location('gpu_selfcheck',
                                                  REPO / 'benchmarks' / 'gpu_selfcheck.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_selfcheck_says_when_there_is_no_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert load_selfcheck().main([]) == 2
    assert 'no CUDA device here' in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_selfcheck_dry_run_on_the_cpu(capsys):
    """The self-check's comparisons run (CPU against CPU) and pass."""
    assert load_selfcheck().main(['--device', 'cpu', '--quick']) == 0
    out = capsys.readouterr().out
    assert 'all checks passed' in out and 'JBUOne cosine logits' in out


def test_fast_path_under_autocast_keeps_its_factorisation_exact():
    """Under bf16 autocast (CUDA's fp16/bf16 precision, here on the CPU) the low-rank path
    runs, returns float32, and stays within bf16 rounding of the fp32 result."""
    torch.manual_seed(0)
    up = JBUOne(feat_dim=64).eval()
    source, guidance = torch.randn(2, 64, 4, 4), torch.randn(2, 3, 64, 64)
    text = F.normalize(torch.randn(3, 64), dim=-1)
    with torch.no_grad():
        exact = up.cosine_logits(source, guidance, text)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            half = up.cosine_logits(source, guidance, text)
    assert half.dtype == torch.float32 and (half - exact).abs().max() < 2e-2
