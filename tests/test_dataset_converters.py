"""Dataset converters on generated raw miniatures, checked pixel by pixel."""
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segearth_ov.dataset_converters import (OutputConflict, OutputWriter, convert_binary_masks,
                                            convert_inria, convert_isaid, convert_isprs,
                                            convert_loveda, convert_openearthmap, convert_uavid,
                                            convert_wbs_si, convert_xbd, main)
from segearth_ov.dataset_converters.sets import POTSDAM_SPLITS

# the published Inria evaluation tiles, written out independently of the converter
INRIA_PUBLISHED = '''vienna3 chicago10 vienna20 austin1 tyrol-w25 vienna9 chicago14 vienna18
kitsap36 kitsap35 austin22 kitsap34 austin7 vienna11 kitsap14 kitsap25 austin12 vienna15 kitsap9
austin36 vienna6 chicago23 tyrol-w3 chicago26 austin24 tyrol-w1 tyrol-w36'''.split()

RNG = np.random.default_rng(0)
# written out here, independently of the converter's tables (RGB)
ISPRS_RGB = [(0, 0, 0), (255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0),
             (255, 255, 0), (255, 0, 0)]
UAVID_RGB = {'clutter': (0, 0, 0), 'building': (128, 0, 0), 'road': (128, 64, 128),
             'static_car': (192, 0, 192), 'tree': (0, 128, 0), 'low_veg': (128, 128, 0),
             'human': (64, 64, 0), 'moving_car': (64, 0, 128)}


