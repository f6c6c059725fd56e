"""What a ``predict`` run wrote: the manifest (every input's status, settings and outputs,
appended as each input ends, one part per process); its STAC index is
:mod:`~segearth_ov.apis.stac_index`.

An interrupted run resumes from the per-input JSON summaries (finished inputs are
skipped); the manifest parts show how far each process got.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import List

from ..fileio import atomic_path, open_no_follow
from .run_folder import run_folder


def utc_now() -> str:
    """The time now, ISO 8601 in UTC to the second."""
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


class ManifestPart:
    """One process's manifest lines: a JSON object per input, appended and flushed to disk
    as soon as the input ends, so a killed run's progress stays readable."""

    def __init__(self, out: Path, rank: int):
        self.path = run_folder(out) / f'manifest.rank{rank}.jsonl'
        self.rank = rank
        self._file = open_no_follow(self.path, 'w')

    def record(self, **entry) -> None:
        self._file.write(json.dumps(dict(entry, rank=self.rank, ended=utc_now()),
                                    allow_nan=False) + '\n')
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_parts(out: Path, world_size: int) -> List[dict]:
    """The entries of every process's manifest part, sorted by input."""
    entries = []
    for rank in range(world_size):
        path = run_folder(out) / f'manifest.rank{rank}.jsonl'
        if path.is_file() and not path.is_symlink():
            entries += [json.loads(line) for line in path.read_text().splitlines() if line]
    return sorted(entries, key=lambda e: e['input'])


def write_manifest(out: Path, entries: List[dict], settings: dict, world_size: int) -> Path:
    """``<out>/manifest.json``: the run's settings and every input's entry."""
    path = Path(out) / 'manifest.json'
    counts = {status: sum(e['status'] == status for e in entries)
              for status in ('done', 'skipped', 'failed', 'outside-aoi')}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(dict(created=utc_now(), processes=world_size, **counts,
                                       settings=settings, inputs=entries), indent=2,
                                  allow_nan=False))
    return path
