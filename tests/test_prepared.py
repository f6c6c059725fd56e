"""A prepared image segmented with a new vocabulary equals a cold run with that vocabulary:
both methods, with and without global bias, with and without the upsampler, sliding and
whole-image views, at the model and through ``OpenVocabSegmenter.prepare``."""
import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from conftest import small_segmentor
from segearth_ov.apis import OpenVocabSegmenter
from segearth_ov.apis.blending import blended_probabilities
from segearth_ov.apis.scenes import ArrayScene

FIRST = ['road', 'building,roof', 'tree', 'water']
SECOND = ['water', 'bare soil', 'building,house', 'car', 'road']


def assert_same_segmentation(prepared_samples, cold_samples, margin=0.0):
    """Probabilities within 1e-5; labels equal wherever the top two classes are more than
    ``margin`` apart (0: everywhere)."""
    for warm, cold in zip(prepared_samples, cold_samples):
        probs = cold.seg_logits.data
        torch.testing.assert_close(warm.seg_logits.data, probs, rtol=0, atol=1e-5)
        top2 = probs.topk(2, dim=0).values
        decided = top2[0] - top2[1] > margin
        assert decided.float().mean() > 0.5  # random weights: many near ties
        assert torch.equal(warm.pred_sem_seg.data[0][decided],
                           cold.pred_sem_seg.data[0][decided])


@pytest.mark.parametrize('upsampler', [None, dict(type='jbu_one'), dict(type='jbu_stack')],
                         ids=['none', 'jbu_one', 'jbu_stack'])
@pytest.mark.parametrize('cls_token_lambda', [-0.3, 0.0], ids=['bias', 'no-bias'])
@pytest.mark.parametrize('slide', [(64, 32), (0, 0)], ids=['sliding', 'whole'])
def test_segearth_ov_prepared_equals_a_cold_model(upsampler, cls_token_lambda, slide):
    options = dict(upsampler=upsampler, cls_token_lambda=cls_token_lambda,
                   slide_crop=slide[0], slide_stride=slide[1])
    images = torch.randn(2, 3, 96, 80)
    model = small_segmentor(classes=FIRST, **options)
    prepared = model.prepare(images)
    model.set_vocabulary(SECOND, prob_thd=0.3, bg_idx=1)
    cold = small_segmentor(classes=SECOND, prob_thd=0.3, bg_idx=1, **options)
    # the same functions on the same numbers: equal to the last bit
    for warm, fresh in zip(model.segment_prepared(prepared), cold.predict(images)):
        assert torch.equal(warm.seg_logits.data, fresh.seg_logits.data)
        assert torch.equal(warm.pred_sem_seg.data, fresh.pred_sem_seg.data)


def test_segearth_ov3_prepared_equals_a_cold_model():
    from test_segearth_ov3 import small_model
    images = torch.rand(2, 3, 50, 64) * 255
    model = small_model(slide_crop=40, slide_stride=30)
    prepared = model.prepare(images)
    model.segment_prepared(prepared)  # every prompt of the first vocabulary decoded
    second = ['road', 'water', 'building,house', 'background']  # shares three prompts
    model.set_vocabulary(second, prob_thd=0.05, bg_idx=3)
    cold = small_model(slide_crop=40, slide_stride=30, classes=second, prob_thd=0.05, bg_idx=3)
    # a prompt decoded beside other prompts differs by float noise (batched decoding)
    assert_same_segmentation(model.segment_prepared(prepared), cold.predict(images), 1e-5)
    assert set(prepared.views[0][1]['maps']) == {'background', 'building', 'house', 'road',
                                                 'tree', 'forest', 'water'}


def segmenter_with(classes, **kwargs):
    torch.manual_seed(0)
    options = dict(clip='ViT-S-16', pretrained='none', upsampler='none', device='cpu',
                   prompt_templates=['a satellite photo of {}.'], tile=128, overlap=32,
                   batch_size=3)
    options.update(kwargs)
    return OpenVocabSegmenter(classes, **options)


