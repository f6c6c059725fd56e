"""``tools/eval.py`` and ``tools/eval_all.py``."""
from __future__ import annotations

import argparse
import glob
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.dist import is_main_process

from ..errors import DEBUG_ENV, USER_ERRORS, report
from .catalog import GROUPS, config_name, in_group, model_settings
from .results import STATUS_MISSING, STATUS_OK, ResultsBook
from .run import (LAUNCHERS, check_data, evaluate, failed_row, init_distributed, load_config,
                  results_row, world_size_note)

DEFAULT_RESULTS = 'results.xlsx'


class ConfigOptions(DictAction):
    """mmseg's ``--cfg-options KEY=VALUE``, with a usage error (not a traceback) for an
    item without ``=``."""

    def __call__(self, parser, namespace, values, option_string=None):
        bad = [value for value in values if '=' not in value]
        if bad:
            parser.error(f'{option_string} takes KEY=VALUE items, got {bad[0]!r}')
        super().__call__(parser, namespace, values, option_string)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--cfg-options', nargs='+', action=ConfigOptions, default={},
                        metavar='KEY=VALUE', help='override config entries, as in mmseg; a '
                                                  'key that names no setting is refused')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='multi-process launcher (dist_test.sh uses pytorch); on a '
                             'machine without CUDA pytorch runs with gloo')
    parser.add_argument('--results', default=DEFAULT_RESULTS,
                        help=f'results workbook (default {DEFAULT_RESULTS}; a markdown copy '
                             f'is written beside it; concurrent runs may share it)')
    parser.add_argument('--debug', action='store_true',
                        help=f'show tracebacks of errors (or set {DEBUG_ENV}=1)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def _print_row(row: dict) -> None:
    metrics = ', '.join(f'{key} {row[key]}' for key in ('aAcc', 'mIoU', 'mAcc')
                        if row.get(key) is not None)
    paper = f' (paper {row["paper mIoU"]}, {row["mIoU - paper"]:+.2f})' \
        if row.get('paper mIoU') is not None else ''
    print(f'{row["config"]}: {row["status"]}; {metrics}{paper}', flush=True)


def open_results(path: str) -> ResultsBook:
    """The workbook, checked before anything is evaluated; an unreadable one is set aside
    (by the main process) and reported."""
    book, aside = ResultsBook.open(path, set_aside_corrupt=is_main_process())
    if aside is not None:
        print(f'warning: {path} could not be read; it was kept as {aside} and a new workbook '
              f'is started', file=sys.stderr, flush=True)
    return book


def eval_main(argv: Optional[List[str]] = None) -> int:
    """``tools/eval.py``: evaluate one config into the results workbook."""
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
        init_distributed(args.launcher)  # first: only the main process sets a bad book aside
        book = open_results(args.results)
        result = evaluate(cfg)
    except USER_ERRORS as error:  # data, weights, options: the message says what to do
        report(error, args.debug)
        return 2
    if is_main_process():
        row = results_row(args.config, cfg, result)
        try:
            book.commit(row, result.per_class)
        except USER_ERRORS as error:
            report(error, args.debug)
            print(f'the result was not stored: {row}', file=sys.stderr)
            return 1
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
        paths = [path for path in paths if _in_group(path, group)]
    return paths


def _in_group(path: str, group: str) -> bool:
    try:
        return in_group(config_name(path), Config.fromfile(path), group)
    except Exception:  # a broken config is kept, to be reported as a failed row
        return True


def eval_all_main(argv: Optional[List[str]] = None) -> int:
    """``tools/eval_all.py``: evaluate every config of a group, one process each."""
    parser = argparse.ArgumentParser(
        description='Evaluate every benchmark config. The workbook is saved after each '
                    'config; a re-run skips configs whose row exists for the same model '
                    'settings (use --force to recompute). Missing data gives a '
                    '"missing data" row, a broken config a "failed" row, and the run goes on.')
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
        init_distributed(args.launcher)
        book = open_results(args.results)  # every rank decides from it, so all agree
    except USER_ERRORS as error:
        report(error, args.debug)
        return 2
    main = is_main_process()
    failures = 0
    for index, path in enumerate(paths, 1):
        name = config_name(path)
        try:
            cfg = load_config(path, args.cfg_options, osp.join(args.work_dir, name),
                              args.launcher)
            settings = model_settings(cfg)
        except Exception as error:  # a config that does not load is a failed row
            failures += 1
            if main:
                report(error, args.debug, prefix=f'[{index}/{len(paths)}] {name}: failed')
                _store(book, failed_row(path, error), None)
            continue
        done = book.find(dict(config=name, **settings))
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
                    report(error, args.debug, prefix=f'  {name} failed')
            else:
                row, per_class = results_row(path, cfg, result), result.per_class
        if main:
            if not _store(book, row, per_class):
                failures += 1
            _print_row(row)
    if main:
        print(f'results: {args.results} and {book.markdown_path}')
    return 1 if failures else 0


def _store(book: ResultsBook, row: dict, per_class) -> bool:
    try:
        book.commit(row, per_class)
        return True
    except USER_ERRORS as error:
        report(error)
        print(f'the result was not stored: {row}', file=sys.stderr)
        return False
