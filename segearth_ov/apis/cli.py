"""The ``segearth-ov`` command: ``predict`` and ``download-weights``."""
from __future__ import annotations

import argparse
import datetime
import logging
import math
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from ..distributed import all_agree, launched_rank, launched_world, process_group
from ..errors import DEBUG_ENV, USER_ERRORS, report
from ..fileio import IMAGE_SUFFIXES, checked_folder, writable_folder
from ..geometry import check_tiling


def _bands(text: str) -> List[int]:
    try:
        return [int(b) for b in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'--bands takes comma-separated band numbers, got '
                                         f'{text!r}') from None


def _number(text: str, accept=lambda value: True, what: str = 'a finite number') -> float:
    """``text`` as a finite float that ``accept`` takes, else a usage error naming ``what``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and accept(value)):
        raise argparse.ArgumentTypeError(f'expected {what}, got {text!r}')
    return value


def _finite(text: str) -> float:
    return _number(text)


def _finite_positive(text: str) -> float:
    return _number(text, lambda value: value > 0, 'a positive finite number')


def _finite_non_negative(text: str) -> float:
    return _number(text, lambda value: value >= 0, 'a finite number >= 0')


def _time(text: str) -> str:
    from .stac_index import parse_time
    try:
        return parse_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _resolved(path: Path) -> Path:
    try:
        return path.resolve(strict=path.exists())
    except (RuntimeError, OSError) as error:  # a loop of links, a dangling chain
        raise ValueError(f'input {path} cannot be followed: a loop of symbolic links or a '
                         f'broken one ({error})') from None


def expand_inputs(inputs: List[str], out: Path) -> List[Tuple[Path, Path]]:
    """``(file, relative path)`` for every input: files as given, folders expanded
    (recursively) to their image files. Files inside ``out`` (earlier outputs) are never
    inputs. Relative paths are taken from the inputs' common folder, so two inputs of one
    name in different folders keep apart under ``--out``."""
    out = out.resolve()
    files: List[Path] = []
    for item in inputs:
        path = Path(item)
        _resolved(path)
        if path.is_dir():
            found = sorted(p for p in path.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES
                           and p.is_file() and not p.resolve().is_relative_to(out))
            if not found:
                raise FileNotFoundError(f'folder {path} holds no image files '
                                        f'({", ".join(IMAGE_SUFFIXES)}) outside --out')
            files += found
        elif path.resolve().is_relative_to(out):
            raise ValueError(f'input {path} is inside the output folder {out}; outputs are '
                             f'never read as inputs')
        else:
            files.append(path)  # a missing file is reported with its own error later
    files = list(dict.fromkeys(files))
    resolved = [_resolved(f) for f in files]
    common = Path(os.path.commonpath([str(r.parent) for r in resolved])) if resolved else None
    return [(f, r.relative_to(common)) for f, r in zip(files, resolved)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='segearth-ov', description='Training-free '
                                     'open-vocabulary segmentation of remote-sensing images.')
    commands = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    predict = commands.add_parser(
        'predict', help='segment images and GeoTIFF scenes of any size',
        description='Segment images (PNG/JPEG/TIFF) and GeoTIFF scenes with your class names. '
                    'Per input: a label map (GeoTIFF with the input\'s georeferencing and a '
                    'colour table, or PNG), a colour overlay with a legend, and a JSON summary '
                    'of class areas.')
    predict.add_argument('inputs', nargs='+', help='image files and/or folders')
    names = predict.add_mutually_exclusive_group(required=True)
    names.add_argument('--classes', help='"building,roof;road;water;tree": semicolons '
                                         'separate classes, commas synonyms')
    names.add_argument('--names', help='class-name file: one class per line, commas separate '
                                       'synonyms')
    predict.add_argument('--out', required=True, help='output folder')
    predict.add_argument('--method', choices=['segearth-ov', 'segearth-ov3'],
                         help='segearth-ov (CLIP, the default) or segearth-ov3 (SAM 3, needs '
                              'requirements-sam3.txt and the gated sam3.pt); a --config\'s '
                              'model chooses it too')
    predict.add_argument('--sam3-checkpoint', default='auto',
                         help='SegEarth-OV3 weights: sam3.pt or a transformers '
                              'model.safetensors; default checkpoints/sam3.pt; none = random')
    predict.add_argument('--config', help='start from a benchmark config\'s model settings')
    predict.add_argument('--clip', help='open_clip architecture (default ViT-B-16)')
    predict.add_argument('--pretrained', default='auto',
                         help='open_clip tag, checkpoint path, or none (random weights); '
                              'default: checkpoints/ViT-B-16.pt, then open_clip\'s cache')
    predict.add_argument('--upsampler', default='auto',
                         choices=['auto', 'jbu_one', 'jbu_stack', 'none'],
                         help='auto: SimFeatUp when checkpoints/xclip_jbu_one_million_aid.ckpt '
                              'exists')
    predict.add_argument('--upsampler-checkpoint')
    predict.add_argument('--tile', type=int, default=1024, help='tile side in input pixels')
    predict.add_argument('--overlap', type=int, default=128,
                         help='tile overlap; probabilities are blended across it')
    predict.add_argument('--scale', type=_finite_positive, default=1.0,
                         help='resample the scene by this factor for the model (e.g. 0.5 '
                              'for 0.15 m imagery to work at 0.3 m); outputs keep the input grid')
    predict.add_argument('--bands', type=_bands, help='1-based bands in R,G,B order, e.g. '
                                                      '4,3,2 for Sentinel-2; one band for SAR')
    predict.add_argument('--device', choices=['cpu', 'cuda'])
    predict.add_argument('--batch-size', type=int, default=4, help='tiles per forward pass')
    predict.add_argument('--prob-thd', type=_finite, help='background threshold (class 0)')
    predict.add_argument('--quiet', action='store_true', help='no progress bars')
    predict.add_argument('--no-cache', action='store_true',
                         help='do not read or write the text-embedding cache '
                              '(~/.cache/segearth_ov/text; SEGEARTH_OV_TEXT_CACHE moves it)')
    gis = predict.add_argument_group('GIS outputs')
    gis.add_argument('--vector', choices=['gpkg', 'geojson', 'geojson-crs', 'shp'],
                     help='also write a polygon layer: one feature per connected region, with '
                          'class id, name, area and confidence; geojson is RFC 7946 (WGS 84), '
                          'geojson-crs keeps the scene\'s CRS')
    gis.add_argument('--min-area', type=_finite_non_negative, default=0.0,
                     help='drop polygons smaller than this (m^2 in a metric CRS, else pixels)')
    gis.add_argument('--simplify', type=_finite_non_negative, default=0.0,
                     help='simplify polygon outlines by this tolerance in map units')
    gis.add_argument('--no-cog', action='store_true',
                     help='write plain tiled GeoTIFFs instead of Cloud-Optimized GeoTIFFs')
    gis.add_argument('--confidence', action='store_true',
                     help='also write the winning class\'s probability (uint8, p * 254; 255 '
                          'is no data)')
    gis.add_argument('--datetime', type=_time,
                     help='acquisition time of the inputs for the STAC index (ISO 8601, e.g. '
                          '2024-06-01T10:30:00Z); default: each input\'s metadata, else the '
                          'processing time')
    gis.add_argument('--aoi', help='vector file (any CRS): compute only tiles touching it; '
                                   'pixels outside are no data')
    predict.add_argument('--split-scenes', action='store_true',
                         help='under torchrun: every process takes a band of tile rows of '
                              'every scene (for scenes too big for one process), instead of '
                              'whole inputs')
    predict.add_argument('--class-chunk', type=int, default=64,
                         help='vocabularies larger than this are scored this many classes at '
                              'a time, with bounded memory')
    predict.add_argument('--overwrite', action='store_true',
                         help='recompute inputs whose outputs exist (by default a rerun with '
                              'the same settings skips them, and other settings are refused)')
    predict.add_argument('--wait', action='store_true',
                         help='when another run is writing to --out, wait for it to end '
                              '(by default this run is refused)')
    predict.add_argument('--debug', action='store_true',
                         help=f'show tracebacks of errors (or set {DEBUG_ENV}=1)')

    download = commands.add_parser(
        'download-weights', help='fetch CLIP and the SimFeatUp checkpoint (network needed)')
    download.add_argument('--clip', default='ViT-B-16')
    download.add_argument('--pretrained', default='openai', help='open_clip tag')
    download.add_argument('--skip-clip', action='store_true')
    download.add_argument('--upsampler-checkpoint', default=None,
                          help='where to save SimFeatUp (default checkpoints/'
                               'xclip_jbu_one_million_aid.ckpt)')
    download.add_argument('--url', default=None, help=argparse.SUPPRESS)
    download.add_argument('--force', action='store_true', help='download again')
    return parser


def _device(requested: Optional[str], local_rank: int, world: int) -> Optional[str]:
    import torch
    if world > 1 and requested != 'cpu' and torch.cuda.is_available():
        return f'cuda:{local_rank % torch.cuda.device_count()}'
    return requested


def _take_folder(out: Path, wait: bool, rank: int, world: int):
    """Rank 0 takes ``out``'s lock for the whole run (the other processes of the run share
    it); every process learns whether it was had. Returns the lock (rank 0) or None."""
    from .run_folder import FolderLock
    lock, error = None, None
    if rank == 0:
        try:
            lock = FolderLock(out, wait, on_wait=lambda holder: print(
                f'{out} is in use by another run ({holder}); waiting for it to end',
                file=sys.stderr, flush=True))
        except OSError as err:
            error = err
    if world > 1 and not all_agree(error is None):
        raise error or OSError(f'output folder {out} is in use by another run (see process 0)')
    if error is not None:
        raise error
    return lock


def _build(args):
    """Everything a run needs, checked before the model is built: ``(out, inputs,
    (rank, world), lock, segmenter)``."""
    from ..models.text import ClassQueries, read_class_names
    from .aoi import AreaOfInterest
    from .inference import OpenVocabSegmenter
    from .outputs import OutputOptions
    out = Path(args.out)
    classes = read_class_names(args.names) if args.names else \
        ClassQueries.parse(args.classes, source='--classes')
    writable_folder(out)
    inputs = expand_inputs(args.inputs, out)
    check_tiling(args.tile, args.overlap, args.scale, args.batch_size)
    outputs = OutputOptions(vector=args.vector, min_area=args.min_area,
                            simplify=args.simplify, cog=not args.no_cog,
                            confidence=args.confidence, aoi=args.aoi)
    aoi = AreaOfInterest(args.aoi, progress=not args.quiet) if args.aoi else None
    options = {} if args.prob_thd is None else dict(prob_thd=args.prob_thd)
    if args.no_cache and args.method != 'segearth-ov3':
        options['text_cache'] = False
    # a region run may keep a process busy for days
    rank, world, local_rank = process_group('gloo', datetime.timedelta(days=7))
    lock = _take_folder(out, args.wait, rank, world)
    segmenter = OpenVocabSegmenter(
        classes, config=args.config, clip=args.clip, pretrained=args.pretrained,
        upsampler=args.upsampler, upsampler_checkpoint=args.upsampler_checkpoint,
        device=_device(args.device, local_rank, world), batch_size=args.batch_size,
        tile=args.tile, overlap=args.overlap, scale=args.scale, bands=args.bands,
        class_chunk=args.class_chunk, outputs=outputs, method=args.method,
        sam3_checkpoint=args.sam3_checkpoint, area=aoi, **options)
    return out, inputs, (rank, world), lock, segmenter


def _run(args, out: Path, inputs, rank: int, world: int, segmenter, manifest
         ) -> Tuple[int, int, int]:
    """Segment this process's share of ``inputs``; returns ``(failed, skipped, count)``."""
    from .inference import ScenePart
    from .run_folder import WrittenFiles
    part = None
    if args.split_scenes and world == 1:
        logging.getLogger(__name__).warning('--split-scenes: one process only (start it with '
                                            'torchrun or dist_predict.sh to split scenes)')
    if args.split_scenes and world > 1:
        mine, part = inputs, ScenePart(rank, world, all_agree)
    else:
        mine = inputs[rank::world]  # the same split in every process; one owner per input
    failed, skipped = 0, 0
    written = WrittenFiles(out, rank)
    for path, relative in mine:
        entry = dict(input=str(path), id=str(relative))
        try:
            out_dir = checked_folder(out, relative.parent)
            summary = segmenter.predict_file(path, out_dir, progress=not args.quiet,
                                             name=relative.name, overwrite=args.overwrite,
                                             part=part, locked=True, written=written)
        except Exception as error:  # one bad input must not cost the others their results
            failed += 1
            if rank == 0 or part is None:
                manifest.record(**entry, status='failed', error=str(error))
                report(error, args.debug, prefix=f'error: {path}')
            continue
        if 'part' in summary:  # a band of a scene that process 0 assembled
            continue
        status = 'skipped' if summary.get('skipped') else summary.get('status', 'done')
        if status == 'outside-aoi':
            manifest.record(**entry, status=status, outputs={})
            print(f'{path}: outside the area of interest; nothing computed')
            continue
        done = segmenter.output_paths(relative.parent, relative.name)['json']
        manifest.record(**entry, status=status, summary=str(done),
                        outputs={k: str(relative.parent / v)
                                 for k, v in summary['outputs'].items()},
                        seconds=summary.get('seconds'))
        labels = out_dir / summary['labels']
        if status == 'skipped':
            skipped += 1
            print(f'{path}: done earlier with the same settings -> {labels} '
                  f'(--overwrite recomputes)')
        else:
            top = sorted(summary['classes'], key=lambda c: -c['pixels'])[:3]
            shares = ', '.join(f'{c["name"]} {100 * c["fraction"]:.1f}%' for c in top)
            print(f'{path}: {summary["width"]}x{summary["height"]}, {summary["tiles"]} tiles '
                  f'in {summary["seconds"]:.1f} s -> {labels} ({shares})')
    return failed, skipped, len(mine)


