"""SegEarthOV3 (SAM 3 through transformers' Sam3Model): the fusion formula against a float64
re-computation from the raw model outputs, chunked vocabularies, bounded fusion memory,
strict checkpoint loading (Meta's detector.* layout and transformers' own), the full-size
architecture, the 17 benchmark configs, evaluation into the workbook and predict."""
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from conftest import REPO
from peak_memory import child_env
from segearth_ov.models import SegEarthOV3
from segearth_ov.models.sam3_fusion import fuse_prompt_maps, resize_views
from segearth_ov.models.segearth_ov3 import tokenize_prompts
from segearth_ov.weights import build_sam3, read_sam3_state

# a shrunken SAM 3: 112-pixel input (8 x 8 patches), 32 x 32 masks, 20 queries
SMALL = dict(
    vision_config=dict(
        backbone_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=2, global_attn_indexes=[1], window_size=4,
                             image_size=112, pretrain_image_size=56),
        fpn_hidden_size=32, backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]]),
    text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=2, projection_dim=32),
    geometry_encoder_config=dict(hidden_size=32, intermediate_size=64, num_layers=1,
                                 num_attention_heads=2),
    detr_encoder_config=dict(hidden_size=32, intermediate_size=64, num_layers=1,
                             num_attention_heads=2),
    detr_decoder_config=dict(hidden_size=32, intermediate_size=64, num_layers=1,
                             num_attention_heads=2, num_queries=20),
    mask_decoder_config=dict(hidden_size=32, num_attention_heads=2))
CLASSES = ['background', 'building,house', 'road', 'tree,forest']


def small_model(**kwargs):
    torch.manual_seed(0)
    options = dict(checkpoint=None, sam3_config=SMALL, classes=CLASSES, image_size=112,
                   confidence_threshold=0.2)
    options.update(kwargs)
    return SegEarthOV3(**options).eval()


# --- the method, against an independent float64 computation ------------------------------------

