"""segearth-ov predict as a careful attacker and an unlucky user would drive it: links
planted in --out, inputs that read other files, two runs on one folder, files the tool did
not write, copied output folders, areas of interest of every size and kind, arguments that
hang or mislead, a corrupt text cache, and errors that must read as one paragraph."""
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from scenes_util import smooth_scene, write_geotiff
from segearth_ov.apis.cli import main

BASE = ['--clip', 'ViT-S-16', '--pretrained', 'none', '--upsampler', 'none', '--tile', '64',
        '--overlap', '16', '--quiet', '--device', 'cpu', '--classes', 'road;water;tree',
        '--prompt-templates', 'a satellite photo of {}.']


def predict(*args):
    """``segearth-ov predict`` on a small model with the same random weights every call."""
    torch.manual_seed(0)
    return main(['predict', *BASE, *map(str, args)])


def scene(folder, name='a.tif', height=30, width=40):
    folder.mkdir(parents=True, exist_ok=True)
    write_geotiff(folder / name, smooth_scene(height, width))
    return folder / name


def labels_of(path):
    with rasterio.open(path) as ds:
        return ds.read(1)


# --- 1. nothing is written through a link --------------------------------------------------------

def test_a_link_planted_as_a_manifest_part_is_replaced_not_followed(tmp_path):
    source = scene(tmp_path / 'in')
    out = tmp_path / 'out'
    assert predict(source, '--out', out) == 0
    victim = tmp_path / 'victim.txt'
    victim.write_text('precious')
    part = out / '.segearth_ov' / 'manifest.rank0.jsonl'
    part.unlink()
    part.symlink_to(victim)
    assert predict(source, '--out', out) == 0
    assert victim.read_text() == 'precious'
    assert not part.is_symlink() and 'skipped' in part.read_text()


def test_links_planted_as_folders_or_outputs_are_refused(tmp_path, capsys):
    source = scene(tmp_path / 'in')
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    out = tmp_path / 'out'
    out.mkdir()
    (out / '.segearth_ov').symlink_to(elsewhere)  # the run's own folder
    assert predict(source, '--out', out) == 2
    assert 'symbolic link' in capsys.readouterr().err
    assert not list(elsewhere.iterdir())
    (out / '.segearth_ov').unlink()
    victim = tmp_path / 'victim.tif'
    victim.write_bytes(b'precious')
    (out / 'a.tif.labels.tif').symlink_to(victim)  # an output name
    assert predict(source, '--out', out) == 1
    assert 'not written by segearth-ov' in capsys.readouterr().err
    assert victim.read_bytes() == b'precious'
    assert predict(source, '--out', out, '--overwrite') == 0  # the link is replaced
    assert victim.read_bytes() == b'precious'
    assert not (out / 'a.tif.labels.tif').is_symlink()
    # a link where an input's subfolder of --out goes
    scene(tmp_path / 'in' / 'sub', 'b.tif')
    (out / 'sub').symlink_to(elsewhere)
    assert predict(tmp_path / 'in', '--out', out) == 1
    assert 'sub is a symbolic link' in capsys.readouterr().err
    assert not list(elsewhere.iterdir())


# --- 2. an input reads only itself ---------------------------------------------------------------

def vrt(path, source, raw=False, relative=True):
    if raw:
        band = (f'<VRTRasterBand dataType="Byte" band="1" subClass="VRTRawRasterBand">'
                f'<SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>'
                f'<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset>'
                f'<LineOffset>16</LineOffset></VRTRasterBand>')
    else:
        band = (f'<VRTRasterBand dataType="Byte" band="1"><SimpleSource>'
                f'<SourceFilename relativeToVRT="{int(relative)}">{source}</SourceFilename>'
                f'<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>')
    path.write_text(f'<VRTDataset rasterXSize="16" rasterYSize="16">{band}</VRTDataset>')


