"""What a benchmark config is: its task, its group, the paper's figure, the model settings."""
from __future__ import annotations

import os.path as osp
from typing import Dict, Optional

from mmengine.config import Config

BINARY_TASKS = {'BuildingDataset': 'building', 'RoadDataset': 'road', 'WaterDataset': 'water'}
GROUPS = ('optical', 'sar', 'semseg', 'building', 'road', 'water')

# SegEarth-OV with CLIP ViT-B/16, mIoU (%), as SPEC section 4 gives them (Potsdam is cited as
# 47.1 or 48.5; the first is used)
PAPER_MIOU: Dict[str, float] = {
    'cfg_openearthmap': 40.3, 'cfg_loveda': 36.9, 'cfg_isaid': 21.7, 'cfg_uavid': 42.5,
    'cfg_udd5': 50.6, 'cfg_vdd': 45.3, 'cfg_potsdam': 47.1, 'cfg_vaihingen': 40.0,
    'cfg_whu_sat_ii': 28.4, 'cfg_massachusetts_road': 11.5,
}


def config_name(path: str) -> str:
    return osp.splitext(osp.basename(path))[0]


def benchmark_task(name: str, cfg: Config) -> str:
    """``semseg``, ``building``, ``road``, ``water`` or ``sar`` (SAR semantic segmentation)."""
    if name.endswith('_sar'):
        return 'sar'
    return BINARY_TASKS.get(cfg.test_dataloader.dataset.get('type'), 'semseg')


def in_group(name: str, cfg: Config, group: str) -> bool:
    task = benchmark_task(name, cfg)
    if group == 'optical':
        return task != 'sar'
    return task == group


def _short(path: Optional[str]) -> str:
    if path is None:
        return 'none (random)'
    return osp.basename(str(path))


def model_settings(cfg: Config) -> Dict[str, object]:
    """The model settings a results row is keyed by (with the config name)."""
    model = cfg.model
    clip = model.get('clip') or {}
    upsampler = model.get('upsampler')
    if upsampler:
        upsampler = f'{upsampler.get("type")} ({_short(upsampler.get("checkpoint"))})'
    return {
        'CLIP': clip.get('arch', model.get('type')),
        'weights': _short(clip.get('pretrained')) if clip else '-',
        'attention': model.get('attention', '-'),
        'attention layers': model.get('attention_layers', '-'),
        'upsampler': upsampler or 'none',
        'cls_token_lambda': model.get('cls_token_lambda', '-'),
    }
