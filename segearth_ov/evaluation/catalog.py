"""What a benchmark config is: its task, its group, the paper's figure, the model settings."""
from __future__ import annotations

import hashlib
import os.path as osp
from typing import Dict

from mmengine.config import Config

from ..weights import describe_weights

BINARY_TASKS = {'BuildingDataset': 'building', 'RoadDataset': 'road', 'WaterDataset': 'water'}
GROUPS = ('optical', 'sar', 'semseg', 'building', 'road', 'water')

# SegEarth-OV with CLIP ViT-B/16, mIoU (%), as the paper reports them (Potsdam is cited as
# 47.1 or 48.5; the first is used). Rows of other methods get no paper figure.
PAPER_METHOD = 'SegEarth-OV'
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


def _templates(templates) -> str:
    if templates is None:
        return 'openai-80'
    text = '\n'.join(str(t) for t in templates)
    return f'{len(templates)} sha256:{hashlib.sha256(text.encode()).hexdigest()[:12]}'


def _model_class(model_type):
    from mmseg.registry import MODELS
    return MODELS.get(model_type) if isinstance(model_type, str) else model_type


def _class_defaults(model_type) -> Dict[str, object]:
    """The defaults of the registered model class's arguments (what a config that omits a
    setting gets), so an explicit default and an omitted one key the same row."""
    import inspect
    model_cls = _model_class(model_type)
    if model_cls is None:
        return {}
    return {name: p.default for name, p in inspect.signature(model_cls).parameters.items()
            if p.default is not inspect.Parameter.empty}


def model_settings(cfg: Config) -> Dict[str, object]:
    """Every model and data setting that changes a benchmark number: the columns a results
    row is keyed by (with the config name). ``method`` tells SegEarth-OV (CLIP) and
    SegEarth-OV3 (SAM 3) rows apart; settings a method does not have read ``-``."""
    from ..datasets import resolve_data_root
    model_type = cfg.model.get('type')
    model = dict(_class_defaults(model_type), **cfg.model)
    method = getattr(_model_class(model_type), 'METHOD', str(model_type))
    clip = model.get('clip') or {}
    upsampler = model.get('upsampler')
    if upsampler:
        upsampler = f'{upsampler.get("type")} ({describe_weights(upsampler.get("checkpoint"))})'
    if clip:
        backbone = clip.get('arch', model_type)
        if clip.get('quick_gelu') is not None:
            backbone = f'{backbone} quick_gelu={clip["quick_gelu"]}'
        weights = describe_weights(clip.get('pretrained'))
    elif 'checkpoint' in model:
        backbone, weights = 'SAM 3', describe_weights(model['checkpoint'])
    else:
        backbone, weights = model_type, '-'
    crop = model.get('slide_crop', 0)
    data_root = cfg.test_dataloader.dataset.get('data_root') or ''
    return {
        'method': method,
        'CLIP': backbone,
        'weights': weights,
        'attention': model.get('attention', '-'),
        'attention layers': model.get('attention_layers', '-'),
        'upsampler': upsampler or ('none' if clip else '-'),
        'cls_token_lambda': model.get('cls_token_lambda', '-'),
        'confidence_threshold': model.get('confidence_threshold', '-'),
        'prob_thd': model.get('prob_thd', '-'),
        'bg_idx': model.get('bg_idx', '-'),
        'logit_scale': model.get('logit_scale', '-'),
        'slide': f'{crop}/{model.get("slide_stride")}' if crop else 'whole image',
        'templates': _templates(model.get('prompt_templates')) if clip else '-',
        'precision': model.get('precision', 'fp32'),
        'data_root': osp.abspath(resolve_data_root(data_root)),
    }
