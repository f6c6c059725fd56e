"""GIS outputs of predict: polygon layers, Cloud-Optimized GeoTIFFs, the confidence raster,
areas of interest and the STAC-style index."""
import json

import fiona
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from scipy import ndimage

from scenes_util import smooth_scene, write_geotiff
from segearth_ov.apis import OpenVocabSegmenter
from segearth_ov.apis.cli import main
from segearth_ov.apis.label_maps import CONFIDENCE_NODATA
from segearth_ov.apis.outputs import OutputOptions
from segearth_ov.apis.vectorize import vectorize_labels

NAMES = ['background', 'house', 'road', 'water']
PIXEL = 0.5  # m, EPSG:32632 (scenes_util)
BASE = ['--clip', 'ViT-S-16', '--pretrained', 'none', '--upsampler', 'none', '--quiet',
        '--device', 'cpu', '--classes', 'road;water;tree',
        '--prompt-templates', 'a satellite photo of {}.']


def predict(*args):
    return main(['predict', *BASE, *map(str, args)])


def label_raster(path, labels, nodata=255):
    write_geotiff(path, labels[None], pixel=PIXEL, nodata=nodata)


def rectangles():
    """A 300 x 260 label map: a house crossing block edges, a road, a lake with an island,
    and a no-data square inside the background."""
    labels = np.zeros((300, 260), np.uint8)
    labels[10:200, 20:150] = 1
    labels[220:260, 30:240] = 2
    labels[100:180, 170:250] = 3
    labels[120:140, 200:220] = 0  # island: the lake gets a hole, the island a feature
    labels[40:60, 200:230] = 255
    return labels


def components(labels, nodata=255):
    """Independent reference: ``sorted((class, pixels))`` of the 4-connected regions."""
    found = []
    for value in np.unique(labels):
        if value == nodata:
            continue
        regions, count = ndimage.label(labels == value)  # 4-connectivity by default
        found += [(int(value), int(n)) for n in np.bincount(regions.ravel())[1:]]
    return sorted(found)


def features(path):
    with fiona.open(path) as source:
        return source.crs, [f for f in source]


@pytest.mark.parametrize('fmt,suffix', [('gpkg', 'gpkg'), ('geojson-crs', 'geojson'),
                                        ('shp', 'shp')])
def test_rectangles_become_one_feature_each(tmp_path, fmt, suffix):
    labels = rectangles()
    label_raster(tmp_path / 'l.tif', labels)
    count = vectorize_labels(tmp_path / 'l.tif', tmp_path / f'p.{suffix}', NAMES, fmt,
                             block=64)
    crs, found = features(tmp_path / f'p.{suffix}')
    assert count == len(found) == 5
    assert crs.to_epsg() == 32632
    got = sorted((f.properties['class_id'], f.properties['pixels']) for f in found)
    assert got == components(labels)
    house = next(f for f in found if f.properties['class_name'] == 'house')
    assert house.properties['area_m2'] == pytest.approx(190 * 130 * PIXEL ** 2)
    from shapely.geometry import shape
    polygon = shape(house.geometry)  # the map coordinates of the rectangle's corners
    assert polygon.bounds == pytest.approx((500000 + 20 * PIXEL, 5650000 - 200 * PIXEL,
                                            500000 + 150 * PIXEL, 5650000 - 10 * PIXEL))
    assert polygon.area == pytest.approx(house.properties['area_m2'])
    lake = next(f for f in found if f.properties['class_name'] == 'water')
    assert len(shape(lake.geometry).interiors) == 1
    corners = [(200, 40), (230, 40), (230, 60), (200, 60)]  # the no-data square (x, y)
    nodata = shape(dict(type='Polygon', coordinates=[[
        (500000 + x * PIXEL, 5650000 - y * PIXEL) for x, y in corners]]))
    assert all(shape(f.geometry).intersection(nodata).area == 0 for f in found)