def spans(size, crop, stride):
    """mmseg's sliding-window spans, written out again."""
    if crop <= 0:
        return [(0, size)]
    out = []
    for i in range(max(size - crop + stride - 1, 0) // stride + 1):
        end = min(i * stride + crop, size)
        out.append((max(end - crop, 0), end))
    return out


def reference(model, image):
    """Class scores [C, H, W] (float64) of ``image`` [3, H, W] from the raw Sam3Model
    outputs, one view and one prompt at a time."""
    sam3 = model.sam3
    prompts = model.class_queries.queries
    owner = model.class_queries.query_to_class
    _, height, width = image.shape
    total = torch.zeros(len(prompts), height, width, dtype=torch.float64)
    count = torch.zeros(height, width, dtype=torch.float64)
    ids, mask = tokenize_prompts(prompts)
    for y1, y2 in spans(height, model.slide_crop, model.slide_stride):
        for x1, x2 in spans(width, model.slide_crop, model.slide_stride):
            pixels = resize_views(image[None, :, y1:y2, x1:x2], model.image_size)
            for p in range(len(prompts)):
                with torch.no_grad():
                    # Meta's empty geometric prompt: one box marked as padding (-10)
                    out = sam3(pixel_values=pixels, input_ids=ids[p:p + 1],
                               attention_mask=mask[p:p + 1],
                               input_boxes=torch.zeros(1, 1, 4),
                               input_boxes_labels=torch.full((1, 1), -10))
                total[p, y1:y2, x1:x2] += fused_reference(
                    out.pred_logits, out.presence_logits, out.pred_masks, out.semantic_seg,
                    (y2 - y1, x2 - x1), model.confidence_threshold)[0]
            count[y1:y2, x1:x2] += 1
    per_prompt = total / count
    return torch.stack([per_prompt[[q for q, c in enumerate(owner) if c == k]].amax(0)
                        for k in range(max(owner) + 1)])


def fused_reference(logits, presence_logits, masks, semantic, size, threshold,
                    sigmoid_first=False):
    """The fusion formula in float64 with plain loops over queries."""
    def up(x):
        if sigmoid_first:
            return F.interpolate(x.double().sigmoid(), size, mode='bilinear',
                                 align_corners=False)
        return F.interpolate(x.double(), size, mode='bilinear', align_corners=False).sigmoid()
    presence = presence_logits.double().sigmoid()[:, 0]
    scores = logits.double().sigmoid() * presence[:, None]
    out = []
    for b in range(logits.shape[0]):
        fused = torch.zeros(size, dtype=torch.float64)
        upsampled = up(masks[b:b + 1])[0]
        for q in range(scores.shape[1]):
            if scores[b, q] > threshold:
                fused = torch.maximum(fused, upsampled[q] * scores[b, q])
        out.append(torch.maximum(fused, up(semantic[b:b + 1])[0, 0]) * presence[b])
    return torch.stack(out)


def test_fusion_equals_a_float64_recomputation_from_the_raw_outputs():
    model = small_model(slide_crop=40, slide_stride=25, prompt_batch_size=4,
                        view_batch_size=3, mask_chunk=3, bg_idx=2)
    image = torch.rand(3, 60, 52) * 255
    expected = reference(model, image)
    model.prob_thd = float(expected.amax(0).quantile(0.3))  # some pixels fall back to bg_idx
    best, labels = expected.max(0)
    labels[best < model.prob_thd] = model.bg_idx
    sample = model.predict(image[None])[0]
    torch.testing.assert_close(sample.seg_logits.data.double(), expected, atol=2e-6, rtol=0)
    top2 = expected.topk(2, dim=0).values
    clear = (top2[0] - top2[1] > 1e-5) & ((best - model.prob_thd).abs() > 1e-5)
    assert torch.equal(sample.pred_sem_seg.data[0][clear], labels[clear])
    assert (labels == 2).sum() > 0.2 * labels.numel()


def test_fusion_resizes_before_the_sigmoid():
    """Sharp logits, where the order matters: equal to the float64 formula, and not to the
    sigmoid-then-resize variant."""
    torch.manual_seed(0)
    logits, presence = torch.randn(2, 30) * 3, torch.randn(2, 1)
    masks, semantic = torch.randn(2, 30, 6, 6) * 8, torch.randn(2, 1, 6, 6) * 8
    fused = fuse_prompt_maps(logits, presence, masks, semantic, (17, 23), 0.2, chunk=4)
    expected = fused_reference(logits, presence, masks, semantic, (17, 23), 0.2)
    torch.testing.assert_close(fused.double(), expected, atol=1e-6, rtol=0)
    swapped = fused_reference(logits, presence, masks, semantic, (17, 23), 0.2,
                              sigmoid_first=True)
    assert (swapped - expected).abs().max() > 1e-2


def test_threshold_keeps_only_confident_instances():
    """A hand case: two queries, one above the threshold; presence counts twice for it."""
    logits = torch.tensor([[2.0, -2.0]])
    presence = torch.tensor([[0.5]])
    masks = torch.full((1, 2, 4, 4), 3.0)
    semantic = torch.full((1, 1, 4, 4), -4.0)
    fused = fuse_prompt_maps(logits, presence, masks, semantic, (8, 8), 0.3)
    p = torch.tensor(0.5).sigmoid()
    expected = torch.tensor(3.0).sigmoid() * torch.tensor(2.0).sigmoid() * p * p
    torch.testing.assert_close(fused, torch.full((1, 8, 8), float(expected)))
    semantic_only = fuse_prompt_maps(logits, presence, masks, semantic, (8, 8), 0.99)
    torch.testing.assert_close(semantic_only, torch.full((1, 8, 8), float(
        torch.tensor(-4.0).sigmoid() * p)))


@pytest.mark.parametrize('chunk', [1, 3])
def test_chunked_classes_equal_predict(chunk):
    model = small_model(slide_crop=40, slide_stride=30, prob_thd=0.05, bg_idx=1)
    images = torch.rand(2, 3, 50, 64) * 255
    for sample, (labels, best) in zip(model.predict(images), model.top_classes(images, chunk)):
        scores = sample.seg_logits.data
        torch.testing.assert_close(scores.max(0).values, best)
        # labels agree wherever float noise (prompts batched differently) cannot decide
        top2 = scores.topk(2, dim=0).values
        decided = (top2[0] - top2[1] > 1e-5) & ((top2[0] - model.prob_thd).abs() > 1e-5)
        assert decided.float().mean() > 0.5
        assert torch.equal(sample.pred_sem_seg.data[0][decided], labels[decided])


FUSION_MEMORY = textwrap.dedent('''
    import json, torch
    from segearth_ov.models.sam3_fusion import fuse_prompt_maps
    from peak_memory import peak_mib, reset_peak
    torch.manual_seed(0)
    logits, presence = torch.full((1, 200), 5.0), torch.zeros(1, 1)
    masks, semantic = torch.randn(1, 200, 288, 288), torch.randn(1, 1, 288, 288)
    fuse_prompt_maps(logits, presence, masks, semantic, (64, 64), 0.0)  # warm-up
    reset_peak()
    before = peak_mib()
    out = fuse_prompt_maps(logits, presence, masks, semantic, (2048, 2048), 0.0, chunk=16)
    print(json.dumps(dict(grew=peak_mib() - before, kept=200)))
''')


@pytest.mark.slow
def test_fusion_memory_is_bounded_with_200_kept_instances():
    """200 kept masks on a 2048 x 2048 view: 3.2 GB if upsampled at once."""
    done = subprocess.run([sys.executable, '-c', FUSION_MEMORY], capture_output=True,
                          text=True, timeout=600, cwd=REPO, env=child_env())
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    all_at_once = 200 * 2048 * 2048 * 4 / 2 ** 20
    assert result['grew'] < all_at_once / 4, result


def test_views_are_resized_on_uint8_without_keeping_the_aspect():
    crops = torch.randint(0, 256, (1, 3, 30, 50)).float()
    pixels = resize_views(crops, 64)
    assert pixels.shape == (1, 3, 64, 64)
    grey = (pixels + 1) / 2 * 255  # back to grey levels: whole numbers
    assert torch.allclose(grey, grey.round(), atol=1e-4)
    float_path = F.interpolate(crops, (64, 64), mode='bilinear', antialias=True,
                               align_corners=False)
    assert (grey - float_path).abs().max() <= 1.0


def test_prompts_are_tokenised_offline_to_32_tokens():
    ids, mask = tokenize_prompts(['building', 'low vegetation'])
    assert ids.shape == mask.shape == (2, 32)
    assert ids[0, 0] == 49406 and ids[0, 2] == 49407 and mask[0].sum() == 3
    assert mask[1].sum() == 4 and (ids[mask == 0] == 0).all()


# --- weights -----------------------------------------------------------------------------------

# transformers' Sam3Model names -> Meta's detector names, written out independently of the
# loader's rules (the q/k/v splits are merged back separately)
TO_META = [
    (r'^vision_encoder\.backbone\.embeddings\.position_embeddings$',
     'backbone.vision_backbone.trunk.pos_embed'),
    (r'^vision_encoder\.backbone\.embeddings\.patch_embeddings\.projection\.',
     'backbone.vision_backbone.trunk.patch_embed.proj.'),
    (r'^vision_encoder\.backbone\.layer_norm\.', 'backbone.vision_backbone.trunk.ln_pre.'),
    (r'^vision_encoder\.backbone\.layers\.(\d+)\.layer_norm(\d)\.',
     r'backbone.vision_backbone.trunk.blocks.\1.norm\2.'),
    (r'^vision_encoder\.backbone\.layers\.(\d+)\.attention\.o_proj\.',
     r'backbone.vision_backbone.trunk.blocks.\1.attn.proj.'),
    (r'^vision_encoder\.backbone\.layers\.(\d+)\.attention\.qkv\.',
     r'backbone.vision_backbone.trunk.blocks.\1.attn.qkv.'),
    (r'^vision_encoder\.backbone\.layers\.(\d+)\.mlp\.',
     r'backbone.vision_backbone.trunk.blocks.\1.mlp.'),
    (r'^vision_encoder\.neck\.fpn_layers\.(\d+)\.scale_layers\.0\.',
     r'backbone.vision_backbone.convs.\1.dconv_2x2_0.'),
    (r'^vision_encoder\.neck\.fpn_layers\.(\d+)\.scale_layers\.2\.',
     r'backbone.vision_backbone.convs.\1.dconv_2x2_1.'),
    (r'^vision_encoder\.neck\.fpn_layers\.(\d+)\.proj1\.',
     r'backbone.vision_backbone.convs.\1.conv_1x1.'),
    (r'^vision_encoder\.neck\.fpn_layers\.(\d+)\.proj2\.',
     r'backbone.vision_backbone.convs.\1.conv_3x3.'),
    (r'^text_encoder\.text_model\.embeddings\.token_embedding\.',
     'backbone.language_backbone.encoder.token_embedding.'),
    (r'^text_encoder\.text_model\.embeddings\.position_embedding\.weight$',
     'backbone.language_backbone.encoder.positional_embedding'),
    (r'^text_encoder\.text_model\.final_layer_norm\.',
     'backbone.language_backbone.encoder.ln_final.'),
    (r'^text_encoder\.text_projection\.weight$',
     'backbone.language_backbone.encoder.text_projection'),
    (r'^text_encoder\.text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.',
     r'backbone.language_backbone.encoder.transformer.resblocks.\1.attn.out_proj.'),
    (r'^text_encoder\.text_model\.encoder\.layers\.(\d+)\.self_attn\.in_proj_',
     r'backbone.language_backbone.encoder.transformer.resblocks.\1.attn.in_proj_'),
    (r'^text_encoder\.text_model\.encoder\.layers\.(\d+)\.layer_norm(\d)\.',
     r'backbone.language_backbone.encoder.transformer.resblocks.\1.ln_\2.'),
    (r'^text_encoder\.text_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.',
     r'backbone.language_backbone.encoder.transformer.resblocks.\1.mlp.c_fc.'),
    (r'^text_encoder\.text_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.',
     r'backbone.language_backbone.encoder.transformer.resblocks.\1.mlp.c_proj.'),
    (r'^text_projection\.', 'backbone.language_backbone.resizer.'),
    (r'^geometry_encoder\.vision_layer_norm\.', 'geometry_encoder.img_pre_norm.'),
    (r'^geometry_encoder\.prompt_layer_norm\.', 'geometry_encoder.norm.'),
    (r'^geometry_encoder\.output_layer_norm\.', 'geometry_encoder.encode_norm.'),
    (r'^(geometry_encoder|detr_encoder)\.layers\.(\d+)\.cross_attn\.',
     r'\1.layers.\2.cross_attn_image.'),
    (r'^(geometry_encoder|detr_encoder)\.layers\.(\d+)\.mlp\.fc(\d)\.', r'\1.layers.\2.linear\3.'),
    (r'^(geometry_encoder|detr_encoder)\.layers\.(\d+)\.layer_norm(\d)\.', r'\1.layers.\2.norm\3.'),
    (r'^geometry_encoder\.layers\.', 'geometry_encoder.encode.'),
    (r'^detr_encoder\.layers\.', 'transformer.encoder.layers.'),
    (r'^detr_decoder\.presence_layer_norm\.', 'detr_decoder.presence_token_out_norm.'),
    (r'^detr_decoder\.output_layer_norm\.', 'detr_decoder.norm.'),
    (r'^detr_decoder\.presence_head\.', 'detr_decoder.presence_token_head.'),
    (r'^detr_decoder\.box_head\.', 'detr_decoder.bbox_embed.'),
    (r'^detr_decoder\.instance_box_head\.', 'detr_decoder.instance_bbox_embed.'),
    (r'^detr_decoder\.box_rpb_embed_([xy])\.', r'detr_decoder.boxRPB_embed_\1.'),
    (r'^detr_decoder\.layers\.(\d+)\.text_cross_attn\.', r'detr_decoder.layers.\1.ca_text.'),
    (r'^detr_decoder\.layers\.(\d+)\.vision_cross_attn\.', r'detr_decoder.layers.\1.cross_attn.'),
    (r'^detr_decoder\.layers\.(\d+)\.mlp\.fc(\d)\.', r'detr_decoder.layers.\1.linear\2.'),
    (r'^detr_decoder\.layers\.(\d+)\.vision_cross_attn_layer_norm\.',
     r'detr_decoder.layers.\1.norm1.'),
    (r'^detr_decoder\.layers\.(\d+)\.cross_attn_layer_norm\.', r'detr_decoder.layers.\1.norm1.'),
    (r'^detr_decoder\.layers\.(\d+)\.ca_text_layer_norm\.', r'detr_decoder.layers.\1.catext_norm.'),
    (r'^detr_decoder\.layers\.(\d+)\.text_cross_attn_layer_norm\.',
     r'detr_decoder.layers.\1.catext_norm.'),
    (r'^detr_decoder\.layers\.(\d+)\.self_attn_layer_norm\.', r'detr_decoder.layers.\1.norm2.'),
    (r'^detr_decoder\.layers\.(\d+)\.mlp_layer_norm\.', r'detr_decoder.layers.\1.norm3.'),
    (r'^detr_decoder\.', 'transformer.decoder.'),
    (r'^dot_product_scoring\.text_mlp_out_norm\.', 'dot_prod_scoring.prompt_mlp.out_norm.'),
    (r'^dot_product_scoring\.text_mlp\.', 'dot_prod_scoring.prompt_mlp.'),
    (r'^dot_product_scoring\.text_proj\.', 'dot_prod_scoring.prompt_proj.'),
    (r'^dot_product_scoring\.query_proj\.', 'dot_prod_scoring.hs_proj.'),
    (r'^mask_decoder\.mask_embedder\.', 'segmentation_head.mask_predictor.mask_embed.'),
    (r'^mask_decoder\.instance_projection\.', 'segmentation_head.instance_seg_head.'),
    (r'^mask_decoder\.semantic_projection\.', 'segmentation_head.semantic_seg_head.'),
    (r'^mask_decoder\.prompt_cross_attn_norm\.', 'segmentation_head.cross_attn_norm.'),
    (r'^mask_decoder\.prompt_cross_attn\.', 'segmentation_head.cross_attend_prompt.'),
    (r'^mask_decoder\.pixel_decoder\.', 'segmentation_head.pixel_decoder.'),
]


def to_meta(state):
    """A Sam3Model state dict written as Meta's sam3.pt holds it."""
    merged = {}
    for key in state:  # q/k/v back into one tensor: qkv (vision) or in_proj_* (elsewhere)
        match = re.match(r'(.*)\.([qkv])_proj\.(weight|bias)$', key)
        if match and match.group(2) == 'q':
            base, kind = match.group(1), match.group(3)
            parts = torch.cat([state[f'{base}.{n}_proj.{kind}'] for n in 'qkv'])
            fused = f'{base}.qkv.{kind}' if base.startswith('vision_encoder') else \
                f'{base}.in_proj_{kind}'
            merged[fused] = parts
        elif not match:
            merged[key] = state[key]
    meta = {}
    for key, value in merged.items():
        key = re.sub(r'\.o_proj\.', '.out_proj.', key)
        key = re.sub(r'\.layer(\d)\.', lambda m: f'.layers.{int(m.group(1)) - 1}.', key)
        for pattern, replacement in TO_META:
            key = re.sub(pattern, replacement, key)
        if key == 'backbone.vision_backbone.trunk.pos_embed':
            value = torch.cat([torch.zeros_like(value[:, :1]), value], dim=1)  # a cls slot
        if key == 'backbone.language_backbone.encoder.text_projection':
            value = value.t()
        meta[f'detector.{key}'] = value.clone()
    return meta


@pytest.fixture(scope='module')
def small_state():
    torch.manual_seed(1)
    return build_sam3(None, SMALL).state_dict()


def test_meta_checkpoint_loads_strictly(tmp_path, small_state):
    meta = to_meta(small_state)
    assert not any('q_proj' in k or 'o_proj' in k for k in meta)
    meta['tracker.maskmem_tpos_enc'] = torch.zeros(3)  # the video tracker: ignored
    meta['detector.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis'] = torch.zeros(2)
    meta['detector.backbone.vision_backbone.sam2_convs.0.conv_1x1.weight'] = torch.zeros(2)
    torch.save({'model': meta}, tmp_path / 'sam3.pt')
    loaded = build_sam3(str(tmp_path / 'sam3.pt'), SMALL).state_dict()
    assert loaded.keys() == small_state.keys()
    for key, value in small_state.items():
        assert torch.equal(loaded[key], value), key


def test_transformers_checkpoint_loads_strictly(tmp_path, small_state):
    from safetensors.torch import save_file
    (tmp_path / 'hf').mkdir()
    save_file({k: v.contiguous() for k, v in small_state.items()},
              str(tmp_path / 'hf' / 'model.safetensors'))
    for path in (tmp_path / 'hf', tmp_path / 'hf' / 'model.safetensors'):
        loaded = build_sam3(str(path), SMALL).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in small_state.items())


