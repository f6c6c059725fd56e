"""Running one benchmark config with mmengine's Runner, on one process or many."""
from __future__ import annotations

import datetime
import difflib
import inspect
import itertools
import os.path as osp
import subprocess
import time
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
from mmengine.config import Config
from mmengine.dist import get_dist_info
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import MODELS

from ..distributed import process_group
from ..engine.metrics import PER_CLASS_PREFIX
from .catalog import benchmark_task, config_name, model_settings, published_miou
from .results import STATUS_OK

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
_RUNS = itertools.count()


@dataclass
class EvalResult:
    """The metrics of one evaluation, with its image count and duration."""

    metrics: Dict[str, float]
    images: int
    seconds: float
    per_class: Dict[str, float] = field(default_factory=dict)


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none', show_dir: Optional[str] = None) -> Config:
    """The config as ``tools/eval.py`` runs it: options merged, work dir set (default
    ``work_dirs/<config name>``), the inference wrapper for multi-process runs, and the
    prediction-saving hook for ``show_dir``. An option key that names no setting is
    refused (:func:`check_options`)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config {path} not found')
    cfg = Config.fromfile(path)
    if cfg_options:
        check_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    cfg.work_dir = work_dir or cfg.get('work_dir') or osp.join('work_dirs', config_name(path))
    cfg.launcher = launcher
    # mmengine names its logger and visualizer after the experiment: runs of one config
    # within a second (eval_all, --force) must not share them
    cfg.experiment_name = f'{config_name(path)}_{time.strftime("%Y%m%d_%H%M%S")}_{next(_RUNS)}'
    if launcher != 'none':
        cfg.model_wrapper_cfg = dict(type='InferenceWrapper')
        if not torch.cuda.is_available():
            cfg.env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    if show_dir:
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='SavePredictionsHook', out_dir=show_dir)]
    return cfg


def check_options(cfg: Config, options: dict) -> None:
    """Refuse a ``--cfg-options`` key that names nothing: not in the config, and (under
    ``model.``) not an argument of the model class. Suggests the closest keys."""
    model_cls = MODELS.get(cfg.model.get('type')) if 'model' in cfg else None
    arguments = list(inspect.signature(model_cls).parameters) if model_cls else []
    tree = cfg.to_dict()
    for key in options:
        parts, node = key.split('.'), tree
        for depth, part in enumerate(parts):
            model_level = depth == 1 and parts[0] == 'model'
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif model_level and part in arguments:
                break
            else:
                known = (list(node) if isinstance(node, dict) else []) + \
                    (arguments if model_level else [])
                close = difflib.get_close_matches(part, known, n=3)
                hint = '; did you mean ' + ', '.join(
                    '.'.join(parts[:depth] + [c]) for c in close) + '?' if close else ''
                raise ValueError(f'--cfg-options: {key!r} names no setting of the config '
                                 f'({".".join(parts[:depth + 1])} does not exist){hint}')


def init_distributed(launcher: str) -> None:
    """Start the process group for ``--launcher pytorch`` on CPU (gloo) before mmengine does:
    mmengine's own start pins a CUDA device. On GPUs mmengine starts it (nccl)."""
    if launcher == 'pytorch' and not torch.cuda.is_available():
        process_group('gloo')


def check_data(cfg: Config) -> None:
    """Build the test dataset alone (cheap: lists files); raises FileNotFoundError with the
    missing folder or file and the dataset_prepare.md section."""
    from mmseg.registry import DATASETS
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    dataset_cfg = cfg.test_dataloader.dataset.copy()
    dataset_cfg.pop('pipeline', None)
    DATASETS.build(dict(dataset_cfg, pipeline=[]))


def evaluate(cfg: Config) -> EvalResult:
    """Run the test loop; metrics come back on every rank."""
    runner = Runner.from_cfg(cfg)
    start = time.perf_counter()
    metrics = runner.test()
    seconds = time.perf_counter() - start
    per_class = {key[len(PER_CLASS_PREFIX):]: value for key, value in metrics.items()
                 if key.startswith(PER_CLASS_PREFIX)}
    summary = {key: value for key, value in metrics.items()
               if not key.startswith(PER_CLASS_PREFIX)}
    return EvalResult(summary, len(runner.test_dataloader.dataset), seconds, per_class)


def git_commit() -> str:
    """The repository's short commit hash, or ``unknown`` outside a git checkout."""
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                              text=True, check=True, timeout=10,
                              cwd=osp.dirname(osp.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


def results_row(config_path: str, cfg: Config, result: Optional[EvalResult] = None,
                status: str = STATUS_OK) -> dict:
    """One summary row; without a result only the identifying columns and the status."""
    name = config_name(config_path)
    row = dict(config=name, dataset=cfg.test_dataloader.dataset.get('type'),
               task=benchmark_task(name, cfg), status=status,
               date=datetime.datetime.now().strftime('%Y-%m-%d %H:%M'), **{
                   'git commit': git_commit()})
    row.update(model_settings(cfg))
    if result is not None:
        row.update({key: result.metrics.get(key) for key in ('aAcc', 'mIoU', 'mAcc')})
        row.update({'images': result.images,
                    'images/s': round(result.images / max(result.seconds, 1e-9), 3)})
        paper = published_miou(row['method'], name)
        if paper is not None:
            row.update({'paper mIoU': paper,
                        'mIoU - paper': round(float(row['mIoU']) - paper, 2)})
    return row


def failed_row(config_path: str, error: BaseException) -> dict:
    """The row of a config that does not even load."""
    message = ' '.join(str(error).split())[:300]
    return dict(config=config_name(config_path), status=f'failed: {type(error).__name__}: '
                f'{message}', date=datetime.datetime.now().strftime('%Y-%m-%d %H:%M'),
                **{'git commit': git_commit()})


def world_size_note() -> str:
    """How many processes evaluate, on which device, for the log."""
    return f'{get_dist_info()[1]} process(es), ' + ('cuda' if torch.cuda.is_available()
                                                     else 'cpu')