def test_vrts_that_read_other_files_are_refused(tmp_path, capsys, monkeypatch):
    secret = tmp_path / 'secret.txt'
    secret.write_bytes(bytes(range(256)))
    inputs = tmp_path / 'in'
    inputs.mkdir()
    vrt(inputs / 'raw.vrt', secret, raw=True, relative=False)
    vrt(inputs / 'outside.vrt', '../elsewhere.tif')
    scene(tmp_path, 'elsewhere.tif', 16, 16)
    vrt(inputs / 'url.vrt', '/vsicurl/http://127.0.0.1/x.tif', relative=False)
    vrt(inputs / 'prefix.vrt', f'GTIFF_DIR:1:{tmp_path / "elsewhere.tif"}')
    vrt(inputs / 'cwd.vrt', 'elsewhere.tif', relative=False)  # GDAL: the working directory
    out = tmp_path / 'out'
    monkeypatch.chdir(tmp_path)
    assert predict(inputs, '--out', out) == 1
    err = capsys.readouterr().err
    assert 'raw-band VRT' in err and 'not a file beside it' in err
    for name in ('raw', 'outside', 'url', 'prefix', 'cwd'):
        assert f'{name}.vrt' in err
    assert err.count('outside its folder') == 2
    assert 'Traceback' not in err
    assert not list(out.glob('*.vrt.*'))


def test_a_vrt_of_files_in_its_own_folder_is_read(tmp_path):
    inputs = tmp_path / 'in'
    scene(inputs / 'data', 'part.tif', 16, 16)
    vrt(inputs / 'mosaic.vrt', 'data/part.tif')
    assert predict(inputs / 'mosaic.vrt', '--out', tmp_path / 'out') == 0
    assert (tmp_path / 'out' / 'mosaic.vrt.json').is_file()


def test_a_file_is_opened_only_with_its_suffix_driver(tmp_path, capsys):
    secret = tmp_path / 'secret.txt'
    secret.write_bytes(bytes(range(256)))
    inputs = tmp_path / 'in'
    inputs.mkdir()
    vrt(inputs / 'disguised.tif', secret, raw=True, relative=False)  # VRT XML named .tif
    assert predict(inputs / 'disguised.tif', '--out', tmp_path / 'out') == 1
    assert 'cannot read' in capsys.readouterr().err


# --- 3. one run per folder -----------------------------------------------------------------------

def test_a_second_run_on_a_folder_is_refused_or_waits(tmp_path, capsys):
    from segearth_ov.apis.run_folder import FolderLock
    source = scene(tmp_path / 'in')
    out = tmp_path / 'out'
    lock = FolderLock(out)
    assert predict(source, '--out', out) == 2
    err = capsys.readouterr().err
    assert 'in use by another segearth-ov run' in err and 'process' in err and '--wait' in err
    assert not list(out.glob('a.tif.*'))
    threading.Timer(1.0, lock.release).start()
    assert predict(source, '--out', out, '--wait') == 0
    assert 'waiting for it to end' in capsys.readouterr().err
    assert (out / 'a.tif.json').is_file()


def test_a_run_does_not_delete_another_runs_temporaries_while_it_holds_the_folder(tmp_path):
    """Clean-up happens under the folder's lock: a temporary is only removed when no run
    holds the folder, so it can only be a dead run's."""
    source = scene(tmp_path / 'in')
    out = tmp_path / 'out'
    out.mkdir()
    dead = out / '.a.tif.labels.tif.dead.tmp'
    dead.write_bytes(b'left by a killed run')
    assert predict(source, '--out', out) == 0
    assert not dead.exists()


# --- 4. the user's files -------------------------------------------------------------------------

def test_files_the_tool_did_not_write_are_never_replaced_or_removed(tmp_path, capsys):
    a, b = scene(tmp_path / 'in'), scene(tmp_path / 'in', 'b.tif')
    out = tmp_path / 'out'
    out.mkdir()
    mine = out / 'a.tif.labels.tif'
    mine.write_bytes(b'my own map')
    mine.chmod(0o444)
    assert predict(a, b, '--out', out) == 1
    err = capsys.readouterr().err
    assert 'a.tif.labels.tif exists and was not written by segearth-ov' in err
    assert mine.read_bytes() == b'my own map'
    assert (out / 'b.tif.json').is_file()  # the batch went on
    assert not (out / 'a.tif.json').exists()
    assert predict(a, '--out', out, '--overwrite') == 0
    assert labels_of(mine).shape == (30, 40)


def test_a_failing_input_removes_only_what_it_wrote(tmp_path, monkeypatch):
    from segearth_ov.apis import scene_files
    source = scene(tmp_path / 'in')
    out = tmp_path / 'out'
    out.mkdir()
    unrelated = out / 'a.tif.labels.png'  # an output name a GeoTIFF input never writes
    unrelated.write_bytes(b'user file')

    def fail(*args, **kwargs):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(scene_files, 'write_overlay', fail)
    assert predict(source, '--out', out) == 1
    assert unrelated.read_bytes() == b'user file'
    assert not (out / 'a.tif.labels.tif').exists()  # written by the run, then removed


