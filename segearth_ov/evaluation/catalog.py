"""What a benchmark config is: its task, its group, the paper's figure, the model settings."""
from __future__ import annotations

import os.path as osp
from typing import Dict, List, Optional

from mmengine.config import Config

from ..models.methods import get_method, method_names, method_of_model

BINARY_TASKS = {'BuildingDataset': 'building', 'RoadDataset': 'road', 'WaterDataset': 'water'}
GROUPS = ('optical', 'sar', 'semseg', 'building', 'road', 'water')


def config_name(path: str) -> str:
    """``configs/cfg_loveda.py`` -> ``cfg_loveda``."""
    return osp.splitext(osp.basename(path))[0]


def benchmark_task(name: str, cfg: Config) -> str:
    """``semseg``, ``building``, ``road``, ``water`` or ``sar`` (SAR semantic segmentation)."""
    if name.endswith('_sar'):
        return 'sar'
    return BINARY_TASKS.get(cfg.test_dataloader.dataset.get('type'), 'semseg')


def in_group(name: str, cfg: Config, group: str) -> bool:
    """Whether a benchmark belongs to a ``--group`` of :data:`GROUPS`."""
    task = benchmark_task(name, cfg)
    if group == 'optical':
        return task != 'sar'
    return task == group


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


def settings_columns() -> List[str]:
    """The results columns that key a row besides the config: the method, its backbone and
    weights, every registered method's own columns (in the table's order), then the
    settings every method has."""
    own = [column for name in method_names()
           for column in get_method(name).WORKBOOK_COLUMNS]
    return ['method', 'backbone', 'weights', *dict.fromkeys(own), 'prob_thd', 'bg_idx',
            'slide', 'precision', 'data_root']


def published_miou(method: str, name: str) -> Optional[float]:
    """The paper's mIoU of the benchmark config ``name`` for the method named ``method``
    (a results row's ``method``), or None."""
    for cls in map(get_method, method_names()):
        if cls.METHOD == method:
            return cls.PUBLISHED_MIOU.get(name)
    return None


def model_settings(cfg: Config) -> Dict[str, object]:
    """Every model and data setting that changes a benchmark number: the columns a results
    row is keyed by (with the config name), :func:`settings_columns`. The method describes
    its own (``describe``); settings a method does not have read ``-``."""
    from ..datasets import resolve_data_root
    model_type = cfg.model.get('type')
    model = dict(_class_defaults(model_type), **cfg.model)
    method = method_of_model(model_type)
    described = method.describe(model) if method is not None else \
        {'backbone': str(model_type), 'weights': '-'}
    crop = model.get('slide_crop', 0)
    data_root = cfg.test_dataloader.dataset.get('data_root') or ''
    values = dict(described, method=getattr(_model_class(model_type), 'METHOD', str(model_type)),
                  prob_thd=model.get('prob_thd'), bg_idx=model.get('bg_idx'),
                  slide=f'{crop}/{model.get("slide_stride")}' if crop else 'whole image',
                  precision=model.get('precision', 'fp32'),
                  data_root=osp.abspath(resolve_data_root(data_root)))
    return {column: '-' if values.get(column) is None else values[column]
            for column in settings_columns()}
