"""Where every weight comes from, in one place (as ``open_clip/pretrained.py`` is for
open_clip): the known checkpoints with their URLs and hashes, the local files looked for,
CLIP resolution and building (open_clip tags, local state dicts, OpenAI's TorchScript
archives, and the QuickGELU rule), upsampler resolution, the checkpoint readers, and
``segearth-ov download-weights``.

CLIP ``pretrained`` may be
* ``None``: random weights (for tests and smoke runs; logged loudly);
* an open_clip tag (``'openai'``, ``'laion2b_s34b_b88k'``, ...): open_clip's cache is used;
  with no network and no cached file the error says what to download and where it goes;
* a path to a full CLIP state dict (RemoteCLIP, GeoRSCLIP, SkyCLIP, AlignEarth, a saved
  OpenAI state dict, ...) or to OpenAI's own TorchScript archive (``ViT-B-16.pt``), loaded
  strictly.

The activation rule lives here and only here (:func:`uses_quick_gelu`): OpenAI's weights
were trained with QuickGELU, so the ``openai`` tag, a TorchScript archive and a state dict
carrying OpenAI's metadata keys build with QuickGELU whether the arch is spelt ``ViT-B-16``
or ``ViT-B-16-quickgelu``. open_clip itself only warns about the mismatch and builds GELU,
which changes every feature.
"""
from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
import zipfile
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from .fileio import atomic_path, content_hash

logger = logging.getLogger('segearth_ov')

CHECKPOINTS = Path('checkpoints')
LOCAL_OPENAI = CHECKPOINTS / 'ViT-B-16.pt'
SIMFEATUP = CHECKPOINTS / 'xclip_jbu_one_million_aid.ckpt'
SIMFEATUP_URL = ('https://github.com/likyoo/SegEarth-OV/raw/main/simfeatup_dev/weights/'
                 'xclip_jbu_one_million_aid.ckpt')
SIMFEATUP_BLOB = 'd40f00838331331faa04a926ea5991f5203f91a8'  # git blob hash in that repository

NO_CLIP_HELP = (
    'No CLIP weights found for ViT-B-16. Either run `segearth-ov download-weights` on a '
    'machine with network (fills open_clip\'s cache), put OpenAI\'s own ViT-B-16.pt in '
    f'{LOCAL_OPENAI}, or pass --pretrained PATH (a CLIP state dict or OpenAI file) with --clip '
    'ARCH. --pretrained none runs with random weights (a pipeline check only).')
_CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.bin', '.ckpt', '.safetensors')
# Keys OpenAI's CLIP state dicts carry beside the weights (open_clip drops them on load).
OPENAI_METADATA_KEYS = ('input_resolution', 'context_length', 'vocab_size')
QUICK_GELU_SUFFIX = '-quickgelu'


def looks_like_path(pretrained: str) -> bool:
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


def unwrap_state_dict(obj, path: str) -> dict:
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


# ------------------------------------------------------------- files and downloads
def resolve_clip(arch: str = 'ViT-B-16', pretrained: Optional[str] = 'auto'
                 ) -> Tuple[dict, Optional[str]]:
    """``(clip config, where the weights come from)``.

    ``pretrained='auto'``: ``checkpoints/ViT-B-16.pt`` (OpenAI's file), then
    open_clip's cache of ``arch``/openai; raises with :data:`NO_CLIP_HELP` when neither
    exists. ``'none'``: random weights (source None). Anything else: an open_clip tag or a
    local file, passed through.
    """
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
    if choice in (None, 'none'):
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
