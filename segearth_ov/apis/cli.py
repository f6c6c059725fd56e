"""The ``segearth-ov`` command: ``predict`` and ``download-weights``."""
from __future__ import annotations

import datetime
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from ..distributed import all_agree, launched_rank, launched_world, process_group
from ..errors import USER_ERRORS, report
from ..fileio import IMAGE_SUFFIXES, checked_folder, writable_folder
from ..geometry import check_tiling
from ..models import method_options
from .cli_parser import build_parser


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
    options = {name: getattr(args, name) for name in method_options() if hasattr(args, name)}
    if args.prob_thd is not None:
        options['prob_thd'] = args.prob_thd
    # a region run may keep a process busy for days
    rank, world, local_rank = process_group('gloo', datetime.timedelta(days=7))
    lock = _take_folder(out, args.wait, rank, world)
    segmenter = OpenVocabSegmenter(
        classes, config=args.config, method=args.method,
        device=_device(args.device, local_rank, world), batch_size=args.batch_size,
        tile=args.tile, overlap=args.overlap, scale=args.scale, bands=args.bands,
        class_chunk=args.class_chunk, outputs=outputs, area=aoi, **options)
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


def _explore(args) -> int:
    from .explore.command import explore
    try:
        return explore(args)
    except USER_ERRORS as error:
        report(error, args.debug)
        return 2


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
    """``segearth-ov`` (console script): 0 done, 1 an input failed, 2 a usage error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    import segearth_ov  # noqa: F401  (registers the model; applies the mmcv-lite shim)
    commands = dict(predict=_predict, explore=_explore, download_weights=_download)
    status = commands[args.command.replace('-', '_')](args)
    exit_file = os.environ.get(EXIT_FILE_ENV)
    if exit_file and launched_world() > 1:
        Path(f'{exit_file}.{launched_rank()}').write_text(str(status))
        return 0
    return status


if __name__ == '__main__':
    sys.exit(main())
