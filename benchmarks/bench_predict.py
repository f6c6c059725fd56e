"""Large-scene inference: tiled ``segearth-ov predict`` against whole-scene inference.

A georeferenced ``--side`` x ``--side`` RGB scene is generated, then segmented in two
subprocesses (so each peak memory is its own, read from VmHWM):
  - tiled: ``OpenVocabSegmenter.predict_file`` (tiles read, blended and written window by
    window: GeoTIFF labels, overlay, JSON);
  - baseline: the whole scene read into memory and passed to the model in one call (its
    own sliding windows), as one would with the plain mmseg API.
Printed: seconds, tiles per second, megapixels per second, seconds per square kilometre
at the scene's 0.3 m pixels, peak memory, and the ratios tiled / baseline. Random weights
(speed does not depend on them): SegEarth-OV on ViT-B-16 with ``--upsampler`` (random
SimFeatUp weights unless ``--upsampler-checkpoint``), or ``--method segearth-ov3`` (the
full-size SAM 3).

    python benchmarks/bench_predict.py [--side 4096] [--tile 1024] [--overlap 128]
        [--batch-size 2] [--device cpu] [--threads 2] [--no-baseline]
        [--method segearth-ov | segearth-ov3] [--upsampler none | jbu_one | jbu_stack]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

PIXEL_METRES = 0.3

def peak_mb() -> float:
    with open('/proc/self/status') as status:
        line = next(line for line in status if line.startswith('VmHWM'))
    return int(line.split()[1]) / 1024


def make_scene(path: str, side: int) -> None:
    import numpy as np
    import rasterio
    from affine import Affine
    rng = np.random.default_rng(0)
    transform = Affine(PIXEL_METRES, 0, 500000, 0, -PIXEL_METRES, 5650000)
    with rasterio.open(path, 'w', driver='GTiff', width=side, height=side, count=3,
                       dtype='uint8', crs='EPSG:32632', tiled=True, blockxsize=256,
                       blockysize=256, transform=transform) as ds:
        for y in range(0, side, 512):  # written in strips: the generator stays small too
            h = min(512, side - y)
            yy, xx = np.mgrid[y:y + h, 0:side]
            base = np.stack([(xx // 64 * 37) % 256, (yy // 64 * 53) % 256, (xx + yy) % 256])
            noise = rng.integers(0, 24, base.shape)
            ds.write((base + noise).clip(0, 255).astype(np.uint8),
                     window=rasterio.windows.Window(0, y, side, h))


def random_upsampler(args):
    """A checkpoint file of random upsampler weights (predict loads upsamplers from files)."""
    if args.upsampler == 'none':
        return None
    import torch

    from segearth_ov.models.upsamplers import UPSAMPLERS
    torch.manual_seed(0)
    state = UPSAMPLERS[args.upsampler](feat_dim=512).state_dict()
    path = os.path.join(os.path.dirname(args.scene), f'{args.upsampler}.ckpt')
    torch.save({'state_dict': {f'upsampler.{k}': v for k, v in state.items()}}, path)
    return path


def run(mode: str, args) -> dict:
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    from segearth_ov import OpenVocabSegmenter
    if args.method == 'segearth-ov3':
        options = dict(sam3_checkpoint='none')
    else:
        options = dict(pretrained='none', upsampler=args.upsampler,
                       upsampler_checkpoint=args.upsampler_checkpoint or random_upsampler(args))
    seg = OpenVocabSegmenter(['building,roof', 'road', 'water', 'tree', 'grass'],
                             method=args.method, device=args.device,
                             batch_size=args.batch_size, tile=args.tile, overlap=args.overlap,
                             **options)
    seg.probabilities(np.zeros((1, 224, 224, 3), np.uint8))  # text embeddings, warm-up
    start = time.perf_counter()
    if mode == 'tiled':
        summary = seg.predict_file(args.scene, args.out, progress=False, overwrite=True)
        tiles = summary['tiles']
    else:
        import rasterio
        with rasterio.open(args.scene) as ds:
            image = ds.read().transpose(1, 2, 0)
        probs = seg.probabilities(image[None])
        seg.labels_from_probabilities(probs[0])
        tiles = 1
    if args.device == 'cuda':
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return dict(seconds=seconds, tiles=tiles, peak_mb=peak_mb())


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--side', type=int, default=4096)
    parser.add_argument('--tile', type=int, default=1024)
    parser.add_argument('--overlap', type=int, default=128)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--method', default='segearth-ov',
                        choices=['segearth-ov', 'segearth-ov3'])
    parser.add_argument('--upsampler', default='none', choices=['none', 'jbu_one', 'jbu_stack'])
    parser.add_argument('--upsampler-checkpoint')
    parser.add_argument('--no-baseline', action='store_true')
    parser.add_argument('--child', choices=['tiled', 'baseline'], help=argparse.SUPPRESS)
    parser.add_argument('--scene', help=argparse.SUPPRESS)
    parser.add_argument('--out', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.child, args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        scene = os.path.join(tmp, 'scene.tif')
        make_scene(scene, args.side)
        results = {}
        for mode in ['tiled'] + ([] if args.no_baseline else ['baseline']):
            command = [sys.executable, __file__, '--child', mode, '--scene', scene, '--out',
                       tmp] + sys.argv[1:]
            run_ = subprocess.run(command, capture_output=True, text=True)
            if run_.returncode != 0:
                sys.exit(f'{mode} failed:\n{run_.stderr[-3000:]}')
            results[mode] = json.loads(run_.stdout.strip().splitlines()[-1])
    mpx = args.side * args.side / 1e6
    km2 = args.side * args.side * PIXEL_METRES ** 2 / 1e6
    model = 'SegEarth-OV3 (full-size SAM 3)' if args.method == 'segearth-ov3' else \
        f'SegEarth-OV ViT-B-16, upsampler {args.upsampler}'
    print(f'{args.side}x{args.side} scene ({km2:.3f} km2 at {PIXEL_METRES} m), tile '
          f'{args.tile}, overlap {args.overlap}, batch {args.batch_size}, {args.device}, '
          f'{args.threads} threads, {model}')
    print('| run | seconds | tiles/s | Mpx/s | s / km2 | peak memory (MB) |')
    print('|---|---|---|---|---|---|')
    for mode, r in results.items():
        tiles_s = f'{r["tiles"] / r["seconds"]:.3f}' if mode == 'tiled' else '-'
        print(f'| {mode} | {r["seconds"]:.1f} | {tiles_s} | {mpx / r["seconds"]:.3f} | '
              f'{r["seconds"] / km2:.0f} | {r["peak_mb"]:.0f} |')
    if 'baseline' in results:
        t, b = results['tiled'], results['baseline']
        print(f'tiled / baseline: time {t["seconds"] / b["seconds"]:.2f}x, peak memory '
              f'{t["peak_mb"] / b["peak_mb"]:.2f}x')


if __name__ == '__main__':
    main()
