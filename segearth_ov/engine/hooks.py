"""Test-loop hooks: a progress bar, and saving colour predictions (``--show-dir``)."""
from __future__ import annotations

import os.path as osp
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmseg.registry import HOOKS
from PIL import Image
from tqdm import tqdm

from ..fileio import atomic_path
from ..visualize import class_palette, colorize, overlay_with_legend


@HOOKS.register_module()
class SavePredictionsHook(Hook):
    """Writes, for every test image ``<stem>``, ``<out_dir>/<stem>.png`` (the prediction in
    colour) and ``<out_dir>/<stem>_overlay.png`` (over the image, with a legend).

    Labels use the dataset's class names and a palette fixed by the class count.
    """
    priority = 'LOW'

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def before_test(self, runner) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.classes = runner.test_dataloader.dataset.metainfo['classes']
        self.palette = class_palette(len(self.classes))

    def after_test_iter(self, runner, batch_idx: int, data_batch=None,
                        outputs: Optional[Sequence] = None) -> None:
        for sample in outputs or ():
            labels = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)
            stem = osp.splitext(osp.basename(sample.img_path))[0]
            with atomic_path(self.out_dir / f'{stem}.png') as tmp:
                Image.fromarray(colorize(labels, self.palette)).save(tmp, format='PNG')
            try:
                with Image.open(sample.img_path) as image:
                    rgb = np.asarray(image.convert('RGB'))
            except OSError:  # e.g. a multi-band GeoTIFF: the colour map is still saved
                continue
            if rgb.shape[:2] == labels.shape:
                with atomic_path(self.out_dir / f'{stem}_overlay.png') as tmp:
                    overlay_with_legend(rgb, labels, self.classes, self.palette).save(
                        tmp, format='PNG')


@HOOKS.register_module()
class TestProgressHook(Hook):
    """A tqdm bar over the test batches (rank 0 only), with the time left."""
    priority = 'VERY_LOW'

    def before_test(self, runner) -> None:
        self.bar = tqdm(total=len(runner.test_dataloader), desc='test', unit='batch',
                        disable=not is_main_process(), dynamic_ncols=True)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.bar.update(1)

    def after_test(self, runner) -> None:
        self.bar.close()
