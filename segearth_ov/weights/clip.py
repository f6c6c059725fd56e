"""CLIP weights: resolution (local OpenAI file, open_clip cache, tags, state dicts, OpenAI's
TorchScript archives), building, and the QuickGELU rule.

The activation rule lives here and only here (:func:`uses_quick_gelu`): OpenAI's weights
were trained with QuickGELU, so the ``openai`` tag, a TorchScript archive and a state dict
carrying OpenAI's metadata keys build with QuickGELU whether the arch is spelt ``ViT-B-16``
or ``ViT-B-16-quickgelu``. open_clip itself only warns about the mismatch and builds GELU,
which changes every feature.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Tuple

import torch

from .files import (CHECKPOINTS, describe_key_mismatch, describe_weights, is_torchscript_archive,
                    looks_like_path, no_weights, read_checkpoint, read_torchscript_state)

logger = logging.getLogger(__name__)

LOCAL_OPENAI = CHECKPOINTS / 'ViT-B-16.pt'
NO_CLIP_HELP = (
    'No CLIP weights found for ViT-B-16. Either run `segearth-ov download-weights` on a '
    'machine with network (fills open_clip\'s cache), put OpenAI\'s own ViT-B-16.pt in '
    f'{LOCAL_OPENAI}, or pass --pretrained PATH (a CLIP state dict or OpenAI file) with --clip '
    'ARCH. --pretrained none runs with random weights (a pipeline check only).')
# Keys OpenAI's CLIP state dicts carry beside the weights (open_clip drops them on load).
OPENAI_METADATA_KEYS = ('input_resolution', 'context_length', 'vocab_size')
QUICK_GELU_SUFFIX = '-quickgelu'


def unwrap_state_dict(obj, path: str) -> dict:
    """The tensors of a checkpoint, whatever it was saved under (``state_dict``,
    ``model``, ``module.`` prefixes); ``ValueError`` naming ``path`` otherwise."""
    for key in ('state_dict', 'model', 'module'):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f'CLIP checkpoint {path} holds no state dict of tensors')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in obj.items()}


def read_clip_weights(path: str) -> Tuple[Dict[str, torch.Tensor], bool]:
    """``(state dict, OpenAI format?)`` of a local CLIP file: a TorchScript archive or a
    (possibly wrapped) state dict. OpenAI's metadata keys are removed from the state."""
    if is_torchscript_archive(path):
        state, openai_format = read_torchscript_state(path), True
    else:
        state = unwrap_state_dict(read_checkpoint(path, 'CLIP checkpoint'), path)
        openai_format = any(key in state for key in OPENAI_METADATA_KEYS)
    for key in OPENAI_METADATA_KEYS:
        state.pop(key, None)
    return state, openai_format


def uses_quick_gelu(arch: str, pretrained: Optional[str], openai_format: bool = False,
                    quick_gelu: Optional[bool] = None) -> bool:
    """The activation rule: an explicit ``quick_gelu`` wins; otherwise QuickGELU for a
    ``-quickgelu`` arch, the ``openai`` tag, and OpenAI-format files."""
    if quick_gelu is not None:
        return bool(quick_gelu)
    return arch.endswith(QUICK_GELU_SUFFIX) or pretrained == 'openai' or openai_format


def base_arch(arch: str) -> str:
    """``ViT-B-16-quickgelu`` -> ``ViT-B-16`` (the activation is set by :func:`uses_quick_gelu`)."""
    import open_clip
    if arch.endswith(QUICK_GELU_SUFFIX):
        base = arch[:-len(QUICK_GELU_SUFFIX)]
        if base in open_clip.list_models():
            return base
    return arch


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
    return (f'The weights file ({filename}) comes from {source} and is cached under '
            f'{cache_dir}. Download it once on a '
            f'machine with network access (python -c "import open_clip; '
            f"open_clip.create_model('{arch}', pretrained='{tag}')\"), copy the cache folder "
            f"here, or pass a local file: clip=dict(arch='{arch}', "
            f"pretrained='/path/to/{filename}').")


def _load_local(arch: str, path: str, quick_gelu: Optional[bool]) -> torch.nn.Module:
    import open_clip
    state, openai_format = read_clip_weights(path)
    quick = uses_quick_gelu(arch, path, openai_format, quick_gelu)
    model = open_clip.create_model(base_arch(arch), pretrained=None, force_quick_gelu=quick)
    # buffers the model derives itself (the text attention mask) are saved by TorchScript
    derived = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    state = {key: value for key, value in state.items() if key not in derived}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatch
        raise ValueError(f'CLIP checkpoint {path} does not fit arch {arch!r}: {err}') from err
    mismatch = describe_key_mismatch(result.missing_keys, result.unexpected_keys)
    if mismatch:
        raise ValueError(f'CLIP checkpoint {path} does not fit arch {arch!r}: {mismatch}')
    return model


