"""Window grid and logit stitching against hand-computed cases."""
import pytest
import torch

from segearth_ov.models.sliding import stitch_windows, window_batches, window_grid


def slide_logits(images, window_fn, crop, stride, batch_size):
    """The segmentors' composition: every window batch through ``window_fn``, stitched."""
    return stitch_windows(images.shape, ((jobs, window_fn(crops)) for jobs, crops in
                                         window_batches(images, crop, stride, batch_size)))


def test_grid_448_is_3x3_with_mmseg_positions():
    wins = window_grid(448, 448, 224, 112)
    assert len(wins) == 9
    assert sorted({(y1, y2) for y1, y2, _, _ in wins}) == [(0, 224), (112, 336), (224, 448)]


def test_grid_last_window_shifted_back_and_small_images():
    assert window_grid(300, 100, 224, 112) == [(0, 224, 0, 100), (76, 300, 0, 100)]
    assert window_grid(50, 60, 224, 112) == [(0, 50, 0, 60)]
    assert window_grid(300, 500, 0, 112) == [(0, 300, 0, 500)]
    with pytest.raises(ValueError, match='slide_stride'):
        window_grid(300, 300, 224, 0)


def test_stitching_averages_overlaps():
    # Each window predicts a constant equal to its own index; a pixel's value must be the
    # mean of the indices of the windows covering it.
    images = torch.zeros(1, 1, 6, 6)
    wins = window_grid(6, 6, 4, 2)
    calls = []

    def window_fn(crops):
        out = torch.stack([torch.full((1, 4, 4), float(len(calls) * 100 + i))
                           for i in range(crops.shape[0])])
        calls.append(crops.shape[0])
        return out

    out = slide_logits(images, window_fn, 4, 2, batch_size=3)
    assert calls == [3, 1]
    values = [float(i) if i < 3 else 100.0 for i in range(4)]
    expected = torch.zeros(6, 6)
    count = torch.zeros(6, 6)
    for value, (y1, y2, x1, x2) in zip(values, wins):
        expected[y1:y2, x1:x2] += value
        count[y1:y2, x1:x2] += 1
    torch.testing.assert_close(out[0, 0], expected / count)
    assert out[0, 0, 0, 0] == 0 and out[0, 0, 5, 5] == 100 and out[0, 0, 3, 3] == 103 / 4


def test_identity_windows_reproduce_a_batch_of_images():
    images = torch.randn(3, 2, 9, 7)
    out = slide_logits(images, lambda crops: crops * 1.0, 5, 3, batch_size=4)
    torch.testing.assert_close(out, images)
