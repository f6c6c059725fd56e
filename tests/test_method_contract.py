"""The method contract: a method defined outside the package (``toy_method.py``) and
registered through the public table runs through ``segearth-ov predict --method``, the
Python API and a results-workbook row, with nothing inside ``segearth_ov/`` naming it."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from segearth_ov.apis import OpenVocabSegmenter
from segearth_ov.apis.cli import main
from segearth_ov.evaluation.cli import eval_main
from segearth_ov.models import get_method, method_names, register_method, unregister_method
from test_eval_tools import make_set, summary_rows
from toy_method import ToyBrightness, expected_labels


@pytest.fixture(autouse=True, scope='module')
def toy_in_the_table():
    """The toy in the method table while this module runs, and out of it afterwards."""
    register_method(ToyBrightness)
    yield
    unregister_method('toy-brightness')


def gradient_image(height=40, width=56):
    """Every brightness from dark to bright, with colour that the mean must see through."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width)[None, :, None].repeat(height, 0).repeat(3, 2)
    return np.clip(ramp + rng.integers(-40, 40, (height, width, 3)), 0, 255).astype(np.uint8)


def test_the_toy_is_in_the_table():
    assert 'toy-brightness' in method_names() and get_method('toy-brightness') is ToyBrightness
    with pytest.raises(ValueError, match='choose one of segearth-ov, segearth-ov3'):
        get_method('no-such-method')


def test_predict_runs_the_toy_with_its_own_option(tmp_path):
    image = gradient_image()
    Image.fromarray(image).save(tmp_path / 'scene.png')
    out = tmp_path / 'out'
    assert main(['predict', str(tmp_path / 'scene.png'), '--classes', 'dark;mid;bright',
                 '--method', 'toy-brightness', '--brightness-offset', '30', '--out', str(out),
                 '--quiet']) == 0
    labels = np.array(Image.open(out / 'scene.png.labels.png'))
    np.testing.assert_array_equal(labels, expected_labels(image, 3, offset=30))
    summary = json.loads((out / 'scene.png.json').read_text())
    assert summary['method'] == 'Toy brightness'
    assert summary['settings']['backbone'] == 'brightness'
    assert summary['settings']['model'] == {'offset': 30.0}


def test_an_option_of_another_method_is_refused(tmp_path, capsys):
    Image.fromarray(gradient_image()).save(tmp_path / 'scene.png')
    assert main(['predict', str(tmp_path / 'scene.png'), '--classes', 'dark;bright',
                 '--method', 'toy-brightness', '--sam3-checkpoint', 'none',
                 '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert '--sam3-checkpoint' in err and 'segearth-ov3' in err and 'Traceback' not in err
    with pytest.raises(SystemExit) as usage:  # the option's own type, as argparse reports
        main(['predict', str(tmp_path / 'scene.png'), '--classes', 'dark;bright',
              '--brightness-offset', 'ten', '--method', 'toy-brightness',
              '--out', str(tmp_path / 'out')])
    assert usage.value.code == 2
    assert "--brightness-offset: invalid float value: 'ten'" in capsys.readouterr().err


def test_python_api_runs_the_toy():
    image = gradient_image(70, 90)
    segmenter = OpenVocabSegmenter('dark;grey;light;bright', method='toy-brightness',
                                   tile=32, overlap=8, device='cpu')
    np.testing.assert_array_equal(segmenter(image), expected_labels(image, 4))
    with pytest.raises(ValueError, match=r'--clip \(clip=\) is an option of --method '
                                         r'segearth-ov, not of toy-brightness'):
        OpenVocabSegmenter('dark;bright', method='toy-brightness', clip='ViT-B-16')


def test_a_workbook_row_describes_the_toy(tmp_path):
    classes = 4
    make_set(tmp_path / 'data', classes)
    config = tmp_path / 'cfg_toy.py'
    config.write_text(f'''
_base_ = [{str(REPO / "configs" / "cfg_uavid.py")!r}]
custom_imports = dict(imports=['segearth_ov', 'toy_method'], allow_failed_imports=False)
model = dict(_delete_=True, type='ToyBrightness', classes='a;b;c;d', offset=5.0)
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')]
test_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    data_root={str(tmp_path / "data")!r}, data_prefix=dict(img_path='img', seg_map_path='ann'),
    img_suffix='.png', seg_map_suffix='.png', pipeline=pipeline))
''')
    results = tmp_path / 'results.xlsx'
    assert eval_main(['--config', str(config), '--work-dir', str(tmp_path / 'work'),
                      '--results', str(results)]) == 0
    (row,), _ = summary_rows(results)
    assert row['method'] == 'Toy brightness' and row['backbone'] == 'brightness'
    assert row['offset'] == 5.0 and row['attention'] == '-' and row['paper mIoU'] is None
    preds, labels = [], []
    for path in sorted((tmp_path / 'data' / 'img').iterdir()):
        preds.append(expected_labels(cv2.imread(str(path)), classes, offset=5.0).ravel())
        labels.append(cv2.imread(str(tmp_path / 'data' / 'ann' / path.name),
                                 cv2.IMREAD_UNCHANGED).ravel())
    pred, label = np.concatenate(preds), np.concatenate(labels)
    keep = label != 255
    pred, label = pred[keep], label[keep]
    ious = [np.sum((pred == c) & (label == c)) / np.sum((pred == c) | (label == c))
            for c in range(classes)]
    assert row['mIoU'] == pytest.approx(100 * np.mean(ious), abs=0.006)