def test_bad_checkpoints_name_the_problem(tmp_path, small_state):
    with pytest.raises(FileNotFoundError, match='gated.*huggingface.co/facebook/sam3'):
        build_sam3(str(tmp_path / 'sam3.pt'), SMALL)
    meta = to_meta(small_state)
    missing = next(k for k in meta if 'semantic_seg_head' in k)
    del meta[missing]
    meta['detector.some_new_head.weight'] = torch.zeros(1)
    torch.save(meta, tmp_path / 'partial.pt')
    with pytest.raises(ValueError, match=r'missing key.*semantic_projection.*unexpected key'
                                         r'.*some_new_head'):
        build_sam3(str(tmp_path / 'partial.pt'), SMALL)
    torch.save(to_meta(small_state), tmp_path / 'whole.pt')
    (tmp_path / 'cut.pt').write_bytes((tmp_path / 'whole.pt').read_bytes()[:5000])
    with pytest.raises(ValueError, match='cut.pt cannot be read'):
        read_sam3_state(tmp_path / 'cut.pt')
    with pytest.raises(ValueError, match="Sam3ViTConfig has no field 'no_such_field'"):
        build_sam3(None, dict(vision_config=dict(backbone_config=dict(no_such_field=1))))


META_KEYS = REPO / 'tests' / 'fixtures' / 'sam3_meta_keys.json'


