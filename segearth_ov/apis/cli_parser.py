"""The ``segearth-ov`` command line: its arguments, their types, and each method's own
options, read from the method table."""
from __future__ import annotations

import argparse
import math
from typing import List

from ..errors import DEBUG_ENV
from ..models import get_method, method_names


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


def _add_method_options(parser: argparse.ArgumentParser) -> None:
    """Every registered method's options, a group per method (a flag two methods share is
    added once); an option not given stays out of the namespace."""
    added = set()
    for name in method_names():
        method = get_method(name)
        group = parser.add_argument_group(f'{method.METHOD} options (--method {name})')
        for option in method.OPTIONS:
            if option.name in added:
                continue
            added.add(option.name)
            if option.default is True:
                group.add_argument(option.cli_flag, dest=option.name, action='store_false',
                                   default=argparse.SUPPRESS, help=option.help)
            else:
                group.add_argument(option.cli_flag, dest=option.name, choices=option.choices,
                                   type=option.type, default=argparse.SUPPRESS,
                                   help=option.help)


# the tiling defaults of predict and explore (explore repeats only what differs from them)
TILING_DEFAULTS = {'tile': 1024, 'overlap': 128, 'batch_size': 4}


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """What predict and explore both take: the method, a config, each method's options,
    the device and the tiling."""
    parser.add_argument('--method', choices=method_names(),
                        help='; '.join(f'{name}: {get_method(name).SUMMARY}'
                                       for name in method_names()) +
                             '. A --config\'s model chooses it too')
    parser.add_argument('--config', help='start from a benchmark config\'s model settings')
    _add_method_options(parser)
    parser.add_argument('--tile', type=int, default=TILING_DEFAULTS['tile'],
                        help='tile side in input pixels')
    parser.add_argument('--overlap', type=int, default=TILING_DEFAULTS['overlap'],
                        help='tile overlap; probabilities are blended across it')
    parser.add_argument('--device', choices=['cpu', 'cuda'])
    parser.add_argument('--batch-size', type=int, default=TILING_DEFAULTS['batch_size'],
                        help='tiles per forward pass')


def build_parser() -> argparse.ArgumentParser:
    """``segearth-ov predict``, ``explore`` and ``download-weights``."""
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
    _add_model_arguments(predict)
    predict.add_argument('--scale', type=_finite_positive, default=1.0,
                         help='resample the scene by this factor for the model (e.g. 0.5 '
                              'for 0.15 m imagery to work at 0.3 m); outputs keep the input grid')
    predict.add_argument('--bands', type=_bands, help='1-based bands in R,G,B order, e.g. '
                                                      '4,3,2 for Sentinel-2; one band for SAR')
    predict.add_argument('--prob-thd', type=_finite, help='background threshold (class 0)')
    predict.add_argument('--quiet', action='store_true', help='no progress bars')
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

    explore = commands.add_parser(
        'explore', help='a local web app: try class names on an image and see the result',
        description='Start a web app on this machine: open an image (or a region of a large '
                    'scene), type class names, and see the classes, their confidence and '
                    'areas; changing the words reuses the image side computed once. Stops '
                    'on Ctrl-C.')
    explore.add_argument('inputs', nargs='*', help='image files the page may open')
    _add_model_arguments(explore)
    explore.add_argument('--host', default='127.0.0.1',
                         help='address to listen on (default: this machine only)')
    explore.add_argument('--port', type=int, default=7860, help='0 picks a free port')
    explore.add_argument('--out', help='where uploads and downloads are kept (default: a new '
                                       'temporary folder, removed at the end)')
    explore.add_argument('--max-upload-mb', type=_finite_positive, default=200,
                         help='the largest image the page accepts')
    explore.add_argument('--prepared-gb', type=_finite_positive, default=4,
                         help='memory the prepared images may hold; a region that needs '
                              'more is refused (SegEarth-OV with jbu_one: about 3 GB for '
                              '1024 x 1024)')
    explore.add_argument('--debug', action='store_true',
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
