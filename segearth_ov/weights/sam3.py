"""SAM 3 weights (SegEarth-OV3): Meta's ``sam3.pt`` renamed to transformers' ``Sam3Model``
(the keys dropped on purpose listed with their reasons), transformers checkpoints, Meta's
configuration (LayerNorm eps), and building the detector offline."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict, Optional

import torch

from .files import CHECKPOINTS, describe_key_mismatch, read_checkpoint

logger = logging.getLogger(__name__)

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
