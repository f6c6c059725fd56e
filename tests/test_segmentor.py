"""SegEarthOV end to end on CPU with random weights under a fixed seed."""
import pytest
import torch
import torch.nn.functional as F
from mmseg.structures import SegDataSample

from conftest import small_segmentor
from segearth_ov.models import SegEarthOV
from segearth_ov.models.data_preprocessor import RSDataPreProcessor, select_bands
from segearth_ov.models.global_bias import alleviate_global_bias


@pytest.fixture(scope='module')
def seg():
    return small_segmentor(slide_crop=64, slide_stride=32,
                           upsampler=dict(type='jbu_one'), window_batch_size=5)


def test_outputs_are_mmseg_samples_at_the_original_size(seg):
    images = torch.randn(1, 3, 96, 80)
    sample = SegDataSample(metainfo=dict(img_shape=(96, 80), ori_shape=(150, 125)))
    out = seg.predict(images, [sample])[0]
    probs = out.seg_logits.data
    assert probs.shape == (4, 150, 125) and out.pred_sem_seg.data.shape == (1, 150, 125)
    # argmax of the class probabilities (prob_thd 0) is the label map
    assert torch.equal(out.pred_sem_seg.data[0], probs.argmax(0))


def test_batch_of_two_equals_two_single_runs(seg):
    images = torch.randn(2, 3, 96, 80)
    both = seg.predict(images)
    for index in range(2):
        single = seg.predict(images[index:index + 1])[0]
        torch.testing.assert_close(both[index].seg_logits.data, single.seg_logits.data,
                                   rtol=1e-4, atol=1e-5)
        assert torch.equal(both[index].pred_sem_seg.data, single.pred_sem_seg.data)


def test_window_logits_follow_the_published_composition(seg):
    crops = torch.randn(2, 3, 40, 56)
    out = seg.window_logits(crops)
    padded = F.pad(crops, (4, 4, 4, 4))                      # 40x56 -> 48x64, split evenly
    with torch.no_grad():
        cls, patches = seg.dense_clip(padded)
        patches = F.normalize(seg.upsampler(patches, padded), dim=1)
    text = seg.query_embeddings
    logits = alleviate_global_bias(torch.einsum('ndhw,qd->nqhw', patches, text), cls, text, -0.3)
    torch.testing.assert_close(out, logits[..., 4:44, 4:60], rtol=1e-4, atol=1e-5)


def test_slide_crop_covering_the_image_equals_whole_image(seg):
    images = torch.randn(1, 3, 48, 64)
    whole = small_segmentor(slide_crop=0, upsampler=None).predict(images)[0]
    covered = small_segmentor(slide_crop=64, slide_stride=32, upsampler=None).predict(images)[0]
    torch.testing.assert_close(covered.seg_logits.data, whole.seg_logits.data)


def test_synonyms_share_a_class_and_threshold_applies():
    seg = small_segmentor(slide_crop=0, prob_thd=0.99, bg_idx=2)
    out = seg.predict(torch.randn(1, 3, 32, 32))[0]
    assert seg.class_queries.queries == ('road', 'building', 'roof', 'tree', 'water')
    probs = out.seg_logits.data
    assert probs.shape[0] == 4
    pred = out.pred_sem_seg.data[0]
    low = probs.max(0).values < 0.99
    assert torch.equal(pred[low], torch.full_like(pred[low], 2))


def test_query_embeddings_are_computed_once(seg, monkeypatch):
    first = seg.query_embeddings
    monkeypatch.setattr('segearth_ov.models.segmentor.cached_query_embeddings',
                        lambda *a, **k: pytest.fail('re-encoded'))
    assert seg.query_embeddings is first


def test_training_is_refused(seg):
    with pytest.raises(NotImplementedError, match='training-free'):
        seg.loss(torch.randn(1, 3, 32, 32), [])


@pytest.mark.parametrize('kwargs,error,message', [
    (dict(attention='SegErth'), ValueError, 'unknown attention'),
    (dict(upsampler=dict(type='bicubic')), ValueError, 'unknown upsampler'),
    (dict(bg_idx=4), ValueError, r'bg_idx=4 is not a class index \(0..3\)'),
    (dict(precision='fp8'), ValueError, 'precision must be one of'),
    (dict(classes=None), ValueError, 'exactly one of name_path'),
    (dict(classes=None, name_path='no/such/names.txt'), FileNotFoundError, 'no/such/names.txt'),
    (dict(clip=dict(arch='ViT-B-32', pretrained=None), upsampler=dict(type='jbu_stack')),
     ValueError, 'patch size 32'),
])
def test_bad_configuration(kwargs, error, message):
    with pytest.raises(error, match=message):
        small_segmentor(**kwargs)


def test_half_precision_needs_cuda():
    seg = small_segmentor(precision='fp16')
    with pytest.raises(ValueError, match='precision=fp16 needs CUDA'):
        seg.predict(torch.randn(1, 3, 32, 32))


def test_wrong_channel_count_reaching_the_model():
    with pytest.raises(ValueError, match=r'SegEarthOV expects RGB batches \[B, 3, H, W\]'):
        small_segmentor().predict(torch.randn(1, 4, 32, 32))


def test_band_rule():
    grey = torch.randint(0, 255, (1, 8, 8), dtype=torch.uint8)
    assert torch.equal(select_bands(grey), grey.expand(3, -1, -1))
    rgbn = torch.randint(0, 255, (4, 8, 8), dtype=torch.uint8)
    with pytest.raises(ValueError, match='4 bands but the model needs 3.*bands='):
        select_bands(rgbn)
    assert torch.equal(select_bands(rgbn, (4, 3, 2)), rgbn[[3, 2, 1]])
    with pytest.raises(ValueError, match=r'bands=\[5, 3, 2\].*1..4'):
        select_bands(rgbn, (5, 3, 2))


def test_one_band_image_is_segmented_like_its_grey_rgb_copy():
    seg = small_segmentor(slide_crop=0)
    grey = torch.randint(0, 255, (1, 32, 48), dtype=torch.uint8)
    one = seg.data_preprocessor(dict(inputs=[grey]))['inputs']
    three = seg.data_preprocessor(dict(inputs=[grey.expand(3, -1, -1).clone()]))['inputs']
    torch.testing.assert_close(one, three)
    with pytest.raises(ValueError, match='4 bands'):
        seg.data_preprocessor(dict(inputs=[torch.zeros(4, 8, 8, dtype=torch.uint8)]))
    picked = RSDataPreProcessor(bands=(3, 2, 1))(dict(inputs=[torch.zeros(4, 8, 8)]))
    assert picked['inputs'].shape == (1, 3, 8, 8)


def test_registered_in_mmseg():
    from mmseg.registry import MODELS
    assert MODELS.get('SegEarthOV') is SegEarthOV