def _predict(args) -> int:
    from .run_index import ManifestPart, read_parts, write_manifest
    from .stac_index import write_stac_index
    try:
        out, inputs, (rank, world), lock, segmenter = _build(args)
        manifest = ManifestPart(out, rank)
    except USER_ERRORS as error:
        if launched_rank() == 0:
            report(error, args.debug)
        return 2
    try:
        failed, skipped, count = _run(args, out, inputs, rank, world, segmenter, manifest)
        manifest.close()
        if world > 1:
            import torch.distributed as dist
            dist.barrier()
        if rank == 0:
            entries = read_parts(out, world)
            print(f'manifest: {write_manifest(out, entries, segmenter.settings, world)}; '
                  f'index: {write_stac_index(out, entries, args.datetime)}')
            if world > 1:  # the whole run's figures, from every process's manifest part
                count = len(entries)
                skipped = sum(e['status'] == 'skipped' for e in entries)
                failed = sum(e['status'] == 'failed' for e in entries)
    except USER_ERRORS as error:
        report(error, args.debug)
        return 2
    finally:
        if lock is not None:
            lock.release()
    if world > 1:
        dist.destroy_process_group()
    if rank == 0 and skipped:
        print(f'{skipped} of {count} inputs were already done')
    if rank == 0 and failed:
        print(f'{failed} of {count} inputs failed; the outputs of the others are in '
              f'{out}', file=sys.stderr)
    return 1 if failed else 0


