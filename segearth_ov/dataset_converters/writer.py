"""Idempotent, atomic output for the dataset converters.

Re-running a converter leaves identical outputs alone, and refuses to replace an output
whose content differs unless ``force`` is set, so a finished conversion is never silently
overwritten by one with other settings.
"""
from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import atomic_path


class OutputConflict(FileExistsError):
    """An existing output differs from what the converter would write."""


def encode_image(array: np.ndarray, suffix: str) -> bytes:
    """Lossless encoding of ``[H, W]`` or ``[H, W, 3]`` uint8 by file suffix (png, tif)."""
    formats = {'.png': 'PNG', '.tif': 'TIFF', '.tiff': 'TIFF'}
    if suffix.lower() not in formats:
        raise ValueError(f'outputs are written losslessly as .png or .tif, not {suffix!r}')
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(
        buffer, format=formats[suffix.lower()])
    return buffer.getvalue()


def _same_pixels(path: Path, array: np.ndarray) -> bool:
    try:
        with Image.open(path) as existing:
            return np.array_equal(np.asarray(existing), array)
    except OSError:
        return False  # unreadable: a broken earlier run, not the same output


class OutputWriter:
    """Writes files atomically and counts ``written``, ``unchanged`` and ``replaced``."""

    def __init__(self, force: bool = False):
        self.force = force
        self.counts: Counter = Counter()

    def write_bytes(self, path: Path, data: bytes, same=None) -> None:
        """``same(path) -> bool`` decides whether an existing file already holds ``data``
        (byte equality by default)."""
        path = Path(path)
        if path.exists():
            identical = same(path) if same else path.read_bytes() == data
            if identical:
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
            tmp.write_bytes(data)

    def write_image(self, path: Path, array: np.ndarray) -> None:
        """Lossless image; an existing file with the same pixels counts as unchanged."""
        path = Path(path)
        self.write_bytes(path, encode_image(array, path.suffix),
                         same=lambda existing: _same_pixels(existing, array))

    def summary(self) -> str:
        return ', '.join(f'{self.counts[key]} {key}' for key in ('written', 'unchanged',
                                                                  'replaced'))
