"""GIS outputs checked as a GIS user would, with independent tools: polygons exact at every
scene size (scipy's connected components, rasterised back), a STAC index that validates
(pystac's bundled JSON schemas), QGIS styles, per-polygon confidence, geodesic areas,
RFC 7946 GeoJSON and Shapefiles."""
import json
import xml.etree.ElementTree as ElementTree

import fiona
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from scipy import ndimage
from shapely.geometry import shape

from scenes_util import smooth_scene, write_geotiff
from segearth_ov.apis.cli import main
from segearth_ov.apis.vectorize import vectorize_labels
from segearth_ov.visualize import class_palette

NAMES = ['background', 'house', 'road', 'water']
BASE = ['--clip', 'ViT-S-16', '--pretrained', 'none', '--upsampler', 'none', '--quiet',
        '--device', 'cpu', '--classes', 'road;water;tree', '--tile', '128', '--overlap', '32',
        '--prompt-templates', 'a satellite photo of {}.']


def predict(*args):
    torch.manual_seed(0)
    return main(['predict', *BASE, *map(str, args)])


def raster(path, labels, crs='EPSG:32632', transform=Affine(0.5, 0, 500000, 0, -0.5, 5650000),
           nodata=255, dtype=None):
    with rasterio.open(path, 'w', driver='GTiff', width=labels.shape[1],
                       height=labels.shape[0], count=1, dtype=dtype or labels.dtype, crs=crs,
                       transform=transform, nodata=nodata) as ds:
        ds.write(labels[None])


def components(labels, nodata=255):
    """``sorted((class, pixels))`` of the 4-connected regions, by scipy."""
    found = []
    for value in np.unique(labels):
        if value != nodata:
            regions, _ = ndimage.label(labels == value)
            found += [(int(value), int(n)) for n in np.bincount(regions.ravel())[1:]]
    return sorted(found)


def rasterised(found, shape_, transform):
    """The polygons burnt back into a raster of their class ids (255 elsewhere)."""
    from rasterio.features import rasterize
    return rasterize([(f.geometry, f.properties['class_id']) for f in found], out_shape=shape_,
                     transform=transform, fill=255, dtype=np.uint8)


# --- 1. polygons exact at every scene size -------------------------------------------------------

def test_the_case_of_the_overlapping_last_block():
    """A 2200 x 10 raster with a 4 x 4 region at x = 1467: two features, not three."""
    import tempfile
    from pathlib import Path
    labels = np.zeros((10, 2200), np.uint8)
    labels[3:7, 1467:1471] = 1
    with tempfile.TemporaryDirectory() as folder:
        raster(Path(folder) / 'l.tif', labels)
        vectorize_labels(Path(folder) / 'l.tif', Path(folder) / 'p.gpkg', NAMES)
        with fiona.open(Path(folder) / 'p.gpkg') as layer:
            found = list(layer)
    assert sorted((f.properties['class_id'], f.properties['pixels']) for f in found) == \
        [(0, 22000 - 16), (1, 16)]