def test_regions_cut_by_many_blocks_are_merged(tmp_path):
    """Blocky random labels, traced in 32-pixel blocks, equal scipy's connected components."""
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 3, (20, 23)), np.ones((7, 5), int)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.01] = 255
    label_raster(tmp_path / 'l.tif', labels)
    vectorize_labels(tmp_path / 'l.tif', tmp_path / 'p.gpkg', NAMES, block=32)
    _, found = features(tmp_path / 'p.gpkg')
    from shapely.geometry import shape
    assert all(shape(f.geometry).is_valid for f in found)
    assert sorted((f.properties['class_id'], f.properties['pixels']) for f in found) == \
        components(labels)


def test_min_area_and_simplify(tmp_path):
    labels = rectangles()
    labels[280:283, 5:8] = 3  # a 9-pixel speck (2.25 m^2)
    label_raster(tmp_path / 'l.tif', labels)
    vectorize_labels(tmp_path / 'l.tif', tmp_path / 'a.gpkg', NAMES, min_area=5.0)
    _, kept = features(tmp_path / 'a.gpkg')
    assert min(f.properties['area_m2'] for f in kept) > 5 and len(kept) == 5
    labels[10:200, 20:150] = 0
    stairs = np.arange(190)[:, None] // 3 > np.arange(130)[None, :] // 2  # a jagged edge
    labels[10:200, 20:150][stairs] = 1
    label_raster(tmp_path / 'l.tif', labels)
    from shapely.geometry import shape
    exact = vectorize_labels(tmp_path / 'l.tif', tmp_path / 'e.gpkg', NAMES)
    smooth = vectorize_labels(tmp_path / 'l.tif', tmp_path / 's.gpkg', NAMES, simplify=2.0)
    assert exact == smooth
    vertices = [sum(len(shape(f.geometry).exterior.coords) for f in features(p)[1])
                for p in (tmp_path / 'e.gpkg', tmp_path / 's.gpkg')]
    assert vertices[1] < vertices[0] / 3
    simplified = [shape(f.geometry) for f in features(tmp_path / 's.gpkg')[1]]
    assert all(g.is_valid for g in simplified)
    # shared edges are simplified once: neighbours neither overlap nor leave gaps
    import shapely
    assert shapely.coverage_is_valid(np.array(simplified, dtype=object))
    names = [f.properties['class_name'] for f in features(tmp_path / 's.gpkg')[1]]
    house, background = (max((g for g, n in zip(simplified, names) if n == name),
                             key=lambda g: g.area) for name in ('house', 'background'))
    assert house.intersection(background).area == pytest.approx(0, abs=1e-6)
    assert house.boundary.intersection(background.boundary).length > 50


def test_unreferenced_labels_give_pixel_polygons(tmp_path):
    from PIL import Image
    labels = rectangles()
    Image.fromarray(labels).save(tmp_path / 'l.png')
    vectorize_labels(tmp_path / 'l.png', tmp_path / 'p.geojson', NAMES, 'geojson')
    _, found = features(tmp_path / 'p.geojson')
    assert all(f.properties['area_m2'] is None for f in found)
    assert sorted((f.properties['class_id'], f.properties['pixels']) for f in found) == \
        components(labels, nodata=-1)  # a PNG declares no no-data value


