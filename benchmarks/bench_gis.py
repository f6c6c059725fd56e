"""GIS outputs at scale: vectorising a large label map, a SkySense-O-size vocabulary, and
predict split across processes. Each measurement runs in its own subprocess, so peak
memory (VmHWM) is its own; every ratio is against a baseline timed in the same run.

    python benchmarks/bench_gis.py vectorize  [--side 4096]
        ours: vectorize_labels (1024-pixel blocks, pieces merged across block edges, written
        to a GeoPackage); baseline: rasterio.features.shapes on the whole map in memory,
        geometries only (nothing written).
    python benchmarks/bench_gis.py vocabulary [--classes 1763] [--side 1024]
        predict_file with --classes generated names (one template), scored 64 classes at
        a time; baseline: the same scene with 8 classes. Text encoding is timed cold and
        from the on-disk cache. ViT-B-16 with random weights saved to a file (the cache is keyed
        by the weights' content).
    python benchmarks/bench_gis.py processes  [--inputs 4] [--side 1024]
        segearth-ov predict over --inputs scenes: one process with 2 threads (baseline) vs
        torchrun with 2 processes of 1 thread each (this machine has 2 cores).
    python benchmarks/bench_gis.py aoi [--polygons 50000]
        reading an area of interest of that many overlapping 24-vertex polygons (a
        GeoPackage) and preparing it for one scene. ours: AreaOfInterest (pyogrio in bulk,
        spatial index, only the polygons near the scene unioned); baseline: the earlier
        reader (fiona feature by feature, shapely shapes, one union of the whole file).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def peak_mib() -> float:
    with open('/proc/self/status') as status:
        return int(next(x for x in status if x.startswith('VmHWM')).split()[1]) / 1024


def reset_peak() -> float:
    """Restart the peak (VmHWM) from the current RSS (Linux clear_refs); returns it."""
    with open('/proc/self/clear_refs', 'w') as refs:
        refs.write('5')
    return peak_mib()


def in_subprocess(function: str, **kwargs) -> dict:
    """Run ``function(**kwargs)`` of this file in a fresh interpreter; its JSON result."""
    code = (f'import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); '
            f'import bench_gis; print(json.dumps(bench_gis.{function}(**{kwargs!r})))')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode:
        sys.exit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- vectorize
def write_label_map(path: str, side: int) -> None:
    """Six classes in 16-pixel cells, written in strips."""
    import numpy as np
    import rasterio
    from affine import Affine
    rng = np.random.default_rng(0)
    with rasterio.open(path, 'w', driver='GTiff', width=side, height=side, count=1,
                       dtype='uint8', crs='EPSG:32632', nodata=255, tiled=True,
                       transform=Affine(0.3, 0, 500000, 0, -0.3, 5650000)) as ds:
        for y in range(0, side, 1024):
            h = min(1024, side - y)
            cells = rng.integers(0, 6, (h // 16 + 1, side // 16 + 1)).astype(np.uint8)
            labels = np.kron(cells, np.ones((16, 16), np.uint8))[:h, :side]
            ds.write(labels[None], window=rasterio.windows.Window(0, y, side, h))


def vectorize_ours(path: str, out: str) -> dict:
    from segearth_ov.apis.vectorize import vectorize_labels
    before = reset_peak()
    start = time.perf_counter()
    count = vectorize_labels(path, out, [f'c{i}' for i in range(6)], 'gpkg')
    return dict(seconds=time.perf_counter() - start, features=count,
                peak_mib=peak_mib() - before)


def vectorize_baseline(path: str) -> dict:
    import rasterio
    from rasterio import features
    before = reset_peak()
    start = time.perf_counter()
    with rasterio.open(path) as ds:
        labels = ds.read(1)
        count = sum(1 for _ in features.shapes(labels, mask=labels != 255,
                                               transform=ds.transform))
    return dict(seconds=time.perf_counter() - start, features=count,
                peak_mib=peak_mib() - before)


def bench_vectorize(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'labels.tif')
        write_label_map(path, args.side)
        ours = in_subprocess('vectorize_ours', path=path, out=os.path.join(tmp, 'p.gpkg'))
        base = in_subprocess('vectorize_baseline', path=path)
    print(f'vectorise {args.side} x {args.side}, 6 classes in 16-pixel cells')
    print('| | seconds | features | peak MiB above the imports |\n|---|---|---|---|')
    for name, r in (('ours: blocks + merge, GeoPackage written', ours),
                    ('baseline: whole map, shapes only', base)):
        print(f'| {name} | {r["seconds"]:.1f} | {r["features"]} | {r["peak_mib"]:.0f} |')
    print(f'ratio ours / baseline: time {ours["seconds"] / base["seconds"]:.2f}x, '
          f'peak memory {ours["peak_mib"] / base["peak_mib"]:.2f}x')


# --------------------------------------------------------------------------- vocabulary
def write_scene(path: str, side: int, seed: int = 0) -> None:
    import numpy as np
    import rasterio
    from affine import Affine
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    base = np.stack([(xx // 64 * 37) % 256, (yy // 64 * 53) % 256, (xx + yy) % 256])
    with rasterio.open(path, 'w', driver='GTiff', width=side, height=side, count=3,
                       dtype='uint8', crs='EPSG:32632',
                       transform=Affine(0.3, 0, 500000, 0, -0.3, 5650000)) as ds:
        ds.write((base + rng.integers(0, 24, base.shape)).clip(0, 255).astype('uint8'))


def random_weights(path: str) -> None:
    import torch

    from segearth_ov.weights import build_clip
    torch.manual_seed(0)
    torch.save(build_clip('ViT-B-16', None)[0].state_dict(), path)


def vocabulary_run(weights: str, scene: str, out: str, classes: int, cache: str) -> dict:
    import torch
    torch.set_num_threads(2)
    os.environ['SEGEARTH_OV_TEXT_CACHE'] = cache
    from segearth_ov import OpenVocabSegmenter
    names = [f'kind {i}' for i in range(classes)]
    seg = OpenVocabSegmenter(names, pretrained=weights, upsampler='none', device='cpu',
                             tile=1024, overlap=128, prompt_templates=['a photo of {}.'])
    start = time.perf_counter()
    seg.model.query_embeddings
    text = time.perf_counter() - start
    before = reset_peak()
    start = time.perf_counter()
    seg.predict_file(scene, out, progress=False)
    return dict(text_seconds=text, seconds=time.perf_counter() - start,
                peak_growth_mib=peak_mib() - before, chunked=seg.large_vocabulary)


def bench_vocabulary(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, 'vit_b16_random.pt')
        in_subprocess('random_weights', path=weights)
        scene = os.path.join(tmp, 'scene.tif')
        write_scene(scene, args.side)
        cache = os.path.join(tmp, 'text')
        runs = {}
        for name, classes in (('cold', args.classes), ('cached', args.classes),
                              ('baseline', 8)):
            runs[name] = in_subprocess('vocabulary_run', weights=weights, scene=scene,
                                       out=os.path.join(tmp, name), classes=classes,
                                       cache=cache)
    full = args.classes * args.side ** 2 * 4 / 2 ** 20
    print(f'{args.classes} classes, {args.side} x {args.side} scene, ViT-B-16 (random), '
          f'no upsampler, one template, 2 threads')
    print('| run | classes | text s | predict s | peak growth MiB |\n|---|---|---|---|---|')
    for key, name, classes in (('cold', 'text encoded', args.classes),
                               ('cached', 'text from the cache', args.classes),
                               ('baseline', 'baseline', 8)):
        r = runs[key]
        print(f'| {name} | {classes} | {r["text_seconds"]:.2f} | {r["seconds"]:.1f} | '
              f'{r["peak_growth_mib"]:.0f} |')
    print(f'one [Q, H, W] float32 map of the vocabulary would be {full:.0f} MiB')
    print(f'ratio {args.classes} / 8 classes: predict time '
          f'{runs["cached"]["seconds"] / runs["baseline"]["seconds"]:.2f}x; text from cache '
          f'{runs["cold"]["text_seconds"] / max(runs["cached"]["text_seconds"], 1e-9):.0f}x '
          f'faster than encoding')


# ---------------------------------------------------------------------------- processes
def bench_processes(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, 'vit_b16_random.pt')
        in_subprocess('random_weights', path=weights)
        scenes = Path(tmp, 'scenes')
        scenes.mkdir()
        for index in range(args.inputs):
            write_scene(str(scenes / f's{index}.tif'), args.side, seed=index)
        common = [str(scenes), '--pretrained', weights, '--upsampler', 'none', '--classes',
                  'building;road;water;tree;grass', '--device', 'cpu', '--quiet']
        env = dict(os.environ, SEGEARTH_OV_TEXT_CACHE=os.path.join(tmp, 'text'))
        times = {}
        runs = (('one process, 2 threads', [sys.executable, '-m', 'segearth_ov.apis.cli'],
                 dict(env, OMP_NUM_THREADS='2')),
                ('torchrun, 2 processes x 1 thread',
                 [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                  '--master_port', '29517', '-m', 'segearth_ov.apis.cli'],
                 dict(env, OMP_NUM_THREADS='1')))
        # the text cache is filled first, so both runs only segment
        subprocess.run([sys.executable, '-m', 'segearth_ov.apis.cli', 'predict', *common,
                        '--out', os.path.join(tmp, 'warm'), '--tile', '256'], env=env,
                       check=True, capture_output=True, cwd=REPO)
        for name, launcher, run_env in runs:
            start = time.perf_counter()
            subprocess.run([*launcher, 'predict', *common, '--out',
                            os.path.join(tmp, name[:3])], env=run_env, check=True,
                           capture_output=True, cwd=REPO)
            times[name] = time.perf_counter() - start
    print(f'{args.inputs} scenes of {args.side} x {args.side}, ViT-B-16 (random), no '
          f'upsampler, wall time of the whole command (start-up included)')
    print('| run | seconds |\n|---|---|')
    for name, seconds in times.items():
        print(f'| {name} | {seconds:.1f} |')
    one, two = times.values()
    print(f'speed-up of 2 processes: {one / two:.2f}x')


# ---------------------------------------------------------------------------------- aoi
def write_polygons(path: str, count: int) -> None:
    import numpy as np
    import pyogrio
    import shapely
    rng = np.random.default_rng(0)
    x, y = rng.uniform(6, 12, count), rng.uniform(45, 55, count)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    rings = [shapely.Polygon(np.stack([x[i] + 0.002 * np.cos(angles),
                                       y[i] + 0.002 * np.sin(angles)], 1))
             for i in range(count)]
    pyogrio.raw.write(path, shapely.to_wkb(np.array(rings)), field_data=[], fields=[],
                      geometry_type='Polygon', crs='EPSG:4326', driver='GPKG')


class _Scene:  # 30 km x 30 km at 9 E, 51 N
    georeferenced = True

    def __init__(self):
        import rasterio
        from affine import Affine
        self.crs = rasterio.crs.CRS.from_epsg(32632)
        self.transform = Affine(3, 0, 500000, 0, -3, 5650000)

    def bounds(self):
        return 500000, 5620000, 530000, 5650000


def aoi_ours(path: str) -> dict:
    from segearth_ov.apis.aoi import AreaOfInterest
    before = reset_peak()
    start = time.perf_counter()
    area = AreaOfInterest(path).for_scene(_Scene())
    seconds = time.perf_counter() - start
    import shapely
    inside = area.geometry.intersection(shapely.box(*_Scene().bounds()))
    return dict(seconds=seconds, area=inside.area, peak_mib=peak_mib() - before)


def aoi_baseline(path: str) -> dict:
    import fiona
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape
    from shapely.ops import unary_union
    before = reset_peak()
    start = time.perf_counter()
    with fiona.open(path) as source:
        union = unary_union([shape(f.geometry) for f in source])
    scene = _Scene()
    geometry = shape(transform_geom('EPSG:4326', scene.crs, mapping(union)))
    clipped = geometry.intersection(shape(dict(type='Polygon', coordinates=[[
        (500000, 5620000), (530000, 5620000), (530000, 5650000), (500000, 5650000)]])))
    return dict(seconds=time.perf_counter() - start, area=clipped.area,
                peak_mib=peak_mib() - before)


def bench_aoi(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'aoi.gpkg')
        write_polygons(path, args.polygons)
        size = os.path.getsize(path) / 2 ** 20
        ours = in_subprocess('aoi_ours', path=path)
        base = in_subprocess('aoi_baseline', path=path)
    print(f'area of interest: {args.polygons} polygons ({size:.0f} MB GeoPackage), '
          f'prepared for a 30 km scene')
    print('| | seconds | peak MiB above the imports |\n|---|---|---|')
    for name, r in (('ours: pyogrio in bulk, index, local union', ours),
                    ('baseline: fiona features, union of the file', base)):
        print(f'| {name} | {r["seconds"]:.1f} | {r["peak_mib"]:.0f} |')
    print(f'ratio baseline / ours: time {base["seconds"] / ours["seconds"]:.1f}x; scene area '
          f'ours {ours["area"]:.0f} m^2, baseline {base["area"]:.0f} m^2')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('what', choices=['vectorize', 'vocabulary', 'processes', 'aoi', 'all'])
    parser.add_argument('--side', type=int)
    parser.add_argument('--classes', type=int, default=1763)
    parser.add_argument('--inputs', type=int, default=4)
    parser.add_argument('--polygons', type=int, default=50000)
    args = parser.parse_args()
    sides = dict(vectorize=4096, vocabulary=1024, processes=1024, aoi=0)
    for what in sides if args.what == 'all' else [args.what]:
        run_args = argparse.Namespace(**dict(vars(args), side=args.side or sides[what]))
        globals()[f'bench_{what}'](run_args)
        print()


if __name__ == '__main__':
    main()
