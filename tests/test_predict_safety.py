"""segearth-ov predict under hostile and unlucky input: colliding names, reruns, kills,
failures mid-batch, no-data, wide vocabularies, palette images, permissions, and user errors
that must read as one paragraph."""
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from scenes_util import smooth_scene, write_geotiff
from segearth_ov.apis import OpenVocabSegmenter
from segearth_ov.apis.cli import main
from segearth_ov.apis.label_maps import LabelWriter

CLASSES = ['building,roof', 'road', 'water', 'tree']
BASE = ['--clip', 'ViT-S-16', '--pretrained', 'none', '--upsampler', 'none', '--tile', '64',
        '--overlap', '16', '--quiet', '--device', 'cpu', '--classes', 'road;water;tree',
        '--prompt-templates', 'a satellite photo of {}.']


def predict(*args):
    """``segearth-ov predict`` on a small random-weights model; ``args`` come last, so
    they override the defaults."""
    return main(['predict', *BASE, *map(str, args)])


@pytest.fixture(scope='module')
def segmenter():
    torch.manual_seed(0)
    return OpenVocabSegmenter(CLASSES, clip='ViT-S-16', pretrained='none', upsampler='none',
                              device='cpu', prompt_templates=['a satellite photo of {}.'],
                              tile=64, overlap=16)


RUN_FILES = ('manifest.json', 'index.json', 'collection.json')  # and .segearth_ov/


