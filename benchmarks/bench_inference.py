"""CPU/GPU seconds and peak memory per 448x448 image for SegEarthOV with ViT-B-16.

Each setting runs in its own subprocess so its peak memory (RSS, or CUDA peak allocation)
is its own. Time is split into CLIP (dense features), the upsampler (the upsampled cosine
logits) and the rest (padding, global bias, stitching, post-processing); text embeddings
are computed before timing. Random weights: speed does not depend on them.

*upsampler share* is the upsampler's part of its own process's time and *x own CLIP* that
process's time over its own CLIP time: both compare within one process, so they do not move
with how busy the machine is, as the ratio to the no-upsampler process does.

Settings: no upsampler (the baseline of the ratios), the upsamplers on the segmentor's
exact low-rank path, and ``jbu_one, feature path``, the same numbers computed by building
the 512-channel upsampled feature map (what the segmentor did before). The last table times
the text side: encoding the class names cold, and again from the on-disk cache.

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
    'jbu_one, feature path': dict(upsampler='jbu_one', backend='native', feature_path=True),
    'jbu_one': dict(upsampler='jbu_one', backend='native'),
    'jbu_stack': dict(upsampler='jbu_stack', backend='native'),
    'jbu_one, torch op': dict(upsampler='jbu_one', backend='torch'),
}
DEFAULT = ['no upsampler', 'jbu_one, feature path', 'jbu_one', 'jbu_stack']
CLASSES = ['road', 'building,roof', 'tree', 'water', 'grass', 'barren']


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
                       classes=CLASSES, prompt_templates=['a satellite photo of {}.']
                       ).to(device).eval()
    model.query_embeddings  # text side is cached: keep it out of the timing

    spent = {'clip': 0.0, 'upsampler': 0.0}
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)

    def timed(fn, key):
        def run(*args, **kwargs):
            sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            spent[key] += time.perf_counter() - start
            return out
        return run

    model.dense_clip.forward = timed(model.dense_clip.forward, 'clip')
    if model.upsampler is not None:
        logits = model.upsampler.feature_cosine_logits if setting.get('feature_path') \
            else model.upsampler.cosine_logits
        model.upsampler.cosine_logits = timed(logits, 'upsampler')
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


def run_text(device, threads):
    """Seconds to encode the class names with the 80 templates: a cold cache, then a second
    model on the same weights file (the cache a rerun of a config or class list finds)."""
    import tempfile

    import torch
    torch.set_num_threads(threads)
    folder = tempfile.mkdtemp()
    os.environ['SEGEARTH_OV_TEXT_CACHE'] = os.path.join(folder, 'cache')
    import open_clip

    import segearth_ov  # noqa: F401
    from segearth_ov.models import SegEarthOV
    torch.manual_seed(0)
    weights = os.path.join(folder, 'clip.pt')
    torch.save(open_clip.create_model('ViT-B-16').state_dict(), weights)
    times = []
    for _ in range(2):
        model = SegEarthOV(clip=dict(arch='ViT-B-16', pretrained=weights), classes=CLASSES,
                           upsampler=None).to(device).eval()
        start = time.perf_counter()
        model.query_embeddings
        times.append(time.perf_counter() - start)
    return dict(first=times[0], second=times[1], prompts=80 * 7)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--images', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--only', nargs='*', choices=list(SETTINGS) + ['text'])
    parser.add_argument('--_child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        result = run_text(args.device, args.threads) if args._child == 'text' else \
            run_one(args._child, args.images, args.device, args.threads)
        print(json.dumps(result))
        return
    rows = []
    for name in args.only or DEFAULT + ['text']:
        cmd = [sys.executable, __file__, '--_child', name, '--images', str(args.images),
               '--device', args.device, '--threads', str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f'{name} failed:\n{out.stderr[-3000:]}')
        rows.append((name, json.loads(out.stdout.strip().splitlines()[-1])))
    peak = 'peak CUDA MiB' if args.device.startswith('cuda') else 'peak RSS MiB'
    print(f'SegEarthOV ViT-B-16, 448x448 image (9 windows of 224), {args.device}, '
          f'{args.threads} threads, {args.images} image(s) after one warm-up\n')
    print(f'| setting | s / image | x no upsampler | CLIP s | upsampler s | upsampler share '
          f'| x own CLIP | rest s | {peak} |')
    print('|---|---|---|---|---|---|---|---|---|')
    base = dict(rows).get('no upsampler', {}).get('total')
    for name, r in rows:
        if name == 'text':
            continue
        if 'skipped' in r:
            print(f'| {name} | skipped: {r["skipped"]} | | | | | | | |')
            continue
        ratio = f'{r["total"] / base:.2f}' if base else '-'
        print(f'| {name} | {r["total"]:.2f} | {ratio} | {r["clip"]:.2f} | '
              f'{r["upsampler"]:.2f} | {100 * r["upsampler"] / r["total"]:.0f}% | '
              f'{r["total"] / r["clip"]:.2f} | {r["rest"]:.2f} | {r["peak_mib"]:.0f} |')
    text = dict(rows).get('text')
    if text:
        print(f'\n| text encoding ({text["prompts"]} prompts) | first run s | second run s |')
        print('|---|---|---|')
        print(f'| 6 classes (7 names) x 80 templates | {text["first"]:.2f} | '
              f'{text["second"]:.3f} |')


if __name__ == '__main__':
    main()
