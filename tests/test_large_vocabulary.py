"""Vocabularies of thousands of classes: scored class-chunk by class-chunk with a running
max / log-sum-exp, equal to the unchunked computation, in bounded memory."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
import torch

from conftest import REPO, small_segmentor
from peak_memory import child_env
from scenes_util import smooth_scene, write_geotiff
from segearth_ov.apis import OpenVocabSegmenter
from segearth_ov.geometry import core_spans, tile_cores, tile_grid, tile_spans

SKYSENSE_SCALE = 1763


def vocabulary(count):
    """``count`` distinct generated class names (every 7th with a synonym)."""
    return [f'kind {i}' + (f',sort {i}' if i % 7 == 0 else '') for i in range(count)]


@pytest.mark.parametrize('chunk', [1, 3, 5])
def test_chunked_top_classes_equal_predict(chunk):
    model = small_segmentor(classes=vocabulary(9), prob_thd=0.12, bg_idx=2, slide_crop=48,
                            slide_stride=32)
    images = torch.randn(2, 3, 70, 60)
    for sample, (labels, probs) in zip(model.predict(images), model.top_classes(images, chunk)):
        assert torch.equal(sample.pred_sem_seg.data[0], labels)
        torch.testing.assert_close(sample.seg_logits.data.max(0).values, probs)
    assert (labels == 2).any()  # the threshold was exercised


def test_1763_classes_equal_the_unchunked_argmax():
    torch.manual_seed(0)
    segmenter = OpenVocabSegmenter(vocabulary(SKYSENSE_SCALE), clip='ViT-S-16',
                                   pretrained='none', upsampler='none', device='cpu',
                                   prompt_templates=['{}'], tile=96, overlap=0,
                                   class_chunk=256)
    assert segmenter.large_vocabulary
    image = smooth_scene(80, 96).transpose(1, 2, 0)
    labels = segmenter(image)
    assert labels.dtype == np.uint16
    batch = segmenter.model.data_preprocessor(dict(inputs=[
        torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1)]))['inputs']
    expected = segmenter.model.predict(batch)[0].pred_sem_seg.data[0].numpy()
    np.testing.assert_array_equal(labels, expected)
    assert len(np.unique(labels)) > 10


def test_core_spans_partition_the_axis():
    for size, tile, overlap in ((1000, 256, 64), (300, 128, 32), (100, 128, 16), (513, 64, 0)):
        spans = tile_spans(size, tile, overlap)
        cores = core_spans(spans)
        assert cores[0][0] == 0 and cores[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(cores, cores[1:]))
        assert all(s <= c1 < c2 <= e for (s, e), (c1, c2) in zip(spans, cores))
    assert len(tile_cores(300, 1000, 128, 32)) == len(tile_grid(300, 1000, 128, 32))


def test_large_vocabulary_scene_takes_each_pixel_from_its_nearest_tile(tmp_path):
    """A multi-tile scene in chunked mode: each core equals the unchunked model on its tile."""
    torch.manual_seed(0)
    segmenter = OpenVocabSegmenter(vocabulary(5), clip='ViT-S-16', pretrained='none',
                                   upsampler='none', device='cpu', prompt_templates=['{}'],
                                   tile=64, overlap=16, class_chunk=2)
    scene = smooth_scene(150, 170)
    write_geotiff(tmp_path / 's.tif', scene)
    summary = segmenter.predict_file(tmp_path / 's.tif', tmp_path, progress=False)
    assert summary['settings']['class_chunk'] == 2
    with rasterio.open(tmp_path / 's.tif.labels.tif') as ds:
        labels = ds.read(1)
    image = scene.transpose(1, 2, 0)
    for (y1, y2, x1, x2), (cy1, cy2, cx1, cx2) in zip(tile_grid(150, 170, 64, 16),
                                                      tile_cores(150, 170, 64, 16)):
        probs = segmenter.probabilities(image[y1:y2, x1:x2][None])[0]
        expected = segmenter.labels_from_probabilities(probs)
        np.testing.assert_array_equal(labels[cy1:cy2, cx1:cx2],
                                      expected[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1])


MEMORY_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np, torch
    from segearth_ov.apis import OpenVocabSegmenter
    from peak_memory import peak_mib, reset_peak
    names = [f'kind {{i}}' for i in range({count})]
    torch.manual_seed(0)
    s = OpenVocabSegmenter(names, clip='ViT-S-16', pretrained='none', upsampler='none',
                           device='cpu', prompt_templates=['{{}}'], tile={side}, overlap=0,
                           class_chunk=64, text_cache=False)
    s.model.query_embeddings  # text encoded before the baseline
    image = np.random.default_rng(0).integers(0, 255, ({side}, {side}, 3), dtype=np.uint8)
    s(image[:64, :64])  # warm-up: allocator pools, lazy imports
    reset_peak()
    before = peak_mib()
    labels = s(image)
    print(json.dumps(dict(grew_mib=peak_mib() - before, classes=int(labels.max()) + 1)))
''')


@pytest.mark.slow
def test_1763_classes_on_a_384_scene_stay_far_below_the_full_map():
    """The peak grows by about a quarter of one [Q, H, W] map, whatever the side (0.26 at
    384 and at 512, measured): the chunks' maps, the views' and the stitched ones."""
    side = 384
    full_mib = SKYSENSE_SCALE * side * side * 4 / 2 ** 20  # one [Q, H, W] float32 map
    done = subprocess.run([sys.executable, '-c', MEMORY_SCRIPT.format(count=SKYSENSE_SCALE,
                                                                      side=side)],
                          capture_output=True, text=True, timeout=900, cwd=REPO,
                          env=child_env())
    assert done.returncode == 0, done.stderr
    import json
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result['grew_mib'] < full_mib / 3, (result, full_mib)


def test_row_bands_cut_where_tile_cores_meet():
    from segearth_ov.geometry import row_bands
    cores = core_spans(tile_spans(1000, 256, 64))
    for parts in (1, 2, 3, len(cores), len(cores) + 2):
        bands = row_bands(1000, 256, 64, parts)
        assert len(bands) == parts and bands[0][0] == 0 and bands[-1][1] == 1000
        assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))
        cuts = {c for core in cores for c in core}
        assert all(y in cuts for band in bands for y in band)
    assert sum(b > a for a, b in row_bands(1000, 256, 64, len(cores) + 2)) == len(cores)
