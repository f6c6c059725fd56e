"""The README's main job: tools/demo.py on the shipped sample."""
import importlib.util

import numpy as np
from PIL import Image

from conftest import REPO


def test_demo_writes_an_overlay_and_says_when_weights_are_random(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here: the random-weights path
    spec = importlib.util.spec_from_file_location('demo', REPO / 'tools' / 'demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = tmp_path / 'overlay.png'
    demo.main(['--image', str(REPO / 'demo' / 'sample.png'), '--classes',
               str(REPO / 'demo' / 'classes.txt'), '--out', str(out), '--device', 'cpu',
               '--template', 'a satellite photo of {}.'])
    captured = capsys.readouterr()
    assert 'RANDOM weights' in captured.err and 'overlay written to' in captured.out
    sample = Image.open(REPO / 'demo' / 'sample.png')
    overlay = np.asarray(Image.open(out))
    assert overlay.shape[0] >= sample.height and overlay.shape[1] > sample.width  # + legend