@pytest.fixture(scope='module')
def full_size_on_meta_device():
    """The published Sam3Model's tensors (names, shapes; no memory) and its modules."""
    from transformers import Sam3Model

    from segearth_ov.weights import sam3_config
    with torch.device('meta'):
        return Sam3Model(sam3_config())


def test_every_key_of_metas_sam3_pt_maps_onto_the_detector(full_size_on_meta_device):
    """The names and shapes of every tensor of Meta's video model (the sam3.pt layout,
    written by tools/check_sam3_against_meta.py --keys) become exactly Sam3Model's
    state dict; what is dropped is the tracker, the SAM 2 neck, rotary tables and the
    point encoders, nothing else."""
    from segearth_ov.weights import SAM3_IGNORED, sam3_meta_to_transformers
    shapes = json.loads(META_KEYS.read_text())
    state = {key: torch.empty(shape, device='meta') for key, shape in shapes.items()}
    converted = sam3_meta_to_transformers(state)
    expected = full_size_on_meta_device.state_dict()
    assert sorted(converted) == sorted(expected)
    assert {k: tuple(v.shape) for k, v in converted.items()} == \
        {k: tuple(v.shape) for k, v in expected.items()}
    dropped = [k[len('detector.'):] for k in shapes
               if k.startswith('detector.') and SAM3_IGNORED.search(k[len('detector.'):])]
    points = sorted(k for k in dropped if k.startswith('geometry_encoder.points_'))
    assert points == sorted(f'geometry_encoder.points_{name}_project.{kind}'
                            for name in ('direct', 'pool', 'pos_enc')
                            for kind in ('weight', 'bias'))
    assert all(k in points or '.sam2_convs.' in k or k.endswith('.freqs_cis') for k in dropped)
    assert sum(k.startswith('tracker.') for k in shapes) > 100


