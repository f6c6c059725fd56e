"""The results workbook: one summary row per (config, model settings), a per-class IoU sheet,
and a markdown copy of the summary. Every save writes a temporary file and renames it, so a
crash or Ctrl-C never leaves a half-written workbook."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional

from openpyxl import Workbook, load_workbook

from ..fileio import atomic_path

SETTINGS = ['CLIP', 'weights', 'attention', 'attention layers', 'upsampler',
            'cls_token_lambda']
KEY = ['config'] + SETTINGS
SUMMARY = ['config', 'dataset', 'task'] + SETTINGS + [
    'status', 'aAcc', 'mIoU', 'mAcc', 'paper mIoU', 'mIoU - paper', 'images', 'images/s',
    'date', 'git commit']
PER_CLASS = KEY + ['class', 'IoU']
STATUS_OK = 'ok'
STATUS_MISSING = 'missing data'


def _key(row: dict) -> tuple:
    return tuple(str(row.get(column)) for column in KEY)


def _read_sheet(book, title: str, columns: List[str]) -> List[dict]:
    if title not in book.sheetnames:
        return []
    rows = book[title].iter_rows(values_only=True)
    header = list(next(rows, ()))
    if header[:len(columns)] != columns:
        raise ValueError(f'sheet {title!r} has columns {header}, expected {columns}: not a '
                         f'segearth-ov results workbook; pass another --results path')
    return [dict(zip(header, values)) for values in rows]


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ''
    return f'{value:.2f}' if isinstance(value, float) else str(value).replace('|', '/')


class ResultsBook:
    """``results.xlsx`` (sheets ``summary`` and ``per_class``) and ``results.md`` beside it."""

    def __init__(self, path):
        self.path = Path(path)
        self.summary: List[dict] = []
        self.per_class: List[dict] = []
        if self.path.exists():
            book = load_workbook(self.path, read_only=True)
            self.summary = _read_sheet(book, 'summary', SUMMARY)
            self.per_class = _read_sheet(book, 'per_class', PER_CLASS)
            book.close()

    @property
    def markdown_path(self) -> Path:
        return self.path.with_suffix('.md')

    def find(self, row_key: dict) -> Optional[dict]:
        key = _key(row_key)
        return next((row for row in self.summary if _key(row) == key), None)

    def upsert(self, row: dict, per_class: Optional[Dict[str, float]] = None) -> None:
        """Replace the row (and its per-class rows) with the same config and settings."""
        key = _key(row)
        self.summary = [old for old in self.summary if _key(old) != key] + [row]
        self.per_class = [old for old in self.per_class if _key(old) != key]
        for name, iou in (per_class or {}).items():
            self.per_class.append(dict({column: row[column] for column in KEY}, **{
                'class': name, 'IoU': None if math.isnan(iou) else iou}))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        book = Workbook()
        sheet = book.active
        sheet.title = 'summary'
        for title, columns, rows in (('summary', SUMMARY, self.summary),
                                     ('per_class', PER_CLASS, self.per_class)):
            sheet = book[title] if title in book.sheetnames else book.create_sheet(title)
            sheet.append(columns)
            for row in rows:
                sheet.append([row.get(column) for column in columns])
            sheet.freeze_panes = 'A2'
        with atomic_path(self.path) as tmp:
            book.save(tmp)
        with atomic_path(self.markdown_path) as tmp:
            tmp.write_text(self.markdown())

    def markdown(self) -> str:
        lines = ['| ' + ' | '.join(SUMMARY) + ' |', '|' + '---|' * len(SUMMARY)]
        lines += ['| ' + ' | '.join(_cell(row.get(column)) for column in SUMMARY) + ' |'
                  for row in self.summary]
        return '\n'.join(lines) + '\n'
