"""segearth-ov predict / OpenVocabSegmenter on files: GeoTIFF georeferencing, areas, memory
on large scenes, and bad input."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from conftest import PREDICT_CLASSES, shared_path
from peak_memory import child_env
from scenes_util import smooth_scene, write_geotiff
from segearth_ov.apis import ClassQueries
from segearth_ov.apis.cli import main
from segearth_ov.geometry import tile_grid


def parse_classes(classes):
    return list(ClassQueries.parse(classes).lines)


def test_parse_classes():
    assert parse_classes('building, roof;road ; water') == ['building,roof', 'road', 'water']
    assert parse_classes(['a,b', 'c']) == ['a,b', 'c']
    with pytest.raises(ValueError, match='empty'):
        parse_classes(' ; ')
    with pytest.raises(ValueError, match=r"'Road' is given twice \(classes 1 and 3\)"):
        parse_classes('road;building;Road')
    with pytest.raises(ValueError, match='empty name'):
        parse_classes('building,;road')


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
    assert on_disk == {k: v for k, v in summary.items() if k != 'seconds'}
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
    with rasterio.open(source) as src, \
            rasterio.open(tmp_path / 'oem_koeln_50.tif.labels.tif') as out:
        assert (out.crs, out.transform, out.shape) == (src.crs, src.transform, src.shape)


PEAK_SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    from segearth_ov.apis.blending import blended_probabilities
    from segearth_ov.apis.label_maps import LabelWriter
    from segearth_ov.apis.scenes import RasterScene, raster_session
    from segearth_ov.visualize import class_palette
    from pathlib import Path
    from peak_memory import peak_mib, reset_peak

    def pixelwise(tiles):
        x = tiles[..., 0].astype(np.float32)[:, None] / 255
        return np.concatenate([x, 1 - x, 0.5 * x, 0.5 - 0.5 * x], axis=1)

    for source, labels in zip(sys.argv[1::2], sys.argv[2::2]):
        reset_peak()
        with raster_session():
            scene = RasterScene(source)
            writer = LabelWriter(Path(labels), scene, class_palette(4))
            # tile 1050, overlap 50: both scenes are cut into tiles of nearly one size (1025
            # and 1042 pixels), so any difference in peak memory comes from the scene size
            for window, probs in blended_probabilities(scene, pixelwise, 1050, 50,
                                                       batch_size=2):
                writer.write(window, probs.argmax(0).astype(np.uint8))
            writer.close()
        print(int(peak_mib()))
''')


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='reads /proc/self/status')
def test_peak_memory_depends_on_the_tile_not_the_scene(tmp_path):
    """One process runs the small scene, then the large one with its peak reset to what the
    small one left behind (one interpreter start instead of two)."""
    script = tmp_path / 'peak.py'
    script.write_text(PEAK_SCRIPT)
    sides, arguments = (2000, 6000), []
    for side in sides:
        path = tmp_path / f'scene{side}.tif'
        write_geotiff(path, smooth_scene(side, side), tiled=True, blockxsize=256,
                      blockysize=256)
        arguments += [str(path), str(tmp_path / f'labels{side}.tif')]
    run = subprocess.run([sys.executable, str(script), *arguments], capture_output=True,
                         text=True, timeout=600, env=child_env())
    assert run.returncode == 0, run.stderr[-2000:]
    peaks = dict(zip(sides, map(int, run.stdout.split()[-2:])))
    scene_mb = 6000 * 6000 * 3 / 2 ** 20  # 103 MB of pixels in the large scene
    print(f'peak RSS: {peaks} MB')
    # 9x the pixels: the extra is GDAL's bounded cache and the overlap strip, well under the
    # large scene's own pixels (its probabilities would be 550 MB)
    assert peaks[6000] - peaks[2000] < 0.6 * scene_mb
    assert peaks[6000] < 1.1 * peaks[2000]


def cli(tmp_path, *args):
    """``segearth-ov predict`` on random ViT-S-16 weights; ``args`` come last, so they may
    change the defaults given here."""
    return main(['predict', '--clip', 'ViT-S-16', '--pretrained', 'none', '--upsampler', 'none',
                 '--tile', '64', '--overlap', '16', '--quiet', '--device', 'cpu',
                 '--prompt-templates', 'a satellite photo of {}.', *map(str, args)])


def test_prompt_templates_reach_the_model_and_the_settings(segmenter, tmp_path, capsys):
    """--prompt-templates: labels equal a segmenter built with that template in Python, the
    summary records it, another template is other settings; SegEarth-OV3 refuses it and a
    template without {} is a usage error."""
    write_geotiff(tmp_path / 's.tif', smooth_scene(90, 150))
    template = 'a satellite photo of {}.'

    def run(out, *extra):  # the fixture's settings
        return cli(tmp_path, tmp_path / 's.tif', '--out', out, '--classes',
                   ';'.join(PREDICT_CLASSES), '--tile', '128', '--overlap', '32',
                   '--batch-size', '3', *extra)
    torch.manual_seed(0)  # the weights the fixture was built with
    assert run(tmp_path / 'out', '--prompt-templates', template) == 0
    segmenter.predict_file(tmp_path / 's.tif', tmp_path / 'python', progress=False)
    with rasterio.open(tmp_path / 'out' / 's.tif.labels.tif') as a, \
            rasterio.open(tmp_path / 'python' / 's.tif.labels.tif') as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    summary = json.loads((tmp_path / 'out' / 's.tif.json').read_text())
    assert summary['settings']['model']['prompt_templates'] == [template]
    capsys.readouterr()
    assert run(tmp_path / 'out', '--prompt-templates', 'an aerial view of {}') == 1
    assert 'computed with other settings' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(tmp_path / 'bad', '--prompt-templates', 'a road photo')
    assert "prompt template 'a road photo' must hold {} once" in capsys.readouterr().err
    assert main(['predict', str(tmp_path / 's.tif'), '--out', str(tmp_path / 'sam'),
                 '--method', 'segearth-ov3', '--classes', 'road', '--prompt-templates',
                 '{}']) == 2
    assert '--prompt-templates (prompt_templates=) is an option of --method segearth-ov' in \
        capsys.readouterr().err


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
    assert sorted(p.name for p in out.iterdir()) == [
        '.segearth_ov', 'collection.json', 'good.tif.json', 'good.tif.labels.qml',
        'good.tif.labels.tif', 'good.tif.overlay.png', 'index.json', 'manifest.json']
    manifest = json.loads((out / 'manifest.json').read_text())
    assert (manifest['done'], manifest['failed']) == (1, 2)
    failed = {Path(e['input']).name: e['error'] for e in manifest['inputs']
              if e['status'] == 'failed'}
    assert 'not found' in failed['missing.tif'] and 'cannot read' in failed['corrupt.tif']


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
