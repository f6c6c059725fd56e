"""mmengine Runner test loops: a generated dataset (always) and the real tiles (when present)."""
import numpy as np
import pytest
import torch
from mmengine.config import Config
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
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for batch in runner.test_dataloader:
        with torch.no_grad():
            for sample in runner.model.test_step(batch):
                pred = sample.pred_sem_seg.data[0].numpy().ravel()
                gt = sample.gt_sem_seg.data[0].numpy().ravel()
                keep = gt != 255
                np.add.at(confusion, (gt[keep], pred[keep]), 1)
    inter = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = confusion.sum(1) > 0
    return 100 * np.mean(inter[present] / union[present])


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


@pytest.mark.parametrize('base,folder,count', [('cfg_potsdam.py', 'potsdam', 1),
                                               ('cfg_loveda.py', 'loveda', 3)])
def test_runner_on_real_tiles(tmp_path, capsys, base, folder, count):
    root = shared_path('rs_samples', folder)
    ckpt = shared_path('weights', 'clip_jbu_stack_cocostuff.ckpt')
    cfg = config(base, tmp_path, upsampler=dict(type='jbu_stack', checkpoint=str(ckpt)))
    cfg.test_dataloader.dataset.update(data_root=str(root),
                                       data_prefix=dict(img_path='img_dir', seg_map_path='ann_dir'))
    runner = Runner.from_cfg(cfg)
    assert len(runner.test_dataloader.dataset) == count
    metrics = runner.test()
    print(f'{folder}: mIoU {metrics["mIoU"]:.2f} (random CLIP weights: a pipeline check, '
          f'not a score)')
    assert 0 <= metrics['mIoU'] <= 100
    assert 'mIoU' in capsys.readouterr().out