# --- 5. "done" is true ---------------------------------------------------------------------------

def test_a_copied_folder_missing_an_output_is_recomputed(tmp_path):
    source = scene(tmp_path / 'in')
    first, copy = tmp_path / 'first', tmp_path / 'copy'
    assert predict(source, '--out', first) == 0
    shutil.copytree(first, copy)
    (copy / 'a.tif.labels.tif').unlink()
    assert predict(source, '--out', copy) == 0
    assert np.array_equal(labels_of(copy / 'a.tif.labels.tif'),
                          labels_of(first / 'a.tif.labels.tif'))
    manifest = json.loads((copy / 'manifest.json').read_text())
    assert manifest['done'] == 1 and manifest['skipped'] == 0
    summary = json.loads((copy / 'a.tif.json').read_text())
    assert summary['labels'] == 'a.tif.labels.tif'  # named beside the summary, not by path
    index = json.loads((copy / 'index.json').read_text())
    hrefs = [a['href'] for a in index['features'][0]['assets'].values()]
    assert hrefs and all(not Path(h).is_absolute() and (copy / h).is_file() for h in hrefs)


# --- 6-8. areas of interest ----------------------------------------------------------------------

def geojson(path, rings):
    path.write_text(json.dumps(dict(type='FeatureCollection', features=[
        dict(type='Feature', properties={}, geometry=dict(type='Polygon', coordinates=[ring]))
        for ring in rings])))
    return path