def test_cli_writes_cog_vector_confidence_and_index(tmp_path):
    write_geotiff(tmp_path / 'scene.tif', smooth_scene(600, 520), pixel=PIXEL)
    out = tmp_path / 'out'
    assert predict(tmp_path / 'scene.tif', '--out', out, '--tile', '256', '--overlap', '32',
                   '--vector', 'gpkg', '--confidence') == 0
    from rio_cogeo.cogeo import cog_validate
    labels_path = out / 'scene.tif.labels.tif'
    for path in (labels_path, out / 'scene.tif.confidence.tif'):
        valid, errors, _ = cog_validate(str(path))
        assert valid, errors
    with rasterio.open(tmp_path / 'scene.tif') as src, rasterio.open(labels_path) as ds:
        assert (ds.crs, ds.transform) == (src.crs, src.transform)
        assert ds.overviews(1) == [2, 4] and ds.nodata == 255
        assert ds.colormap(1)[1][:3] != ds.colormap(1)[2][:3]
        labels = ds.read(1)
    summary = json.loads((out / 'scene.tif.json').read_text())
    crs, found = features(out / 'scene.tif.polygons.gpkg')
    assert crs.to_epsg() == 32632 and summary['polygons'] == len(found)
    assert sorted((f.properties['class_id'], f.properties['pixels']) for f in found) == \
        components(labels)
    index = json.loads((out / 'index.json').read_text())
    item, = index['features']
    west, south, east, north = item['bbox']
    # 500 km E is 9 deg E; 5650 km N is about 51 deg N; the scene is 260 m x 300 m
    assert 8.999 < west < east < 9.005 and 50.99 < south < north < 51.01
    assert item['properties']['proj:epsg'] == 32632
    for asset in item['assets'].values():
        assert (out / asset['href']).is_file()
    assert [c['name'] for c in item['assets']['labels']['classification:classes']] == \
        ['road', 'water', 'tree']
    assert 'cloud-optimized' in item['assets']['labels']['type']
    torch.manual_seed(0)  # the same random weights as the first run
    assert predict(tmp_path / 'scene.tif', '--out', tmp_path / 'plain', '--tile', '256',
                   '--overlap', '32', '--no-cog') == 0
    with rasterio.open(tmp_path / 'plain' / 'scene.tif.labels.tif') as ds:
        assert ds.overviews(1) == [] and (ds.read(1) == labels).all()


def test_confidence_is_the_winning_probability(tmp_path):
    segmenter = OpenVocabSegmenter(['road', 'water', 'tree'], clip='ViT-S-16',
                                   pretrained='none', upsampler='none', device='cpu',
                                   prompt_templates=['{}'], tile=128, overlap=0,
                                   outputs=OutputOptions(confidence=True))
    scene = smooth_scene(96, 112)
    write_geotiff(tmp_path / 's.tif', scene)
    segmenter.predict_file(tmp_path / 's.tif', tmp_path, progress=False)
    probs = segmenter.probabilities(scene.transpose(1, 2, 0)[None])[0]
    with rasterio.open(tmp_path / 's.tif.confidence.tif') as ds:
        confidence = ds.read(1)
        assert ds.nodata == CONFIDENCE_NODATA
    assert np.abs(confidence.astype(int) - np.rint(probs.max(0) * 254)).max() <= 1


def write_aoi(path, polygon_utm):
    """A GeoJSON (WGS 84) of a polygon given in the scenes' UTM zone."""
    from rasterio.warp import transform_geom
    geometry = transform_geom('EPSG:32632', 'EPSG:4326',
                              dict(type='Polygon', coordinates=[polygon_utm]))
    path.write_text(json.dumps(dict(type='FeatureCollection', features=[
        dict(type='Feature', properties={}, geometry=geometry)])))


def test_aoi_skips_tiles_and_blanks_the_outside(tmp_path, monkeypatch):
    write_geotiff(tmp_path / 's.tif', smooth_scene(256, 256))
    # the upper-left quarter, in metres (0.5 m pixels from 500000, 5650000)
    x0, y0 = 500000, 5650000
    write_aoi(tmp_path / 'aoi.geojson', [(x0, y0), (x0 + 50, y0), (x0 + 50, y0 - 50),
                                         (x0, y0 - 50), (x0, y0)])
    common = dict(clip='ViT-S-16', pretrained='none', upsampler='none', device='cpu',
                  prompt_templates=['{}'], tile=64, overlap=16, batch_size=1)
    torch.manual_seed(0)
    full = OpenVocabSegmenter(['road', 'water'], **common)
    torch.manual_seed(0)  # the same random weights
    part = OpenVocabSegmenter(['road', 'water'], **common,
                              outputs=OutputOptions(aoi=str(tmp_path / 'aoi.geojson')))
    calls = []
    original = part.probabilities
    monkeypatch.setattr(part, 'probabilities', lambda t: calls.append(1) or original(t))
    full.predict_file(tmp_path / 's.tif', tmp_path / 'full', progress=False)
    part.predict_file(tmp_path / 's.tif', tmp_path / 'part', progress=False)
    with rasterio.open(tmp_path / 'full' / 's.tif.labels.tif') as a, \
            rasterio.open(tmp_path / 'part' / 's.tif.labels.tif') as b:
        whole, cut = a.read(1), b.read(1)
    rows, cols = np.mgrid[0:256, 0:256]
    inside = (rows < 100) & (cols < 100)  # pixel centres within 50 m of the corner
    assert (cut[inside] == whole[inside]).all() and (cut[~inside] == 255).all()
    # of the 5 x 5 tiles (starts 0, 48, 96, 144, 192), the 3 x 3 starting before pixel 100
    assert len(calls) == 9


