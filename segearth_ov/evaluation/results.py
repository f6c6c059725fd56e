"""The results workbook: one summary row per (config, model and data settings), a per-class
IoU sheet, and a markdown copy of the summary.

Every save is a transaction under a lock file beside the workbook: the workbook is read
again, the row merged in, and the whole written to a temporary file that is renamed over
it. So concurrent runs keep each other's rows, a crash never leaves a half-written file,
and columns or sheets a user added are carried over. A workbook that cannot be read is
moved aside under a new name before anything is evaluated, never overwritten.

The setting columns come from the method table (each method names its own). A workbook
written before a column was renamed (:data:`RENAMED_COLUMNS`: ``CLIP`` is now ``backbone``)
is read under the new name, so its rows keep their keys and are rewritten with the new
header; a column a newer method adds is empty in older rows.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from openpyxl import Workbook, load_workbook

from ..fileio import atomic_path
from .catalog import settings_columns

# columns of workbooks written before they were renamed: old name -> new name
RENAMED_COLUMNS = {'CLIP': 'backbone'}
RESULT_COLUMNS = ['status', 'aAcc', 'mIoU', 'mAcc', 'paper mIoU', 'mIoU - paper', 'images',
                  'images/s', 'date', 'git commit']


def key_columns() -> List[str]:
    """What tells two results apart: the config and every setting column (the method
    table's, :func:`~segearth_ov.evaluation.catalog.settings_columns`)."""
    return ['config'] + settings_columns()


def sheets() -> Tuple[Tuple[str, List[str]], ...]:
    """``(title, columns)`` of the workbook's two sheets."""
    summary = ['config', 'dataset', 'task'] + settings_columns() + RESULT_COLUMNS
    return ('summary', summary), ('per_class', key_columns() + ['class', 'IoU'])


STATUS_OK = 'ok'
STATUS_MISSING = 'missing data'


class NotAResultsBook(ValueError):
    """The file is a readable workbook, but not one this tool writes."""


def _key_value(value) -> str:
    """A key cell as text, the same before and after a round trip through the workbook
    (which stores 0.0 as 0 and an empty cell as None)."""
    if value is None or value == '':
        return ''
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return str(value)


def _key(row: dict) -> tuple:
    return tuple(_key_value(row.get(column)) for column in key_columns())


def _read_sheet(book, title: str, path: Path) -> Tuple[List[str], List[dict]]:
    """``(header, rows)``; rows keep every column, the user's own ones too."""
    if title not in book.sheetnames:
        return [], []
    rows = book[title].iter_rows(values_only=True)
    header = [str(h) if h is not None else '' for h in next(rows, ())]
    header = [h if RENAMED_COLUMNS.get(h) in (None, *header) else RENAMED_COLUMNS[h]
              for h in header]
    if 'config' not in header or (title == 'summary' and 'status' not in header):
        raise NotAResultsBook(f'{path}: sheet {title!r} has no config/status columns, so it is '
                              f'not a segearth-ov results workbook; pass another --results')
    return header, [dict(zip(header, values)) for values in rows if any(
        value is not None for value in values)]


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ''
    return f'{value:.2f}' if isinstance(value, float) else str(value).replace('|', '/')


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.parent / f'.{path.name}.lock'
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def set_aside(path: Path) -> Path:
    """Rename an unreadable workbook to ``<stem>.corrupt-<time><suffix>``; returns the name."""
    aside = path.with_name(f'{path.stem}.corrupt-{time.strftime("%Y%m%d-%H%M%S")}{path.suffix}')
    path.rename(aside)
    return aside


class ResultsBook:
    """``results.xlsx`` (sheets ``summary`` and ``per_class``) and ``results.md`` beside it.

    Raises :class:`NotAResultsBook` for another workbook and ``ValueError`` (naming the
    file) for an unreadable one; :meth:`open` moves the latter aside instead.
    """

    def __init__(self, path, load: bool = True):
        self.path = Path(path)
        self.summary: List[dict] = []
        self.per_class: List[dict] = []
        self._extra = {title: [] for title, _ in sheets()}
        self._book = None
        if load and self.path.exists():
            self._load()

    @classmethod
    def open(cls, path, set_aside_corrupt: bool = True) -> Tuple['ResultsBook', Optional[Path]]:
        """The workbook, checked before any evaluation: ``(book, where a corrupt one went)``.

        An unreadable workbook is renamed aside (by one process: ``set_aside_corrupt``;
        the others start from an empty book too) and evaluation starts from an empty one.
        """
        try:
            return cls(path), None
        except NotAResultsBook:
            raise
        except ValueError:
            aside = None
            if set_aside_corrupt:
                with _locked(Path(path)):
                    aside = set_aside(Path(path))
            return cls(path, load=False), aside

    def _load(self) -> None:
        try:
            book = load_workbook(self.path)
        except Exception as error:  # a bad zip, XML or openpyxl's own errors
            raise ValueError(f'results workbook {self.path} cannot be read ({type(error).__name__}'
                             f': {error})') from error
        for title, columns in sheets():
            header, rows = _read_sheet(book, title, self.path)
            self._extra[title] = [h for h in header if h and h not in columns]
            setattr(self, title, rows)
        self._book = book

    @property
    def markdown_path(self) -> Path:
        return self.path.with_suffix('.md')

    def find(self, row_key: dict) -> Optional[dict]:
        key = _key(row_key)
        return next((row for row in self.summary if _key(row) == key), None)

    def upsert(self, row: dict, per_class: Optional[Dict[str, float]] = None) -> None:
        """Replace the row (and its per-class rows) with the same config and settings; the
        user's own columns of a replaced row are kept."""
        key = _key(row)
        old = self.find(row) or {}
        summary_columns = dict(sheets())['summary']
        self.summary = [r for r in self.summary if _key(r) != key] + [
            dict({k: v for k, v in old.items() if k not in summary_columns}, **row)]
        self.per_class = [r for r in self.per_class if _key(r) != key]
        for name, iou in (per_class or {}).items():
            self.per_class.append(dict({column: row.get(column) for column in key_columns()}, **{
                'class': name, 'IoU': None if math.isnan(iou) else iou}))

    def commit(self, row: dict, per_class: Optional[Dict[str, float]] = None) -> None:
        """Merge one result into the workbook on disk, under the lock."""
        with _locked(self.path):
            fresh = ResultsBook(self.path)
            fresh.upsert(row, per_class)
            fresh._save()
        self.summary, self.per_class, self._extra = fresh.summary, fresh.per_class, fresh._extra

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        book = self._book or Workbook()
        for index, (title, columns) in enumerate(sheets()):
            position = index
            if title in book.sheetnames:  # rewritten in place: other sheets stay as they are
                position = book.sheetnames.index(title)
                del book[title]
            sheet = book.create_sheet(title, position)
            header = columns + self._extra[title]
            sheet.append(header)
            for row in getattr(self, title):
                sheet.append([row.get(column) for column in header])
            sheet.freeze_panes = 'A2'
        if self._book is None and 'Sheet' in book.sheetnames and len(book.sheetnames) > 2:
            del book['Sheet']  # the empty sheet a new Workbook starts with
        with atomic_path(self.path) as tmp:
            book.save(tmp)
        with atomic_path(self.markdown_path) as tmp:
            tmp.write_text(self.markdown())

    def markdown(self) -> str:
        columns = dict(sheets())['summary']
        lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
        lines += ['| ' + ' | '.join(_cell(row.get(column)) for column in columns) + ' |'
                  for row in self.summary]
        return '\n'.join(lines) + '\n'