def test_meta_point_encoders_are_ignored_and_nothing_else(tmp_path, small_state):
    meta = to_meta(small_state)
    for name in ('direct', 'pool', 'pos_enc'):
        for kind in ('weight', 'bias'):
            meta[f'detector.geometry_encoder.points_{name}_project.{kind}'] = torch.zeros(2)
    torch.save({'model': meta}, tmp_path / 'sam3.pt')
    loaded = build_sam3(str(tmp_path / 'sam3.pt'), SMALL).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in small_state.items())
    meta['detector.geometry_encoder.points_other_project.weight'] = torch.zeros(2)
    torch.save({'model': meta}, tmp_path / 'other.pt')
    with pytest.raises(ValueError, match='unexpected key.*points_other_project'):
        build_sam3(str(tmp_path / 'other.pt'), SMALL)


def test_every_layer_norm_has_metas_eps(full_size_on_meta_device):
    """Meta's LayerNorms all use eps 1e-5 (transformers' Sam3Config defaults to 1e-6)."""
    for model in (full_size_on_meta_device, build_sam3(None, SMALL)):
        norms = {name: module.eps for name, module in model.named_modules()
                 if isinstance(module, torch.nn.LayerNorm)}
        assert len(norms) > 20
        assert set(norms.values()) == {1e-5}, {k: v for k, v in norms.items() if v != 1e-5}
        assert any(name.startswith('vision_encoder.backbone.layers.0.') for name in norms)


