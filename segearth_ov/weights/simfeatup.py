"""SimFeatUp (and FeatUp) upsampler weights: the published checkpoint with its URL and git
blob hash, its download, the ``--upsampler`` choice, and the checkpoint reader."""
from __future__ import annotations

import logging
import os
import urllib.request
from pathlib import Path
from typing import Dict, Optional

import torch

from ..fileio import atomic_path
from .files import CHECKPOINTS, git_blob_sha1, no_weights, read_checkpoint

logger = logging.getLogger(__name__)

SIMFEATUP = CHECKPOINTS / 'xclip_jbu_one_million_aid.ckpt'
SIMFEATUP_URL = ('https://github.com/likyoo/SegEarth-OV/raw/main/simfeatup_dev/weights/'
                 'xclip_jbu_one_million_aid.ckpt')
SIMFEATUP_BLOB = 'd40f00838331331faa04a926ea5991f5203f91a8'  # git blob hash in that repository


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


def resolve_upsampler(choice: Optional[str], checkpoint: Optional[str], patch_size: int,
                      from_config: Optional[dict] = None) -> Optional[dict]:
    """The upsampler config (``dict(type, checkpoint)`` or None) for a user's choice.

    ``'auto'``: the config's upsampler when its checkpoint exists, else SimFeatUp's
    ``jbu_one`` from :data:`SIMFEATUP` (or ``checkpoint``) when the file exists and the
    backbone is patch-16 (the published weights are x16), else none. ``'jbu_one'`` /
    ``'jbu_stack'``: that upsampler, whose checkpoint must exist. ``'none'`` / None: none.
    """
    if choice == 'auto':
        if from_config is not None and Path(from_config.get('checkpoint') or '').is_file():
            return dict(from_config)
        path = Path(checkpoint) if checkpoint else SIMFEATUP
        if path.is_file() and patch_size == 16:
            return dict(type='jbu_one', checkpoint=str(path))
        logger.info('SimFeatUp checkpoint %s not found (or the backbone is not patch-16): '
                    'feature upsampling is off. `segearth-ov download-weights` fetches it.',
                    path)
        return None
    if no_weights(choice):
        return None
    path = Path(checkpoint) if checkpoint else SIMFEATUP
    if not path.is_file():
        raise FileNotFoundError(
            f'upsampler checkpoint {path} not found: run `segearth-ov download-weights` '
            f'(SimFeatUp, saved as {SIMFEATUP}) or pass --upsampler-checkpoint PATH, or use '
            f'--upsampler none')
    return dict(type=choice, checkpoint=str(path))


def read_upsampler_state(path: str) -> Dict[str, torch.Tensor]:
    """The ``upsampler.*`` tensors of a Lightning-style checkpoint, prefix stripped."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'upsampler checkpoint not found: {path}. SimFeatUp weights '
            f'({SIMFEATUP.name}) are published at {SIMFEATUP_URL} (`segearth-ov '
            f'download-weights` saves them as {SIMFEATUP}); pass the file as '
            f'upsampler.checkpoint, or set upsampler=None')
    obj = read_checkpoint(path, 'upsampler checkpoint')
    state = obj.get('state_dict', obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f'upsampler checkpoint {path} holds no state dict')
    prefix = 'upsampler.'
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
