"""Segment an image with SegEarth-OV and write a colour overlay with a legend.

With no arguments it segments the synthetic sample that ships with the project
(demo/sample.png, classes in demo/classes.txt) and writes outputs/demo_overlay.png, through
the same public API as `segearth-ov predict` (segearth_ov.apis.OpenVocabSegmenter).

CLIP weights, first found wins: --pretrained; checkpoints/ViT-B-16.pt (OpenAI's file);
open_clip's cache of ViT-B-16/openai; otherwise RANDOM weights, announced loudly.
SimFeatUp is used when checkpoints/xclip_jbu_one_million_aid.ckpt exists.
"""
import argparse
import sys
import time

import numpy as np
import torch
from PIL import Image

from segearth_ov.apis import OpenVocabSegmenter, overlay_with_legend, read_class_names
from segearth_ov.fileio import atomic_path

RANDOM_BANNER = ('!' * 78 + '\n!!! NO CLIP WEIGHTS FOUND: running with RANDOM weights; the '
                 'overlay is NOT a real\n!!! segmentation. Put OpenAI\'s ViT-B-16.pt in '
                 'checkpoints/ or see README "Weights".\n' + '!' * 78)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--image', default='demo/sample.png')
    parser.add_argument('--classes', default='demo/classes.txt',
                        help='class-name file: one class per line, commas separate synonyms')
    parser.add_argument('--out', default='outputs/demo_overlay.png')
    parser.add_argument('--pretrained', default=None,
                        help='open_clip tag or local CLIP checkpoint (default: see above)')
    parser.add_argument('--upsampler-checkpoint', default=None,
                        help='SimFeatUp checkpoint (default checkpoints/'
                             'xclip_jbu_one_million_aid.ckpt, used when it exists)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--template', action='append', dest='templates', metavar='TEXT',
                        help='prompt template with {} for the class name (repeatable; '
                             'default: CLIP\'s 80 ImageNet templates)')
    args = parser.parse_args(argv)

    try:
        classes = read_class_names(args.classes)
        rgb = np.asarray(Image.open(args.image).convert('RGB'))
    except (OSError, ValueError) as error:
        parser.error(str(error))
    options = dict(upsampler='auto', upsampler_checkpoint=args.upsampler_checkpoint,
                   device=args.device, tile=max(rgb.shape[:2]), overlap=0)
    if args.templates:
        options['prompt_templates'] = args.templates
    try:
        segmenter = OpenVocabSegmenter(classes, pretrained=args.pretrained or 'auto', **options)
    except FileNotFoundError as error:
        if args.pretrained:
            parser.error(str(error))
        print(RANDOM_BANNER, file=sys.stderr, flush=True)
        segmenter = OpenVocabSegmenter(classes, pretrained='none', **options)
    else:
        print(f'CLIP weights: {segmenter.weights_source}')
    start = time.perf_counter()
    labels = segmenter(rgb)
    elapsed = time.perf_counter() - start
    title = 'SegEarth-OV' + ('' if segmenter.weights_source else ' - RANDOM WEIGHTS')
    overlay = overlay_with_legend(rgb, labels, segmenter.class_names, segmenter.palette,
                                  title=title, nodata=segmenter.nodata)
    with atomic_path(args.out) as tmp:
        overlay.save(tmp, format='PNG')
    print(f'segmented {args.image} ({rgb.shape[1]}x{rgb.shape[0]}) in {elapsed:.1f} s '
          f'on {args.device}; overlay written to {args.out}')


if __name__ == '__main__':
    main()
