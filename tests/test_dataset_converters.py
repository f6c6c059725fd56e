"""Dataset converters on generated raw miniatures, checked pixel by pixel."""
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from segearth_ov.dataset_converters import (OutputConflict, OutputWriter, convert_binary_masks,
                                            convert_inria, convert_isaid, convert_isprs,
                                            convert_loveda, convert_openearthmap,
                                            convert_uavid, convert_xbd, main)
from segearth_ov.dataset_converters.sets import POTSDAM_SPLITS

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
    assert (padded[5:] == 0).all() and (padded[:, 6:] == 0).all()


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
    save(raw / 'uavid_val' / 'seq16' / 'Images' / '000100.png', image)
    save(raw / 'uavid_val' / 'seq16' / 'Labels' / '000100.png', rgb)
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


def test_inria_patches_of_tiles_one_to_five(tmp_path):
    raw, out = tmp_path / 'raw', tmp_path / 'out'
    gts = {}
    for n in range(1, 7):
        gts[n] = RNG.choice(np.array([0, 255], np.uint8), (8, 8))
        save(raw / 'train' / 'images' / f'tyrol-w{n}.tif',
             RNG.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        save(raw / 'train' / 'gt' / f'tyrol-w{n}.tif', gts[n])
    convert_inria(raw, out, OutputWriter(), patch=4)
    names = sorted(p.name for p in (out / 'ann_dir' / 'split_test').iterdir())
    assert len(names) == 5 * 4 and not any(name.startswith('tyrol-w6') for name in names)
    np.testing.assert_array_equal(load(out / 'ann_dir' / 'split_test' / 'tyrol-w3_4_0.png'),
                                  gts[3][0:4, 4:8] // 255)


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
