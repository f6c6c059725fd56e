"""``tools/train_upsampler.py``: train a SimFeatUp upsampler for any CLIP backbone."""
from __future__ import annotations

import argparse
from typing import List, Optional

import torch
import torch.distributed as dist

from ..distributed import process_group
from ..errors import DEBUG_ENV, USER_ERRORS, report
from ..weights import no_weights
from .trainer import TrainConfig, Trainer


def build_parser() -> argparse.ArgumentParser:
    """``tools/train_upsampler.py``'s options, one per :class:`TrainConfig` field."""
    parser = argparse.ArgumentParser(
        description='Train a SimFeatUp upsampler without labels. Writes work_dir/'
                    'upsampler_step<N>.ckpt (upsampler.* weights, Lightning layout: load with '
                    'upsampler=dict(type=..., checkpoint=...)) and work_dir/train_state.pth '
                    '(for --resume).')
    parser.add_argument('--images', required=True,
                        help='folder of unlabeled images (nested; jpg/png/tif)')
    parser.add_argument('--clip', default='ViT-B-16', help='open_clip architecture')
    parser.add_argument('--pretrained', default='openai',
                        help='open_clip tag or checkpoint path (none: random, for tests)')
    parser.add_argument('--upsampler', default='jbu_one', choices=['jbu_one', 'jbu_stack'])
    parser.add_argument('--steps', type=int, help='optimiser steps (default: one epoch)')
    parser.add_argument('--batch-size', type=int, default=4, help='images per process')
    parser.add_argument('--crop', type=int, default=224)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--save-every', type=int, default=1000)
    parser.add_argument('--work-dir', default='work_dirs/simfeatup')
    parser.add_argument('--resume', help='train_state.pth (or the work dir holding it)')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none',
                        help='pytorch: run under torchrun (nccl on GPUs, gloo on CPU)')
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', choices=['cpu', 'cuda'])
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    parser.add_argument('--debug', action='store_true',
                        help=f'show tracebacks of errors (or set {DEBUG_ENV}=1)')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """``tools/train_upsampler.py``: 0 trained, 2 a usage or input error."""
    args = build_parser().parse_args(argv)
    rank, world = 0, 1
    if args.launcher == 'pytorch':
        cuda = torch.cuda.is_available() and args.device != 'cpu'
        rank, world, _ = process_group('nccl' if cuda else 'gloo')
    pretrained = None if no_weights(args.pretrained) else args.pretrained
    cfg = TrainConfig(images=args.images, clip=args.clip, pretrained=pretrained,
                      upsampler=args.upsampler, steps=args.steps, batch_size=args.batch_size,
                      crop=args.crop, lr=args.lr, save_every=args.save_every,
                      work_dir=args.work_dir, seed=args.seed, num_workers=args.num_workers,
                      device=args.device)
    try:
        trainer = Trainer(cfg, rank, world)
        if args.resume:
            trainer.resume(args.resume)
    except USER_ERRORS as error:
        report(error, args.debug)
        return 2
    path = trainer.train(progress=not args.quiet)
    if rank == 0:
        print(f'trained {trainer.step} steps on {len(trainer.dataset)} images '
              f'({len(trainer.skipped)} unreadable skipped, {trainer.non_images} non-image '
              f'files ignored); upsampler checkpoint: {path}')
    if world > 1:
        dist.destroy_process_group()
    return 0
