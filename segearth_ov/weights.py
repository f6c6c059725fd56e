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
import re
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


# ------------------------------------------------------------------------------- SAM 3
SAM3_CHECKPOINT = CHECKPOINTS / 'sam3.pt'
SAM3_HELP = (
    'SAM 3 weights are gated: request access at https://huggingface.co/facebook/sam3, then '
    f'download Meta\'s sam3.pt (or the transformers-format model.safetensors) and put it in '
    f'{SAM3_CHECKPOINT}, or pass its path (model.checkpoint in a config, --sam3-checkpoint '
    'for predict). checkpoint=None builds random weights (a pipeline check only).')
NO_TRANSFORMERS_HELP = (
    'the SegEarth-OV3 backend needs Hugging Face transformers: pip install -r '
    'requirements-sam3.txt (or pip install "segearth-ov[sam3]")')

# Meta's detector names -> transformers' Sam3Model names, applied in order to each key
# (after the ``detector.`` prefix is removed). Keys ending in qkv / in_proj_* are split into
# q/k/v projections afterwards.
_LAYERS = r'\.(?:layers|blocks|encode|resblocks)\.(\d+)\.'
SAM3_KEY_RULES = [(re.compile(pattern), replacement) for pattern, replacement in [
    # vision trunk and FPN neck
    (r'^backbone\.vision_backbone\.trunk\.pos_embed$',
     'vision_encoder.backbone.embeddings.position_embeddings'),
    (r'^backbone\.vision_backbone\.trunk\.patch_embed\.proj\.',
     'vision_encoder.backbone.embeddings.patch_embeddings.projection.'),
    (r'^backbone\.vision_backbone\.trunk\.ln_pre\.', 'vision_encoder.backbone.layer_norm.'),
    (r'^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.norm(\d)\.',
     r'vision_encoder.backbone.layers.\1.layer_norm\2.'),
    (r'^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.attn\.proj\.',
     r'vision_encoder.backbone.layers.\1.attention.o_proj.'),
    (r'^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.attn\.qkv\.',
     r'vision_encoder.backbone.layers.\1.attention.qkv.'),
    (r'^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.mlp\.',
     r'vision_encoder.backbone.layers.\1.mlp.'),
    (r'^backbone\.vision_backbone\.convs\.(\d+)\.(?:dconv_2x2(?:_0)?|maxpool_2x2)\.',
     r'vision_encoder.neck.fpn_layers.\1.scale_layers.0.'),
    (r'^backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2_1\.',
     r'vision_encoder.neck.fpn_layers.\1.scale_layers.2.'),
    (r'^backbone\.vision_backbone\.convs\.(\d+)\.conv_1x1\.',
     r'vision_encoder.neck.fpn_layers.\1.proj1.'),
    (r'^backbone\.vision_backbone\.convs\.(\d+)\.conv_3x3\.',
     r'vision_encoder.neck.fpn_layers.\1.proj2.'),
    (r'^backbone\.vision_backbone\.neck\.fpn\.(\d+)\.', r'vision_encoder.neck.fpn_layers.\1.'),
    # text encoder (a CLIP text tower) and its resizer
    (r'^backbone\.language_backbone\.encoder\.token_embedding\.',
     'text_encoder.text_model.embeddings.token_embedding.'),
    (r'^backbone\.language_backbone\.encoder\.positional_embedding$',
     'text_encoder.text_model.embeddings.position_embedding.weight'),
    (r'^backbone\.language_backbone\.encoder\.ln_final\.',
     'text_encoder.text_model.final_layer_norm.'),
    (r'^backbone\.language_backbone\.encoder\.text_projection$',
     'text_encoder.text_projection.weight'),
    (r'^backbone\.language_backbone\.encoder\.transformer' + _LAYERS + r'attn\.out_proj\.',
     r'text_encoder.text_model.encoder.layers.\1.self_attn.out_proj.'),
    (r'^backbone\.language_backbone\.encoder\.transformer' + _LAYERS + r'attn\.in_proj_',
     r'text_encoder.text_model.encoder.layers.\1.self_attn.in_proj_'),
    (r'^backbone\.language_backbone\.encoder\.transformer' + _LAYERS + r'ln_(\d)\.',
     r'text_encoder.text_model.encoder.layers.\1.layer_norm\2.'),
    (r'^backbone\.language_backbone\.encoder\.transformer' + _LAYERS + r'mlp\.c_fc\.',
     r'text_encoder.text_model.encoder.layers.\1.mlp.fc1.'),
    (r'^backbone\.language_backbone\.encoder\.transformer' + _LAYERS + r'mlp\.c_proj\.',
     r'text_encoder.text_model.encoder.layers.\1.mlp.fc2.'),
    (r'^backbone\.language_backbone\.resizer\.', 'text_projection.'),
    # geometry encoder and DETR encoder layers share their sub-layer names
    (r'^geometry_encoder\.img_pre_norm\.', 'geometry_encoder.vision_layer_norm.'),
    (r'^geometry_encoder\.norm\.', 'geometry_encoder.prompt_layer_norm.'),
    (r'^geometry_encoder\.encode_norm\.', 'geometry_encoder.output_layer_norm.'),
    (r'^geometry_encoder' + _LAYERS, r'geometry_encoder.layers.\1.'),
    (r'^transformer\.encoder' + _LAYERS, r'detr_encoder.layers.\1.'),
    (r'^(geometry_encoder|detr_encoder)\.layers\.(\d+)\.cross_attn_image\.',
     r'\1.layers.\2.cross_attn.'),
    (r'^(geometry_encoder|detr_encoder)\.layers\.(\d+)\.linear(\d)\.', r'\1.layers.\2.mlp.fc\3.'),
    (r'^(geometry_encoder|detr_encoder)\.layers\.(\d+)\.norm(\d)\.',
     r'\1.layers.\2.layer_norm\3.'),
    # DETR decoder
    (r'^transformer\.decoder\.', 'detr_decoder.'),
    (r'^detr_decoder\.presence_token_out_norm\.', 'detr_decoder.presence_layer_norm.'),
    (r'^detr_decoder\.norm\.', 'detr_decoder.output_layer_norm.'),
    (r'^detr_decoder\.presence_token_head\.', 'detr_decoder.presence_head.'),
    (r'^detr_decoder\.bbox_embed\.', 'detr_decoder.box_head.'),
    (r'^detr_decoder\.instance_bbox_embed\.', 'detr_decoder.instance_box_head.'),
    (r'^detr_decoder\.boxRPB_embed_([xy])\.', r'detr_decoder.box_rpb_embed_\1.'),
    (r'^detr_decoder\.layers\.(\d+)\.ca_text\.', r'detr_decoder.layers.\1.text_cross_attn.'),
    (r'^detr_decoder\.layers\.(\d+)\.cross_attn\.', r'detr_decoder.layers.\1.vision_cross_attn.'),
    (r'^detr_decoder\.layers\.(\d+)\.linear(\d)\.', r'detr_decoder.layers.\1.mlp.fc\2.'),
    (r'^detr_decoder\.layers\.(\d+)\.norm1\.',
     r'detr_decoder.layers.\1.vision_cross_attn_layer_norm.'),
    (r'^detr_decoder\.layers\.(\d+)\.catext_norm\.',
     r'detr_decoder.layers.\1.text_cross_attn_layer_norm.'),
    (r'^detr_decoder\.layers\.(\d+)\.norm2\.', r'detr_decoder.layers.\1.self_attn_layer_norm.'),
    (r'^detr_decoder\.layers\.(\d+)\.norm3\.', r'detr_decoder.layers.\1.mlp_layer_norm.'),
    # scoring and mask decoder
    (r'^dot_prod_scoring\.prompt_mlp\.out_norm\.', 'dot_product_scoring.text_mlp_out_norm.'),
    (r'^dot_prod_scoring\.prompt_mlp\.', 'dot_product_scoring.text_mlp.'),
    (r'^dot_prod_scoring\.prompt_proj\.', 'dot_product_scoring.text_proj.'),
    (r'^dot_prod_scoring\.hs_proj\.', 'dot_product_scoring.query_proj.'),
    (r'^segmentation_head\.(?:mask_predictor\.)?mask_embed\.', 'mask_decoder.mask_embedder.'),
    (r'^segmentation_head\.instance_seg_head\.', 'mask_decoder.instance_projection.'),
    (r'^segmentation_head\.semantic_seg_head\.', 'mask_decoder.semantic_projection.'),
    (r'^segmentation_head\.cross_attend_prompt\.', 'mask_decoder.prompt_cross_attn.'),
    (r'^segmentation_head\.cross_attn_norm\.', 'mask_decoder.prompt_cross_attn_norm.'),
    (r'^segmentation_head\.pixel_decoder\.', 'mask_decoder.pixel_decoder.'),
    # attention output projections are o_proj, except in the CLIP text tower
    (r'^(?!text_encoder)(.*)\.out_proj\.', r'\1.o_proj.'),
    # multi-layer perceptron heads: layers.i -> layer{i+1}
    (r'^(detr_decoder\.(?:presence_head|box_head|instance_box_head|ref_point_head|'
     r'box_rpb_embed_[xy])|dot_product_scoring\.text_mlp)\.layers\.(\d)\.',
     lambda m: f'{m.group(1)}.layer{int(m.group(2)) + 1}.'),
]]
# Meta keys with no counterpart in transformers' image detector, each dropped on purpose:
# the video tracker; the SAM 2 neck it reads (``sam2_convs``, inside the detector's
# backbone); rotary tables, which transformers recomputes; and the geometry encoder's point
# encoders (transformers encodes boxes only, and SegEarth-OV3 prompts with text and the
# empty geometric prompt, which holds no points).
SAM3_IGNORED = re.compile(r'^tracker\.|^backbone\.vision_backbone\.sam2_convs\.|\.freqs_cis$'
                          r'|^geometry_encoder\.points_(?:direct|pool|pos_enc)_project\.')