WORLD = [[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]
EUROPE = [[-25, 34], [45, 34], [45, 72], [-25, 72], [-25, 34]]


def test_world_and_continent_areas_cover_the_scene(tmp_path):
    source = scene(tmp_path / 'in', height=64, width=64)
    assert predict(source, '--out', tmp_path / 'plain') == 0
    expected = labels_of(tmp_path / 'plain' / 'a.tif.labels.tif')
    for name, ring in (('world', WORLD), ('europe', EUROPE)):
        aoi = geojson(tmp_path / f'{name}.geojson', [ring])
        assert predict(source, '--out', tmp_path / name, '--aoi', aoi) == 0
        assert np.array_equal(labels_of(tmp_path / name / 'a.tif.labels.tif'), expected), name


def test_an_area_is_known_by_what_was_read(tmp_path):
    import fiona

    from segearth_ov.apis.aoi import AreaOfInterest
    ring = [[7.0, 50.9], [7.2, 50.9], [7.2, 51.1], [7.0, 51.1], [7.0, 50.9]]
    as_json = geojson(tmp_path / 'a.geojson', [ring])
    schema = dict(geometry='Polygon', properties={})
    feature = dict(geometry=dict(type='Polygon', coordinates=[ring]), properties={})
    with fiona.open(tmp_path / 'a.gpkg', 'w', driver='GPKG', schema=schema,
                    crs='EPSG:4326') as sink:
        sink.write(feature)
    with fiona.open(tmp_path / 'a.shp', 'w', driver='ESRI Shapefile', schema=schema,
                    crs='EPSG:4326') as sink:
        sink.write(feature)
    hashes = {AreaOfInterest(p).hash for p in (as_json, tmp_path / 'a.gpkg', tmp_path / 'a.shp')}
    assert len(hashes) == 1  # the same area, whatever the file
    from pyproj import CRS
    (tmp_path / 'a.prj').write_text(CRS.from_epsg(32632).to_wkt('WKT1_ESRI'))  # corrected
    assert AreaOfInterest(tmp_path / 'a.shp').hash not in hashes


def test_an_area_that_misses_a_scene_is_reported_not_written(tmp_path, capsys):
    source = scene(tmp_path / 'in')
    aoi = geojson(tmp_path / 'far.geojson', [[[100, 10], [101, 10], [101, 11], [100, 11],
                                              [100, 10]]])
    out = tmp_path / 'out'
    assert predict(source, '--out', out, '--aoi', aoi) == 0
    captured = capsys.readouterr()
    assert 'outside the area of interest' in captured.out + captured.err
    assert not list(out.glob('a.tif*'))
    manifest = json.loads((out / 'manifest.json').read_text())
    assert [e['status'] for e in manifest['inputs']] == ['outside-aoi']
    assert json.loads((out / 'index.json').read_text())['features'] == []


def test_bad_areas_are_refused_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    from segearth_ov.apis import inference
    built = []
    real_init = inference.OpenVocabSegmenter.__init__
    monkeypatch.setattr(inference.OpenVocabSegmenter, '__init__',
                        lambda self, *a, **k: built.append(1) or real_init(self, *a, **k))
    source = scene(tmp_path / 'in')
    empty = tmp_path / 'empty.geojson'
    empty.write_text(json.dumps(dict(type='FeatureCollection', features=[dict(
        type='Feature', properties={}, geometry=dict(type='Polygon', coordinates=[]))])))
    flat = geojson(tmp_path / 'flat.geojson', [[[7, 51], [8, 51], [7, 51]]])
    local = tmp_path / 'local.shp'
    import fiona
    with fiona.open(local, 'w', driver='ESRI Shapefile', schema=dict(geometry='Polygon',
                                                                     properties={})) as sink:
        sink.write(dict(geometry=dict(type='Polygon', coordinates=[
            [[0, 0], [1, 0], [1, 1], [0, 0]]]), properties={}))
    (tmp_path / 'local.prj').write_text('LOCAL_CS["site grid",UNIT["metre",1]]')
    for aoi, message in ((empty, 'holds no polygon'), (flat, 'enclose no area'),
                         (local, 'does not place it on the Earth')):
        assert predict(source, '--out', tmp_path / 'o', '--aoi', aoi) == 2, aoi
        err = capsys.readouterr().err
        assert message in err and 'Traceback' not in err
    assert not built


def test_a_large_area_is_read_in_bulk(tmp_path):
    import pyogrio
    import shapely

    from segearth_ov.apis.aoi import AreaOfInterest
    x, y = np.meshgrid(np.arange(200) * 0.01 + 7, np.arange(100) * 0.01 + 50)
    boxes = shapely.box(x.ravel(), y.ravel(), x.ravel() + 0.006, y.ravel() + 0.006)
    path = tmp_path / 'many.gpkg'
    pyogrio.raw.write(path, shapely.to_wkb(boxes), field_data=[], fields=[],
                      geometry_type='Polygon', crs='EPSG:4326', driver='GPKG')
    area = AreaOfInterest(path, progress=True)
    assert len(area.polygons) == 20000

    class Scene:  # 0.1 degree square at 7.5 E, 50.5 N: 10 x 10 boxes
        georeferenced, crs = True, rasterio.crs.CRS.from_epsg(4326)
        transform = rasterio.transform.from_origin(7.5, 50.6, 0.001, 0.001)

        def bounds(self):
            return 7.5, 50.5, 7.6, 50.6
    inside = area.for_scene(Scene()).geometry.intersection(shapely.box(7.5, 50.5, 7.6, 50.6))
    assert inside.area == pytest.approx(100 * 0.006 ** 2, rel=1e-6)


# --- 9-13. arguments and inputs that hang, mislead or crash --------------------------------------

@pytest.mark.parametrize('flag,value', [('--prob-thd', 'nan'), ('--min-area', 'nan'),
                                        ('--simplify', 'inf'), ('--min-area', '-1')])
def test_non_finite_or_negative_numbers_are_usage_errors(tmp_path, capsys, flag, value):
    source = scene(tmp_path / 'in')
    with pytest.raises(SystemExit) as exited:
        predict(source, '--out', tmp_path / 'out', '--vector', 'gpkg', flag, value)
    assert exited.value.code == 2
    assert f'argument {flag}' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_no_json_file_holds_nan(tmp_path):
    source = scene(tmp_path / 'in')
    out = tmp_path / 'out'
    assert predict(source, '--out', out, '--vector', 'gpkg') == 0
    for path in out.rglob('*.json'):
        json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f'{c} in {path}'))


@pytest.mark.parametrize('method', ['segearth-ov', 'segearth-ov3'])
def test_a_huge_class_name_is_refused_at_once(tmp_path, capsys, method):
    source = scene(tmp_path / 'in')
    huge = 'x' * 100_000
    start = time.perf_counter()
    extra = ['--method', 'segearth-ov3', '--sam3-checkpoint', 'none'] if method != \
        'segearth-ov' else []
    args = ['predict', '--quiet', '--device', 'cpu', '--classes', f'road;{huge}', '--out',
            str(tmp_path / 'out'), *extra, str(source)]
    if method == 'segearth-ov':
        args += ['--clip', 'ViT-S-16', '--pretrained', 'none', '--upsampler', 'none']
    assert main(args) == 2
    assert time.perf_counter() - start < 60  # not the minutes a quadratic tokeniser takes
    err = capsys.readouterr().err
    assert 'is too long' in err and 'xxxxxxxx' in err and len(err) < 1000


