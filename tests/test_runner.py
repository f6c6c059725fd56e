"""mmengine Runner test loops: a generated dataset (always) and the real tiles (when present)."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner
from PIL import Image

from conftest import REPO, shared_path

CLASSES = ('road', 'building', 'tree', 'water')


def make_dataset(root, count=3, size=(40, 56)):
    rng = np.random.default_rng(0)
    (root / 'img').mkdir(parents=True)
    (root / 'ann').mkdir()
    for index in range(count):
        image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        label = rng.integers(0, len(CLASSES), size, dtype=np.uint8)
        label[:4, :4] = 255  # ignored pixels
        Image.fromarray(image).save(root / 'img' / f'{index}.png')
        Image.fromarray(label).save(root / 'ann' / f'{index}.png')


def config(base, work_dir, **model):
    cfg = Config.fromfile(str(REPO / 'configs' / base))
    cfg.work_dir = str(work_dir)
    cfg.model.update(dict(dict(clip=dict(arch='ViT-B-16', pretrained=None), upsampler=None,
                               prompt_templates=['a satellite photo of {}.']), **model))
    cfg.model.name_path = None if 'classes' in model else str(REPO / cfg.model.name_path)
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.default_hooks.logger.interval = 1
    return cfg


def hand_miou(runner, num_classes):
    """mIoU (%) from the model's own predictions and the loaded labels, in numpy."""
    pairs = []
    for batch in runner.test_dataloader:
        with torch.no_grad():
            for sample in runner.model.test_step(batch):
                pairs.append((sample.pred_sem_seg.data[0].numpy().ravel(),
                              sample.gt_sem_seg.data[0].numpy().ravel()))
    return miou_of(pairs, num_classes)


def miou_of(pairs, num_classes):
    """mIoU (%) of ``(prediction, label)`` pairs over the whole set, in numpy: 255 is
    ignored, and a class counts when it is predicted or labelled (union > 0)."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for pred, gt in pairs:
        keep = gt != 255
        np.add.at(confusion, (gt[keep], pred[keep]), 1)
    inter = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - inter
    return 100 * np.mean(inter[union > 0] / union[union > 0])


def test_runner_on_generated_dataset(tmp_path):
    make_dataset(tmp_path / 'data')
    cfg = config('cfg_potsdam.py', tmp_path / 'work', classes=list(CLASSES), prob_thd=0.0,
                 bg_idx=0, slide_crop=224, slide_stride=112)
    cfg.model.clip.arch = 'ViT-S-16'
    cfg.test_dataloader.dataset = dict(
        type='BaseSegDataset', data_root=str(tmp_path / 'data'),
        data_prefix=dict(img_path='img', seg_map_path='ann'), img_suffix='.png',
        seg_map_suffix='.png', metainfo=dict(classes=CLASSES),
        pipeline=cfg.test_pipeline)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert set(metrics) >= {'aAcc', 'mIoU', 'mAcc'}
    assert metrics['mIoU'] == pytest.approx(hand_miou(runner, len(CLASSES)), abs=0.01)


class KeepPredictions(Hook):
    """Keeps ``(prediction, label)`` of every test sample, to score them independently."""

    def __init__(self):
        self.pairs = []

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        for sample in outputs:
            self.pairs.append((sample.pred_sem_seg.data[0].numpy().ravel(),
                               sample.gt_sem_seg.data[0].numpy().ravel()))


@pytest.mark.slow
@pytest.mark.parametrize('base,folder,count', [('cfg_potsdam.py', 'potsdam', 1),
                                               ('cfg_loveda.py', 'loveda', 2)])
def test_runner_on_real_tiles(tmp_path, base, folder, count):
    """The unchanged configs on real labelled tiles (random CLIP weights, real FeatUp
    upsampler): the metric the runner reports, over more than one image where the folder
    has them (the first two of LoveDA's three), equals an independent computation."""
    root = shared_path('rs_samples', folder)
    ckpt = shared_path('weights', 'clip_jbu_stack_cocostuff.ckpt')
    cfg = config(base, tmp_path, upsampler=dict(type='jbu_stack', checkpoint=str(ckpt)))
    cfg.test_dataloader.dataset.update(data_root=str(root), indices=count,
                                       data_prefix=dict(img_path='img_dir', seg_map_path='ann_dir'))
    runner = Runner.from_cfg(cfg)
    kept = KeepPredictions()
    runner.register_hook(kept)
    assert len(runner.test_dataloader.dataset) == count
    metrics = runner.test()
    classes = len(runner.test_dataloader.dataset.metainfo['classes'])
    assert len(kept.pairs) == count
    assert metrics['mIoU'] == pytest.approx(miou_of(kept.pairs, classes), abs=0.01)
