"""Weight files in general: where local checkpoints live, how a file is told from a tag,
read safely (``weights_only``: no pickled code runs) and described by name and content, and
the one reading of the word ``none`` (random weights) for every weights option."""
from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Dict, Optional

import torch

from ..fileio import content_hash

CHECKPOINTS = Path('checkpoints')
_CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.bin', '.ckpt', '.safetensors')


def no_weights(value) -> bool:
    """Whether a weights option asks for none (random weights, or no upsampler): None or
    the word ``none`` in any case."""
    return value is None or str(value).strip().lower() == 'none'


def looks_like_path(pretrained: str) -> bool:
    """Whether a weights setting names a file rather than an open_clip tag."""
    return (os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES)
            or os.path.exists(pretrained))


def is_torchscript_archive(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with ``constants.pkl`` and compiled
    ``code/``), as OpenAI's released CLIP files are, rather than a ``torch.save`` file."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith('/constants.pkl') for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def read_checkpoint(path: str, what: str = 'checkpoint') -> dict:
    """``torch.load`` a trusted-format file (``weights_only=True``: no pickled code runs)
    with errors that name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, wrong format: all say the same
        raise ValueError(f'{what} {path} cannot be read (truncated or not a PyTorch '
                         f'checkpoint?): {type(err).__name__}: {err}') from err


def read_torchscript_state(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a TorchScript archive, read on CPU. ``torch.jit.load`` reads only
    TorchScript's own restricted format: no Python pickle is executed."""
    try:
        scripted = torch.jit.load(path, map_location='cpu')
    except Exception as err:
        raise ValueError(f'TorchScript archive {path} cannot be read (truncated?): '
                         f'{type(err).__name__}: {err}') from err
    return {key: value.detach() for key, value in scripted.state_dict().items()}


def describe_key_mismatch(missing, unexpected, limit: int = 12) -> str:
    """Missing and unexpected state-dict keys, at most ``limit`` of each, for an error."""
    parts = []
    for label, keys in (('missing', missing), ('unexpected', unexpected)):
        if keys:
            shown = ', '.join(list(keys)[:limit])
            more = f' (+{len(keys) - limit} more)' if len(keys) > limit else ''
            parts.append(f'{len(keys)} {label} key(s): {shown}{more}')
    return '; '.join(parts)


def git_blob_sha1(data: bytes) -> str:
    """The hash git gives a file's content (``git hash-object``)."""
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def describe_weights(pretrained: Optional[str]) -> str:
    """What a weights setting is, for results rows and caches: the tag, or a local file's
    name with its content hash (two files of one name differ), ``none (random)``, or
    ``<name> (missing)``."""
    if pretrained is None:
        return 'none (random)'
    if not looks_like_path(str(pretrained)):
        return str(pretrained)
    name = os.path.basename(str(pretrained))
    if not os.path.isfile(pretrained):
        return f'{name} (missing)'
    return f'{name} {content_hash(pretrained)}'
