"""``python tools/dataset_converters/convert.py SET RAW_DIR [-o OUT] [--force] ...``"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import List, Optional

from ..datasets import benchmark_data_root
from ..errors import DEBUG_ENV, USER_ERRORS, report
from .sets import (INRIA_TEST_TILES, WBS_SI_SPLIT, convert_binary_masks, convert_inria,
                   convert_isaid, convert_isprs, convert_loveda, convert_openearthmap,
                   convert_uavid, convert_wbs_si, convert_xbd)
from .writer import OutputConflict, OutputWriter

# options every subcommand has, which are not a converter's parameters
COMMON_OPTIONS = ('src', 'out', 'force', 'debug', 'run', 'default_out', 'set')


def converter_options(convert) -> List[str]:
    """The parameters of ``convert(src, out, writer, ...)`` after the first three: the
    subcommand's options of the same names are passed to it."""
    return list(inspect.signature(convert).parameters)[3:]


def _runner(convert, **fixed):
    """Run ``convert`` with the subcommand's options named as its parameters, and ``fixed``."""
    def run(args, out, writer):
        options = {name: getattr(args, name) for name in converter_options(convert)
                   if hasattr(args, name)}
        return convert(args.src, out, writer, **options, **fixed)
    run.convert = convert
    return run


def build_parser() -> argparse.ArgumentParser:
    """One subcommand per converter, its options from the converter's parameters."""
    parser = argparse.ArgumentParser(
        description='Convert a raw benchmark download into the layout its config reads '
                    '(see dataset_prepare.md). Archives may stay zipped. Re-running is safe: '
                    'identical outputs are kept, different ones are refused without --force.')
    sets = parser.add_subparsers(dest='set', required=True, metavar='SET')

    def add(name, default_out, run, help):
        sub = sets.add_parser(name, help=help, description=help)
        sub.add_argument('src', type=Path, help='the raw download (folder)')
        sub.add_argument('-o', '--out', type=Path, default=None,
                         help=f'output folder (default: <data root>/{default_out}; the data '
                              f'root is $SEGEARTH_OV_DATA or data/)' if default_out else
                         'output folder (required)', required=default_out is None)
        sub.add_argument('--force', action='store_true',
                         help='replace existing outputs whose content differs')
        sub.add_argument('--debug', action='store_true',
                         help=f'show tracebacks of errors (or set {DEBUG_ENV}=1)')
        sub.set_defaults(run=run, default_out=default_out)
        return sub

    for site in ('potsdam', 'vaihingen'):
        sub = add(site, site, _runner(convert_isprs, site=site),
                  f'ISPRS {site.capitalize()}: tiles -> 512 crops')
        sub.add_argument('--splits', nargs='+', default=['val'], choices=['train', 'val'])
        sub.add_argument('--crop', type=int, default=512)
        sub.add_argument('--stride', type=int, default=512,
                         help='crop stride (default 512 = the published crops, see '
                              'dataset_prepare.md)')
    sub = add('isaid', 'iSAID', _runner(convert_isaid),
              'iSAID: images and colour masks -> 896 patches, 384 overlap')
    sub.add_argument('--split', default='val')
    sub.add_argument('--patch', type=int, default=896)
    sub.add_argument('--overlap', type=int, default=384)
    sub = add('uavid', 'UAVid', _runner(convert_uavid),
              'UAVid test split with its ground truth (test_gt) -> 1280x1080 patches, '
              'Moving_Car merged into car')
    sub.add_argument('--labelled-dir', default='test_gt',
                     help='folder under SRC with seqN/Images and seqN/Labels (default test_gt, '
                          'the published benchmark)')
    sub = add('binary-masks', None, _runner(convert_binary_masks),
              'building / road / water sets: 0/255 masks -> 0/1 labels')
    sub.add_argument('--masks', required=True, help='mask folder, relative to SRC')
    sub.add_argument('--mask-suffix', default='.png', help='e.g. _mask.png')
    sub.add_argument('--label-dir', default='label_cvt', help='output label folder in OUT')
    sub.add_argument('--label-suffix', default='.png', help='.png or .tif')
    sub.add_argument('--images', help='image folder, relative to SRC, to copy beside the '
                                      'labels under new names')
    sub.add_argument('--image-suffix', default='.jpg', help='e.g. _sat.jpg')
    sub.add_argument('--image-dir', default='image_cvt', help='output image folder in OUT')
    sub.add_argument('--out-image-suffix', help='default: --image-suffix')
    sub.add_argument('--threshold', type=int, default=128)
    sub = add('xbd', 'xBD', _runner(convert_xbd),
              'xBD: pre-disaster images, targets >= 1 -> 1')
    sub.add_argument('--split', default='test')
    sub = add('inria', 'Inria', _runner(convert_inria),
              'Inria: tiles -> 1000x1000 patches, 0/1')
    sub.add_argument('--patch', type=int, default=1000)
    sub.add_argument('--tiles', nargs='+', default=list(INRIA_TEST_TILES),
                     help='tile names (vienna3 ...) or numbers (n = tile n of every labelled '
                          'city); default: the 27 tiles of the published evaluation')
    sub = add('openearthmap', 'OpenEarthMap', _runner(convert_openearthmap),
              'OpenEarthMap: the val list')
    sub.add_argument('--split-file', type=Path, help='default: SRC/val.txt')
    sub = add('wbs-si', 'WBS-SI', _runner(convert_wbs_si),
              'WBS-SI: the 499 published evaluation images, masks -> 0/1 PNG labels')
    sub.add_argument('--split-file', type=Path, default=WBS_SI_SPLIT,
                     help='names to convert (default: the published list shipped in '
                          'segearth_ov/splits/)')
    sub = add('loveda', 'LoveDA', _runner(convert_loveda),
              'LoveDA: Rural + Urban of one split')
    sub.add_argument('--split', default='Val')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """``tools/convert_datasets.py``: 0 done, 1 an output conflict, 2 a bad input."""
    args = build_parser().parse_args(argv)
    out = args.out or Path(benchmark_data_root()) / args.default_out
    writer = OutputWriter(force=args.force, root=out)
    try:
        done = args.run(args, out, writer)
    except USER_ERRORS as error:  # missing or bad input, unsafe names, conflicts, full disk
        report(error, args.debug)
        print(f'(kept: {writer.summary()} files)', file=sys.stderr)
        return 1 if isinstance(error, OutputConflict) else 2
    print(f'{done}\noutput: {out}')
    return 0