def names(folder):
    """The per-input outputs under ``folder`` (not the run's manifest and index)."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob('*') if p.is_file()
                  and p.relative_to(folder).parts[0] != '.segearth_ov' and
                  str(p.relative_to(folder)) not in RUN_FILES)


# --- outputs that cannot collide, and reruns ---------------------------------------------------

def test_same_stem_inputs_keep_apart(tmp_path, capsys):
    for year in ('2019', '2020'):
        (tmp_path / year).mkdir()
        write_geotiff(tmp_path / year / 'scene.tif', smooth_scene(30, 40))
    Image.fromarray(smooth_scene(30, 40).transpose(1, 2, 0)).save(tmp_path / '2019' / 'scene.png')
    out = tmp_path / 'out'
    assert predict(tmp_path / '2019' / 'scene.tif', tmp_path / '2020' / 'scene.tif',
                   tmp_path / '2019' / 'scene.png', '--out', out) == 0
    assert names(out) == [
        '2019/scene.png.json', '2019/scene.png.labels.png', '2019/scene.png.labels.qml',
        '2019/scene.png.overlay.png', '2019/scene.tif.json', '2019/scene.tif.labels.qml',
        '2019/scene.tif.labels.tif', '2019/scene.tif.overlay.png', '2020/scene.tif.json',
        '2020/scene.tif.labels.qml', '2020/scene.tif.labels.tif', '2020/scene.tif.overlay.png']
    summary = json.loads((out / '2020' / 'scene.tif.json').read_text())
    assert summary['input'].endswith('2020/scene.tif')


def test_outputs_are_never_inputs_and_reruns_skip(tmp_path, capsys):
    data = tmp_path / 'data'
    data.mkdir()
    write_geotiff(data / 'a.tif', smooth_scene(30, 40))
    out = data / 'results'  # inside the input folder
    assert predict(data, '--out', out) == 0
    first = {p: p.stat().st_mtime_ns for p in out.iterdir() if p.name in names(out)}
    assert predict(data, '--out', out) == 0
    printed = capsys.readouterr().out
    assert 'done earlier with the same settings' in printed and '1 of 1 inputs were already' \
        in printed
    # no result rewritten (the run's manifest and index are)
    assert {p: p.stat().st_mtime_ns for p in out.iterdir() if p.name in names(out)} == first
    assert predict(data, '--out', out, '--overwrite') == 0
    assert all(p.stat().st_mtime_ns != first[p] for p in first if p.suffix == '.json')
    assert predict(data / 'results' / 'a.tif.labels.tif', '--out', out) == 2
    assert 'inside the output folder' in capsys.readouterr().err


def test_other_settings_are_refused_without_overwrite(tmp_path, capsys):
    write_geotiff(tmp_path / 'a.tif', smooth_scene(30, 40))
    out = tmp_path / 'out'
    assert predict(tmp_path / 'a.tif', '--out', out) == 0
    before = (out / 'a.tif.labels.tif').read_bytes()
    assert predict(tmp_path / 'a.tif', '--out', out, '--prob-thd', '0.9') == 1
    err = capsys.readouterr().err
    assert 'computed with other settings' in err and '--overwrite' in err
    assert (out / 'a.tif.labels.tif').read_bytes() == before


def test_rerun_after_a_kill_cleans_up_and_finishes(tmp_path):
    write_geotiff(tmp_path / 'a.tif', smooth_scene(30, 40))
    out = tmp_path / 'out'
    code = textwrap.dedent(f"""
        import os, segearth_ov.apis.scene_files as scene_files
        from segearth_ov.apis.cli import main
        def killed(*args, **kwargs):  # the label map is out, then the process dies
            os.kill(os.getpid(), 9)
        scene_files.write_overlay = killed
        main(['predict', *{BASE!r}, {str(tmp_path / 'a.tif')!r}, '--out', {str(out)!r}])
    """)
    process = subprocess.run([sys.executable, '-c', code], capture_output=True)
    assert process.returncode == -9
    assert (out / 'a.tif.labels.tif').is_file() and not (out / 'a.tif.json').exists()
    (out / '.a.tif.labels.tif.x1y2z3.tmp').write_bytes(b'half')  # what a kill leaves too
    assert predict(tmp_path / 'a.tif', '--out', out) == 0
    assert names(out) == ['a.tif.json', 'a.tif.labels.qml', 'a.tif.labels.tif',
                          'a.tif.overlay.png']
    with rasterio.open(out / 'a.tif.labels.tif') as labels:
        assert labels.shape == (30, 40)


def test_one_failing_input_does_not_stop_the_batch(tmp_path, capsys, monkeypatch):
    for name in ('a', 'b', 'c'):
        write_geotiff(tmp_path / f'{name}.tif', smooth_scene(30, 40))
    real_write = LabelWriter.write

    def disk_full_on_b(self, window, labels):
        if self.path.name.startswith('b.tif'):
            raise OSError(28, 'No space left on device', str(self.tmp))
        real_write(self, window, labels)

    monkeypatch.setattr(LabelWriter, 'write', disk_full_on_b)
    out = tmp_path / 'out'
    assert predict(tmp_path / 'a.tif', tmp_path / 'b.tif', tmp_path / 'c.tif', '--out', out) == 1
    err = capsys.readouterr().err
    assert 'b.tif' in err and 'No space left on device' in err and 'Traceback' not in err
    assert '1 of 3 inputs failed' in err
    assert names(out) == ['a.tif.json', 'a.tif.labels.qml', 'a.tif.labels.tif',
                          'a.tif.overlay.png', 'c.tif.json', 'c.tif.labels.qml',
                          'c.tif.labels.tif', 'c.tif.overlay.png']


@pytest.mark.parametrize('args,message', [
    (['--tile', '0'], '--tile must be positive'),
    (['--overlap', '64'], '--overlap must be in [0, tile)'),
    (['--batch-size', '0'], '--batch-size must be >= 1'),
])
def test_bad_tiling_is_refused_before_the_model_is_built(tmp_path, capsys, monkeypatch, args,
                                                         message):
    import segearth_ov.models

    def no_model(*a, **k):
        raise AssertionError('the model was built before the arguments were checked')
    monkeypatch.setattr(segearth_ov.models, 'SegEarthOV', no_model)
    write_geotiff(tmp_path / 'a.tif', smooth_scene(30, 40))
    assert predict(tmp_path / 'a.tif', '--out', tmp_path / 'out', *args) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.rglob('*.tmp'))


@pytest.mark.parametrize('value', ['inf', 'nan', '0', '-1', 'x'])
def test_scale_must_be_finite_and_positive(tmp_path, capsys, value):
    with pytest.raises(SystemExit) as info:
        predict(tmp_path / 'a.tif', '--out', tmp_path / 'out', '--scale', value)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert 'positive finite number' in err and 'Traceback' not in err


# --- no-data ----------------------------------------------------------------------------------

def test_nan_half_of_a_float_scene_is_nodata(segmenter, tmp_path):
    scene = smooth_scene(40, 60).astype(np.float32)
    scene[:, :, 30:] = np.nan
    scene[0, 5, 5] = np.inf
    write_geotiff(tmp_path / 'f.tif', scene)
    summary = segmenter.predict_file(tmp_path / 'f.tif', tmp_path / 'out', progress=False)
    with rasterio.open(tmp_path / 'out' / 'f.tif.labels.tif') as out:
        labels = out.read(1)
        assert out.nodata == 255
    assert (labels[:, 30:] == 255).all() and labels[5, 5] == 255
    expected_valid = np.zeros((40, 60), bool)
    expected_valid[:, :30] = True
    expected_valid[5, 5] = False
    assert (labels[expected_valid] < len(CLASSES)).all()
    valid = 40 * 30 - 1
    assert sum(c['pixels'] for c in summary['classes']) == valid
    assert summary['nodata_pixels'] == 40 * 60 - valid
    assert sum(c['area_m2'] for c in summary['classes']) == pytest.approx(valid * 0.25)


def test_nodata_value_of_a_uint16_scene(segmenter, tmp_path):
    scene = (smooth_scene(40, 60).astype(np.uint16) * 16) + 1
    scene[:, :10, :] = 0  # a collar
    write_geotiff(tmp_path / 'u.tif', scene, nodata=0)
    summary = segmenter.predict_file(tmp_path / 'u.tif', tmp_path / 'out', progress=False)
    with rasterio.open(tmp_path / 'out' / 'u.tif.labels.tif') as out:
        labels = out.read(1)
    assert (labels[:10] == 255).all() and (labels[10:] < len(CLASSES)).all()
    assert sum(c['pixels'] for c in summary['classes']) == 30 * 60
    overlay = np.asarray(Image.open(tmp_path / 'out' / 'u.tif.overlay.png'))[:40, :60]
    rgb = scene[:3].transpose(1, 2, 0)
    assert (overlay[:10] == 0).all() and rgb[:10].max() == 0  # collar shown as the image is


def test_alpha_band_is_nodata(segmenter, tmp_path):
    rgba = np.concatenate([smooth_scene(20, 30), np.full((1, 20, 30), 255, np.uint8)])
    rgba[3, :, :12] = 0
    Image.fromarray(rgba.transpose(1, 2, 0), 'RGBA').save(tmp_path / 'a.png')
    summary = segmenter.predict_file(tmp_path / 'a.png', tmp_path / 'out', progress=False)
    labels = np.asarray(Image.open(tmp_path / 'out' / 'a.png.labels.png'))
    assert (labels[:, :12] == 255).all() and (labels[:, 12:] < len(CLASSES)).all()
    assert sum(c['pixels'] for c in summary['classes']) == 20 * 18


# --- vocabularies wider than 8 bits ------------------------------------------------------------

def test_300_classes_write_uint16_labels(tmp_path, capsys):
    torch.manual_seed(0)
    classes = [f'class number {i}' for i in range(300)]
    segmenter = OpenVocabSegmenter(classes, clip='ViT-S-16', pretrained='none',
                                   upsampler='none', device='cpu', prompt_templates=['{}'],
                                   tile=64, overlap=0)
    image = smooth_scene(32, 48)
    write_geotiff(tmp_path / 's.tif', image)
    summary = segmenter.predict_file(tmp_path / 's.tif', tmp_path / 'out', progress=False)
    assert 'text: 300 names x 1 templates' in capsys.readouterr().err  # encoding progress
    with rasterio.open(tmp_path / 'out' / 's.tif.labels.tif') as out:
        labels = out.read(1)
        assert out.dtypes[0] == 'uint16' and out.nodata == 65535
        assert len(out.colormap(1)) >= 300
    reference = segmenter.probabilities(image.transpose(1, 2, 0)[None])[0].argmax(axis=0)
    np.testing.assert_array_equal(labels, reference)
    counts = np.bincount(reference.ravel(), minlength=300)
    assert [c['pixels'] for c in summary['classes']] == counts.tolist()
    assert segmenter(image.transpose(1, 2, 0)).dtype == np.uint16


def test_label_writer_keeps_class_300(tmp_path):
    class Scene:
        georeferenced, height, width = False, 2, 3
    writer = LabelWriter(tmp_path / 'l.png', Scene(), np.zeros((400, 3), np.uint8))
    writer.write((0, 2, 0, 3), np.array([[300, 0, 399], [1, 2, 65535]]))
    writer.close()
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'l.png')),
                                  [[300, 0, 399], [1, 2, 65535]])
    assert writer.counts[300] == 1 and writer.counts.sum() == 5


# --- palette images, permissions ---------------------------------------------------------------

def test_palette_png_equals_its_rgb_copy(segmenter, tmp_path):
    rgb = Image.fromarray(smooth_scene(30, 40).transpose(1, 2, 0)).quantize(colors=24)
    rgb.save(tmp_path / 'p.png')
    rgb.convert('RGB').save(tmp_path / 'rgb.png')
    assert Image.open(tmp_path / 'p.png').mode == 'P'
    segmenter.predict_file(tmp_path / 'p.png', tmp_path / 'out', progress=False)
    segmenter.predict_file(tmp_path / 'rgb.png', tmp_path / 'out', progress=False)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'out' / 'p.png.labels.png')),
                                  np.asarray(Image.open(tmp_path / 'out' / 'rgb.png.labels.png')))


def test_outputs_follow_the_umask(tmp_path):
    write_geotiff(tmp_path / 'a.tif', smooth_scene(20, 20))
    old = os.umask(0o022)
    try:
        assert predict(tmp_path / 'a.tif', '--out', tmp_path / 'out') == 0
    finally:
        os.umask(old)
    for path in (tmp_path / 'out').rglob('*'):
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


# --- user errors: one paragraph, no traceback ---------------------------------------------------

def test_cuda_without_a_gpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    write_geotiff(tmp_path / 'a.tif', smooth_scene(20, 20))
    args = [a if a != 'cpu' else 'cuda' for a in BASE]
    assert main(['predict', str(tmp_path / 'a.tif'), '--out', str(tmp_path / 'o'), *args]) == 2
    err = capsys.readouterr().err
    assert 'torch sees no CUDA device' in err and 'Traceback' not in err


def test_names_files_bom_and_encoding(tmp_path, capsys):
    write_geotiff(tmp_path / 'a.tif', smooth_scene(20, 20))
    bom = tmp_path / 'bom.txt'
    bom.write_bytes('\ufeffroad\nwater\n'.encode('utf-8'))
    latin = tmp_path / 'latin.txt'
    latin.write_bytes('for\xeat\nroad\n'.encode('latin-1'))
    base = [a for a in BASE if a not in ('--classes', 'road;water;tree')]
    assert main(['predict', str(tmp_path / 'a.tif'), '--out', str(tmp_path / 'o'), *base,
                 '--names', str(bom)]) == 0
    summary = json.loads((tmp_path / 'o' / 'a.tif.json').read_text())
    assert [c['name'] for c in summary['classes']] == ['road', 'water']
    assert main(['predict', str(tmp_path / 'a.tif'), '--out', str(tmp_path / 'o2'), *base,
                 '--names', str(latin)]) == 2
    err = capsys.readouterr().err
    assert f'class-name file {latin} is not UTF-8' in err and 'Traceback' not in err


def test_channels_first_array_is_named(segmenter):
    with pytest.raises(ValueError, match=r'looks like channels first \[C, H, W\]'):
        segmenter(np.zeros((3, 40, 50), np.uint8))


@pytest.mark.parametrize('umask,mode', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mode):
    from segearth_ov.fileio import atomic_path
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / 'x.txt') as tmp:
            tmp.write_text('x')
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / 'x.txt').stat().st_mode) == mode
