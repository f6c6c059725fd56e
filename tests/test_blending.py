"""Tiles, blending across overlaps (against a float64 reference), and tiled inference
equal to whole-image inference."""
import numpy as np
import pytest
import torch

from segearth_ov.apis import OpenVocabSegmenter
from segearth_ov.apis.blending import TileBlender, blended_probabilities
from segearth_ov.apis.scenes import ArrayScene
from segearth_ov.geometry import tile_grid, tile_spans


@pytest.mark.parametrize('size,tile,overlap', [(4096, 1024, 128), (1000, 1024, 128),
                                               (1025, 1024, 128), (51, 16, 5), (300, 64, 0)])
def test_tile_spans_are_few_even_and_overlapping(size, tile, overlap):
    spans = tile_spans(size, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == size
    assert len({b - a for a, b in spans}) == 1 and spans[0][1] - spans[0][0] <= tile
    assert all(b1 - a2 >= overlap for (_, b1), (a2, _) in zip(spans, spans[1:]))
    # no fewer tiles of at most `tile` pixels can overlap by `overlap`
    fewest = 1 if size <= tile else -(-(size - overlap) // (tile - overlap))
    assert len(spans) == fewest
    if size == 4096:
        assert len(spans) == 5 and spans[1][0] == 794  # not 0, 896, ..., 3072


def reference_blend(height, width, tile, overlap, tile_probs):
    """float64: per pixel sum(w p) / sum(w) over every tile; w = wy * wx, each the distance
    to the nearest inner tile edge over the overlap, at most 1."""
    num = np.zeros((2, height, width))
    den = np.zeros((height, width))
    for (y1, y2, x1, x2), probs in tile_probs.items():
        for yy in range(y1, y2):
            for xx in range(x1, x2):
                wy = wx = 1.0
                if y1 > 0:
                    wy = min(wy, (yy - y1 + 0.5) / overlap)
                if y2 < height:
                    wy = min(wy, (y2 - 1 - yy + 0.5) / overlap)
                if x1 > 0:
                    wx = min(wx, (xx - x1 + 0.5) / overlap)
                if x2 < width:
                    wx = min(wx, (x2 - 1 - xx + 0.5) / overlap)
                w = wy * wx
                num[:, yy, xx] += w * probs[:, yy - y1, xx - x1]
                den[yy, xx] += w
    return num / den


def test_blending_matches_a_float64_reference_and_covers_each_pixel_once():
    height, width, tile, overlap = 37, 51, 16, 5
    rng = np.random.default_rng(1)
    seen = {}

    def prob_fn(tiles):  # depends on the tile, so overlaps really disagree
        out = rng.random((tiles.shape[0], 2, *tiles.shape[1:3])).astype(np.float32)
        return out

    scene = ArrayScene(np.zeros((height, width, 3), np.uint8))
    original = TileBlender.add

    def spy(self, window, probs):
        seen[window] = probs.astype(np.float64)
        return original(self, window, probs)

    TileBlender.add = spy
    try:
        result = np.full((2, height, width), np.nan)
        cover = np.zeros((height, width), int)
        for (y1, y2, x1, x2), probs in blended_probabilities(scene, prob_fn, tile, overlap,
                                                             batch_size=4):
            result[:, y1:y2, x1:x2] = probs
            cover[y1:y2, x1:x2] += 1
    finally:
        TileBlender.add = original
    assert (cover == 1).all()
    assert set(seen) == set(tile_grid(height, width, tile, overlap))
    np.testing.assert_allclose(result, reference_blend(height, width, tile, overlap, seen),
                               rtol=1e-5, atol=1e-6)


def test_pixelwise_model_has_no_seams():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)

    def pixelwise(tiles):
        x = tiles.astype(np.float32).transpose(0, 3, 1, 2) / 255
        return np.concatenate([x, 1 - x], axis=1)

    whole = pixelwise(image[None])[0]
    out = np.zeros_like(whole)
    for (y1, y2, x1, x2), probs in blended_probabilities(ArrayScene(image), pixelwise, 32, 8):
        out[:, y1:y2, x1:x2] = probs
    np.testing.assert_allclose(out, whole, atol=1e-6)


def test_tile_covering_the_image_equals_whole_image_inference(segmenter):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)
    model = segmenter.model
    batch = model.data_preprocessor(dict(inputs=[torch.from_numpy(
        np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1)]))['inputs']
    expected = model.predict(batch)[0].pred_sem_seg.data[0].numpy()
    assert np.array_equal(segmenter(image), expected)  # 100x120 fits in one 128 tile


def test_settings_from_a_benchmark_config():
    from conftest import REPO
    seg = OpenVocabSegmenter(['water', 'land'], config=REPO / 'configs' / 'cfg_fusar_sar.py',
                             clip='ViT-S-16', pretrained='none', upsampler='none', device='cpu',
                             prompt_templates=['{}'])
    assert seg.model.dense_clip.attention == 'SCLIP'
    assert seg.model.dense_clip.attention_layers == 2 and seg.model.slide_crop == 224
    assert seg.model.bg_idx == 0 and seg.model.prob_thd == 0.0  # not the benchmark's own
    with pytest.raises(FileNotFoundError, match='config .*nope.py not found'):
        OpenVocabSegmenter(['a', 'b'], config='nope.py', pretrained='none')
