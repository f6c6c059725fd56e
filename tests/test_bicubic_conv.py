"""bicubic_conv: the JBU step with the bicubic x2 folded into the filters, against the two
steps composed (F.interpolate, F.pad and the float64 unfold reference of adaptive_conv)."""
import sys

import pytest
import torch
import torch.nn.functional as F

from segearth_ov.ops import bicubic_conv
from segearth_ov.ops.bicubic_conv import bicubic_x2, fold_taps, padding_mode, upsample_matrix
from test_adaptive_conv import native_or_skip, reference

fold_module = sys.modules['segearth_ov.ops.bicubic_conv']

# (h, w): whole vector tiles and ragged ones, grids no larger than the radius (replicate
# padding), a single pixel
SIZES = [(14, 14), (7, 9), (13, 30), (3, 3), (2, 5), (1, 1)]


def composed(source, filters):
    """The step as defined: interpolate, pad by the radius, adaptive convolution (float64)."""
    r = (filters.shape[-1] - 1) // 2
    h, w = source.shape[-2:]
    up = F.interpolate(source.double(), scale_factor=2, mode='bicubic', align_corners=False)
    return reference(F.pad(up, [r] * 4, mode=padding_mode(2 * h, 2 * w, r)), filters)


def test_bicubic_matrices_equal_interpolate():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(bicubic_x2(x), F.interpolate(x, scale_factor=2, mode='bicubic',
                                                            align_corners=False))


@pytest.mark.parametrize('radius', [3, 5])
@pytest.mark.parametrize('size', [1, 2, 3, 5, 14, 29])
def test_folded_taps_give_every_padded_row(radius, size):
    """Row Y + i of the padded x2 grid is sum_e taps[Y, i, e] source[Y // 2 + e - offset]."""
    for mode in ('reflect', 'replicate') if 2 * size > radius else ('replicate',):
        matrix = upsample_matrix(size, dtype=torch.float64, pad=radius, mode=mode)
        taps, offset = fold_taps(size, radius, mode)
        d = 2 * radius + 1
        for y in range(2 * size):
            rebuilt = torch.zeros(d, size, dtype=torch.float64)
            for e in range(taps.shape[-1]):
                s = y // 2 + e - offset
                if 0 <= s < size:
                    rebuilt[:, s] += taps[y, :, e]
                else:
                    assert (taps[y, :, e] == 0).all()
            torch.testing.assert_close(rebuilt, matrix[y:y + d], rtol=0, atol=0)


@pytest.mark.parametrize('radius', [3, 5])
@pytest.mark.parametrize('h,w', SIZES)
def test_native_step_equals_the_composed_step(radius, h, w, monkeypatch):
    native_or_skip('cpu')
    torch.manual_seed(h * w + radius)
    d = 2 * radius + 1
    source = torch.randn(2, 7, h, w, dtype=torch.float64)  # 7: channel blocks and a remainder
    filters = torch.randn(2, 2 * h, 2 * w, d, d, dtype=torch.float64)
    expected = composed(source, filters)

    def composition_not_allowed(*args, **kwargs):
        raise AssertionError('the composed path ran')
    mode = padding_mode(2 * h, 2 * w, radius)
    spans = {fold_taps(n, radius, mode).taps.shape[-1] for n in (h, w)}
    if spans == {radius + 4}:  # the spans of the JBU sizes: the folded kernel runs
        monkeypatch.setattr(fold_module, 'adaptive_conv', composition_not_allowed)
    torch.testing.assert_close(bicubic_conv(source, filters), expected, rtol=1e-12, atol=1e-12)
    got32 = bicubic_conv(source.float(), filters.float())
    assert got32.dtype == torch.float32
    assert (got32.double() - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_every_backend_gives_the_same_step(monkeypatch):
    torch.manual_seed(0)
    source = torch.randn(1, 4, 6, 10, dtype=torch.float64)
    filters = torch.randn(1, 12, 20, 11, 11, dtype=torch.float64)
    expected = composed(source, filters)
    monkeypatch.setenv('SEGEARTH_OV_JBU_BACKEND', 'torch')
    torch.testing.assert_close(bicubic_conv(source, filters), expected)
    monkeypatch.delenv('SEGEARTH_OV_JBU_BACKEND')
    # gradients take the composed path, which autograd differentiates
    source.requires_grad_()
    out = bicubic_conv(source, filters)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    reference_grad = torch.autograd.grad(composed(source, filters).sum(), source)[0]
    torch.testing.assert_close(source.grad, reference_grad)


def test_filters_of_the_wrong_size_are_named():
    with pytest.raises(ValueError, match=r'filters must be \[B, 2h, 2w, d, d\] = \[1, 8, 10, d, '
                                         r'd\] for source \(1, 3, 4, 5\), got '
                                         r'\(1, 8, 8, 11, 11\)'):
        bicubic_conv(torch.randn(1, 3, 4, 5), torch.randn(1, 8, 8, 11, 11))


def test_native_checks_name_the_argument():
    native_or_skip('cpu')
    from segearth_ov.ops.build import load_extension
    ext = load_extension('cpu')
    src, filters = torch.zeros(1, 2, 12, 20), torch.zeros(1, 8, 8, 11, 11)
    taps = torch.zeros(8, 11, 9)
    with pytest.raises(RuntimeError, match='E must be 7 or 9, got 5'):
        ext.bicubic_conv(src, filters, taps[..., :5], taps[..., :5])
    with pytest.raises(RuntimeError,
                       match=r'src must be at least \[12, 16\], got \[1, 2, 12, 15\]'):
        ext.bicubic_conv(src[..., :15], filters, taps, taps)
    with pytest.raises(RuntimeError, match='src must be contiguous'):
        ext.bicubic_conv(src.transpose(2, 3).contiguous().transpose(2, 3), filters, taps, taps)
    with pytest.raises(RuntimeError, match='float32 or float64 needed'):
        ext.bicubic_conv(src.half(), filters.half(), taps.half(), taps.half())