def build_clip(arch: str, pretrained: Optional[str] = 'openai',
               cache_dir: Optional[str] = None, quick_gelu: Optional[bool] = None
               ) -> Tuple[torch.nn.Module, object]:
    """Return ``(model, tokenizer)``: an open_clip CLIP model in eval mode with frozen
    weights, and its tokenizer (works offline: the BPE vocabulary ships with open_clip).

    ``quick_gelu``: None applies :func:`uses_quick_gelu`; True / False force the activation.
    """
    import open_clip
    if arch not in open_clip.list_models():
        raise ValueError(f'unknown open_clip architecture {arch!r}; see open_clip.list_models()')
    if not pretrained:
        logger.warning('CLIP %s has RANDOM WEIGHTS (pretrained=None): predictions are '
                       'meaningless; pass a tag or a checkpoint path for real results', arch)
        model = open_clip.create_model(
            base_arch(arch), pretrained=None,
            force_quick_gelu=uses_quick_gelu(arch, None, quick_gelu=quick_gelu))
    elif looks_like_path(pretrained):
        model = _load_local(arch, pretrained, quick_gelu)
    else:
        name = base_arch(arch) if pretrained == 'openai' else arch
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ValueError(f'{arch!r} has no pretrained tag {pretrained!r} (known: '
                             f'{", ".join(tags) or "none"}); a local file needs a path')
        quick = uses_quick_gelu(arch, pretrained, quick_gelu=quick_gelu)
        try:
            model = open_clip.create_model(name, pretrained=pretrained, cache_dir=cache_dir,
                                           force_quick_gelu=quick)
        except Exception as err:  # offline, not cached, or a broken cache: say what to do
            raise FileNotFoundError(
                f'CLIP weights {arch}/{pretrained} are not available here. '
                f'{_cache_hint(name, pretrained, cache_dir)} (open_clip said: '
                f'{type(err).__name__}: {str(err)[:300]})') from err
    model.eval().requires_grad_(False)
    return model, open_clip.get_tokenizer(arch)


def pretrained_is_cached(arch: str, tag: str, cache_dir: Optional[str] = None) -> bool:
    """Whether open_clip would find ``arch``/``tag`` in its Hugging Face cache (no network)."""
    import open_clip
    cfg = open_clip.get_pretrained_cfg(base_arch(arch), tag) or {}
    repo = (cfg.get('hf_hub') or '').strip('/')
    if not repo:
        return False
    from huggingface_hub import try_to_load_from_cache
    return any(isinstance(try_to_load_from_cache(repo, name, cache_dir=cache_dir), str)
               for name in ('open_clip_model.safetensors', 'open_clip_pytorch_model.bin'))


def resolve_clip(arch: str = 'ViT-B-16', pretrained: Optional[str] = 'auto'
                 ) -> Tuple[dict, Optional[str]]:
    """``(clip config, where the weights come from)``.

    ``pretrained='auto'``: ``checkpoints/ViT-B-16.pt`` (OpenAI's file), then
    open_clip's cache of ``arch``/openai; raises with :data:`NO_CLIP_HELP` when neither
    exists. ``'none'``: random weights (source None). Anything else: an open_clip tag or a
    local file, passed through.
    """
    if no_weights(pretrained):
        return dict(arch=arch, pretrained=None), None
    if pretrained != 'auto':
        return dict(arch=arch, pretrained=pretrained), str(pretrained)
    if arch == 'ViT-B-16' and LOCAL_OPENAI.is_file():
        return dict(arch=arch, pretrained=str(LOCAL_OPENAI)), str(LOCAL_OPENAI)
    if pretrained_is_cached(arch, 'openai'):
        return dict(arch=arch, pretrained='openai'), 'open_clip cache (openai)'
    raise FileNotFoundError(NO_CLIP_HELP.replace('ViT-B-16', arch, 1))


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


def weights_identity(arch: str, pretrained: Optional[str],
                     quick_gelu: Optional[bool] = None) -> Optional[str]:
    """A string that changes whenever the CLIP weights (or their activation) do
    (:func:`describe_weights`, with the open_clip version for a tag); None for random
    weights, which are never the same twice."""
    if not pretrained:
        return None
    source = describe_weights(pretrained)
    if not looks_like_path(pretrained):
        import open_clip
        source = f'open_clip {open_clip.__version__} {source}'
    return f'{arch} | {source} | quick_gelu={quick_gelu}'


def clip_patch_size(arch: str) -> int:
    """The patch size of an open_clip architecture, read from its model config (no model
    is built)."""
    import open_clip
    cfg = open_clip.get_model_config(base_arch(arch)) or {}
    patch = cfg.get('vision_cfg', {}).get('patch_size')
    if not isinstance(patch, int):
        raise ValueError(f'open_clip architecture {arch!r} has no ViT patch size; dense '
                         f'features need a ViT backbone')
    return patch