def test_prepared_image_equals_a_cold_segmenter_across_tiles():
    image = np.random.default_rng(0).integers(0, 255, (200, 300, 3), np.uint8)
    segmenter = segmenter_with(FIRST)
    prepared = segmenter.prepare(image)
    first = prepared.segment(FIRST)
    assert not first.from_prepared
    second = prepared.segment(';'.join(SECOND), prob_thd=0.25)
    assert second.from_prepared and second.class_names == ['water', 'bare soil', 'building',
                                                           'car', 'road']
    cold = segmenter_with(SECOND, prob_thd=0.25)
    np.testing.assert_array_equal(second.labels, cold(image))
    expected = np.zeros(image.shape[:2], np.float32)
    for (y1, y2, x1, x2), probs in blended_probabilities(
            ArrayScene(image), cold.probabilities, 128, 32, batch_size=3):
        expected[y1:y2, x1:x2] = probs.max(axis=0)
    np.testing.assert_allclose(second.confidence, expected, rtol=0, atol=1e-5)
    assert second.pixels.sum() == image.shape[0] * image.shape[1]
    np.testing.assert_array_equal(second.pixels, np.bincount(second.labels.ravel(),
                                                             minlength=5))
    # the threshold alone changes: the same maps, more background
    stricter = prepared.segment(';'.join(SECOND), prob_thd=0.9, bg_idx=1)
    assert (stricter.labels == 1).sum() > (second.labels == 1).sum()


def test_region_of_a_geotiff_keeps_its_place_and_no_data(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(1, 255, (3, 90, 120), np.uint8)
    pixels[:, :10, :] = 0  # no data along the top
    path = tmp_path / 'scene.tif'
    with rasterio.open(path, 'w', driver='GTiff', width=120, height=90, count=3,
                       dtype='uint8', crs='EPSG:32633', nodata=0,
                       transform=from_origin(500000, 4000000, 0.5, 0.5)) as dst:
        dst.write(pixels)
    segmenter = segmenter_with(FIRST)
    region = segmenter.prepare(path, region=(0, 60, 20, 100))
    assert (region.height, region.width) == (60, 80)
    assert region.transform == from_origin(500010, 4000000, 0.5, 0.5)
    result = region.segment(FIRST)
    assert (result.labels[:10] == result.nodata).all() and np.isnan(result.confidence[:10]).all()
    assert result.area_m2 == pytest.approx([n * 0.25 for n in result.pixels])
    with pytest.raises(ValueError, match='is not inside the 120 x 90 scene'):
        segmenter.prepare(path, region=(0, 100, 0, 10))


def test_prepared_images_are_kept_within_the_memory_bound():
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    segmenter = segmenter_with(FIRST)
    one = segmenter.prepare(image, key='a')
    assert segmenter.prepare(image, key='a') is one
    segmenter.prepared.max_bytes = one.nbytes * 2 + 1
    segmenter.prepare(image[::-1].copy(), key='b')
    segmenter.prepare(image, key='a')  # used again: 'b' is now the least recent
    segmenter.prepare(image[:, ::-1].copy(), key='c')
    assert list(segmenter.prepared) == ['a', 'c']
    assert segmenter.prepared.nbytes <= segmenter.prepared.max_bytes


def test_bad_vocabularies_name_the_problem():
    segmenter = segmenter_with(FIRST, class_chunk=3)
    prepared = segmenter.prepare(np.zeros((40, 40, 3), np.uint8))
    with pytest.raises(ValueError, match='at most --class-chunk'):
        prepared.segment(FIRST)
    with pytest.raises(ValueError, match='bg_idx=7 is not a class index'):
        prepared.segment(['a', 'b'], bg_idx=7)


def test_an_image_over_the_memory_bound_is_refused_while_prepared():
    segmenter = segmenter_with(FIRST, prepared_bytes=1000)
    with pytest.raises(ValueError, match=r'would hold more than 0.0 MiB prepared \(.* after 3 of '
                                         r'6 tiles\): choose a smaller region'):
        segmenter.prepare(np.zeros((200, 300, 3), np.uint8))
