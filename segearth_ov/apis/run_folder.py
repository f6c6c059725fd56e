"""One ``predict`` run per output folder, and a record of what the tool wrote there.

* :class:`FolderLock`: a run holds an exclusive lock on ``<out>/.segearth_ov/lock`` (an OS
  file lock, released when the process ends, however it ends). A second run is refused,
  naming the holder, or waits. The processes of one ``torchrun`` run share their rank 0's
  lock.
* :class:`WrittenFiles`: every output the tool publishes is recorded (path, size,
  modification time) in ``<out>/.segearth_ov/written.rank<N>.jsonl``. A file at an output
  name that is not recorded, or was changed since, is the user's: it is never replaced or
  removed without ``--overwrite``.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Dict, Iterable, Optional

from ..fileio import checked_folder, file_identity, open_no_follow

RUN_FOLDER = '.segearth_ov'  # the run's own files, inside the output folder


def run_folder(out) -> Path:
    """``<out>/.segearth_ov``, created if needed, never a link or a file."""
    return checked_folder(out, RUN_FOLDER)


def scratch_path(outputs: Dict[str, Path], name: str) -> Path:
    """A working file of one input (whose outputs are ``outputs``), in its output folder's
    run folder (``parts/``), named after the input's summary."""
    folder = checked_folder(run_folder(outputs['json'].parent), 'parts')
    return folder / f'{outputs["json"].name[:-len(".json")]}.{name}'


class FolderBusy(OSError):
    """Another run holds the output folder's lock."""


class FolderLock:
    """The exclusive lock of one output folder for this process (see the module docstring).

    Args:
        out: the output folder.
        wait: block until the other run ends instead of refusing.
        on_wait: called with the holder's description before blocking.
    """

    def __init__(self, out, wait: bool = False, on_wait=None):
        self.path = run_folder(out) / 'lock'
        self._file = open_no_follow(self.path, 'a')
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            if not wait:
                self._file.close()
                raise FolderBusy(f'output folder {out} is in use by another segearth-ov run '
                                 f'({holder}); wait for it to end, pass --wait, or choose '
                                 f'another --out') from None
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        self._file.truncate(0)
        self._file.write(json.dumps(dict(pid=os.getpid(), host=socket.gethostname(),
                                         started=time.strftime('%Y-%m-%dT%H:%M:%SZ',
                                                               time.gmtime()))))
        self._file.flush()

    def holder(self) -> str:
        """Who holds the lock, as the holder wrote it."""
        try:
            info = json.loads(self.path.read_text() or '{}')
            return f'process {info["pid"]} on {info["host"]}, since {info["started"]}'
        except (OSError, ValueError, KeyError):
            return 'a process that has not said who it is yet'

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()

    def __enter__(self) -> 'FolderLock':
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class WrittenFiles:
    """The outputs this tool published in one output folder (every process's record)."""

    def __init__(self, out, rank: int = 0):
        self.out = Path(out)
        self.folder = run_folder(out)
        self.rank = rank
        self._known: Dict[str, tuple] = {}
        for part in sorted(self.folder.glob('written.rank*.jsonl')):
            if part.is_symlink() or not part.is_file():
                continue  # never read through a link
            for line in part.read_text(errors='replace').splitlines():
                try:
                    entry = json.loads(line)
                    self._known[entry['path']] = (entry['size'], entry['mtime_ns'])
                except (ValueError, KeyError, TypeError):
                    continue

    def _key(self, path) -> str:
        return os.path.relpath(Path(path), self.out)

    def ours(self, path) -> bool:
        """Whether the file at ``path`` is one this tool wrote, unchanged since."""
        identity = file_identity(path)
        if identity is None or Path(path).is_symlink():
            return False
        return self._known.get(self._key(path)) == identity[1:]

    def foreign(self, paths: Iterable[Path]) -> list:
        """The paths where something exists that this tool did not write."""
        return [p for p in paths if file_identity(p) is not None and not self.ours(p)]

    def record(self, paths: Iterable[Path]) -> None:
        """Remember the files now at ``paths`` as written by this tool."""
        lines = []
        for path in paths:
            identity = file_identity(path)
            if identity is None:
                continue
            key = self._key(path)
            if self._known.get(key) == identity[1:]:
                continue  # recorded already, unchanged since
            self._known[key] = identity[1:]
            lines.append(json.dumps(dict(path=key, size=identity[1], mtime_ns=identity[2])))
        if lines:
            with open_no_follow(self.folder / f'written.rank{self.rank}.jsonl', 'a') as part:
                part.write('\n'.join(lines) + '\n')


def changed_since(before: Dict[str, Optional[tuple]], paths: Dict[str, Path]) -> list:
    """The paths whose file is not the one :func:`~segearth_ov.fileio.file_identity` saw in
    ``before`` (written or replaced since), and still there."""
    now = {key: file_identity(path) for key, path in paths.items()}
    return [path for key, path in paths.items()
            if now[key] is not None and now[key] != before.get(key)]
