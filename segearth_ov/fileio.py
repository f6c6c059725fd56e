"""Atomic file output: every writer in the package writes a temporary file beside its
target and renames it over the target, so a crash or Ctrl-C never leaves a half-written
result and a reader never sees one. Published files get the permissions the umask gives a
new file (``mkstemp`` alone would leave them readable by their owner only)."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Optional

TEMP_SUFFIX = '.tmp'
# The image formats inputs may have, by suffix, with the one GDAL driver each may be opened
# with (so a file cannot make GDAL read something else: a .tif holding VRT XML, say)
INPUT_DRIVERS = {'.tif': 'GTiff', '.tiff': 'GTiff', '.png': 'PNG', '.jpg': 'JPEG',
                 '.jpeg': 'JPEG', '.jp2': 'JP2OpenJPEG', '.bmp': 'BMP', '.webp': 'WEBP',
                 '.img': 'HFA', '.vrt': 'VRT'}
# Image files a folder of inputs is searched for (predict, upsampler training); a file that
# turns out unreadable is reported (predict) or skipped and counted (training).
IMAGE_SUFFIXES = tuple(INPUT_DRIVERS)


def temporary_beside(path) -> Path:
    """A new, empty temporary file in ``path``'s folder (created if needed), named
    ``.<name>.<random>.tmp`` after it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix=TEMP_SUFFIX)
    os.close(handle)
    return Path(tmp)


def stale_temporaries(path) -> list:
    """Temporary files that :func:`temporary_beside` made for ``path`` and a killed run left."""
    path = Path(path)
    return sorted(path.parent.glob(f'.{glob.escape(path.name)}.*{TEMP_SUFFIX}'))


def remove_temporary(path) -> None:
    """Remove a temporary of :func:`temporary_beside`: a file, or a folder of the files of a
    multi-file output (never following a link)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            remove_temporary(child)
        path.rmdir()
    else:
        path.unlink(missing_ok=True)


def checked_folder(root, relative='.') -> Path:
    """``root / relative``, created folder by folder (``root`` as needed); a part below
    ``root`` that is a symbolic link or not a folder is refused (``PermissionError`` /
    ``NotADirectoryError`` naming it), so nothing is ever written through a link planted
    inside ``root``."""
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    for part in Path(relative).parts:
        if part in ('', '.'):
            continue
        if part == '..':
            raise PermissionError(f'{folder / part} climbs out of {root}')
        folder = folder / part
        if folder.is_symlink():
            raise PermissionError(f'{folder} is a symbolic link; segearth-ov does not write '
                                  f'through links (remove it or choose another folder)')
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f'{folder} should be a folder but is a file; remove or '
                                     f'rename it')
        folder.mkdir(exist_ok=True)
    return folder


def open_no_follow(path, mode: str = 'a'):
    """``path`` opened for appending (``'a'``) or rewriting (``'w'``) as text, never through
    a symbolic link: a link at ``path`` is replaced by a new empty file (its target is not
    touched) when rewriting, and refused when appending."""
    path = Path(path)
    if path.is_symlink() and mode == 'w':
        tmp = temporary_beside(path)
        os.replace(tmp, path)  # the link itself goes; what it pointed to stays as it was
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if mode == 'a'
                                                         else os.O_TRUNC)
    try:
        handle = os.open(path, flags, default_file_mode())
    except OSError as error:
        if path.is_symlink():
            raise PermissionError(f'{path} is a symbolic link; segearth-ov does not write '
                                  f'through links') from error
        raise
    return os.fdopen(handle, mode)


def file_identity(path) -> Optional[tuple]:
    """``(inode, size, mtime ns)`` of the file at ``path`` itself (a link is not followed),
    None when nothing is there: tells whether a file was replaced since it was looked at."""
    try:
        stat = os.lstat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def writable_folder(folder) -> Path:
    """Create ``folder`` if needed; ``PermissionError`` naming it when it cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(f'output folder {folder} cannot be created: {error}') from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f'output folder {folder} is not writable')
    return folder


def default_file_mode() -> int:
    """``0o666`` less the process umask (read without changing it where Linux allows)."""
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith('Umask:'):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-and-restore
    os.umask(mask)
    return 0o666 & ~mask


def publish(tmp, path) -> None:
    """Give ``tmp`` the umask's permissions and rename it over ``path``."""
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (with the umask's
    permissions), on any failure it is deleted and ``path`` is left as it was."""
    tmp = temporary_beside(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


_HASHES: dict = {}


def content_hash(path, length: int = 12) -> str:
    """``sha256:<first length hex digits>`` of a file's bytes, remembered per (path, size,
    mtime) so a weights file is read once per process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 22), b''):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return f'sha256:{_HASHES[key][:length]}'
