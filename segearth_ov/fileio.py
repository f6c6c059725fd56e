"""Atomic file output: every writer in the package writes a temporary file beside its
target and renames it over the target, so a crash or Ctrl-C never leaves a half-written
result and a reader never sees one."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def temporary_beside(path) -> Path:
    """A new, empty temporary file in ``path``'s folder (created if needed), named after it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    os.close(handle)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on any failure it
    is deleted and ``path`` is left as it was."""
    tmp = temporary_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
