"""Attention variants and the modified block against float64 formulas written here."""
import math

import pytest
import torch

from segearth_ov.models.attention import ATTENTION_VARIANTS, get_attention, neighbourhood_bias


def softmax_rows(a, b):
    return torch.softmax(a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1]), dim=-1)


def gaussian_bias(gh, gw):
    n = gh * gw
    bias = torch.zeros(n + 1, n + 1, dtype=torch.float64)
    for p in range(n):
        for r in range(n):
            dy, dx = p // gw - r // gw, p % gw - r % gw
            bias[p + 1, r + 1] = math.exp(-(dy * dy + dx * dx) / 2.0)
    return bias


def reference_matrix(name, q, k, v, grid):
    s = 1 / math.sqrt(q.shape[-1])
    if name == 'SegEarth':
        return softmax_rows(q, q) + softmax_rows(k, k) + softmax_rows(v, v)
    if name == 'SCLIP':
        return softmax_rows(q, q) + softmax_rows(k, k)
    if name == 'ClearCLIP':
        return softmax_rows(q, q)
    if name == 'MaskCLIP':
        return torch.eye(q.shape[-2], dtype=q.dtype).expand(*q.shape[:2], -1, -1)
    if name == 'vanilla':
        return softmax_rows(q, k)
    if name == 'NACLIP':
        return torch.softmax(k @ k.transpose(-1, -2) * s + gaussian_bias(*grid), dim=-1)
    raise AssertionError(name)


@pytest.mark.parametrize('name', ATTENTION_VARIANTS)
def test_variant_matches_float64_formula(name):
    grid = (3, 4)
    q, k, v = (torch.randn(2, 3, 1 + 12, 8, dtype=torch.float64) for _ in range(3))
    out = get_attention(name)(q, k, v, grid)
    expected = reference_matrix(name, q, k, v, grid) @ v
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_neighbourhood_bias_is_zero_for_cls_and_one_on_diagonal():
    bias = neighbourhood_bias((2, 3), dtype=torch.float64)
    assert bias.shape == (7, 7)
    assert bias[0].abs().sum() == 0 and bias[:, 0].abs().sum() == 0
    torch.testing.assert_close(bias, gaussian_bias(2, 3))


def test_unknown_attention_names_the_choices():
    with pytest.raises(ValueError, match="unknown attention 'SegErth'.*SegEarth"):
        get_attention('SegErth')