def test_aoi_errors(tmp_path, capsys):
    write_geotiff(tmp_path / 's.tif', smooth_scene(32, 32))
    (tmp_path / 'points.geojson').write_text(json.dumps(dict(
        type='FeatureCollection', features=[dict(type='Feature', properties={}, geometry=dict(
            type='Point', coordinates=[7.5, 51.0]))])))
    (tmp_path / 'bad.geojson').write_text('{not json')
    for aoi, message in (('missing.geojson', 'not found'), ('bad.geojson', 'cannot be read'),
                         ('points.geojson', 'holds no polygon')):
        assert predict(tmp_path / 's.tif', '--out', tmp_path / 'o', '--aoi',
                       tmp_path / aoi) == 2
        err = capsys.readouterr().err
        assert message in err and 'Traceback' not in err
    assert predict(tmp_path / 's.tif', '--out', tmp_path / 'o', '--min-area', '3') == 2
    assert '--vector' in capsys.readouterr().err


def test_aoi_needs_a_georeferenced_input(tmp_path, capsys):
    from PIL import Image
    Image.fromarray(smooth_scene(32, 32).transpose(1, 2, 0)).save(tmp_path / 'p.png')
    x0, y0 = 500000, 5650000
    write_aoi(tmp_path / 'aoi.geojson', [(x0, y0), (x0 + 5, y0), (x0 + 5, y0 - 5), (x0, y0)])
    assert predict(tmp_path / 'p.png', '--out', tmp_path / 'o', '--aoi',
                   tmp_path / 'aoi.geojson') == 1
    assert 'needs georeferenced inputs' in capsys.readouterr().err
    assert not list((tmp_path / 'o').glob('p.png.*'))


def test_scene_transform_is_used_for_pixel_areas():
    from rasterio.crs import CRS

    from segearth_ov.apis.scenes import pixel_area_m2
    assert pixel_area_m2(CRS.from_epsg(32632), Affine(0.3, 0, 0, 0, -0.3, 0)) == \
        pytest.approx(0.09)
    assert pixel_area_m2(CRS.from_epsg(4326), Affine(0.1, 0, 0, 0, -0.1, 0)) is None
    assert pixel_area_m2(None, Affine.identity()) is None


def test_negative_shaping_is_refused(tmp_path, capsys):
    label_raster(tmp_path / 'l.tif', rectangles())
    for options in (dict(min_area=-1.0), dict(simplify=-0.5)):
        with pytest.raises(ValueError, match='must be finite and >= 0'):
            vectorize_labels(tmp_path / 'l.tif', tmp_path / 'p.gpkg', NAMES, **options)
    assert not list(tmp_path.glob('*.gpkg*')) and not list(tmp_path.glob('.p.gpkg*'))
    write_geotiff(tmp_path / 's.tif', smooth_scene(32, 32))
    for flag, value in (('--simplify', '-1'), ('--min-area', '-5'), ('--min-area', 'nan'),
                        ('--simplify', 'inf')):
        with pytest.raises(SystemExit) as exited:  # a usage error, before any model is built
            predict(tmp_path / 's.tif', '--out', tmp_path / 'o', '--vector', 'gpkg', flag,
                    value)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert f'argument {flag}' in err and value in err and 'Traceback' not in err
    assert not (tmp_path / 'o').exists()