def test_decoder_sees_the_text_and_one_geometry_token():
    """As Meta's pipeline with its empty geometric prompt: the geometry encoder runs once
    per pass and adds one valid token after the text tokens, which the DETR decoder, the
    scoring and the mask decoder all see."""
    model = small_model(classes=['building', 'low vegetation'])
    seen = {}

    def record(name):
        def hook(module, args, kwargs):
            seen.setdefault(name, []).append(kwargs)
        return hook
    model.sam3.geometry_encoder.register_forward_pre_hook(record('geometry'), with_kwargs=True)
    model.sam3.detr_decoder.register_forward_pre_hook(record('decoder'), with_kwargs=True)
    model.sam3.mask_decoder.register_forward_pre_hook(record('mask'), with_kwargs=True)
    model.sam3.dot_product_scoring.register_forward_pre_hook(record('scoring'),
                                                             with_kwargs=True)
    model.predict(torch.rand(1, 3, 40, 40) * 255)
    _, text_mask = model.prompt_embeddings
    words = text_mask.sum(1).tolist()  # valid text tokens per prompt
    assert len(seen['geometry']) == len(seen['decoder']) == 1
    decoder_mask = seen['decoder'][0]['text_mask']
    assert decoder_mask.shape[1] > text_mask.shape[1]
    assert decoder_mask[:, :text_mask.shape[1]].tolist() == text_mask.bool().tolist()
    assert decoder_mask.sum(1).tolist() == [n + 1 for n in words]
    assert seen['decoder'][0]['text_features'].shape[1] == decoder_mask.shape[1]
    assert torch.equal(seen['scoring'][0]['text_mask'], decoder_mask)
    assert torch.equal(seen['mask'][0]['prompt_mask'], decoder_mask)


def test_full_size_architecture_builds():
    with torch.device('meta'):  # the modules and shapes, without 3 GB of random numbers
        model = build_sam3(None)
    state = model.state_dict()
    assert state['vision_encoder.backbone.embeddings.position_embeddings'].shape == (1, 576,
                                                                                     1024)
    assert state['text_encoder.text_model.embeddings.position_embedding.weight'].shape == \
        (32, 1024)
    assert model.config.detr_decoder_config.num_queries == 200
    assert len(model.vision_encoder.backbone.layers) == 32
    assert 800e6 < sum(p.numel() for p in model.parameters()) < 900e6


def test_missing_transformers_is_explained(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == 'transformers' or name.startswith('transformers.'):
            raise ImportError('No module named transformers')
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, '__import__', no_transformers)
    with pytest.raises(ImportError, match='requirements-sam3.txt'):
        build_sam3(None, SMALL)


# --- configs, evaluation, predict ---------------------------------------------------------------

