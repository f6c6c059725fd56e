"""segearth-ov predict / OpenVocabSegmenter: bands, tiling and blending against float64
references, GeoTIFF georeferencing, memory on large scenes, weights, and bad input."""
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from conftest import shared_path
from segearth_ov.apis import OpenVocabSegmenter, parse_classes
from segearth_ov.apis.cli import main
from segearth_ov.apis.scenes import (ArrayScene, TileBlender, blended_probabilities,
                                     choose_bands, tile_grid, tile_spans, to_uint8)
from segearth_ov.apis.weights import download_simfeatup, git_blob_sha1, resolve_clip

CLASSES = ['building,roof', 'road', 'water', 'tree']


@pytest.fixture(scope='module')
def segmenter():
    torch.manual_seed(0)
    return OpenVocabSegmenter(CLASSES, clip='ViT-S-16', pretrained='none', upsampler='none',
                              device='cpu', prompt_templates=['a satellite photo of {}.'],
                              tile=128, overlap=32, batch_size=3)


def write_geotiff(path, array, crs='EPSG:32632', pixel=0.5, **kwargs):
    """``array`` ``[bands, H, W]``."""
    with rasterio.open(path, 'w', driver='GTiff', width=array.shape[2], height=array.shape[1],
                       count=array.shape[0], dtype=array.dtype, crs=crs,
                       transform=Affine(pixel, 0, 500000, 0, -pixel, 5650000), **kwargs) as ds:
        ds.write(array)


def smooth_scene(height, width):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                     ((x + y) % 256)]).astype(np.uint8)


# ------------------------------------------------------------------------------ classes
def test_parse_classes():
    assert parse_classes('building, roof;road ; water') == ['building,roof', 'road', 'water']
    assert parse_classes(['a,b', 'c']) == ['a,b', 'c']
    with pytest.raises(ValueError, match='empty'):
        parse_classes(' ; ')
    with pytest.raises(ValueError, match=r"'Road' is given twice \(classes 1 and 3\)"):
        parse_classes('road;building;Road')
    with pytest.raises(ValueError, match='empty name'):
        parse_classes('building,;road')


# -------------------------------------------------------------------------------- bands
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


# ----------------------------------------------------------------------------- blending
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


# ----------------------------------------------------------------------------- GeoTIFF
def test_geotiff_keeps_georeferencing_and_areas_add_up(segmenter, tmp_path):
    write_geotiff(tmp_path / 'scene.tif', smooth_scene(200, 300))
    summary = segmenter.predict_file(tmp_path / 'scene.tif', tmp_path / 'out', progress=False)
    with rasterio.open(tmp_path / 'scene.tif') as src, \
            rasterio.open(tmp_path / 'out' / 'scene.tif.labels.tif') as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert (out.width, out.height, out.count, out.dtypes[0]) == (300, 200, 1, 'uint8')
        labels = out.read(1)
        colours = out.colormap(1)
    for index, colour in enumerate(segmenter.palette):
        assert colours[index][:3] == tuple(int(c) for c in colour)
    counts = np.bincount(labels.ravel(), minlength=4)
    on_disk = json.loads((tmp_path / 'out' / 'scene.tif.json').read_text())
    assert on_disk == summary
    assert [c['pixels'] for c in summary['classes']] == counts.tolist()
    assert [c['area_m2'] for c in summary['classes']] == [n * 0.25 for n in counts]
    assert summary['crs'] == 'EPSG:32632' and summary['tiles'] == len(tile_grid(200, 300, 128,
                                                                                 32))
    assert (tmp_path / 'out' / 'scene.tif.overlay.png').stat().st_size > 0


def test_plain_png_gives_png_labels_without_areas(segmenter, tmp_path):
    from PIL import Image
    Image.fromarray(smooth_scene(60, 80).transpose(1, 2, 0)).save(tmp_path / 'photo.png')
    summary = segmenter.predict_file(tmp_path / 'photo.png', tmp_path, progress=False)
    labels = np.asarray(Image.open(tmp_path / 'photo.png.labels.png'))
    assert labels.shape == (60, 80)
    assert summary['crs'] is None and summary['classes'][0]['area_m2'] is None
    assert sum(c['pixels'] for c in summary['classes']) == 60 * 80


def test_real_openearthmap_tile_keeps_georeferencing(segmenter, tmp_path):
    source = shared_path('rs_samples', 'unlabeled', 'oem_koeln_50.tif')
    segmenter.predict_file(source, tmp_path, progress=False)
    with rasterio.open(source) as src, rasterio.open(tmp_path / 'oem_koeln_50.tif.labels.tif') as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)