@pytest.mark.parametrize('height,width,block', [(97, 301, 64), (130, 67, 32), (33, 2200, 1024)])
def test_polygons_equal_the_raster_at_sizes_off_the_block(tmp_path, height, width, block):
    rng = np.random.default_rng(height)
    labels = np.kron(rng.integers(0, 4, (height // 5 + 1, width // 7 + 1)),
                     np.ones((5, 7), int))[:height, :width].astype(np.uint8)
    labels[rng.random(labels.shape) < 0.02] = 255
    labels[rng.random(labels.shape) < 0.02] = 2  # specks: regions of one pixel
    transform = Affine(0.5, 0, 500000, 0, -0.5, 5650000)
    raster(tmp_path / 'l.tif', labels, transform=transform)
    count = vectorize_labels(tmp_path / 'l.tif', tmp_path / 'p.gpkg', NAMES, block=block)
    with fiona.open(tmp_path / 'p.gpkg') as layer:
        found = list(layer)
    assert count == len(found)
    assert sorted((f.properties['class_id'], f.properties['pixels']) for f in found) == \
        components(labels)
    assert np.array_equal(rasterised(found, labels.shape, transform), labels)
    geometries = [shape(f.geometry) for f in found]
    assert all(g.is_valid for g in geometries)
    assert sum(g.area for g in geometries) == pytest.approx((labels != 255).sum() * 0.25)


# --- 4, 5. per-polygon confidence, geodesic areas ------------------------------------------------

def test_each_polygon_carries_its_pixels_confidence(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.kron(rng.integers(0, 3, (9, 11)), np.ones((13, 17), int)).astype(np.uint8)
    scores = rng.integers(0, 255, labels.shape).astype(np.uint8)  # 0..254, 255 is no data
    labels[:5, :5], scores[:5, :5] = 255, 255
    transform = Affine(0.5, 0, 500000, 0, -0.5, 5650000)
    raster(tmp_path / 'l.tif', labels, transform=transform)
    raster(tmp_path / 'c.tif', scores, transform=transform)
    vectorize_labels(tmp_path / 'l.tif', tmp_path / 'p.gpkg', NAMES, block=40,
                     confidence_path=tmp_path / 'c.tif')
    from rasterio.features import geometry_mask
    with fiona.open(tmp_path / 'p.gpkg') as layer:
        found = list(layer)
    for feature in found:
        inside = geometry_mask([feature.geometry], labels.shape, transform, invert=True)
        assert feature.properties['mean_confidence'] == pytest.approx(
            scores[inside].astype(np.float64).mean() / 254, rel=1e-9)
        assert feature.properties['min_confidence'] == pytest.approx(scores[inside].min() / 254)


def test_geographic_rasters_get_geodesic_areas(tmp_path):
    from pyproj import Geod
    labels = np.zeros((200, 300), np.uint8)
    labels[20:120, 50:250] = 1
    step = 0.0001  # degrees: about 7 m x 11 m a pixel at 51 N
    transform = Affine(step, 0, 9.0, 0, -step, 51.0)
    raster(tmp_path / 'l.tif', labels, crs='EPSG:4326', transform=transform)
    vectorize_labels(tmp_path / 'l.tif', tmp_path / 'p.gpkg', NAMES, min_area=1.0)
    with fiona.open(tmp_path / 'p.gpkg') as layer:
        house = next(f for f in layer if f.properties['class_id'] == 1)
    west, east = 9.0 + 50 * step, 9.0 + 250 * step
    north, south = 51.0 - 20 * step, 51.0 - 120 * step
    expected, _ = Geod(ellps='WGS84').polygon_area_perimeter([west, east, east, west],
                                                             [south, south, north, north])
    assert house.properties['area_m2'] == pytest.approx(abs(expected), rel=1e-6)
    assert 1.5e6 < house.properties['area_m2'] < 1.6e6  # 1.40 km x 1.11 km


# --- 6. GeoJSON as the standard says, and Shapefiles ---------------------------------------------

def test_geojson_is_wgs84_and_the_scene_crs_variant_keeps_the_crs(tmp_path):
    from pyproj import Transformer
    labels = np.zeros((60, 80), np.uint8)
    labels[10:40, 20:70] = 1
    raster(tmp_path / 'l.tif', labels)
    vectorize_labels(tmp_path / 'l.tif', tmp_path / 'std.geojson', NAMES, 'geojson')
    vectorize_labels(tmp_path / 'l.tif', tmp_path / 'utm.geojson', NAMES, 'geojson-crs')
    standard = json.loads((tmp_path / 'std.geojson').read_text())
    assert 'crs' not in standard
    assert 'crs' in json.loads((tmp_path / 'utm.geojson').read_text())
    to_lonlat = Transformer.from_crs('EPSG:32632', 'EPSG:4326', always_xy=True)
    house = next(f for f in standard['features'] if f['properties']['class_id'] == 1)
    x, y = to_lonlat.transform(500000 + 20 * 0.5, 5650000 - 10 * 0.5)  # the top-left corner
    corners = np.array(house['geometry']['coordinates'][0])
    assert np.abs(corners - [x, y]).sum(axis=1).min() < 1e-6
    assert 8.9 < corners[:, 0].min() and corners[:, 1].max() < 51.1


def test_shapefiles_are_written_whole(tmp_path):
    labels = np.zeros((60, 80), np.uint8)
    labels[10:40, 20:70] = 1
    raster(tmp_path / 'l.tif', labels)
    raster(tmp_path / 'c.tif', np.full(labels.shape, 127, np.uint8))
    vectorize_labels(tmp_path / 'l.tif', tmp_path / 'p.shp', NAMES, 'shp',
                     confidence_path=tmp_path / 'c.tif')
    assert sorted(p.name for p in tmp_path.glob('p.*')) == ['p.cpg', 'p.dbf', 'p.prj',
                                                            'p.shp', 'p.shx']
    with fiona.open(tmp_path / 'p.shp') as layer:
        assert layer.crs.to_epsg() == 32632
        found = list(layer)
    assert sorted(f.properties['pixels'] for f in found) == [1500, 4800 - 1500]
    assert all(f.properties['mean_conf'] == pytest.approx(127 / 254) for f in found)


# --- 2, 3. the run: STAC index that validates, QGIS styles ---------------------------------------

def validate(stac: dict, kind: str) -> None:
    """Validate against the STAC core JSON schemas that pystac ships (offline)."""
    from pystac import STACObjectType
    from pystac.validation.stac_validator import JsonSchemaSTACValidator
    JsonSchemaSTACValidator().validate_core(stac, getattr(STACObjectType, kind),
                                            stac['stac_version'])


def test_the_stac_index_validates(tmp_path, capsys):
    image = smooth_scene(200, 160)  # 16 km x 20 km, 200 km east of the central meridian
    with rasterio.open(tmp_path / 'dated.tif', 'w', driver='GTiff', width=160, height=200,
                       count=3, dtype='uint8', crs='EPSG:32632',
                       transform=Affine(100, 0, 700000, 0, -100, 5650000)) as ds:
        ds.write(image)
        ds.update_tags(TIFFTAG_DATETIME='2023:07:14 10:31:00')
    write_geotiff(tmp_path / 'undated.tif', smooth_scene(64, 64), crs='EPSG:3857')
    from PIL import Image
    Image.fromarray(smooth_scene(40, 40).transpose(1, 2, 0)).save(tmp_path / 'photo.png')
    out = tmp_path / 'out'
    assert predict(tmp_path / 'dated.tif', tmp_path / 'undated.tif', tmp_path / 'photo.png',
                   '--out', out, '--vector', 'gpkg') == 0
    index = json.loads((out / 'index.json').read_text())
    items = {item['id']: item for item in index['features']}
    assert sorted(items) == ['dated.tif', 'photo.png', 'undated.tif']
    for item in items.values():
        validate(item, 'ITEM')
        assert {'rel': 'collection', 'href': 'collection.json',
                'type': 'application/json'} in item['links']
        for asset in item['assets'].values():
            assert (out / asset['href']).is_file()
    collection = json.loads((out / 'collection.json').read_text())
    validate(collection, 'COLLECTION')
    assert any(link['rel'] == 'items' and link['href'] == './index.json'
               for link in collection['links'])
    dated = items['dated.tif']
    assert dated['properties']['datetime'] == '2023-07-14T10:31:00Z'
    assert dated['properties']['segearth_ov:datetime_source'] == 'input metadata'
    assert items['undated.tif']['properties']['segearth_ov:datetime_source'] == \
        'processing time'
    # the footprint, not its bounding box: a UTM square is a slanted quadrilateral in WGS 84
    footprint = shape(dated['geometry'])
    west, south, east, north = dated['bbox']
    assert footprint.area < (east - west) * (north - south) * 0.97
    assert footprint.bounds == pytest.approx(dated['bbox'])
    assert items['photo.png']['geometry'] is None and 'bbox' not in items['photo.png']
    assert collection['extent']['temporal']['interval'][0][0].startswith('2023-07-14')
    # --datetime sets every Item's time (a rerun: results skipped, index rewritten)
    assert predict(tmp_path / 'dated.tif', tmp_path / 'undated.tif', tmp_path / 'photo.png',
                   '--out', out, '--vector', 'gpkg', '--datetime', '2024-06-01T12:00:00+02:00') == 0
    index = json.loads((out / 'index.json').read_text())
    assert {i['properties']['datetime'] for i in index['features']} == {'2024-06-01T10:00:00Z'}
    with pytest.raises(SystemExit):
        predict(tmp_path / 'dated.tif', '--out', out, '--datetime', 'yesterday')
    assert 'not a date and time' in capsys.readouterr().err


def test_layers_open_styled(tmp_path):
    import sqlite3
    write_geotiff(tmp_path / 's.tif', smooth_scene(96, 96))
    out = tmp_path / 'out'
    assert predict(tmp_path / 's.tif', '--out', out, '--vector', 'gpkg') == 0
    names, palette = ['road', 'water', 'tree'], class_palette(3)
    raster_qml = ElementTree.parse(out / 's.tif.labels.qml').getroot()
    renderer = raster_qml.find('pipe/rasterrenderer')
    assert renderer.get('type') == 'paletted' and renderer.get('band') == '1'
    entries = renderer.findall('colorPalette/paletteEntry')
    assert [(int(e.get('value')), e.get('label'), e.get('color')) for e in entries] == \
        [(i, n, '#%02x%02x%02x' % tuple(palette[i])) for i, n in enumerate(names)]
    with rasterio.open(out / 's.tif.labels.tif') as ds:  # no data stays transparent
        assert ds.nodata == 255 and ds.colormap(1)[0][:3] == tuple(palette[0])
    vector_qml = (out / 's.tif.polygons.qml').read_text()
    renderer = ElementTree.fromstring(vector_qml).find('renderer-v2')
    assert renderer.get('type') == 'categorizedSymbol' and renderer.get('attr') == 'class_name'
    categories = renderer.findall('categories/category')
    assert [c.get('value') for c in categories] == names
    colours = {s.get('name'): s.find("layer/Option/Option[@name='color']").get('value')
               for s in renderer.findall('symbols/symbol')}
    assert [colours[c.get('symbol')] for c in categories] == \
        [','.join(map(str, palette[i])) + ',255' for i in range(3)]
    with sqlite3.connect(out / 's.tif.polygons.gpkg') as db:
        rows = db.execute('SELECT f_table_name, styleQML, useAsDefault FROM layer_styles'
                          ).fetchall()
    assert rows == [('s.tif.polygons', vector_qml, 1)]
    with fiona.open(out / 's.tif.polygons.gpkg') as layer:  # still a readable layer
        assert {'mean_confidence', 'min_confidence'} <= set(layer.schema['properties'])


def test_summaries_of_geographic_scenes_give_geodesic_class_areas(tmp_path):
    from pyproj import Geod
    step = 0.0002
    with rasterio.open(tmp_path / 'g.tif', 'w', driver='GTiff', width=64, height=48, count=3,
                       dtype='uint8', crs='EPSG:4326',
                       transform=Affine(step, 0, 9.0, 0, -step, 51.0)) as ds:
        ds.write(smooth_scene(48, 64))
    assert predict(tmp_path / 'g.tif', '--out', tmp_path / 'out') == 0
    summary = json.loads((tmp_path / 'out' / 'g.tif.json').read_text())
    with rasterio.open(tmp_path / 'out' / 'g.tif.labels.tif') as ds:
        labels = ds.read(1)
    geod = Geod(ellps='WGS84')
    row_area = [abs(geod.polygon_area_perimeter(
        [9.0, 9.0 + step, 9.0 + step, 9.0],
        [51.0 - (r + 1) * step, 51.0 - (r + 1) * step, 51.0 - r * step, 51.0 - r * step])[0])
        for r in range(48)]
    for value, entry in enumerate(summary['classes']):
        expected = sum(row_area[r] * (labels[r] == value).sum() for r in range(48))
        assert entry['area_m2'] == pytest.approx(expected, abs=1e-3)
    assert 'geodesic' in summary['area_note']


QGIS_CHECK = '''
import json, os, sys
os.environ['QT_QPA_PLATFORM'] = 'offscreen'
from qgis.core import QgsApplication, QgsRasterLayer, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
raster = QgsRasterLayer(sys.argv[1], 'labels')
vector = QgsVectorLayer(sys.argv[2], 'polygons', 'ogr')
print(json.dumps(dict(
    raster=[raster.renderer().type(), [(c.value, c.label, c.color.name())
                                       for c in raster.renderer().classes()]],
    vector=[vector.renderer().type(), vector.renderer().classAttribute(),
            [(c.value(), c.symbol().color().name()) for c in vector.renderer().categories()]])),
      flush=True)
os._exit(0)  # QGIS may crash while tearing down; the answer is out
'''


def qgis_python():
    import shutil
    import subprocess
    python = shutil.which('python3', path='/usr/bin')
    if python is None or subprocess.run([python, '-c', 'import qgis.core'],
                                        capture_output=True).returncode:
        pytest.skip('QGIS (Debian\'s python3-qgis) is not installed here')
    return python


def test_the_worked_example_opens_styled_in_qgis(tmp_path):
    """In a real QGIS (when installed): the label raster is paletted with the class names,
    the GeoPackage's polygons categorised on class_name, both in the overlay's colours."""
    import subprocess
    python = qgis_python()
    write_geotiff(tmp_path / 's.tif', smooth_scene(96, 96))
    out = tmp_path / 'out'
    assert predict(tmp_path / 's.tif', '--out', out, '--vector', 'gpkg') == 0
    (out / 's.tif.polygons.qml').unlink()  # the GeoPackage's own layer_styles must do
    done = subprocess.run([python, '-c', QGIS_CHECK, str(out / 's.tif.labels.tif'),
                           str(out / 's.tif.polygons.gpkg')], capture_output=True, text=True,
                          env={'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    colours = ['#%02x%02x%02x' % tuple(c) for c in class_palette(3)]
    names = ['road', 'water', 'tree']
    assert shown['raster'] == ['paletted', [[i, n, c] for i, (n, c) in
                                            enumerate(zip(names, colours))]]
    assert shown['vector'][:2] == ['categorizedSymbol', 'class_name']
    assert shown['vector'][2] == [[n, c] for n, c in zip(names, colours)]


def test_split_scene_polygons_carry_the_same_confidence(tmp_path):
    """--split-scenes without --confidence: the bands still carry the confidence the
    polygons' figures are read from (played here in one process, rank 1 then rank 0)."""
    from segearth_ov.apis import OpenVocabSegmenter
    from segearth_ov.apis.inference import ScenePart
    from segearth_ov.apis.outputs import OutputOptions
    write_geotiff(tmp_path / 's.tif', smooth_scene(200, 96))
    torch.manual_seed(0)
    segmenter = OpenVocabSegmenter(['road', 'water', 'tree'], clip='ViT-S-16',
                                   pretrained='none', upsampler='none', device='cpu',
                                   prompt_templates=['{}'], tile=64, overlap=16,
                                   outputs=OutputOptions(vector='gpkg'))
    segmenter.predict_file(tmp_path / 's.tif', tmp_path / 'one', progress=False)
    for rank in (1, 0):
        segmenter.predict_file(tmp_path / 's.tif', tmp_path / 'two', progress=False,
                               part=ScenePart(rank, 2, lambda ok: ok), locked=True)
    figures = []
    for folder in ('one', 'two'):
        with fiona.open(tmp_path / folder / 's.tif.polygons.gpkg') as layer:
            figures.append(sorted((f.properties['pixels'], f.properties['mean_confidence'],
                                   f.properties['min_confidence']) for f in layer))
    assert figures[0] == figures[1]
    assert all(0 <= mean <= 1 and 0 <= low <= 1 for _, mean, low in figures[1])
