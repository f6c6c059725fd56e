"""Where the weights come from: finding local CLIP / SimFeatUp files, and
``segearth-ov download-weights``."""
from __future__ import annotations

import hashlib
import urllib.request
from pathlib import Path
from typing import Optional, Tuple

from ..fileio import atomic_path

CHECKPOINTS = Path('checkpoints')
LOCAL_OPENAI = CHECKPOINTS / 'ViT-B-16.pt'
SIMFEATUP = CHECKPOINTS / 'xclip_jbu_one_million_aid.ckpt'
SIMFEATUP_URL = ('https://github.com/likyoo/SegEarth-OV/raw/main/simfeatup_dev/weights/'
                 'xclip_jbu_one_million_aid.ckpt')
SIMFEATUP_BLOB = 'd40f00838331331faa04a926ea5991f5203f91a8'  # git blob hash in that repository

NO_CLIP_HELP = (
    'No CLIP weights found for ViT-B-16. Either run `segearth-ov download-weights` on a '
    'machine with network (fills open_clip\'s cache), put OpenAI\'s ViT-B-16.pt in '
    f'{LOCAL_OPENAI}, or pass --pretrained PATH (a full open_clip state dict) with --clip '
    'ARCH. --pretrained none runs with random weights (a pipeline check only).')


def resolve_clip(arch: str = 'ViT-B-16', pretrained: Optional[str] = 'auto'
                 ) -> Tuple[dict, Optional[str]]:
    """``(clip config, where the weights come from)``.

    ``pretrained='auto'``: ``checkpoints/ViT-B-16.pt`` (OpenAI's file), then
    open_clip's cache of ``arch``/openai; raises with :data:`NO_CLIP_HELP` when neither
    exists. ``'none'``: random weights (source None). Anything else: an open_clip tag or a
    local file, passed through.
    """
    from ..models.clip_loader import pretrained_is_cached
    if pretrained is None or str(pretrained).lower() == 'none':
        return dict(arch=arch, pretrained=None), None
    if pretrained != 'auto':
        return dict(arch=arch, pretrained=pretrained), str(pretrained)
    if arch == 'ViT-B-16' and LOCAL_OPENAI.is_file():
        return dict(arch=arch, pretrained=str(LOCAL_OPENAI)), str(LOCAL_OPENAI)
    if pretrained_is_cached(arch, 'openai'):
        return dict(arch=arch, pretrained='openai'), 'open_clip cache (openai)'
    raise FileNotFoundError(NO_CLIP_HELP.replace('ViT-B-16', arch, 1))


def git_blob_sha1(data: bytes) -> str:
    """The hash git gives a file's content (``git hash-object``)."""
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def download_simfeatup(dest: Path = SIMFEATUP, url: str = SIMFEATUP_URL,
                       blob_sha1: str = SIMFEATUP_BLOB, force: bool = False) -> Path:
    """Fetch the SimFeatUp checkpoint to ``dest`` and check its git blob hash; a wrong or
    truncated download is deleted, never left at ``dest``."""
    dest = Path(dest)
    if dest.is_file() and not force:
        if git_blob_sha1(dest.read_bytes()) == blob_sha1:
            return dest
        raise ValueError(f'{dest} exists but its git blob hash is not {blob_sha1}: delete it '
                         f'or pass --force to download it again')
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as error:
        raise ConnectionError(
            f'could not download {url} ({error}). Download it on a machine with network and '
            f'save it as {dest}, or pass its path with --upsampler-checkpoint') from error
    digest = git_blob_sha1(data)
    if digest != blob_sha1:
        raise ValueError(f'downloaded {url} has git blob hash {digest}, expected {blob_sha1} '
                         f'({len(data)} bytes; truncated or changed upstream); not saved')
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return dest


def download_clip(arch: str = 'ViT-B-16', tag: str = 'openai') -> str:
    """Fill open_clip's cache with ``arch``/``tag`` (network needed)."""
    import open_clip
    try:
        open_clip.create_model(arch, pretrained=tag)
    except Exception as error:  # hub errors come in many types
        raise ConnectionError(f'open_clip could not fetch {arch}/{tag} ({error}); on a machine '
                              f'without network put the checkpoint in {CHECKPOINTS}/ and pass '
                              f'--pretrained PATH') from error
    return f'{arch}/{tag} in open_clip\'s cache'