def save(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def encoded(array, fmt='PNG'):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def load(path):
    return np.asarray(Image.open(path))


def paint(index, colours):
    return np.array(colours, dtype=np.uint8)[index]


def test_potsdam_crops_colours_and_zip(tmp_path):
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    tiles, images = {}, {}
    raw.mkdir()
    archive = zipfile.ZipFile(raw / '2_Ortho_RGB.zip', 'w')
    for tile in POTSDAM_SPLITS['val'] + ('2_10',):  # 2_10 is a train tile: not converted
        index = RNG.integers(0, 7, (20, 24)).astype(np.uint8)
        rgb = paint(index, ISPRS_RGB)
        rgb[0, 0] = (10, 20, 30)  # not an ISPRS colour
        index[0, 0] = 0
        tiles[tile], images[tile] = index, RNG.integers(0, 255, (20, 24, 3), dtype=np.uint8)
        archive.writestr(f'2_Ortho_RGB/top_potsdam_{tile}_RGB.tif',
                         encoded(images[tile], 'TIFF'))
        save(raw / 'labels' / f'top_potsdam_{tile}_label_noBoundary.tif', rgb)
    archive.close()
    writer = OutputWriter()
    report = convert_isprs(raw, out, writer, site='potsdam', crop=8, stride=8)
    assert '14 inputs' in report and '14 pixels of unknown colour' in report
    names = sorted(p.name for p in (out / 'ann_dir' / 'val').iterdir())
    assert len(names) == 14 * 3 * 3  # rows 0-8, 8-16, 12-20; columns 0-8, 8-16, 16-24
    assert '5_15_16_12_24_20.png' in names and not any(n.startswith('2_10_') for n in names)
    for tile in ('5_15', '7_13'):
        for x1, y1 in ((0, 0), (16, 12), (8, 8)):
            name = f'{tile}_{x1}_{y1}_{x1 + 8}_{y1 + 8}.png'
            np.testing.assert_array_equal(load(out / 'ann_dir' / 'val' / name),
                                          tiles[tile][y1:y1 + 8, x1:x1 + 8])
            np.testing.assert_array_equal(load(out / 'img_dir' / 'val' / name),
                                          images[tile][y1:y1 + 8, x1:x1 + 8])
    assert load(out / 'img_dir' / 'val' / '5_15_0_0_8_8.png').ndim == 3  # kept in colour


def test_converted_potsdam_loads_through_its_config(tmp_path, monkeypatch):
    from mmengine.config import Config
    from mmseg.registry import DATASETS

    from conftest import REPO
    raw = tmp_path / 'raw'
    for tile in POTSDAM_SPLITS['val']:
        save(raw / f'top_potsdam_{tile}_RGB.tif', np.zeros((8, 16, 3), np.uint8))
        label = np.repeat(np.arange(7, dtype=np.uint8), 3)[None, :16].repeat(8, 0)
        save(raw / f'top_potsdam_{tile}_label_noBoundary.tif', paint(label, ISPRS_RGB))
    monkeypatch.setenv('SEGEARTH_OV_DATA', str(tmp_path / 'data'))
    assert main(['potsdam', str(raw), '--crop', '8', '--stride', '8']) == 0
    ds_cfg = Config.fromfile(str(REPO / 'configs' / 'cfg_potsdam.py')).test_dataloader.dataset
    dataset = DATASETS.build(ds_cfg)
    assert len(dataset) == 14 * 2
    gt = dataset[0]['data_samples'].gt_sem_seg.data[0].numpy()
    np.testing.assert_array_equal(gt, np.where(label[:, :8] == 0, 255, label[:, :8] - 1))


def test_isprs_missing_label_names_tile(tmp_path):
    raw = tmp_path / 'raw'
    for tile in POTSDAM_SPLITS['val']:
        save(raw / f'top_potsdam_{tile}_RGB.tif', np.zeros((8, 8, 3), np.uint8))
        if tile != '6_14':
            save(raw / f'top_potsdam_{tile}_label_noBoundary.tif', np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match='without a label.*top_potsdam_6_14_RGB.tif'):
        convert_isprs(raw, tmp_path / 'out', OutputWriter(), crop=8, stride=8)


def test_label_of_another_size_is_named(tmp_path):
    raw = tmp_path / 'raw'
    for tile in POTSDAM_SPLITS['val']:
        save(raw / f'top_potsdam_{tile}_RGB.tif', np.zeros((8, 8, 3), np.uint8))
        size = (8, 9) if tile == '2_13' else (8, 8)
        save(raw / f'top_potsdam_{tile}_label_noBoundary.tif', np.zeros((*size, 3), np.uint8))
    with pytest.raises(ValueError, match=r'top_potsdam_2_13_label_noBoundary.tif is 9x8'):
        convert_isprs(raw, tmp_path / 'out', OutputWriter(), crop=8, stride=8)


def test_isaid_patches_with_overlap_and_padding(tmp_path):
    from mmseg.datasets import iSAIDDataset
    palette = [tuple(c) for c in iSAIDDataset.METAINFO['palette']]
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    index = RNG.integers(0, 16, (10, 13)).astype(np.uint8)
    image = RNG.integers(0, 255, (10, 13, 3), dtype=np.uint8)
    save(raw / 'val' / 'images' / 'P0001.png', image)
    save(raw / 'val' / 'Semantic_masks' / 'images' / 'P0001_instance_color_RGB.png',
         paint(index, palette))
    small = RNG.integers(0, 16, (5, 6)).astype(np.uint8)
    save(raw / 'val' / 'images' / 'P0002.png', RNG.integers(0, 255, (5, 6, 3), dtype=np.uint8))
    save(raw / 'val' / 'Semantic_masks' / 'images' / 'P0002_instance_color_RGB.png',
         paint(small, palette))
    convert_isaid(raw, out, OutputWriter(), patch=8, overlap=3)
    labels = sorted(p.name for p in (out / 'ann_dir' / 'val').iterdir())
    # stride 5: rows 0-8, 2-10; columns 0-8, 5-13
    assert labels == sorted([f'P0001_{y}_{y + 8}_{x}_{x + 8}_instance_color_RGB.png'
                             for y in (0, 2) for x in (0, 5)] +
                            ['P0002_0_5_0_6_instance_color_RGB.png'])
    np.testing.assert_array_equal(
        load(out / 'ann_dir' / 'val' / 'P0001_2_10_5_13_instance_color_RGB.png'),
        index[2:10, 5:13])
    np.testing.assert_array_equal(load(out / 'img_dir' / 'val' / 'P0001_2_10_5_13.png'),
                                  image[2:10, 5:13])
    padded = load(out / 'ann_dir' / 'val' / 'P0002_0_5_0_6_instance_color_RGB.png')
    assert padded.shape == (8, 8)
    np.testing.assert_array_equal(padded[:5, :6], small)
    # as mmsegmentation's converter: padded labels are ignored (255), padded pixels black
    assert (padded[5:] == 255).all() and (padded[:, 6:] == 255).all()
    padded_image = load(out / 'img_dir' / 'val' / 'P0002_0_5_0_6.png')
    assert (padded_image[5:] == 0).all() and (padded_image[:, 6:] == 0).all()


def test_uavid_merges_moving_cars(tmp_path):
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    names = list(UAVID_RGB)
    index = RNG.integers(0, len(names), (6, 10))
    rgb = paint(index, [UAVID_RGB[n] for n in names])
    rgb[5, 9] = (1, 2, 3)
    expected = np.array([{'clutter': 0, 'building': 1, 'road': 2, 'static_car': 3, 'tree': 4,
                          'low_veg': 5, 'human': 6, 'moving_car': 3}[n] for n in names],
                        np.uint8)[index]
    expected[5, 9] = 255
    image = RNG.integers(0, 255, (6, 10, 3), dtype=np.uint8)
    save(raw / 'test_gt' / 'seq16' / 'Images' / '000100.png', image)
    save(raw / 'test_gt' / 'seq16' / 'Labels' / '000100.png', rgb)
    report = convert_uavid(raw, out, OutputWriter(), patch_size=(3, 5))
    assert '1 pixels of unknown colour' in report
    label = np.zeros((6, 10), np.uint8)
    for y in (0, 3):
        for x in (0, 5):
            label[y:y + 3, x:x + 5] = load(out / 'ann_dir' / 'test' / f'seq16_000100_{x}_{y}.png')
            np.testing.assert_array_equal(
                load(out / 'img_dir' / 'test' / f'seq16_000100_{x}_{y}.png'),
                image[y:y + 3, x:x + 5])
    np.testing.assert_array_equal(label, expected)
    assert 3 in label and 64 not in label


def test_binary_masks_threshold_and_rename(tmp_path):
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    masks = {}
    for name in ('a', 'b'):
        mask = RNG.choice(np.array([0, 3, 127, 128, 200, 255], np.uint8), (7, 9))
        masks[name] = mask
        save(raw / 'val' / 'gt' / f'{name}_mask.png', mask)
        save(raw / 'val' / 'images' / f'{name}_sat.jpg',
             RNG.integers(0, 255, (7, 9, 3), dtype=np.uint8))
    convert_binary_masks(raw, out, OutputWriter(), masks='val/gt', mask_suffix='_mask.png',
                         label_dir='val/label_cvt', images='val/images',
                         image_suffix='_sat.jpg', image_dir='val/image_cvt',
                         out_image_suffix='.jpg')
    for name, mask in masks.items():
        np.testing.assert_array_equal(load(out / 'val' / 'label_cvt' / f'{name}.png'),
                                      (mask >= 128).astype(np.uint8))
        assert (out / 'val' / 'image_cvt' / f'{name}.jpg').read_bytes() == \
            (raw / 'val' / 'images' / f'{name}_sat.jpg').read_bytes()
    (raw / 'val' / 'images' / 'b_sat.jpg').unlink()
    with pytest.raises(FileNotFoundError, match='without a label|b'):
        convert_binary_masks(raw, tmp_path / 'o2', OutputWriter(), masks='val/images',
                             mask_suffix='_sat.jpg', label_dir='x', images='val/gt',
                             image_suffix='_mask.png', image_dir='y')


def test_binary_masks_as_tif(tmp_path):
    mask = np.array([[0, 255], [255, 0]], np.uint8)
    save(tmp_path / 'raw' / 'label' / 't.tif', mask)
    convert_binary_masks(tmp_path / 'raw', tmp_path / 'out', OutputWriter(), masks='label',
                         mask_suffix='.tif', label_dir='label_cvt', label_suffix='.tif')
    np.testing.assert_array_equal(load(tmp_path / 'out' / 'label_cvt' / 't.tif'), mask // 255)


def test_xbd_pre_disaster_only(tmp_path):
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    target = RNG.integers(0, 3, (6, 6)).astype(np.uint8)
    for phase in ('pre', 'post'):
        save(raw / 'test' / 'images' / f'fire_00000001_{phase}_disaster.png',
             RNG.integers(0, 255, (6, 6, 3), dtype=np.uint8))
        save(raw / 'test' / 'targets' / f'fire_00000001_{phase}_disaster_target.png', target)
    convert_xbd(raw, out, OutputWriter())
    assert [p.name for p in (out / 'test' / 'images_pre').iterdir()] == [
        'fire_00000001_pre_disaster.png']
    np.testing.assert_array_equal(
        load(out / 'test' / 'targets_cvt_pre' / 'fire_00000001_pre_disaster.png'),
        (target >= 1).astype(np.uint8))


def test_uavid_reads_the_test_ground_truth_only(tmp_path):
    """The labelled val release is another set: only test_gt frames are converted."""
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    for split, seq in (('uavid_val', 'seq16'), ('test_gt', 'seq22'), ('test_gt', 'seq30')):
        save(raw / split / seq / 'Images' / '000000.png', np.zeros((4, 6, 3), np.uint8))
        save(raw / split / seq / 'Labels' / '000000.png', np.zeros((4, 6, 3), np.uint8))
    save(raw / 'uavid_test' / 'seq40' / 'Images' / '000000.png', np.zeros((4, 6, 3), np.uint8))
    convert_uavid(raw, out, OutputWriter(), patch_size=(4, 6))
    assert sorted(p.name for p in (out / 'ann_dir' / 'test').iterdir()) == [
        'seq22_000000_0_0.png', 'seq30_000000_0_0.png']
    with pytest.raises(FileNotFoundError, match=r'test_gt not found.*released separately'):
        convert_uavid(raw / 'uavid_val', out, OutputWriter())


def inria_download(raw, tiles, size=8, test_tiles=('bellingham1', 'vienna3')):
    """The AerialImageDataset layout: labelled train tiles and unlabelled test tiles."""
    gts = {}
    for name in tiles:
        gts[name] = RNG.choice(np.array([0, 255], np.uint8), (size, size))
        save(raw / 'train' / 'images' / f'{name}.tif',
             RNG.integers(0, 255, (size, size, 3), dtype=np.uint8))
        save(raw / 'train' / 'gt' / f'{name}.tif', gts[name])
    for name in test_tiles:  # no gt/, as in the download
        save(raw / 'test' / 'images' / f'{name}.tif', np.zeros((size, size, 3), np.uint8))
    return gts


def test_inria_published_tiles_by_default(tmp_path):
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    others = ['austin2', 'chicago1', 'vienna30', 'tyrol-w5']
    gts = inria_download(raw, INRIA_PUBLISHED + others)
    convert_inria(raw, out, OutputWriter(), patch=4)
    names = sorted(p.name for p in (out / 'ann_dir' / 'split_test').iterdir())
    assert names == sorted(f'{tile}_{x}_{y}.png' for tile in INRIA_PUBLISHED
                           for x in (0, 4) for y in (0, 4))
    np.testing.assert_array_equal(load(out / 'ann_dir' / 'split_test' / 'tyrol-w3_4_0.png'),
                                  gts['tyrol-w3'][0:4, 4:8] // 255)


def test_inria_tiles_by_name_or_number(tmp_path, capsys):
    raw = tmp_path / 'raw'
    inria_download(raw, ['austin2', 'chicago2', 'kitsap2', 'tyrol-w2', 'vienna2', 'vienna7'])
    out = tmp_path / 'by_number'
    assert main(['inria', str(raw), '-o', str(out), '--patch', '8', '--tiles', '2']) == 0
    assert len(list((out / 'img_dir' / 'split_test').iterdir())) == 5
    out = tmp_path / 'by_name'
    assert main(['inria', str(raw), '-o', str(out), '--patch', '8', '--tiles', 'vienna7',
                 'austin2']) == 0
    assert sorted(p.name for p in (out / 'ann_dir' / 'split_test').iterdir()) == [
        'austin2_0_0.png', 'vienna7_0_0.png']
    assert main(['inria', str(raw), '-o', str(out), '--tiles', 'vienna8']) == 2
    assert 'no image for vienna8' in capsys.readouterr().err


def test_wbs_si_converts_exactly_the_published_list(tmp_path):
    from conftest import REPO
    published = (REPO / 'segearth_ov' / 'splits' / 'wbs-si_val.txt').read_text().split()
    assert len(published) == 499
    raw, out = tmp_path / 'download' / 'WaterBodiesDatasetPreprocessed', tmp_path / 'out'
    masks = {}
    for name in published + ['water_body_99999', 'water_body_99998']:
        masks[name] = RNG.choice(np.array([0, 100, 127, 128, 250, 255], np.uint8), (4, 4))
        save(raw / 'Images' / f'{name}.jpg', np.zeros((4, 4, 3), np.uint8))
        save(raw / 'Masks' / f'{name}.jpg', masks[name], quality=100)
    convert_wbs_si(tmp_path / 'download', out, OutputWriter())
    assert sorted(p.stem for p in (out / 'Masks_cvt').iterdir()) == sorted(published)
    assert sorted(p.stem for p in (out / 'Images').iterdir()) == sorted(published)
    name = published[0]
    decoded = load(raw / 'Masks' / f'{name}.jpg')  # thresholded as the download decodes
    np.testing.assert_array_equal(load(out / 'Masks_cvt' / f'{name}.png'),
                                  (decoded >= 128).astype(np.uint8))


def test_openearthmap_val_list(tmp_path):
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    for name in ('aachen_1.tif', 'koeln_2.tif'):
        region = name.split('_')[0]
        save(raw / region / 'images' / name, RNG.integers(0, 255, (4, 4, 3), dtype=np.uint8))
        save(raw / region / 'labels' / name, RNG.integers(0, 9, (4, 4)).astype(np.uint8))
    (raw / 'val.txt').write_text('aachen_1.tif\nkoeln_2.tif\nfrom_xbd_3.tif\n')
    report = convert_openearthmap(raw, out, OutputWriter())
    assert '1 listed tiles not in the release' in report
    for name in ('aachen_1.tif', 'koeln_2.tif'):
        region = name.split('_')[0]
        assert (out / 'ann_dir' / 'val' / name).read_bytes() == \
            (raw / region / 'labels' / name).read_bytes()
    with pytest.raises(FileNotFoundError, match='split file'):
        convert_openearthmap(raw, out, OutputWriter(), split_file=raw / 'nope.txt')


def test_loveda_from_zip(tmp_path):
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    raw.mkdir()
    with zipfile.ZipFile(raw / 'Val.zip', 'w') as archive:
        for scene, key in (('Rural', '2522'), ('Urban', '3514')):
            archive.writestr(f'Val/{scene}/images_png/{key}.png',
                             encoded(np.full((4, 4, 3), int(key) % 255, np.uint8)))
            archive.writestr(f'Val/{scene}/masks_png/{key}.png',
                             encoded(np.full((4, 4), int(key) % 8, np.uint8)))
    convert_loveda(raw, out, OutputWriter())
    assert sorted(p.name for p in (out / 'ann_dir' / 'val').iterdir()) == ['2522.png',
                                                                           '3514.png']
    assert (load(out / 'ann_dir' / 'val' / '3514.png') == 3514 % 8).all()


def test_rerun_is_idempotent_and_conflicts_need_force(tmp_path, capsys):
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    save(raw / 'label' / 'a.png', np.array([[0, 255]], np.uint8))
    save(raw / 'label' / 'b.png', np.array([[255, 255]], np.uint8))
    args = ['binary-masks', str(raw), '-o', str(out), '--masks', 'label']
    assert main(args) == 0
    assert '2 written' in capsys.readouterr().out
    assert main(args) == 0
    assert '0 written, 2 unchanged' in capsys.readouterr().out
    save(out / 'label_cvt' / 'b.png', np.array([[0, 0]], np.uint8))  # a different output
    assert main(args) == 1
    err = capsys.readouterr().err
    assert 'b.png exists with different content' in err and '--force' in err
    assert 'kept: 0 written, 1 unchanged' in err  # a.png was checked and kept
    assert (load(out / 'label_cvt' / 'b.png') == 0).all()  # nothing overwritten
    assert main(args + ['--force']) == 0
    assert '1 replaced' in capsys.readouterr().out
    assert (load(out / 'label_cvt' / 'b.png') == 1).all()
    assert not list(out.rglob('*.tmp'))


def test_writer_refuses_without_force(tmp_path):
    writer = OutputWriter()
    writer.write_bytes(tmp_path / 'x.txt', b'one')
    with pytest.raises(OutputConflict, match='x.txt'):
        writer.write_bytes(tmp_path / 'x.txt', b'two')
    assert (tmp_path / 'x.txt').read_bytes() == b'one'


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert main(['loveda', str(tmp_path / 'missing'), '-o', str(tmp_path / 'o')]) == 2
    assert 'missing does not exist' in capsys.readouterr().err
    (tmp_path / 'raw').mkdir()
    (tmp_path / 'raw' / 'broken.zip').write_bytes(b'not a zip')
    assert main(['loveda', str(tmp_path / 'raw'), '-o', str(tmp_path / 'o')]) == 2
    assert 'broken.zip is not a readable zip archive' in capsys.readouterr().err
    save(tmp_path / 'raw3' / 'label' / 'c.png', np.zeros((2, 2), np.uint8))
    (tmp_path / 'raw3' / 'label' / 'd.png').write_bytes(b'corrupt')
    assert main(['binary-masks', str(tmp_path / 'raw3'), '-o', str(tmp_path / 'o3'),
                 '--masks', 'label']) == 2
    err = capsys.readouterr().err
    assert 'cannot read image' in err and 'd.png' in err
    assert 'kept: 1 written' in err  # c.png, converted before d.png failed, stays
    assert (tmp_path / 'o3' / 'label_cvt' / 'c.png').exists()


# --- every converter's labels hold only the benchmark's class ids and 255 ---------------------

def _noisy_colour(index, colours):
    rgb = paint(index, colours)
    rgb[0, :3] = [(10, 20, 30), (255, 128, 0), (1, 1, 1)]  # colours outside the legend
    return rgb


def _isprs_raw(raw):
    for tile in POTSDAM_SPLITS['val']:
        save(raw / f'top_potsdam_{tile}_RGB.tif', np.zeros((9, 9, 3), np.uint8))
        save(raw / f'top_potsdam_{tile}_label_noBoundary.tif',
             _noisy_colour(RNG.integers(0, 7, (9, 9)), ISPRS_RGB))


def _isaid_raw(raw):
    from mmseg.datasets import iSAIDDataset
    palette = [tuple(c) for c in iSAIDDataset.METAINFO['palette']]
    save(raw / 'val' / 'images' / 'P0001.png', np.zeros((5, 11, 3), np.uint8))
    save(raw / 'val' / 'Semantic_masks' / 'images' / 'P0001_instance_color_RGB.png',
         _noisy_colour(RNG.integers(0, 16, (5, 11)), palette))


def _uavid_raw(raw):
    save(raw / 'test_gt' / 'seq22' / 'Images' / '000000.png', np.zeros((7, 9, 3), np.uint8))
    save(raw / 'test_gt' / 'seq22' / 'Labels' / '000000.png',
         _noisy_colour(RNG.integers(0, 8, (7, 9)), list(UAVID_RGB.values())))


def _grey_noise(shape):
    return RNG.integers(0, 256, shape).astype(np.uint8)  # every grey level, as JPEG gives


def _masks_raw(raw):
    save(raw / 'label' / 'a.jpg', _grey_noise((9, 9)), quality=70)


def _xbd_raw(raw):
    save(raw / 'test' / 'images' / 'x_pre_disaster.png', np.zeros((6, 6, 3), np.uint8))
    save(raw / 'test' / 'targets' / 'x_pre_disaster_target.png', _grey_noise((6, 6)))


def _inria_raw(raw):
    save(raw / 'train' / 'images' / 'vienna3.tif', np.zeros((9, 9, 3), np.uint8))
    save(raw / 'train' / 'gt' / 'vienna3.tif', _grey_noise((9, 9)))


def _wbs_raw(raw, name='water_body_2396'):
    save(raw / 'Images' / f'{name}.jpg', np.zeros((9, 9, 3), np.uint8))
    save(raw / 'Masks' / f'{name}.jpg', _grey_noise((9, 9)), quality=60)
    (raw / 'list.txt').write_text(name + '\n')


LABEL_CASES = {
    # set: (raw maker, converter arguments, label glob, class ids)
    'potsdam': (_isprs_raw, ['--crop', '4', '--stride', '4'], 'ann_dir/val/*.png', range(7)),
    'isaid': (_isaid_raw, ['--patch', '8', '--overlap', '2'], 'ann_dir/val/*.png', range(16)),
    'uavid': (_uavid_raw, [], 'ann_dir/test/*.png', range(7)),
    'binary-masks': (_masks_raw, ['--masks', 'label', '--mask-suffix', '.jpg'],
                     'label_cvt/*.png', range(2)),
    'xbd': (_xbd_raw, [], 'test/targets_cvt_pre/*.png', range(2)),
    'inria': (_inria_raw, ['--patch', '4', '--tiles', 'vienna3'], 'ann_dir/split_test/*.png',
              range(2)),
    'wbs-si': (_wbs_raw, ['--split-file', 'RAW/list.txt'], 'Masks_cvt/*.png', range(2)),
}


@pytest.mark.parametrize('name', sorted(LABEL_CASES))
def test_labels_hold_only_class_ids_and_255(name, tmp_path):
    make, args, pattern, ids = LABEL_CASES[name]
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    make(raw)
    args = [arg.replace('RAW', str(raw)) for arg in args]
    assert main([name, str(raw), '-o', str(out), *args]) == 0
    labels = sorted(out.glob(pattern))
    assert labels
    values = set(np.unique(np.concatenate([load(path).ravel() for path in labels])).tolist())
    assert values <= set(ids) | {255}, values


# --- hostile archives -------------------------------------------------------------------------

@pytest.mark.parametrize('member', ['../../escaped.png', '/tmp/abs_escaped.png',
                                    'label/../../../escaped.png'])
@pytest.mark.parametrize('with_images', [False, True])
def test_zip_slip_members_are_refused(tmp_path, capsys, member, with_images):
    raw, out = tmp_path / 'raw', tmp_path / 'deep' / 'out'
    raw.mkdir()
    victim = tmp_path / 'escaped.png'
    victim.write_bytes(b'precious')
    with zipfile.ZipFile(raw / 'masks.zip', 'w') as archive:
        archive.writestr('label/a.png', encoded(np.zeros((2, 2), np.uint8)))
        archive.writestr(member, encoded(np.full((2, 2), 255, np.uint8)))
        if with_images:
            archive.writestr('label/a.jpg', encoded(np.zeros((2, 2, 3), np.uint8), 'JPEG'))
            archive.writestr(member[:-4] + '.jpg', encoded(np.zeros((2, 2, 3), np.uint8), 'JPEG'))
    args = ['binary-masks', str(raw), '-o', str(out), '--masks', '.', '--force']
    if with_images:
        args += ['--images', '.', '--image-suffix', '.jpg']
    assert main(args) == 2
    err = capsys.readouterr().err
    assert repr(member) in err or repr(member[:-4] + '.jpg') in err
    assert 'outside the output folder' in err
    assert victim.read_bytes() == b'precious' and not Path('/tmp/abs_escaped.png').exists()
    assert not any(tmp_path.glob('**/escaped*')) or victim.exists()


def test_xbd_zip_slip_refused(tmp_path, capsys):
    raw = tmp_path / 'raw'
    (raw / 'test' / 'images').mkdir(parents=True)
    with zipfile.ZipFile(raw / 'test' / 'images' / 'x.zip', 'w') as archive:
        archive.writestr('../../../../evil_pre_disaster.png', b'x')
    assert main(['xbd', str(raw), '-o', str(tmp_path / 'out')]) == 2
    assert "'../../../../evil_pre_disaster.png'" in capsys.readouterr().err
    assert not list(tmp_path.rglob('evil*'))


def test_writer_refuses_paths_outside_its_root(tmp_path):
    from segearth_ov.dataset_converters.writer import OutsideOutput
    writer = OutputWriter(root=tmp_path / 'out')
    with pytest.raises(OutsideOutput, match='outside the output folder'):
        writer.write_bytes(tmp_path / 'out' / '..' / 'x.png', b'x')
    assert not (tmp_path / 'x.png').exists()


def test_zip_member_with_bad_crc_is_named(tmp_path, capsys):
    raw = tmp_path / 'raw'
    raw.mkdir()
    data = encoded(np.full((16, 16), 255, np.uint8))
    with zipfile.ZipFile(raw / 'masks.zip', 'w', compression=zipfile.ZIP_STORED) as archive:
        archive.writestr('label/a.png', data)
    blob = bytearray((raw / 'masks.zip').read_bytes())
    at = blob.find(data) + len(data) // 2
    blob[at] ^= 0xFF  # corrupt one stored byte: the CRC no longer matches
    (raw / 'masks.zip').write_bytes(bytes(blob))
    assert main(['binary-masks', str(raw), '-o', str(tmp_path / 'out'), '--masks', '.']) == 2
    err = capsys.readouterr().err
    assert 'masks.zip:label/a.png cannot be read' in err and 'Traceback' not in err


def test_every_converter_option_reaches_its_converter():
    """Each subcommand's own options are parameters of its converter (none ignored)."""
    from segearth_ov.dataset_converters.cli import COMMON_OPTIONS, build_parser, converter_options
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == 'set').choices
    for name, sub in commands.items():
        run = sub.get_default('run')
        options = {a.dest for a in sub._actions if a.dest != 'help'} - set(COMMON_OPTIONS)
        assert options <= set(converter_options(run.convert)), name
