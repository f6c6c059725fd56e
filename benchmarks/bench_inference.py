"""CPU/GPU seconds and peak memory per 448x448 image for SegEarthOV with ViT-B-16.

Each setting runs in its own subprocess so its peak memory (RSS, or CUDA peak allocation)
is its own. Time is split into CLIP (dense features), the upsampler and the rest (padding,
logits, global bias, stitching, post-processing); text embeddings are computed before
timing (they are cached per model). Random weights: speed does not depend on them.

    python benchmarks/bench_inference.py [--images 2] [--device cpu] [--threads 2]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

SETTINGS = {
    'no upsampler': dict(upsampler=None, backend=None),
    'jbu_one, torch op': dict(upsampler='jbu_one', backend='torch'),
    'jbu_one, native op': dict(upsampler='jbu_one', backend='native'),
}


def run_one(name, images, device, threads):
    import torch
    torch.set_num_threads(threads)
    import segearth_ov  # noqa: F401
    from segearth_ov.models import SegEarthOV
    from segearth_ov.ops import adaptive_conv_backend

    setting = SETTINGS[name]
    if setting['backend'] == 'torch':
        os.environ['SEGEARTH_OV_JBU_BACKEND'] = 'torch'
    elif setting['backend'] == 'native' and adaptive_conv_backend(
            'cuda' if device.startswith('cuda') else 'cpu') == 'torch':
        return dict(skipped='no native adaptive_conv backend available')
    up = dict(type=setting['upsampler']) if setting['upsampler'] else None
    torch.manual_seed(0)
    model = SegEarthOV(clip=dict(arch='ViT-B-16', pretrained=None), upsampler=up,
                       classes=['road', 'building,roof', 'tree', 'water', 'grass', 'barren'],
                       prompt_templates=['a satellite photo of {}.']).to(device).eval()
    model.query_embeddings  # text side is cached: keep it out of the timing

    spent = {'clip': 0.0, 'upsampler': 0.0}
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)

    def timed(module, key):
        def pre(*_):
            sync()
            module._t0 = time.perf_counter()

        def post(*_):
            sync()
            spent[key] += time.perf_counter() - module._t0
        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    timed(model.dense_clip, 'clip')
    if model.upsampler is not None:
        timed(model.upsampler, 'upsampler')
    batch = torch.randn(1, 3, 448, 448, device=device)
    model.predict(batch)  # warm-up (allocator, kernels, extension load)
    spent.update(clip=0.0, upsampler=0.0)
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(images):
        model.predict(batch)
    sync()
    total = (time.perf_counter() - start) / images
    peak = (torch.cuda.max_memory_allocated() if device.startswith('cuda')
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return dict(total=total, clip=spent['clip'] / images, upsampler=spent['upsampler'] / images,
                rest=total - (spent['clip'] + spent['upsampler']) / images,
                peak_mib=peak / 2 ** 20)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--images', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--only', nargs='*', choices=list(SETTINGS))
    parser.add_argument('--_child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        print(json.dumps(run_one(args._child, args.images, args.device, args.threads)))
        return
    rows = []
    for name in args.only or SETTINGS:
        cmd = [sys.executable, __file__, '--_child', name, '--images', str(args.images),
               '--device', args.device, '--threads', str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f'{name} failed:\n{out.stderr[-3000:]}')
        rows.append((name, json.loads(out.stdout.strip().splitlines()[-1])))
    peak = 'peak CUDA MiB' if args.device.startswith('cuda') else 'peak RSS MiB'
    print(f'SegEarthOV ViT-B-16, 448x448 image (9 windows of 224), {args.device}, '
          f'{args.threads} threads, {args.images} image(s) after one warm-up\n')
    print(f'| setting | s / image | CLIP s | upsampler s | rest s | {peak} |')
    print('|---|---|---|---|---|---|')
    for name, r in rows:
        if 'skipped' in r:
            print(f'| {name} | skipped: {r["skipped"]} | | | | |')
            continue
        print(f'| {name} | {r["total"]:.2f} | {r["clip"]:.2f} | {r["upsampler"]:.2f} | '
              f'{r["rest"]:.2f} | {r["peak_mib"]:.0f} |')


if __name__ == '__main__':
    main()
