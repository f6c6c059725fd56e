"""Check the SegEarth-OV3 backend against Meta's own SAM 3 code, on seeded random weights.

Builds Meta's detector (the ``sam3`` package, not a dependency of this project: install it
beside the project, e.g. ``pip install --no-deps sam3==0.1.4 iopath einops pycocotools
psutil``), gives it random weights, converts them with this project's loader (the same
renaming a real ``sam3.pt`` goes through) and compares the raw grounding outputs of both
models on one random view and a few prompts: query logits, presence logit, instance mask
logits and semantic logits, with Meta's empty geometric prompt on both sides. The full model
runs on the CPU (about 4 GB, a few minutes).

Also writes, with ``--keys FILE``, the names and shapes of every tensor of Meta's video model
(``detector.*`` and ``tracker.*``, the layout of ``sam3.pt``) as the JSON fixture the tests
check the key rules on.

    python tools/check_sam3_against_meta.py [--keys tests/fixtures/sam3_meta_keys.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch
from torch.overrides import TorchFunctionMode


class _CudaToCpu(TorchFunctionMode):
    """Meta's code creates a few tables with ``device='cuda'`` and pins memory: keep both on
    the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, '__name__', '') == 'pin_memory':
            return args[0]
        kwargs = dict(kwargs or {})
        if str(kwargs.get('device', '')).startswith('cuda'):
            kwargs['device'] = 'cpu'
        return func(*args, **kwargs)


def _meta_bpe_path() -> str:
    """The CLIP BPE vocabulary that open_clip ships (Meta's wheel leaves it out)."""
    import open_clip
    return os.path.join(os.path.dirname(open_clip.__file__), 'bpe_simple_vocab_16e6.txt.gz')


def write_key_fixture(path: str) -> None:
    from sam3.model_builder import build_sam3_video_model
    with _CudaToCpu():
        model = build_sam3_video_model(checkpoint_path=None, load_from_HF=False, device='cpu',
                                       bpe_path=_meta_bpe_path())
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    lines = [f'  {json.dumps(key)}: {json.dumps(shape)}' for key, shape in shapes.items()]
    with open(path, 'w') as handle:
        handle.write('{\n' + ',\n'.join(lines) + '\n}\n')
    print(f'{len(shapes)} keys -> {path}')


def compare(prompts, seed: int, unfixed: bool = False) -> float:
    from sam3.model_builder import build_sam3_image_model

    from segearth_ov.models.segearth_ov3 import empty_geometry_prompt, tokenize_prompts
    from segearth_ov.weights import build_sam3, sam3_meta_to_transformers

    torch.manual_seed(seed)
    with _CudaToCpu():
        meta = build_sam3_image_model(checkpoint_path=None, load_from_HF=False, device='cpu',
                                      bpe_path=_meta_bpe_path()).eval()
    with torch.no_grad():  # Meta's builder leaves some tensors uninitialised: set them all
        for name, value in meta.named_parameters():
            if value.dim() == 1 and ('norm' in name or name.endswith('.gamma')) and \
                    name.endswith('weight'):
                value.copy_(1 + 0.1 * torch.randn_like(value))
            elif value.dim() == 1:
                value.copy_(0.02 * torch.randn_like(value))
            else:
                value.copy_(torch.randn_like(value) / value[0].numel() ** 0.5)
    state = {f'detector.{key}': value for key, value in meta.state_dict().items()}
    ours = build_sam3(None)
    if unfixed:  # transformers' defaults, to show what the fixes change
        from transformers import Sam3Config, Sam3Model
        ours = Sam3Model(Sam3Config())
    ours.load_state_dict(sam3_meta_to_transformers(state), strict=True)
    ours.eval()

    torch.manual_seed(seed + 1)
    pixels = torch.rand(1, 3, 1008, 1008) * 2 - 1
    worst = 0.0
    with torch.inference_mode(), _CudaToCpu():
        backbone = meta.backbone.forward_image(pixels)
        vision = ours.get_vision_features(pixel_values=pixels)
        for prompt in prompts:
            backbone.update(meta.backbone.forward_text([prompt], device='cpu'))
            find = _find_stage()
            theirs = meta.forward_grounding(backbone_out=backbone, find_input=find,
                                            geometric_prompt=meta._get_dummy_prompt(),
                                            find_target=None)
            ids, mask = tokenize_prompts([prompt])
            mine = ours(vision_embeds=vision, input_ids=ids, attention_mask=mask,
                        **({} if unfixed else empty_geometry_prompt(1, 'cpu')))
            pairs = {'query logits': (mine.pred_logits, theirs['pred_logits'][..., 0]),
                     'presence logit': (mine.presence_logits, theirs['presence_logit_dec']),
                     'mask logits': (mine.pred_masks, theirs['pred_masks']),
                     'semantic logits': (mine.semantic_seg, theirs['semantic_seg'])}
            for name, (a, b) in pairs.items():
                diff = (a.float() - b.float().reshape(a.shape)).abs().max().item()
                scale = b.float().abs().max().item()
                if not (math.isfinite(diff) and math.isfinite(scale)):
                    diff = math.inf  # a NaN anywhere is a failure, not a match
                worst = max(worst, diff)
                print(f'{prompt!r:>14} {name:>16}: max |diff| {diff:.2e} (values up to '
                      f'{scale:.2f})')
    return worst


def _find_stage():
    from sam3.model.data_misc import FindStage
    return FindStage(img_ids=torch.tensor([0]), text_ids=torch.tensor([0]), input_boxes=None,
                     input_boxes_mask=None, input_boxes_label=None, input_points=None,
                     input_points_mask=None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--keys', help='write the key fixture (names and shapes) here')
    parser.add_argument('--prompts', default='building;road;tree,forest',
                        help='prompts separated by ";"')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--tolerance', type=float, default=1e-4)
    parser.add_argument('--unfixed', action='store_true',
                        help="transformers' Sam3Config defaults (LayerNorm eps 1e-6) and no "
                             'geometry token, as this project had them: shows the difference')
    args = parser.parse_args(argv)
    try:
        import sam3  # noqa: F401
    except ImportError:
        print("Meta's sam3 package is not installed: pip install --no-deps sam3==0.1.4 "
              'iopath einops pycocotools psutil (beside this project, not into it)')
        return 2
    if args.keys:
        write_key_fixture(args.keys)
    worst = compare(args.prompts.split(';'), args.seed, args.unfixed)
    print(f'worst difference {worst:.2e}: {"MATCH" if worst <= args.tolerance else "DIFFER"}')
    return 0 if worst <= args.tolerance else 1


if __name__ == '__main__':
    sys.exit(main())
