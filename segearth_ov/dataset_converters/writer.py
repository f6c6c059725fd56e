"""Idempotent, atomic output for the dataset converters.

Re-running a converter leaves identical outputs alone, and refuses to replace an output
whose content differs unless ``force`` is set, so a finished conversion is never silently
overwritten by one with other settings.
"""
from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from ..fileio import atomic_path


class OutputConflict(FileExistsError):
    """An existing output differs from what the converter would write."""


class OutsideOutput(ValueError):
    """A path that resolves outside the output folder (a crafted name)."""


LOSSLESS_FORMATS = {'.png': 'PNG', '.tif': 'TIFF', '.tiff': 'TIFF'}


def image_format(suffix: str) -> str:
    """PIL format of a lossless output suffix (png, tif)."""
    if suffix.lower() not in LOSSLESS_FORMATS:
        raise ValueError(f'outputs are written losslessly as .png or .tif, not {suffix!r}')
    return LOSSLESS_FORMATS[suffix.lower()]


def encode_image(array: np.ndarray, suffix: str) -> bytes:
    """Lossless encoding of ``[H, W]`` or ``[H, W, 3]`` uint8 by file suffix (png, tif)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(
        buffer, format=image_format(suffix))
    return buffer.getvalue()


def _same_pixels(path: Path, array: np.ndarray) -> bool:
    try:
        with Image.open(path) as existing:
            return np.array_equal(np.asarray(existing), array)
    except OSError:
        return False  # unreadable: a broken earlier run, not the same output


class OutputWriter:
    """Writes files atomically and counts ``written``, ``unchanged`` and ``replaced``; with
    ``root``, a path that resolves outside it is refused before anything is written."""

    def __init__(self, force: bool = False, root: Optional[Path] = None):
        self.force = force
        self.root = Path(root).resolve() if root is not None else None
        self.counts: Counter = Counter()

    def _inside_root(self, path: Path) -> None:
        if self.root is not None and not path.resolve().is_relative_to(self.root):
            raise OutsideOutput(f'refusing to write {path}: it is outside the output folder '
                                f'{self.root}')

    def _write(self, path: Path, same: Callable[[Path], bool], data: Callable[[], bytes]):
        """``same(path)``: whether the existing file already holds the output; ``data()``
        is only called when the file is (re)written, so re-runs skip the encoding."""
        self._inside_root(path)
        if path.exists():
            if same(path):
                self.counts['unchanged'] += 1
                return
            if not self.force:
                raise OutputConflict(
                    f'{path} exists with different content; the earlier conversion used other '
                    f'inputs or settings. Pass --force to replace it, or choose another output '
                    f'folder.')
            self.counts['replaced'] += 1
        else:
            self.counts['written'] += 1
        with atomic_path(path) as tmp:
            tmp.write_bytes(data())

    def write_bytes(self, path: Path, data: bytes) -> None:
        """An exact copy; an existing file with the same bytes counts as unchanged."""
        self._write(Path(path), lambda existing: existing.read_bytes() == data, lambda: data)

    def write_image(self, path: Path, array: np.ndarray) -> None:
        """Lossless image; an existing file with the same pixels counts as unchanged."""
        path = Path(path)
        image_format(path.suffix)  # an unsupported suffix fails before anything is compared
        self._write(path, lambda existing: _same_pixels(existing, array),
                    lambda: encode_image(array, path.suffix))

    def summary(self) -> str:
        return ', '.join(f'{self.counts[key]} {key}' for key in ('written', 'unchanged',
                                                                  'replaced'))
