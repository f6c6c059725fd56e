"""predict across processes (torchrun, gloo) and resuming an interrupted run: the same
files as one process, and finished inputs are never computed twice."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO, free_port
from scenes_util import smooth_scene, write_geotiff
from segearth_ov.apis.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """Random ViT-S-16 weights in a file, so every process builds the same model."""
    from segearth_ov.weights import build_clip
    torch.manual_seed(0)
    model, _ = build_clip('ViT-S-16', None)
    path = tmp_path_factory.mktemp('weights') / 'vit_s16_random.pt'
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp('scenes')
    for index in range(4):
        write_geotiff(folder / f'scene{index}.tif', smooth_scene(192 + 32 * index, 256))
    return folder


def args(weights, scenes, out):
    return [str(scenes), '--out', str(out), '--clip', 'ViT-S-16', '--pretrained', str(weights),
            '--upsampler', 'none', '--classes', 'road;water;tree', '--tile', '128',
            '--overlap', '32', '--device', 'cpu', '--quiet', '--vector', 'geojson',
            '--confidence', '--prompt-templates', 'a satellite photo of {}.']


# torchrun gives each process one thread; CPU reductions (and so the last bits of a
# probability) depend on the thread count, so the single-process runs get one too
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')


def run(command, env=ENV):
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def predict_here(argv):
    """``segearth-ov predict`` in this process, on one thread like each torchrun process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(['predict', *argv])
    finally:
        torch.set_num_threads(threads)


def results(out: Path, inputs: Path):
    """Every per-input output's bytes (the run's manifest and STAC index excluded), the output
    and input folders' names replaced in the summaries' paths."""
    return {str(p.relative_to(out)): p.read_bytes().replace(str(out).encode(), b'OUT')
            .replace(str(inputs).encode(), b'IN')
            for p in sorted(out.rglob('*'))
            if p.is_file() and p.relative_to(out).parts[0] != '.segearth_ov'
            and p.name not in ('manifest.json', 'index.json', 'collection.json')}


@pytest.fixture(scope='module')
def single(weights, scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp('single')
    assert predict_here(args(weights, scenes, out)) == 0
    return out


def test_two_processes_write_the_same_files_and_one_line_per_failure(weights, scenes, single,
                                                                    tmp_path):
    """Inputs split across two processes give one process's files; an unreadable input among
    them is one line on stderr and exit status 1, the others still done."""
    inputs = tmp_path / 'in'
    inputs.mkdir()
    for scene in scenes.iterdir():
        (inputs / scene.name).write_bytes(scene.read_bytes())
    (inputs / 'broken.tif').write_bytes(b'not a tiff')
    out = tmp_path / 'two'
    done = run(['bash', str(REPO / 'dist_predict.sh'), '2', *args(weights, inputs, out)],
               env=dict(ENV, PORT=str(free_port()), PYTHON=sys.executable))
    assert done.returncode == 1, done.stderr
    assert 'Traceback' not in done.stderr and 'ChildFailedError' not in done.stderr
    assert 'broken.tif' in done.stderr and '1 of 5 inputs failed' in done.stderr
    expected = results(single, scenes)
    # labels and its style, overlay, confidence, polygons and their style, summary
    assert len(expected) == 4 * 7
    assert results(out, inputs) == expected
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['processes'] == 2
    assert (manifest['done'], manifest['failed']) == (4, 1)
    assert {e['rank'] for e in manifest['inputs'] if e['status'] == 'done'} == {0, 1}
    index = json.loads((out / 'index.json').read_text())
    assert sorted(item['id'] for item in index['features']) == [f'scene{i}.tif'
                                                                for i in range(4)]


def test_a_killed_run_resumes_with_the_rest(weights, scenes, single, tmp_path):
    out = tmp_path / 'killed'
    process = subprocess.Popen([sys.executable, '-m', 'segearth_ov.apis.cli', 'predict',
                                *args(weights, scenes, out)], env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list(out.glob('*.json'))) < 2 and process.poll() is None and \
            time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(out.glob('scene*.json')))
    assert 2 <= finished < 4, 'the run ended before it could be killed'
    part = (out / '.segearth_ov' / 'manifest.rank0.jsonl').read_text().splitlines()
    assert len(part) == finished  # the manifest kept up with the killed run
    assert predict_here(args(weights, scenes, out)) == 0  # the rerun
    manifest = json.loads((out / 'manifest.json').read_text())
    assert (manifest['skipped'], manifest['done']) == (finished, 4 - finished)
    assert results(out, scenes) == results(single, scenes)
    assert not list(out.rglob('*.tmp'))


def test_scenes_split_across_two_processes(weights, scenes, single, tmp_path):
    """--split-scenes: each process computes a band of tile rows of every scene; the
    assembled outputs equal one process's, byte for byte."""
    out = tmp_path / 'two'
    two = run(['bash', str(REPO / 'dist_predict.sh'), '2', *args(weights, scenes, out),
               '--split-scenes'], env=dict(ENV, PORT=str(free_port()), PYTHON=sys.executable))
    assert two.returncode == 0, two.stderr
    assert results(out, scenes) == results(single, scenes)
    assert not list((out / '.segearth_ov' / 'parts').iterdir())
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['done'] == 4 and len(manifest['inputs']) == 4