PEAK_SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    from segearth_ov.apis.scenes import (LabelWriter, RasterScene, blended_probabilities,
                                         raster_session)
    from segearth_ov.apis.visualize import class_palette
    from pathlib import Path

    def pixelwise(tiles):
        x = tiles[..., 0].astype(np.float32)[:, None] / 255
        return np.concatenate([x, 1 - x, 0.5 * x, 0.5 - 0.5 * x], axis=1)

    with raster_session():
        scene = RasterScene(sys.argv[1])
        writer = LabelWriter(Path(sys.argv[2]), scene, class_palette(4))
        # tile 1050, overlap 50: both scenes are cut into tiles of nearly one size (1025 and
        # 1042 pixels), so any difference in peak memory comes from the scene size
        for window, probs in blended_probabilities(scene, pixelwise, 1050, 50, batch_size=2):
            writer.write(window, probs.argmax(0).astype(np.uint8))
        writer.close()
    # VmHWM: this process image's own peak (ru_maxrss would include the forking parent's)
    peak = next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))
    print(int(peak.split()[1]) // 1024)
''')


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc/self/status')
def test_peak_memory_depends_on_the_tile_not_the_scene(tmp_path):
    script = tmp_path / 'peak.py'
    script.write_text(PEAK_SCRIPT)
    peaks = {}
    for side in (2000, 6000):
        path = tmp_path / f'scene{side}.tif'
        write_geotiff(path, smooth_scene(side, side), tiled=True, blockxsize=256,
                      blockysize=256)
        run = subprocess.run([sys.executable, str(script), str(path),
                              str(tmp_path / f'labels{side}.tif')],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        peaks[side] = int(run.stdout.split()[-1])
        path.unlink()
    scene_mb = 6000 * 6000 * 3 / 2 ** 20  # 103 MB of pixels in the large scene
    print(f'peak RSS: {peaks} MB')
    # 9x the pixels: the extra is GDAL's bounded cache and the overlap strip, well under the
    # large scene's own pixels (its probabilities would be 550 MB)
    assert peaks[6000] - peaks[2000] < 0.6 * scene_mb
    assert peaks[6000] < 1.1 * peaks[2000]


# ------------------------------------------------------------------------------ weights
def test_git_blob_hash_matches_git(tmp_path):
    if shutil.which('git') is None:
        pytest.skip('git is not installed')
    data = np.random.default_rng(4).bytes(5000)
    (tmp_path / 'blob').write_bytes(data)
    expected = subprocess.run(['git', 'hash-object', str(tmp_path / 'blob')],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert git_blob_sha1(data) == expected


def test_download_checks_the_blob_hash(tmp_path):
    source = tmp_path / 'served.ckpt'
    source.write_bytes(b'checkpoint bytes')
    dest = tmp_path / 'checkpoints' / 'x.ckpt'
    with pytest.raises(ValueError, match='git blob hash .* expected d40f0083'):
        download_simfeatup(dest, source.as_uri())
    assert not dest.exists() and not list(tmp_path.glob('checkpoints/.*'))
    good = git_blob_sha1(b'checkpoint bytes')
    assert download_simfeatup(dest, source.as_uri(), good) == dest
    assert dest.read_bytes() == b'checkpoint bytes'
    with pytest.raises(ConnectionError, match='save it as'):
        download_simfeatup(tmp_path / 'y.ckpt', (tmp_path / 'absent').as_uri())


def test_missing_clip_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match='download-weights.*checkpoints/ViT-B-16.pt'):
        resolve_clip('ViT-B-16', 'auto')
    assert resolve_clip('ViT-B-16', 'none') == (dict(arch='ViT-B-16', pretrained=None), None)


# ---------------------------------------------------------------------------- bad input
def cli(tmp_path, *args):
    return main(['predict', *map(str, args), '--clip', 'ViT-S-16', '--pretrained', 'none',
                 '--upsampler', 'none', '--tile', '64', '--overlap', '16', '--quiet',
                 '--device', 'cpu'])


def test_cli_errors_keep_other_outputs(tmp_path, capsys):
    good = tmp_path / 'good.tif'
    write_geotiff(good, smooth_scene(40, 50))
    corrupt = tmp_path / 'corrupt.tif'
    corrupt.write_bytes(b'II*\x00 not really a tiff')
    out = tmp_path / 'out'
    code = cli(tmp_path, good, tmp_path / 'missing.tif', corrupt, '--classes', 'road;water',
               '--out', out)
    err = capsys.readouterr().err
    assert code == 1
    assert 'missing.tif not found' in err and 'cannot read' in err and 'corrupt.tif' in err
    assert sorted(p.name for p in out.iterdir()) == ['good.tif.json', 'good.tif.labels.tif',
                                                     'good.tif.overlay.png']


@pytest.mark.parametrize('extra,message', [
    (['--classes', ' ; '], 'class list is empty'),
    (['--classes', 'road;road'], "'road' is given twice"),
    (['--classes', 'road;water', '--bands', '3,2,9'], 'out of range'),
])
def test_cli_input_errors(tmp_path, capsys, extra, message):
    image = tmp_path / 'scene.tif'
    write_geotiff(image, smooth_scene(20, 20))
    assert cli(tmp_path, image, '--out', tmp_path / 'out', *extra) != 0
    assert message in capsys.readouterr().err


def test_cli_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / 'file'
    blocker.write_text('not a folder')
    image = tmp_path / 'scene.tif'
    write_geotiff(image, smooth_scene(20, 20))
    assert cli(tmp_path, image, '--classes', 'road;water', '--out', blocker / 'out') == 2
    assert 'cannot be created' in capsys.readouterr().err
