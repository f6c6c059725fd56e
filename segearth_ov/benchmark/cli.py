"""``tools/eval.py`` and ``tools/eval_all.py``."""
from __future__ import annotations

import argparse
import glob
import os.path as osp
import sys
import traceback
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.dist import is_main_process

from .catalog import GROUPS, config_name, in_group, model_settings
from .results import STATUS_MISSING, STATUS_OK, ResultsBook
from .run import (LAUNCHERS, check_data, evaluate, init_distributed, load_config,
                  results_row, world_size_note)

DEFAULT_RESULTS = 'results.xlsx'


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        metavar='KEY=VALUE', help='override config entries, as in mmseg')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='multi-process launcher (dist_test.sh uses pytorch); on a '
                             'machine without CUDA pytorch runs with gloo')
    parser.add_argument('--results', default=DEFAULT_RESULTS,
                        help=f'results workbook (default {DEFAULT_RESULTS}; a markdown copy '
                             f'is written beside it)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def _print_row(row: dict) -> None:
    metrics = ', '.join(f'{key} {row[key]}' for key in ('aAcc', 'mIoU', 'mAcc')
                        if row.get(key) is not None)
    paper = f' (paper {row["paper mIoU"]}, {row["mIoU - paper"]:+.2f})' \
        if row.get('paper mIoU') is not None else ''
    print(f'{row["config"]}: {row["status"]}; {metrics}{paper}', flush=True)


def eval_main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Evaluate one benchmark config (mmseg tools/test.py conventions) and '
                    'store its row in the results workbook.')
    parser.add_argument('--config', required=True, help='benchmark config, e.g. '
                                                        'configs/cfg_potsdam.py')
    parser.add_argument('--work-dir', help='logs and outputs (default work_dirs/<config>)')
    parser.add_argument('--show-dir', help='save colour predictions and overlays here')
    _common_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.cfg_options, args.work_dir, args.launcher,
                          args.show_dir)
    except FileNotFoundError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    init_distributed(args.launcher)
    try:
        result = evaluate(cfg)
    except FileNotFoundError as error:  # data or weights: the message says what to do
        print(f'error: {error}', file=sys.stderr)
        return 2
    if is_main_process():
        row = results_row(args.config, cfg, result)
        book = ResultsBook(args.results)
        book.upsert(row, result.per_class)
        book.save()
        _print_row(row)
        print(f'{result.images} images in {result.seconds:.1f} s ({world_size_note()}); '
              f'row stored in {args.results} and {book.markdown_path}')
    return 0


def _select(config_dir: str, only: Optional[List[str]], group: Optional[str]) -> List[str]:
    paths = sorted(glob.glob(osp.join(config_dir, 'cfg_*.py')))
    if not paths:
        raise FileNotFoundError(f'no cfg_*.py configs in {config_dir}')
    if only:
        wanted = {config_name(name if name.startswith('cfg_') else f'cfg_{name}')
                  for name in only}
        unknown = wanted - {config_name(path) for path in paths}
        if unknown:
            raise ValueError(f'unknown configs {sorted(unknown)}; choose from '
                             f'{[config_name(p) for p in paths]}')
        paths = [path for path in paths if config_name(path) in wanted]
    if group:
        paths = [path for path in paths
                 if in_group(config_name(path), Config.fromfile(path), group)]
    return paths


def eval_all_main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description='Evaluate every benchmark config. The workbook is saved after each '
                    'config; a re-run skips configs whose row exists for the same model '
                    'settings (use --force to recompute). Missing data gives a '
                    '"missing data" row and the run goes on.')
    parser.add_argument('--only', nargs='+', metavar='NAME',
                        help='configs to run, e.g. potsdam cfg_loveda')
    parser.add_argument('--group', choices=GROUPS)
    parser.add_argument('--force', action='store_true', help='recompute finished rows')
    parser.add_argument('--config-dir', default='configs')
    parser.add_argument('--work-dir', default='work_dirs',
                        help='each config logs to WORK_DIR/<config>')
    _common_arguments(parser)
    args = parser.parse_args(argv)
    try:
        paths = _select(args.config_dir, args.only, args.group)
    except (FileNotFoundError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    init_distributed(args.launcher)
    main = is_main_process()
    # every rank decides from the workbook as it was at the start, so all agree
    book = ResultsBook(args.results)
    failures = 0
    for index, path in enumerate(paths, 1):
        name = config_name(path)
        cfg = load_config(path, args.cfg_options, osp.join(args.work_dir, name), args.launcher)
        done = book.find(dict(config=name, **model_settings(cfg)))
        if done and done.get('status') == STATUS_OK and not args.force:
            if main:
                print(f'[{index}/{len(paths)}] {name}: done on {done.get("date")}, skipped '
                      f'(--force recomputes)', flush=True)
            continue
        if main:
            print(f'[{index}/{len(paths)}] {name}', flush=True)
        try:
            check_data(cfg)
        except FileNotFoundError as error:
            row, per_class = results_row(path, cfg, status=STATUS_MISSING), None
            if main:
                print(f'  missing data: {error}', flush=True)
        else:
            try:
                result = evaluate(cfg)
            except Exception as error:  # one broken config must not stop the suite
                failures += 1
                row, per_class = results_row(path, cfg, status=f'failed: {error}'), None
                if main:
                    traceback.print_exc()
            else:
                row, per_class = results_row(path, cfg, result), result.per_class
        if main:
            book.upsert(row, per_class)
            book.save()
            _print_row(row)
    if main:
        print(f'results: {args.results} and {book.markdown_path}')
    return 1 if failures else 0
