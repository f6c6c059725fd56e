"""Segment an image with SegEarth-OV and write a colour overlay with a legend.

With no arguments it segments the synthetic sample that ships with the project
(demo/sample.png, classes in demo/classes.txt) and writes outputs/demo_overlay.png.

CLIP weights, first found wins: --pretrained; checkpoints/ViT-B-16.pt (OpenAI's file);
open_clip's cache of ViT-B-16/openai; otherwise RANDOM weights, announced loudly.
SimFeatUp is used when checkpoints/xclip_jbu_one_million_aid.ckpt exists.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

import segearth_ov  # noqa: F401  (registers the model; applies the mmcv-lite shim)
from segearth_ov.apis import overlay_with_legend, weights
from segearth_ov.models import SegEarthOV
from segearth_ov.models.text import read_class_names

def resolve_clip(pretrained):
    """``(clip config, description)``: --pretrained, else what ``segearth-ov predict`` finds
    (checkpoints/ViT-B-16.pt, then open_clip's cache), else random weights (None)."""
    try:
        return weights.resolve_clip('ViT-B-16', pretrained or 'auto')
    except FileNotFoundError:
        return dict(arch='ViT-B-16', pretrained=None), None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--image', default='demo/sample.png')
    parser.add_argument('--classes', default='demo/classes.txt',
                        help='class-name file: one class per line, commas separate synonyms')
    parser.add_argument('--out', default='outputs/demo_overlay.png')
    parser.add_argument('--pretrained', default=None,
                        help='open_clip tag or local CLIP checkpoint (default: see above)')
    parser.add_argument('--upsampler-checkpoint', default=str(weights.SIMFEATUP))
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args(argv)

    for path, what in ((args.image, 'image'), (args.classes, 'class-name file')):
        if not os.path.isfile(path):
            parser.error(f'{what} not found: {path}')
    clip_cfg, source = resolve_clip(args.pretrained)
    if source is None:
        bar = '!' * 78
        print(f'{bar}\n!!! NO CLIP WEIGHTS FOUND: running with RANDOM weights; the overlay is NOT '
              f'a real\n!!! segmentation. Put OpenAI\'s ViT-B-16.pt in checkpoints/ or see README '
              f'"Weights".\n{bar}', file=sys.stderr, flush=True)
    else:
        print(f'CLIP weights: {source}')
    upsampler = None
    if os.path.isfile(args.upsampler_checkpoint):
        upsampler = dict(type='jbu_one', checkpoint=args.upsampler_checkpoint)
    else:
        print(f'SimFeatUp checkpoint not found at {args.upsampler_checkpoint}: upsampler off')

    names = read_class_names(args.classes)
    model = SegEarthOV(clip=clip_cfg, name_path=args.classes, upsampler=upsampler,
                       prob_thd=0.0).to(args.device).eval()
    try:
        rgb = np.asarray(Image.open(args.image).convert('RGB'))
    except OSError as err:
        parser.error(f'cannot read image {args.image}: {err}')
    start = time.perf_counter()
    data = model.data_preprocessor(
        dict(inputs=[torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1)]))
    result = model.predict(data['inputs'])[0]
    labels = result.pred_sem_seg.data[0].cpu().numpy()
    elapsed = time.perf_counter() - start
    title = 'SegEarth-OV' + ('' if source else ' - RANDOM WEIGHTS')
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    overlay_with_legend(rgb, labels, names.class_names, title=title).save(args.out)
    print(f'segmented {args.image} ({rgb.shape[1]}x{rgb.shape[0]}) in {elapsed:.1f} s '
          f'on {args.device}; overlay written to {args.out}')


if __name__ == '__main__':
    main()
