"""Band choice and the percentile stretch of non-8-bit data."""
import numpy as np
import pytest

from segearth_ov.apis.bands import choose_bands, to_uint8
from segearth_ov.apis.scenes import ArrayScene


def test_band_choice():
    assert choose_bands(1, None) == [1]
    assert choose_bands(3, None) == [1, 2, 3]
    assert choose_bands(4, None, alpha=[4]) == [1, 2, 3]
    assert choose_bands(13, [4, 3, 2]) == [4, 3, 2]
    with pytest.raises(ValueError, match='--bands'):
        choose_bands(4, None)
    with pytest.raises(ValueError, match=r'has 4 band\(s\), so \[5\] is out of range'):
        choose_bands(4, [5, 3, 2])
    with pytest.raises(ValueError, match='1 or 3'):
        choose_bands(4, [1, 2])


def test_stretch_of_16_bit_bands_uses_percentiles():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4000, (40, 50, 4)).astype(np.uint16)
    scene = ArrayScene(image, bands=[4, 3, 2])
    rgb = scene.read((0, 40, 0, 50))
    for out_band, band in enumerate([3, 2, 1]):
        values = image[..., band].astype(np.float64)
        low, high = np.percentile(values, [2, 98])
        expected = np.clip(np.round((values - low) * 255 / (high - low)), 0, 255)
        np.testing.assert_allclose(rgb[..., out_band], expected, atol=1)
    grey = ArrayScene(np.full((5, 6), 7, np.uint8)).read((0, 5, 0, 6))
    assert grey.shape == (5, 6, 3) and (grey == 7).all()
    assert to_uint8(np.zeros((1, 2, 2), np.uint8), None).shape == (2, 2, 3)
