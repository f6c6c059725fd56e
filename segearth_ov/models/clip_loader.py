"""Load an open_clip model from a pretrained tag or a local checkpoint file, offline-friendly.

``pretrained`` may be
* ``None``: random weights (for tests and smoke runs; logged loudly);
* an open_clip tag (``'openai'``, ``'laion2b_s34b_b88k'``, ...): open_clip's cache is used;
  with no network and no cached file the error says what to download and where it goes;
* a path to a full CLIP state dict (OpenAI's ``ViT-B-16.pt`` with arch
  ``ViT-B-16-quickgelu``, RemoteCLIP, GeoRSCLIP, SkyCLIP, AlignEarth, ...), loaded strictly.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

import torch

logger = logging.getLogger('segearth_ov')

_CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.bin', '.ckpt', '.safetensors')


def looks_like_path(pretrained: str) -> bool:
    return (os.sep in pretrained or pretrained.endswith(_CHECKPOINT_SUFFIXES)
            or os.path.exists(pretrained))


def read_checkpoint(path: str, what: str = 'checkpoint') -> dict:
    """``torch.load`` a trusted-format file with errors that name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, wrong format: all say the same
        raise ValueError(f'{what} {path} cannot be read (truncated or not a PyTorch '
                         f'checkpoint?): {type(err).__name__}: {err}') from err


def _unwrap_state_dict(obj, path: str) -> dict:
    for key in ('state_dict', 'model', 'module'):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f'CLIP checkpoint {path} holds no state dict of tensors')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in obj.items()}


def describe_key_mismatch(missing, unexpected, limit: int = 12) -> str:
    parts = []
    for label, keys in (('missing', missing), ('unexpected', unexpected)):
        if keys:
            shown = ', '.join(list(keys)[:limit])
            more = f' (+{len(keys) - limit} more)' if len(keys) > limit else ''
            parts.append(f'{len(keys)} {label} key(s): {shown}{more}')
    return '; '.join(parts)


def _cache_hint(arch: str, tag: str, cache_dir: Optional[str]) -> str:
    import open_clip
    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    source = cfg.get('hf_hub') or cfg.get('url') or '(see open_clip.list_pretrained())'
    filename = os.path.basename(cfg['url']) if cfg.get('url') else 'open_clip_pytorch_model.bin'
    if cache_dir is None:
        try:
            from huggingface_hub.constants import HF_HUB_CACHE as cache_dir
        except ImportError:
            cache_dir = '~/.cache/huggingface/hub'
    local_arch = f'{arch}-quickgelu' if tag == 'openai' and 'quickgelu' not in arch else arch
    return (f'The weights file ({filename}) comes from {source} and is cached under '
            f'{cache_dir}. Download it once on a '
            f'machine with network access (python -c "import open_clip; '
            f"open_clip.create_model('{arch}', pretrained='{tag}')\"), copy the cache folder "
            f'here, or pass a local file: clip=dict(arch=\'{local_arch}\', '
            f"pretrained='/path/to/{filename}').")


def build_clip(arch: str, pretrained: Optional[str] = 'openai',
               cache_dir: Optional[str] = None) -> Tuple[torch.nn.Module, object]:
    """Return ``(model, tokenizer)``: an open_clip CLIP model in eval mode with frozen
    weights, and its tokenizer (works offline: the BPE vocabulary ships with open_clip)."""
    import open_clip
    if arch not in open_clip.list_models():
        raise ValueError(f'unknown open_clip architecture {arch!r}; see open_clip.list_models()')
    if not pretrained:
        logger.warning('CLIP %s has RANDOM WEIGHTS (pretrained=None): predictions are '
                       'meaningless; pass a tag or a checkpoint path for real results', arch)
        model = open_clip.create_model(arch, pretrained=None)
    elif looks_like_path(pretrained):
        state = _unwrap_state_dict(read_checkpoint(pretrained, 'CLIP checkpoint'), pretrained)
        model = open_clip.create_model(arch, pretrained=None)
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise ValueError(f'CLIP checkpoint {pretrained} does not fit arch {arch!r}: '
                             f'{err}') from err
        mismatch = describe_key_mismatch(result.missing_keys, result.unexpected_keys)
        if mismatch:
            raise ValueError(f'CLIP checkpoint {pretrained} does not fit arch {arch!r}: '
                             f'{mismatch}')
    else:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if pretrained not in tags:
            raise ValueError(f'{arch!r} has no pretrained tag {pretrained!r} (known: '
                             f'{", ".join(tags) or "none"}); a local file needs a path')
        try:
            model = open_clip.create_model(arch, pretrained=pretrained, cache_dir=cache_dir)
        except Exception as err:
            raise RuntimeError(f'cannot load CLIP weights {arch}/{pretrained} '
                               f'({type(err).__name__}: {err}). '
                               f'{_cache_hint(arch, pretrained, cache_dir)}') from err
    model.eval().requires_grad_(False)
    return model, open_clip.get_tokenizer(arch)


def pretrained_is_cached(arch: str, tag: str, cache_dir: Optional[str] = None) -> bool:
    """Whether open_clip would find ``arch``/``tag`` in its Hugging Face cache (no network)."""
    import open_clip
    cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
    repo = (cfg.get('hf_hub') or '').strip('/')
    if not repo:
        return False
    from huggingface_hub import try_to_load_from_cache
    return any(isinstance(try_to_load_from_cache(repo, name, cache_dir=cache_dir), str)
               for name in ('open_clip_model.safetensors', 'open_clip_pytorch_model.bin'))
