"""Finding raw dataset files in folders and in the zip archives the datasets ship as."""
from __future__ import annotations

import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Source:
    """One raw file: a path on disk, or a member of a zip archive.

    ``relpath`` uses ``/`` separators and is relative to the searched folder (for a zip
    member: the member name), so patterns can match folder names too.
    """
    relpath: str
    path: Path
    member: Optional[str] = None

    @property
    def name(self) -> str:
        return self.relpath.rsplit('/', 1)[-1]

    @property
    def location(self) -> str:
        return f'{self.path}:{self.member}' if self.member else str(self.path)

    def read_bytes(self) -> bytes:
        if self.member is None:
            return self.path.read_bytes()
        try:
            with zipfile.ZipFile(self.path) as archive:
                return archive.read(self.member)
        except zipfile.BadZipFile as error:  # a bad CRC, a truncated member
            raise ValueError(f'{self.location} cannot be read from its archive ({error}); '
                             f'download the archive again') from error


class UnsafeMember(ValueError):
    """An archive member whose name is absolute or climbs out of its folder."""


def check_member_name(archive: Path, member: str) -> None:
    """Refuse a member name that could point outside the output folder when reused as a
    file name: absolute (``/x``, ``C:/x``, ``\\x``) or holding a ``..`` component."""
    parts = member.replace('\\', '/').split('/')
    if member.startswith(('/', '\\')) or re.match(r'^[A-Za-z]:', member) or '..' in parts:
        raise UnsafeMember(f'{archive} holds the member {member!r}, whose name is absolute or '
                           f'leaves its folder; refusing to read an archive that could write '
                           f'outside the output folder')


def find_sources(root: Path, pattern: str) -> List[Source]:
    """Files under ``root`` (recursively, zip archives included) whose ``relpath`` matches
    the regular expression ``pattern`` (``re.search``), sorted by relpath.

    A name found both on disk and inside an archive is taken from disk once.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'raw dataset folder {root} does not exist')
    regex = re.compile(pattern)
    found: Dict[str, Source] = {}
    archives = []
    for folder, _, files in os.walk(root):
        for file in sorted(files):
            path = Path(folder) / file
            relpath = path.relative_to(root).as_posix()
            if file.lower().endswith('.zip'):
                archives.append(path)
            elif regex.search(relpath):
                found.setdefault(relpath, Source(relpath, path))
    for archive in sorted(archives):
        try:
            with zipfile.ZipFile(archive) as opened:
                members = opened.namelist()
        except zipfile.BadZipFile as error:
            raise ValueError(f'{archive} is not a readable zip archive ({error}); download '
                             f'it again or extract it by hand') from error
        for member in members:
            if not member.endswith('/') and regex.search(member):
                check_member_name(archive, member)
                found.setdefault(member, Source(member, archive, member))
    return [found[key] for key in sorted(found)]


def _open(source: Source) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(source.read_bytes()))
        image.load()
        return image
    except (OSError, ValueError) as error:
        raise ValueError(f'cannot read image {source.location}: {error}') from error


def read_rgb(source: Source) -> np.ndarray:
    """``[H, W, 3]`` uint8 (palette, grey and RGBA inputs are converted)."""
    image = _open(source)
    if image.mode not in ('RGB', 'RGBA', 'P', 'L', '1'):
        raise ValueError(f'{source.location}: expected an 8-bit colour image, got mode '
                         f'{image.mode}')
    return np.asarray(image.convert('RGB'))


def read_mask(source: Source) -> np.ndarray:
    """``[H, W]`` values of a single-band mask (the first band of a colour-encoded one)."""
    array = np.asarray(_open(source))
    return array[..., 0] if array.ndim == 3 else array
