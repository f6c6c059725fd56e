"""Where every weight comes from, in one place (as ``open_clip/pretrained.py`` is for
open_clip), one module per family:

* :mod:`.files`: where local checkpoints live, safe readers, a file's name-and-content
  description, and :func:`~.files.no_weights`, the one reading of ``none``;
* :mod:`.clip`: CLIP resolution and building (open_clip tags, local state dicts, OpenAI's
  TorchScript archives) and the QuickGELU rule;
* :mod:`.simfeatup`: the upsampler checkpoints, their download and the ``--upsampler``
  choice;
* :mod:`.sam3`: SAM 3 (SegEarth-OV3): Meta's ``sam3.pt`` and transformers' checkpoints.

CLIP ``pretrained`` may be
* ``None`` (or ``'none'``): random weights (for tests and smoke runs; logged loudly);
* an open_clip tag (``'openai'``, ``'laion2b_s34b_b88k'``, ...): open_clip's cache is used;
  with no network and no cached file the error says what to download and where it goes;
* a path to a full CLIP state dict (RemoteCLIP, GeoRSCLIP, SkyCLIP, AlignEarth, a saved
  OpenAI state dict, ...) or to OpenAI's own TorchScript archive (``ViT-B-16.pt``), loaded
  strictly.
"""
from .clip import (LOCAL_OPENAI, NO_CLIP_HELP, OPENAI_METADATA_KEYS, QUICK_GELU_SUFFIX, base_arch,
                   build_clip, clip_patch_size, download_clip, pretrained_is_cached,
                   read_clip_weights, resolve_clip, unwrap_state_dict, uses_quick_gelu,
                   weights_identity)
from .files import (CHECKPOINTS, describe_key_mismatch, describe_weights, git_blob_sha1,
                    is_torchscript_archive, looks_like_path, no_weights, read_checkpoint,
                    read_torchscript_state)
from .sam3 import (NO_TRANSFORMERS_HELP, SAM3_CHECKPOINT, SAM3_HELP, SAM3_IGNORED, SAM3_KEY_RULES,
                   SAM3_LAYER_NORM_EPS, build_sam3, read_sam3_state, sam3_config,
                   sam3_meta_to_transformers)
from .simfeatup import (SIMFEATUP, SIMFEATUP_BLOB, SIMFEATUP_URL, download_simfeatup,
                        read_upsampler_state, resolve_upsampler)

__all__ = [
    'CHECKPOINTS', 'LOCAL_OPENAI', 'NO_CLIP_HELP', 'NO_TRANSFORMERS_HELP',
    'OPENAI_METADATA_KEYS', 'QUICK_GELU_SUFFIX', 'SAM3_CHECKPOINT', 'SAM3_HELP',
    'SAM3_IGNORED', 'SAM3_KEY_RULES', 'SAM3_LAYER_NORM_EPS', 'SIMFEATUP', 'SIMFEATUP_BLOB',
    'SIMFEATUP_URL', 'base_arch', 'build_clip', 'build_sam3', 'clip_patch_size',
    'describe_key_mismatch', 'describe_weights', 'download_clip', 'download_simfeatup',
    'git_blob_sha1', 'is_torchscript_archive', 'looks_like_path', 'no_weights',
    'pretrained_is_cached', 'read_checkpoint', 'read_clip_weights', 'read_sam3_state',
    'read_torchscript_state', 'read_upsampler_state', 'resolve_clip', 'resolve_upsampler',
    'sam3_config', 'sam3_meta_to_transformers', 'unwrap_state_dict', 'uses_quick_gelu',
    'weights_identity',
]