PUBLISHED = {  # confidence_threshold, prob_thd, bg_idx
    'openearthmap': (0.1, 0.1, 0), 'loveda': (0.5, 0.5, 0), 'isaid': (0.4, 0.5, 0),
    'potsdam': (0.2, 0.1, 5), 'vaihingen': (0.4, 0.1, 5), 'uavid': (0.3, 0.3, 0),
    'udd5': (0.5, 0.1, 4), 'vdd': (0.5, 0.3, 0), 'whu_aerial': (0.5, 0.4, 0),
    'whu_sat_ii': (0.5, 0.4, 0), 'inria': (0.5, 0.5, 0), 'xbd': (0.1, 0.1, 0),
    'chn6_cug': (0.5, 0.3, 0), 'deepglobe_road': (0.5, 0.4, 0),
    'massachusetts_road': (0.5, 0.3, 0), 'spacenet_road': (0.3, 0.3, 0), 'wbs_si': (0.3, 0.3, 0),
}
RENAMED = {
    'loveda': ['background', 'building,house', 'road', 'water', 'barren,bareland,soil',
               'forest,tree', 'agricultural'],
    'potsdam': ['road', 'building', 'grass', 'tree', 'car', 'clutter'],
    'vaihingen': ['road', 'building', 'grass', 'tree', 'car', 'clutter'],
}


@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_configs_carry_the_published_settings(name):
    from segearth_ov.models.text import read_name_lines
    ov3 = Config.fromfile(str(REPO / 'configs' / 'segearth_ov3' / f'cfg_{name}.py'))
    ov = Config.fromfile(str(REPO / 'configs' / f'cfg_{name}.py'))
    model = ov3.model
    assert model.type == 'SegEarthOV3' and 'clip' not in model
    assert (model.confidence_threshold, model.prob_thd, model.bg_idx) == PUBLISHED[name]
    assert (model.get('slide_crop', 0), model.get('slide_stride', 0)) == \
        ((512, 512) if name == 'openearthmap' else (0, 0))
    lines = read_name_lines(REPO / model.name_path)
    ours = read_name_lines(REPO / ov.model.name_path)
    assert lines == RENAMED.get(name, ours)
    assert ov3.test_dataloader.dataset.type == ov.test_dataloader.dataset.type
    assert ov3.test_dataloader.dataset.data_root == ov.test_dataloader.dataset.data_root
    assert ov3.test_dataloader.dataset.get('ann_file') == ov.test_dataloader.dataset.get(
        'ann_file')
    assert 'Resize' not in [step['type'] for step in ov3.test_dataloader.dataset.pipeline]


@pytest.fixture(scope='module')
def small_weights(tmp_path_factory):
    """The shrunken model's random weights in a file, so every process builds the same."""
    from safetensors.torch import save_file
    torch.manual_seed(2)
    path = tmp_path_factory.mktemp('sam3') / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in build_sam3(None, SMALL).state_dict().items()},
              str(path))
    return path


def small_config(folder, base, weights, **dataset):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'{Path(base).stem}.py'
    data = f'test_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, ' \
           f'dataset=dict(**{dataset!r}))' if dataset else ''
    path.write_text(textwrap.dedent(f'''
        _base_ = [{str(REPO / 'configs' / base)!r}]
        model = dict(checkpoint={str(weights)!r}, sam3_config={SMALL!r}, image_size=112)
        {data}
    '''))
    return path


def test_benchmark_evaluates_into_the_workbook_beside_segearth_ov(small_weights, tmp_path,
                                                                   capsys):
    import cv2

    from segearth_ov.evaluation.cli import eval_main
    from test_eval_tools import make_set, summary_rows, write_config
    make_set(tmp_path / 'data', 7, count=3, size=(40, 48))
    config = small_config(tmp_path / 'configs', 'segearth_ov3/cfg_uavid.py', small_weights,
                          data_root=str(tmp_path / 'data'),
                          data_prefix=dict(img_path='img', seg_map_path='ann'),
                          img_suffix='.png', seg_map_suffix='.png')
    results = tmp_path / 'results.xlsx'
    assert eval_main(['--config', str(config), '--work-dir', str(tmp_path / 'work'),
                      '--results', str(results)]) == 0
    stand_in = write_config(tmp_path / 'ov', 'cfg_uavid', 'cfg_uavid.py', tmp_path / 'data', 7)
    assert eval_main(['--config', str(stand_in), '--work-dir', str(tmp_path / 'work2'),
                      '--results', str(results)]) == 0
    rows, per_class = summary_rows(results)
    ov3 = next(r for r in rows if r['method'] == 'SegEarth-OV3')
    assert len(rows) == 2 and {r['method'] for r in rows} == {'SegEarth-OV', 'SegEarth-OV3'}
    assert ov3['backbone'] == 'SAM 3' and ov3['weights'].startswith('model.safetensors sha256:')
    assert (ov3['confidence_threshold'], ov3['prob_thd'], ov3['slide']) == (0.3, 0.3,
                                                                            'whole image')
    assert ov3['paper mIoU'] is None  # the paper column is SegEarth-OV's
    # the same model, run by hand on the images, scored by hand
    model = SegEarthOV3(checkpoint=str(small_weights), sam3_config=SMALL, image_size=112,
                        name_path=str(REPO / 'configs/names/uavid.txt'),
                        confidence_threshold=0.3, prob_thd=0.3)
    inter, union = np.zeros(7), np.zeros(7)
    for path in sorted((tmp_path / 'data' / 'img').iterdir()):
        rgb = cv2.imread(str(path))[..., ::-1].copy()
        image = torch.from_numpy(rgb).permute(2, 0, 1).float()[None]
        pred = model.predict(image)[0].pred_sem_seg.data[0].numpy()
        label = cv2.imread(str(tmp_path / 'data' / 'ann' / path.name), cv2.IMREAD_UNCHANGED)
        keep = label != 255
        for c in range(7):
            inter[c] += np.sum((pred[keep] == c) & (label[keep] == c))
            union[c] += np.sum((pred[keep] == c) | (label[keep] == c))
    with np.errstate(invalid='ignore'):
        miou = 100 * np.nanmean(inter / union)
    assert ov3['mIoU'] == pytest.approx(miou, abs=0.006)
    assert len([r for r in per_class if r['method'] == 'SegEarth-OV3']) == 7


