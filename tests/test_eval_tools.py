"""tools/eval.py, dist_test.sh and tools/eval_all.py with a deterministic stand-in model on
generated miniature datasets; metrics are checked against a numpy hand computation."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from openpyxl import load_workbook

from conftest import REPO, free_port
from segearth_ov.evaluation.cli import eval_all_main, eval_main
from segearth_ov.evaluation.results import sheets

PYTHON = sys.executable
TESTS = Path(__file__).resolve().parent


def make_set(root, classes, count=5, size=(12, 16), seed=0):
    rng = np.random.default_rng(seed)
    for folder in ('img', 'ann'):
        (root / folder).mkdir(parents=True)
    for index in range(count):
        image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        label = rng.integers(0, classes, size, dtype=np.uint8)
        label[0, :3] = 255
        cv2.imwrite(str(root / 'img' / f'{index}.png'), image)
        cv2.imwrite(str(root / 'ann' / f'{index}.png'), label)


def hand_metrics(root, classes):
    """aAcc, mIoU, mAcc (%) and per-class IoU of ``B channel % classes`` vs the labels."""
    inter, union, area = np.zeros(classes), np.zeros(classes), np.zeros(classes)
    for path in sorted((root / 'img').iterdir()):
        pred = cv2.imread(str(path))[..., 0].astype(np.int64) % classes
        label = cv2.imread(str(root / 'ann' / path.name), cv2.IMREAD_UNCHANGED).astype(np.int64)
        keep = label != 255
        pred, label = pred[keep], label[keep]
        for c in range(classes):
            inter[c] += np.sum((pred == c) & (label == c))
            union[c] += np.sum((pred == c) | (label == c))
            area[c] += np.sum(label == c)
    iou = inter / union
    return dict(aAcc=100 * inter.sum() / area.sum(), mIoU=100 * np.nanmean(iou),
                mAcc=100 * np.nanmean(inter / area)), 100 * iou


def write_config(folder, name, base, data_root, classes, delay=0.0):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'{name}.py'
    path.write_text(f'''
_base_ = [{str(REPO / "configs" / base)!r}]
custom_imports = dict(imports=['segearth_ov', 'stand_in'], allow_failed_imports=False)
model = dict(_delete_=True, type='StandInSegmentor', num_classes={classes}, delay={delay},
             data_preprocessor=dict(type='SegDataPreProcessor', bgr_to_rgb=False))
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')]
test_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    data_root={str(data_root)!r}, data_prefix=dict(img_path='img', seg_map_path='ann'),
    img_suffix='.png', seg_map_suffix='.png', pipeline=pipeline))
''')
    return path


def summary_rows(path):
    book = load_workbook(path)
    rows = list(book['summary'].iter_rows(values_only=True))
    per_class = list(book['per_class'].iter_rows(values_only=True))
    summary, per_class_columns = (columns for _, columns in sheets())
    assert list(rows[0]) == summary and list(per_class[0]) == per_class_columns
    return ([dict(zip(rows[0], row)) for row in rows[1:]],
            [dict(zip(per_class[0], row)) for row in per_class[1:]])


def env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(TESTS), os.environ.get('PYTHONPATH', '')]), OMP_NUM_THREADS='1')


@pytest.fixture
def uavid_like(tmp_path):
    make_set(tmp_path / 'data', 7)
    return write_config(tmp_path / 'configs', 'cfg_uavid', 'cfg_uavid.py', tmp_path / 'data', 7)


def test_eval_prints_and_stores_hand_computed_metrics(uavid_like, tmp_path, capsys):
    expected, iou = hand_metrics(tmp_path / 'data', 7)
    results = tmp_path / 'out' / 'results.xlsx'
    assert eval_main(['--config', str(uavid_like), '--work-dir', str(tmp_path / 'work'),
                      '--results', str(results), '--show-dir', str(tmp_path / 'show')]) == 0
    out = capsys.readouterr().out
    assert f'mIoU {round(expected["mIoU"], 2)}' in out and 'per class results' in out
    rows, per_class = summary_rows(results)
    assert len(rows) == 1
    row = rows[0]
    for key in ('aAcc', 'mIoU', 'mAcc'):
        assert row[key] == pytest.approx(expected[key], abs=0.006), key
    assert row['config'] == 'cfg_uavid' and row['task'] == 'semseg'
    assert row['dataset'] == 'UAVidDataset' and row['status'] == 'ok' and row['images'] == 5
    assert row['paper mIoU'] == 42.5
    assert row['mIoU - paper'] == pytest.approx(row['mIoU'] - 42.5, abs=0.006)
    classes = ['background', 'building', 'road', 'car', 'tree', 'vegetation', 'human']
    assert [r['class'] for r in per_class] == classes
    np.testing.assert_allclose([r['IoU'] for r in per_class], iou, atol=0.006)
    assert 'cfg_uavid' in (results.with_suffix('.md')).read_text()
    assert sorted(p.name for p in (tmp_path / 'show').iterdir())[:2] == ['0.png',
                                                                         '0_overlay.png']
    # a second run with the same settings replaces its row
    assert eval_main(['--config', str(uavid_like), '--work-dir', str(tmp_path / 'work'),
                      '--results', str(results)]) == 0
    assert len(summary_rows(results)[0]) == 1


def test_eval_missing_config_or_data(tmp_path, capsys):
    assert eval_main(['--config', str(tmp_path / 'nope.py')]) == 2
    assert 'nope.py not found' in capsys.readouterr().err
    config = write_config(tmp_path / 'configs', 'cfg_uavid', 'cfg_uavid.py', tmp_path / 'absent',
                          7)
    assert eval_main(['--config', str(config), '--work-dir', str(tmp_path / 'work'),
                      '--results', str(tmp_path / 'r.xlsx')]) == 2
    err = capsys.readouterr().err
    assert 'absent' in err and 'dataset_prepare.md' in err
    assert not (tmp_path / 'r.xlsx').exists()


def test_dist_test_two_cpu_processes_match_one(uavid_like, tmp_path):
    single, double = tmp_path / 'single.xlsx', tmp_path / 'double.xlsx'
    assert eval_main(['--config', str(uavid_like), '--work-dir', str(tmp_path / 'w1'),
                      '--results', str(single)]) == 0
    run = subprocess.run(['bash', str(REPO / 'dist_test.sh'), str(uavid_like), '2',
                          '--work-dir', str(tmp_path / 'w2'), '--results', str(double)],
                         env=dict(env(), PORT=str(free_port()), PYTHON=PYTHON),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert '2 process(es), cpu' in run.stdout
    one, two = summary_rows(single)[0][0], summary_rows(double)[0][0]
    for key in ('aAcc', 'mIoU', 'mAcc', 'images'):
        assert one[key] == two[key], key


def test_eval_all_resumes_after_a_kill(tmp_path, capsys):
    configs = tmp_path / 'configs'
    make_set(tmp_path / 'roads1', 2, seed=1)
    make_set(tmp_path / 'roads2', 2, seed=2)
    make_set(tmp_path / 'uavid', 7, seed=3)
    write_config(configs, 'cfg_chn6_cug', 'cfg_chn6_cug.py', tmp_path / 'roads1', 2)
    write_config(configs, 'cfg_massachusetts_road', 'cfg_massachusetts_road.py',
                 tmp_path / 'roads2', 2, delay=60)
    write_config(configs, 'cfg_uavid', 'cfg_uavid.py', tmp_path / 'uavid', 7)
    write_config(configs, 'cfg_vdd', 'cfg_vdd.py', tmp_path / 'absent', 7)
    results = tmp_path / 'results.xlsx'
    command = [PYTHON, str(REPO / 'tools' / 'eval_all.py'), '--config-dir', str(configs),
               '--results', str(results), '--work-dir', str(tmp_path / 'work')]
    first = subprocess.Popen(command, env=env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while not results.exists() and time.time() < deadline and first.poll() is None:
        time.sleep(0.5)
    time.sleep(1)  # now inside the slow second config
    first.send_signal(signal.SIGKILL)
    first.communicate()
    rows, _ = summary_rows(results)  # opens: never half-written
    assert [r['config'] for r in rows] == ['cfg_chn6_cug']
    first_row = rows[0]

    capsys.readouterr()
    assert eval_all_main(command[2:] + ['--cfg-options', 'model.delay=0']) == 0  # the rerun
    printed = capsys.readouterr().out
    assert 'cfg_chn6_cug: done on' in printed and 'skipped' in printed
    rows, _ = summary_rows(results)
    by_name = {r['config']: r for r in rows}
    assert sorted(by_name) == ['cfg_chn6_cug', 'cfg_massachusetts_road', 'cfg_uavid',
                               'cfg_vdd']
    assert by_name['cfg_chn6_cug'] == first_row  # not recomputed
    assert by_name['cfg_chn6_cug']['task'] == by_name['cfg_massachusetts_road']['task'] == 'road'
    assert by_name['cfg_vdd']['status'] == 'missing data' and by_name['cfg_vdd']['mIoU'] is None
    expected, _ = hand_metrics(tmp_path / 'roads2', 2)
    assert by_name['cfg_massachusetts_road']['mIoU'] == pytest.approx(expected['mIoU'],
                                                                      abs=0.006)
    assert 'missing data' in results.with_suffix('.md').read_text()


def test_eval_all_selection(tmp_path, capsys):
    configs = tmp_path / 'configs'
    make_set(tmp_path / 'data', 2)
    write_config(configs, 'cfg_chn6_cug', 'cfg_chn6_cug.py', tmp_path / 'data', 2)
    write_config(configs, 'cfg_whu_aerial', 'cfg_whu_aerial.py', tmp_path / 'data', 2)
    results = tmp_path / 'r.xlsx'
    args = ['--config-dir', str(configs), '--results', str(results), '--work-dir',
            str(tmp_path / 'work')]
    assert eval_all_main(args + ['--group', 'building']) == 0
    assert [r['config'] for r in summary_rows(results)[0]] == ['cfg_whu_aerial']
    assert eval_all_main(args + ['--only', 'chn6_cug']) == 0
    assert [r['config'] for r in summary_rows(results)[0]] == ['cfg_whu_aerial', 'cfg_chn6_cug']
    assert eval_all_main(args + ['--only', 'chn6_cug', '--force']) == 0
    assert 'skipped' not in capsys.readouterr().out
    assert eval_all_main(args + ['--only', 'nope']) == 2
    assert "unknown configs ['cfg_nope']" in capsys.readouterr().err


# --- the results workbook under concurrency, user edits, changed settings and corruption -----

def eval_args(config, tmp_path, results, *extra):
    return ['--config', str(config), '--work-dir', str(tmp_path / 'work'), '--results',
            str(results), *extra]


def test_concurrent_evals_keep_every_row(tmp_path):
    make_set(tmp_path / 'd1', 2, seed=1)
    make_set(tmp_path / 'd2', 7, seed=2)
    configs = [write_config(tmp_path / 'configs', 'cfg_chn6_cug', 'cfg_chn6_cug.py',
                            tmp_path / 'd1', 2, delay=2),
               write_config(tmp_path / 'configs', 'cfg_uavid', 'cfg_uavid.py',
                            tmp_path / 'd2', 7, delay=2)]
    results = tmp_path / 'shared.xlsx'
    # one in another process, one in this one, at the same time
    other = subprocess.Popen([PYTHON, str(REPO / 'tools' / 'eval.py'),
                              *eval_args(configs[0], tmp_path / 'first', results)], env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert eval_main(eval_args(configs[1], tmp_path / 'second', results)) == 0
    output = other.communicate(timeout=300)[0]
    assert other.returncode == 0, output
    assert sorted(r['config'] for r in summary_rows(results)[0]) == ['cfg_chn6_cug',
                                                                     'cfg_uavid']


def test_user_columns_and_sheets_survive_and_settings_key_rows(uavid_like, tmp_path, capsys):
    results = tmp_path / 'r.xlsx'
    assert eval_main(eval_args(uavid_like, tmp_path, results)) == 0
    book = load_workbook(results)
    book['summary'].cell(row=1, column=len(dict(sheets())['summary']) + 1, value='my note')
    book['summary'].cell(row=2, column=len(dict(sheets())['summary']) + 1, value='checked by hand')
    book.create_sheet('my plots')['A1'] = 'keep me'
    book.save(results)
    # another prob_thd is another row; the first row keeps the user's note
    assert eval_main(eval_args(uavid_like, tmp_path, results,
                               '--cfg-options', 'model.prob_thd=0.5')) == 0
    book = load_workbook(results)
    assert book['my plots']['A1'].value == 'keep me'
    header = [c.value for c in book['summary'][1]]
    assert header == dict(sheets())['summary'] + ['my note']
    rows = [dict(zip(header, [c.value for c in row])) for row in book['summary'].iter_rows(
        min_row=2)]
    assert sorted(r['prob_thd'] for r in rows) == [0.0, 0.5]
    noted = [r for r in rows if r['my note'] == 'checked by hand']
    assert len(noted) == 1 and noted[0]['prob_thd'] == 0.0
    # the same settings again replace their row and keep its note
    assert eval_main(eval_args(uavid_like, tmp_path, results)) == 0
    book = load_workbook(results)
    values = [[c.value for c in row] for row in book['summary'].iter_rows(min_row=2)]
    assert len(values) == 2 and sum('checked by hand' in row for row in values) == 1


def test_corrupt_workbook_is_set_aside_before_evaluating(uavid_like, tmp_path, capsys):
    results = tmp_path / 'r.xlsx'
    results.write_bytes(b'PK\x03\x04 this is not a workbook')
    assert eval_main(eval_args(uavid_like, tmp_path, results)) == 0
    err = capsys.readouterr().err
    aside = list(tmp_path.glob('r.corrupt-*.xlsx'))
    assert len(aside) == 1 and aside[0].read_bytes() == b'PK\x03\x04 this is not a workbook'
    assert f'kept as {aside[0]}' in err and 'Traceback' not in err
    assert [r['config'] for r in summary_rows(results)[0]] == ['cfg_uavid']


def test_foreign_workbook_is_refused_untouched(uavid_like, tmp_path, capsys):
    from openpyxl import Workbook
    results = tmp_path / 'budget.xlsx'
    book = Workbook()
    book.active.title = 'summary'
    book.active.append(['item', 'cost'])
    book.save(results)
    before = results.read_bytes()
    assert eval_main(eval_args(uavid_like, tmp_path, results)) == 2
    assert 'not a segearth-ov results workbook' in capsys.readouterr().err
    assert results.read_bytes() == before


def test_broken_config_is_a_failed_row_and_the_suite_goes_on(tmp_path, capsys):
    configs = tmp_path / 'configs'
    make_set(tmp_path / 'data', 2)
    write_config(configs, 'cfg_chn6_cug', 'cfg_chn6_cug.py', tmp_path / 'data', 2)
    (configs / 'cfg_broken.py').write_text('model = dict(type=\n')
    results = tmp_path / 'r.xlsx'
    assert eval_all_main(['--config-dir', str(configs), '--results', str(results),
                          '--work-dir', str(tmp_path / 'work')]) == 1
    rows = {r['config']: r for r in summary_rows(results)[0]}
    assert rows['cfg_chn6_cug']['status'] == 'ok'
    assert rows['cfg_broken']['status'].startswith('failed:')
    assert 'Traceback' not in capsys.readouterr().err


def test_cfg_options_errors_are_one_paragraph(uavid_like, tmp_path, capsys):
    assert eval_main(eval_args(uavid_like, tmp_path, tmp_path / 'r.xlsx', '--cfg-options',
                               'model.prob_thdd=0.5')) == 2
    err = capsys.readouterr().err
    assert "'model.prob_thdd' names no setting" in err and 'did you mean model.prob_thd' in err
    assert 'Traceback' not in err and not (tmp_path / 'r.xlsx').exists()
    with pytest.raises(SystemExit) as info:
        eval_main(eval_args(uavid_like, tmp_path, tmp_path / 'r.xlsx', '--cfg-options',
                            'model.prob_thd'))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "KEY=VALUE items, got 'model.prob_thd'" in err and 'Traceback' not in err


def test_eval_without_clip_weights_says_what_to_do(tmp_path, capsys, monkeypatch):
    """The real config without cached CLIP weights: one paragraph naming the file."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'empty_cache'))
    make_set(tmp_path / 'data', 7)
    assert eval_main(['--config', str(REPO / 'configs' / 'cfg_uavid.py'), '--work-dir',
                      str(tmp_path / 'work'), '--results', str(tmp_path / 'r.xlsx'),
                      '--cfg-options', f'test_dataloader.dataset.data_root={tmp_path / "data"}',
                      'test_dataloader.dataset.data_prefix.img_path=img',
                      'test_dataloader.dataset.data_prefix.seg_map_path=ann',
                      'test_dataloader.num_workers=0',
                      'test_dataloader.persistent_workers=False']) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'Traceback' not in err
    assert 'CLIP weights ViT-B-16/openai are not available here' in err
    assert "pretrained='/path/to/ViT-B-16.pt'" in err


def test_weights_are_keyed_by_content(tmp_path):
    from segearth_ov.weights import describe_weights
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    (tmp_path / 'a' / 'w.pt').write_bytes(b'one')
    (tmp_path / 'b' / 'w.pt').write_bytes(b'two')
    first, second = describe_weights(str(tmp_path / 'a' / 'w.pt')), \
        describe_weights(str(tmp_path / 'b' / 'w.pt'))
    assert first.startswith('w.pt sha256:') and first != second
    assert describe_weights('openai') == 'openai' and describe_weights(None) == 'none (random)'