def test_names_that_fit_the_context_pass_and_one_token_more_does_not():
    from segearth_ov.models.text import bpe_tokenizer, check_query_lengths
    tokens = len(bpe_tokenizer().encode('aerial photo of a {}.'.replace('{}', '')))
    fitting = ' '.join(['road'] * (77 - 2 - tokens))
    check_query_lengths([fitting], 77, ['aerial photo of a {}.'])
    with pytest.raises(ValueError, match='too long for CLIP'):
        check_query_lengths([fitting + ' road'], 77, ['aerial photo of a {}.'])


def test_large_unreferenced_results_are_tiled_geotiffs(tmp_path, monkeypatch):
    from PIL import Image

    from segearth_ov.apis import label_maps
    inputs = tmp_path / 'in'
    inputs.mkdir()
    Image.fromarray(smooth_scene(30, 40).transpose(1, 2, 0)).save(inputs / 'p.png')
    assert predict(inputs / 'p.png', '--out', tmp_path / 'small', '--confidence') == 0
    small = np.array(Image.open(tmp_path / 'small' / 'p.png.labels.png'))
    monkeypatch.setattr(label_maps, 'PNG_PIXEL_LIMIT', 30 * 40 - 1)
    assert predict(inputs / 'p.png', '--out', tmp_path / 'large', '--confidence') == 0
    with rasterio.open(tmp_path / 'large' / 'p.png.labels.tif') as ds:
        assert ds.crs is None and ds.profile['tiled']
        assert np.array_equal(ds.read(1), small)
    assert (tmp_path / 'large' / 'p.png.confidence.tif').is_file()
    assert not list((tmp_path / 'large').glob('*.labels.png'))


def test_a_corrupt_text_cache_is_recomputed(tmp_path, caplog, small_clip):
    from segearth_ov.models.text import cached_query_embeddings, encode_queries
    model, tokenizer = small_clip
    templates = ['a photo of {}.']
    expected = encode_queries(model, tokenizer, ['road', 'water'], templates)
    cache = tmp_path / 'cache'
    cached_query_embeddings(model, tokenizer, ['road', 'water'], templates, 'key', cache)
    path = next(cache.glob('*.pt'))
    width = expected.shape[1]
    for bad in ({'road': torch.zeros(width + 1), 'water': expected[1]},
                {'road': torch.full((width,), float('nan')), 'water': expected[1]},
                {'road': expected[0].double(), 'water': expected[1]}):
        torch.save(bad, path)
        caplog.clear()
        got = cached_query_embeddings(model, tokenizer, ['road', 'water'], templates, 'key',
                                      cache)
        torch.testing.assert_close(got, expected)
        assert 'does not fit this model' in caplog.text


def test_tracebacks_become_one_paragraph(tmp_path, capsys):
    source = scene(tmp_path / 'in')
    out = tmp_path / 'out'
    out.mkdir()
    (out / '.segearth_ov').write_text('a file where the run folder goes')
    assert predict(source, '--out', out) == 2
    err = capsys.readouterr().err
    assert 'should be a folder but is a file' in err and 'Traceback' not in err
    loop = tmp_path / 'loop.tif'
    loop.symlink_to(tmp_path / 'loop2.tif')
    (tmp_path / 'loop2.tif').symlink_to(loop)
    assert predict(loop, '--out', tmp_path / 'o2') == 2
    err = capsys.readouterr().err
    assert 'loop of symbolic links' in err and 'Traceback' not in err


def test_a_sam3_checkpoint_of_wrong_shapes_names_the_tensor(tmp_path):
    from safetensors.torch import save_file

    from segearth_ov.weights import build_sam3
    from test_segearth_ov3 import SMALL
    state = build_sam3(None, SMALL).state_dict()
    key = 'detr_decoder.query_embed.weight'
    state[key] = torch.zeros(3, 3)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / 'm.safetensors'))
    with pytest.raises(ValueError, match=r'another shape.*query_embed\.weight \(3, 3\)'):
        build_sam3(str(tmp_path / 'm.safetensors'), SMALL)