def _split_qkv(state: Dict[str, torch.Tensor]) -> None:
    """``*.qkv.{weight,bias}`` and ``*.in_proj_{weight,bias}`` -> ``*.{q,k,v}_proj.*``."""
    for key in [k for k in state if '.qkv.' in k or '.in_proj_' in k]:
        base, kind = (key.split('.qkv.') if '.qkv.' in key
                      else key.split('.in_proj_'))
        for name, part in zip('qkv', state.pop(key).chunk(3, dim=0)):
            state[f'{base}.{name}_proj.{kind}'] = part


def sam3_meta_to_transformers(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Meta's ``sam3.pt`` detector state (``detector.*``; :data:`SAM3_IGNORED` dropped) under
    transformers' ``Sam3Model`` names: keys renamed by :data:`SAM3_KEY_RULES`, fused q/k/v
    projections split, the position embedding's class-token slot dropped, and the CLIP
    text projection transposed (Meta stores it as ``x @ W``)."""
    converted = {}
    for key, value in state.items():
        if not key.startswith('detector.'):
            if not SAM3_IGNORED.search(key):
                converted[key] = value  # reported as unexpected by the strict load
            continue
        key = key[len('detector.'):]
        if SAM3_IGNORED.search(key):
            continue
        for pattern, replacement in SAM3_KEY_RULES:
            key = pattern.sub(replacement, key)
        if key == 'vision_encoder.backbone.embeddings.position_embeddings':
            value = value[:, 1:]
        elif key == 'text_encoder.text_projection.weight':
            value = value.t()
        converted[key] = value
    _split_qkv(converted)
    return converted


def read_sam3_state(path) -> Dict[str, torch.Tensor]:
    """The SAM 3 detector weights of ``path`` under ``Sam3Model`` names: Meta's ``sam3.pt``
    (converted), a transformers ``model.safetensors`` (or its folder), or a saved
    ``Sam3Model`` state dict. No pickled code runs (``weights_only`` / safetensors)."""
    path = Path(path)
    if path.is_dir():
        path = path / 'model.safetensors'
    if not path.is_file():
        raise FileNotFoundError(f'SAM 3 checkpoint not found: {path}. {SAM3_HELP}')
    if path.suffix == '.safetensors':
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
        except Exception as err:
            raise ValueError(f'SAM 3 checkpoint {path} cannot be read (truncated?): '
                             f'{type(err).__name__}: {err}') from err
    else:
        obj = read_checkpoint(str(path), 'SAM 3 checkpoint')
        for key in ('model', 'state_dict'):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor)
                                                for v in obj.values()):
            raise ValueError(f'SAM 3 checkpoint {path} holds no state dict of tensors')
        state = obj
    if any(key.startswith('detector.') for key in state):
        return sam3_meta_to_transformers(state)
    prefix = 'detector_model.'  # a Sam3VideoModel checkpoint
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()
            if not k.startswith(('tracker_model.', 'tracker_neck.'))}


def _override(config, overrides: dict):
    """``config`` (a transformers config) with ``overrides`` set, nested dicts into the
    nested sub-configs; an unknown field is an error naming it."""
    for key, value in overrides.items():
        current = getattr(config, key, None)
        if isinstance(value, dict) and hasattr(current, 'to_dict'):
            _override(current, value)
        elif not hasattr(config, key):
            raise ValueError(f'sam3_config: {type(config).__name__} has no field {key!r}')
        else:
            setattr(config, key, value)
    return config


# Every LayerNorm of Meta's SAM 3 uses torch's default eps; transformers' ``Sam3Config``
# defaults to 1e-6 (block 0 of the ViT then differs by 2e-2 on values up to 5).
SAM3_LAYER_NORM_EPS = 1e-5


def sam3_config(overrides: Optional[dict] = None):
    """transformers' ``Sam3Config`` of Meta's SAM 3: the published architecture with Meta's
    LayerNorm eps in every part, then ``overrides`` (nested dicts set nested sub-configs; an
    unknown field is an error naming it)."""
    from transformers import Sam3Config
    config = Sam3Config()
    parts = [config.vision_config, config.vision_config.backbone_config, config.text_config,
             config.geometry_encoder_config, config.detr_encoder_config,
             config.detr_decoder_config, config.mask_decoder_config]
    for part in parts:
        if hasattr(part, 'layer_norm_eps'):
            part.layer_norm_eps = SAM3_LAYER_NORM_EPS
    return _override(config, overrides or {})


def build_sam3(checkpoint: Optional[str] = str(SAM3_CHECKPOINT),
               config: Optional[dict] = None) -> torch.nn.Module:
    """transformers' ``Sam3Model`` in eval mode, built offline: the published architecture
    (``config`` overrides any of its fields, e.g. a shrunken test model) with the weights of
    ``checkpoint`` loaded strictly (see :func:`read_sam3_state`), or random weights when
    ``checkpoint`` is None."""
    try:
        from transformers import Sam3Model
    except ImportError as err:
        raise ImportError(NO_TRANSFORMERS_HELP) from err
    if checkpoint is not None:
        state = read_sam3_state(checkpoint)  # before the model: a missing file fails fast
    model = Sam3Model(sam3_config(config))
    if checkpoint is None:
        logger.warning('SAM 3 has RANDOM WEIGHTS (checkpoint=None): predictions are '
                       'meaningless. %s', SAM3_HELP)
        return model.eval()
    expected = model.state_dict()
    wrong = [f'{key} {tuple(value.shape)} (the detector has {tuple(expected[key].shape)})'
             for key, value in state.items()
             if key in expected and tuple(value.shape) != tuple(expected[key].shape)]
    if wrong:
        raise ValueError(f'SAM 3 checkpoint {checkpoint} does not fit the SAM 3 detector: '
                         f'{len(wrong)} tensor(s) of another shape, e.g. {wrong[0]}')
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f'SAM 3 checkpoint {checkpoint} does not fit the SAM 3 detector: '
                         f'{describe_key_mismatch(missing, unexpected)}')
    return model.eval()