def _download(args) -> int:
    from ..weights import SIMFEATUP, SIMFEATUP_URL, download_clip, download_simfeatup
    status = 0
    if not args.skip_clip:
        try:
            print(f'CLIP: {download_clip(args.clip, args.pretrained)}')
        except ConnectionError as error:
            print(f'error: {error}', file=sys.stderr)
            status = 1
    try:
        path = download_simfeatup(Path(args.upsampler_checkpoint or SIMFEATUP),
                                  args.url or SIMFEATUP_URL, force=args.force)
        print(f'SimFeatUp: {path} (git blob hash checked)')
    except (ConnectionError, ValueError) as error:
        print(f'error: {error}', file=sys.stderr)
        status = 1
    return status


# Set by dist_predict.sh: each process writes its exit status to <file>.<rank> and ends
# with 0, so torchrun does not print its own traceback for an input that failed; the script
# exits with the highest status
EXIT_FILE_ENV = 'SEGEARTH_OV_EXIT_FILE'


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    import segearth_ov  # noqa: F401  (registers the model; applies the mmcv-lite shim)
    status = _predict(args) if args.command == 'predict' else _download(args)
    exit_file = os.environ.get(EXIT_FILE_ENV)
    if exit_file and launched_world() > 1:
        Path(f'{exit_file}.{launched_rank()}').write_text(str(status))
        return 0
    return status


if __name__ == '__main__':
    sys.exit(main())