def test_predict_runs_segearth_ov3(small_weights, tmp_path, capsys):
    import rasterio

    from scenes_util import smooth_scene, write_geotiff
    from segearth_ov.apis.cli import main
    write_geotiff(tmp_path / 'scene.tif', smooth_scene(48, 56))
    config = small_config(tmp_path / 'configs', 'segearth_ov3/cfg_uavid.py', small_weights)
    args = ['predict', str(tmp_path / 'scene.tif'), '--out', str(tmp_path / 'out'),
            '--config', str(config), '--classes', 'background;building,house;road',
            '--device', 'cpu', '--quiet', '--tile', '64', '--overlap', '16',
            '--vector', 'geojson', '--confidence']
    assert main(args) == 0
    summary = json.loads((tmp_path / 'out' / 'scene.tif.json').read_text())
    assert summary['method'] == 'SegEarth-OV3'
    assert summary['settings']['model']['confidence_threshold'] == 0.3
    with rasterio.open(tmp_path / 'out' / 'scene.tif.labels.tif') as ds:
        labels = ds.read(1)
    model = SegEarthOV3(checkpoint=str(small_weights), sam3_config=SMALL, image_size=112,
                        classes=['background', 'building,house', 'road'],
                        confidence_threshold=0.3)
    image = torch.from_numpy(smooth_scene(48, 56)).float()[None]
    expected = model.predict(image)[0].pred_sem_seg.data[0].numpy()
    np.testing.assert_array_equal(labels, expected)  # one tile: no blending
    assert main([*args, '--method', 'segearth-ov', '--out', str(tmp_path / 'o2')]) == 2
    assert 'is a SegEarthOV3 config' in capsys.readouterr().err
    assert main(['predict', str(tmp_path / 'scene.tif'), '--out', str(tmp_path / 'o3'),
                 '--method', 'segearth-ov3', '--classes', 'road', '--clip', 'ViT-B-16']) == 2
    assert '--sam3-checkpoint' in capsys.readouterr().err
    assert main(['predict', str(tmp_path / 'scene.tif'), '--out', str(tmp_path / 'o4'),
                 '--method', 'segearth-ov3', '--classes', 'road', '--sam3-checkpoint',
                 str(tmp_path / 'nowhere.pt')]) == 2
    err = capsys.readouterr().err
    assert 'gated' in err and 'Traceback' not in err


def test_eval_all_runs_the_sam3_configs(tmp_path, monkeypatch, capsys):
    """eval_all over configs/segearth_ov3 without data: one 'missing data' row per
    benchmark, keyed as SegEarth-OV3 rows (no model is built for a missing set)."""
    from segearth_ov.evaluation.cli import eval_all_main
    from test_eval_tools import summary_rows
    monkeypatch.setenv('SEGEARTH_OV_DATA', str(tmp_path / 'no_data'))
    results = tmp_path / 'r.xlsx'
    assert eval_all_main(['--config-dir', str(REPO / 'configs' / 'segearth_ov3'),
                          '--results', str(results), '--work-dir', str(tmp_path / 'w')]) == 0
    rows, _ = summary_rows(results)
    assert sorted(r['config'] for r in rows) == sorted(f'cfg_{n}' for n in PUBLISHED)
    assert {(r['method'], r['status']) for r in rows} == {('SegEarth-OV3', 'missing data')}
    by_name = {r['config']: r for r in rows}
    assert by_name['cfg_potsdam']['confidence_threshold'] == 0.2
    assert by_name['cfg_openearthmap']['slide'] == '512/512'
