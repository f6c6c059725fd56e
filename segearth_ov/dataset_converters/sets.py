"""One converter per benchmark that needs one: raw download -> the layout its config reads.

Each converter takes the raw folder (archives may stay zipped), the output folder (the
dataset's folder under the data root) and an :class:`OutputWriter`, shows a progress bar,
and returns a one-line report. Layouts and counts are documented in ``dataset_prepare.md``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from tqdm import tqdm

from ..datasets import read_split_list
from .labels import ISPRS_COLOURS, UAVID_COLOURS, binarize, colour_to_index, crops, isaid_colours
from .sources import Source, find_sources, read_mask, read_rgb
from .writer import OutputWriter

# mmseg's ISPRS splits (tools/dataset_converters/{potsdam,vaihingen}.py)
POTSDAM_SPLITS = {
    'train': ('2_10', '2_11', '2_12', '3_10', '3_11', '3_12', '4_10', '4_11', '4_12', '5_10',
              '5_11', '5_12', '6_10', '6_11', '6_12', '6_7', '6_8', '6_9', '7_10', '7_11',
              '7_12', '7_7', '7_8', '7_9'),
    'val': ('5_15', '6_15', '6_13', '3_13', '4_14', '6_14', '5_14', '2_13', '4_15', '2_14',
            '5_13', '4_13', '3_14', '7_13'),
}
VAIHINGEN_SPLITS = {
    'train': ('area1', 'area11', 'area13', 'area15', 'area17', 'area21', 'area23', 'area26',
              'area28', 'area3', 'area30', 'area32', 'area34', 'area37', 'area5', 'area7'),
    'val': ('area6', 'area24', 'area35', 'area16', 'area14', 'area22', 'area10', 'area4',
            'area2', 'area20', 'area8', 'area31', 'area33', 'area27', 'area38', 'area12',
            'area29'),
}
ISPRS = {
    # site: (image pattern, label pattern, splits); group 1 is the tile id
    'potsdam': (r'top_potsdam_(\d+_\d+)_RGB\.tif$',
                r'top_potsdam_(\d+_\d+)_label_noBoundary\.tif$', POTSDAM_SPLITS),
    'vaihingen': (r'top_mosaic_09cm_(area\d+)\.tif$',
                  r'top_mosaic_09cm_(area\d+)_noBoundary\.tif$', VAIHINGEN_SPLITS),
}


def _by_key(sources: Iterable[Source], pattern: str) -> Dict[str, Source]:
    """Key: the pattern's groups joined by ``_``."""
    regex = re.compile(pattern)
    return {'_'.join(regex.search(source.relpath).groups()): source for source in sources}


def _pairs(image_root: Path, image_pattern: str, label_root: Path, label_pattern: str,
           what: str, keys: Optional[Sequence[str]] = None) -> List[tuple]:
    """``(key, image, label)`` for ``keys`` (default: every image found), keyed by the
    patterns' groups; fails naming the missing images or labels."""
    images = _by_key(find_sources(image_root, image_pattern), image_pattern)
    labels = _by_key(find_sources(label_root, label_pattern), label_pattern)
    if not images:
        raise FileNotFoundError(f'{what}: no images matching {image_pattern!r} under '
                                f'{image_root} (folders and zip archives are searched)')
    wanted = sorted(images) if keys is None else sorted(keys)
    missing_images = [key for key in wanted if key not in images]
    if missing_images:
        raise FileNotFoundError(f'{what}: no image for {", ".join(missing_images)} under '
                                f'{image_root} (pattern {image_pattern!r})')
    missing_labels = [key for key in wanted if key not in labels]
    if missing_labels:
        shown = ', '.join(images[key].location for key in missing_labels[:5])
        raise FileNotFoundError(f'{what}: {len(missing_labels)} images without a label under '
                                f'{label_root} (pattern {label_pattern!r}), e.g. {shown}')
    return [(key, images[key], labels[key]) for key in wanted]


def _check_same_size(image, label, image_source: Source, label_source: Source) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise ValueError(f'label {label_source.location} is {label.shape[1]}x{label.shape[0]} '
                         f'but image {image_source.location} is {image.shape[1]}x'
                         f'{image.shape[0]}')


def _colour_pair(image_source: Source, label_source: Source, colours, unknown: int):
    """``(image [H, W, 3], label [H, W], pixels of unknown colour)`` of a colour-coded
    label and its image, which must be the same size."""
    image = read_rgb(image_source)
    label, bad = colour_to_index(read_rgb(label_source), colours, unknown)
    _check_same_size(image, label, image_source, label_source)
    return image, label, bad


def _write_crops(writer: OutputWriter, image, label, size, stride, image_dir: Path,
                 label_dir: Path, names, label_pad: int = 0) -> None:
    """Crop an image and its label at the same boxes into ``image_dir`` and ``label_dir``;
    ``names((x1, y1, x2, y2))`` gives ``(image name, label name)``. The label is padded
    with ``label_pad``."""
    for (box, image_crop), (_, label_crop) in zip(crops(image, size, stride),
                                                  crops(label, size, stride, label_pad)):
        image_name, label_name = names(box)
        writer.write_image(image_dir / image_name, image_crop)
        writer.write_image(label_dir / label_name, label_crop)


def _same_name(template: str):
    """``names`` for :func:`_write_crops` when image and label share one file name;
    ``template`` is formatted with x1, y1, x2, y2."""
    def names(box):
        name = template.format(*box)
        return name, name
    return names


def _report(writer: OutputWriter, items: int, what: str, unknown: int = 0) -> str:
    note = f'; {unknown} pixels of unknown colour' if unknown else ''
    return f'{what}: {items} inputs -> {writer.summary()} files{note}'


def convert_isprs(src: Path, out: Path, writer: OutputWriter, site: str = 'potsdam',
                  splits: Sequence[str] = ('val',), crop: int = 512,
                  stride: int = 512) -> str:
    """ISPRS Potsdam (RGB tiles, noBoundary labels) or Vaihingen (IRRG tiles, eroded
    labels) -> ``img_dir/<split>`` and ``ann_dir/<split>`` crops named
    ``<tile>_<x1>_<y1>_<x2>_<y2>.png``, labels 0 (boundary) .. 6 as mmseg encodes them.

    The default stride equals the crop: mmseg's converter, called with stride 256, places
    its crops at multiples of the crop size (the stride only sets how many it tries), which
    is what gives the published 2016 Potsdam and 398 Vaihingen val crops.
    """
    image_pattern, label_pattern, split_tiles = ISPRS[site]
    jobs = [(split, pair) for split in splits
            for pair in _pairs(src, image_pattern, src, label_pattern, f'ISPRS {site} {split}',
                               split_tiles[split])]
    unknown = 0
    for split, (tile, image_source, label_source) in tqdm(jobs, desc=f'{site} tiles',
                                                          unit='tile'):
        image, label, bad = _colour_pair(image_source, label_source, ISPRS_COLOURS, 0)
        unknown += bad
        _write_crops(writer, image, label, (crop, crop), (stride, stride),
                     out / 'img_dir' / split, out / 'ann_dir' / split,
                     _same_name(tile + '_{}_{}_{}_{}.png'))
    return _report(writer, len(jobs), f'ISPRS {site}', unknown)


def convert_isaid(src: Path, out: Path, writer: OutputWriter, split: str = 'val',
                  patch: int = 896, overlap: int = 384) -> str:
    """iSAID images and ``*_instance_color_RGB.png`` semantic masks -> ``patch`` crops with
    ``overlap`` (mmseg's converter: images smaller than a patch are padded with 0 and their
    labels with 255, ignored; colours outside the iSAID palette become background), labels
    0..15 under
    ``img_dir/<split>`` and ``ann_dir/<split>`` named ``<id>_<y1>_<y2>_<x1>_<x2>``."""
    root = src / split if (src / split).is_dir() else src
    pairs = _pairs(root, r'(?:^|/)(P\d+)\.png$', root,
                   r'(?:^|/)(P\d+)_instance_color_RGB\.png$', f'iSAID {split}')
    colours, unknown, step = isaid_colours(), 0, patch - overlap
    for key, image_source, label_source in tqdm(pairs, desc='iSAID images', unit='image'):
        image, label, bad = _colour_pair(image_source, label_source, colours, 0)
        unknown += bad

        def names(box, key=key):
            x1, y1, x2, y2 = box
            stem = f'{key}_{y1}_{y2}_{x1}_{x2}'
            return f'{stem}.png', f'{stem}_instance_color_RGB.png'
        _write_crops(writer, image, label, (patch, patch), (step, step),
                     out / 'img_dir' / split, out / 'ann_dir' / split, names, label_pad=255)
    return _report(writer, len(pairs), 'iSAID', unknown)


def convert_uavid(src: Path, out: Path, writer: OutputWriter, labelled_dir: str = 'test_gt',
                  out_split: str = 'test', patch_size: Sequence[int] = (1080, 1280)) -> str:
    """UAVid ``<labelled_dir>/seqN/Images/*.png`` with colour ``seqN/Labels/*.png`` ->
    ``img_dir/<out_split>`` and ``ann_dir/<out_split>`` patches of 1280x1080 named
    ``seqN_<frame>_<x1>_<y1>.png``; Moving_Car and Static_Car both become car, unknown
    colours 255 (ignored).

    The published numbers use the test split with its ground truth, ``test_gt``, which the
    dataset's authors release separately from the images-only ``uavid_test``.
    """
    root = src if src.name == labelled_dir else src / labelled_dir
    if not root.is_dir():
        raise FileNotFoundError(
            f'UAVid: {root} not found. The benchmark is the UAVid test split with its ground '
            f'truth ({labelled_dir}, released separately by the dataset\'s authors): put it at '
            f'{src}/{labelled_dir}/seqN/Images and seqN/Labels (see dataset_prepare.md, UAVid)')
    pairs = _pairs(root, r'(seq\d+)/Images/(\d+)\.png$', root, r'(seq\d+)/Labels/(\d+)\.png$',
                   f'UAVid {labelled_dir}')
    unknown, size = 0, tuple(patch_size)
    for key, image_source, label_source in tqdm(pairs, desc='UAVid frames', unit='frame'):
        image, label, bad = _colour_pair(image_source, label_source, UAVID_COLOURS, 255)
        unknown += bad
        _write_crops(writer, image, label, size, size, out / 'img_dir' / out_split,
                     out / 'ann_dir' / out_split, _same_name(key + '_{}_{}.png'),
                     label_pad=255)
    return _report(writer, len(pairs), 'UAVid', unknown)


def _copy_or_encode(writer: OutputWriter, source: Source, path: Path) -> None:
    """Same format: copy the bytes (no re-encoding of JPEGs); else re-encode losslessly."""
    if Path(source.name).suffix.lower() == path.suffix.lower():
        writer.write_bytes(path, source.read_bytes())
    else:
        writer.write_image(path, read_rgb(source))


def _stem_pattern(suffix: str) -> str:
    return '^(.+)' + re.escape(suffix) + '$'


def convert_binary_masks(src: Path, out: Path, writer: OutputWriter, masks: str,
                         mask_suffix: str, label_dir: str, label_suffix: str = '.png',
                         images: Optional[str] = None, image_suffix: str = '.jpg',
                         image_dir: Optional[str] = None, out_image_suffix: Optional[str] = None,
                         threshold: int = 128) -> str:
    """0/255 masks (WHU, CHN6-CUG, the GlobalRoadSet parts, WBS-SI, ...) -> 0/1 labels.

    ``src/<masks>/<name><mask_suffix>`` becomes ``out/<label_dir>/<name><label_suffix>``
    (``mask >= threshold``). With ``images``, ``src/<images>/<name><image_suffix>`` is copied
    to ``out/<image_dir>/<name><out_image_suffix>``, which renames e.g. ``x_sat.jpg`` to
    ``x.jpg`` beside ``x.png``; every mask then needs its image and the other way round.
    """
    mask_root, mask_pattern = src / masks, _stem_pattern(mask_suffix)
    if images:
        pairs = _pairs(src / images, _stem_pattern(image_suffix), mask_root, mask_pattern,
                       'masks')
    else:
        found = _by_key(find_sources(mask_root, mask_pattern), mask_pattern)
        if not found:
            raise FileNotFoundError(f'no masks ending in {mask_suffix!r} in {mask_root}')
        pairs = [(key, None, mask) for key, mask in sorted(found.items())]
    for key, image_source, mask_source in tqdm(pairs, desc='masks', unit='mask'):
        label = binarize(read_mask(mask_source), threshold)
        if image_source is not None:
            _copy_or_encode(writer, image_source,
                            out / image_dir / f'{key}{out_image_suffix or image_suffix}')
        writer.write_image(out / label_dir / f'{key}{label_suffix}', label)
    return _report(writer, len(pairs), 'masks')


def convert_xbd(src: Path, out: Path, writer: OutputWriter, split: str = 'test') -> str:
    """xBD ``<split>/images/*_pre_disaster.png`` and ``<split>/targets/
    *_pre_disaster_target.png`` -> ``<split>/images_pre`` and ``<split>/targets_cvt_pre``
    (same names; every target value >= 1 becomes 1). Post-disaster images are not used."""
    pairs = _pairs(src / split / 'images', r'^(.+_pre_disaster)\.png$',
                   src / split / 'targets', r'^(.+_pre_disaster)_target\.png$', 'xBD')
    for key, image_source, target_source in tqdm(pairs, desc='xBD pre-disaster', unit='image'):
        writer.write_bytes(out / split / 'images_pre' / f'{key}.png', image_source.read_bytes())
        label = binarize(read_mask(target_source), threshold=1)
        writer.write_image(out / split / 'targets_cvt_pre' / f'{key}.png', label)
    return _report(writer, len(pairs), 'xBD')


# The published evaluation tiles (the FCtL split's test part), each cut into 1000x1000 crops.
INRIA_TEST_TILES = (
    'vienna3', 'chicago10', 'vienna20', 'austin1', 'tyrol-w25', 'vienna9', 'chicago14',
    'vienna18', 'kitsap36', 'kitsap35', 'austin22', 'kitsap34', 'austin7', 'vienna11',
    'kitsap14', 'kitsap25', 'austin12', 'vienna15', 'kitsap9', 'austin36', 'vienna6',
    'chicago23', 'tyrol-w3', 'chicago26', 'austin24', 'tyrol-w1', 'tyrol-w36')
INRIA_CITIES = ('austin', 'chicago', 'kitsap', 'tyrol-w', 'vienna')  # the labelled ones


def inria_tile_names(tiles: Iterable) -> List[str]:
    """Tile names; a bare number ``n`` stands for tile ``n`` of every labelled city."""
    names = []
    for tile in tiles:
        tile = str(tile)
        if tile.isdigit():
            names += [f'{city}{int(tile)}' for city in INRIA_CITIES]
        elif re.fullmatch(r'[a-z-]+\d+', tile):
            names.append(tile)
        else:
            raise ValueError(f'Inria: {tile!r} is neither a tile name (e.g. vienna3) nor a '
                             f'tile number')
    return list(dict.fromkeys(names))


def convert_inria(src: Path, out: Path, writer: OutputWriter, patch: int = 1000,
                  tiles: Iterable = INRIA_TEST_TILES, split: str = 'split_test') -> str:
    """Inria ``train/images/<tile>.tif`` and ``train/gt/<tile>.tif`` (0/255) for the named
    ``tiles`` (default: the 27 tiles of the published evaluation) -> ``patch`` crops under
    ``img_dir/<split>`` and ``ann_dir/<split>`` named ``<tile>_<x1>_<y1>.png``, 0/1. The
    download's unlabelled ``test/images`` tiles are never read."""
    pattern = r'(?:^|/){}/([a-z-]+\d+)\.tif$'
    pairs = _pairs(src, pattern.format('images'), src, pattern.format('gt'), 'Inria',
                   inria_tile_names(tiles))
    for name, image_source, label_source in tqdm(pairs, desc='Inria tiles', unit='tile'):
        image = read_rgb(image_source)
        label = binarize(read_mask(label_source))
        _check_same_size(image, label, image_source, label_source)
        _write_crops(writer, image, label, (patch, patch), (patch, patch),
                     out / 'img_dir' / split, out / 'ann_dir' / split,
                     _same_name(name + '_{}_{}.png'))
    return _report(writer, len(pairs), 'Inria')


# The 499 WBS-SI images of the published evaluation, shipped with the project (the config
# reads the same file).
# the published list, shipped inside the package (so a wheel has it too)
WBS_SI_SPLIT = Path(__file__).resolve().parents[1] / 'splits' / 'wbs-si_val.txt'


def convert_wbs_si(src: Path, out: Path, writer: OutputWriter,
                   split_file: Path = WBS_SI_SPLIT, threshold: int = 128) -> str:
    """WBS-SI ``Images/<name>.jpg`` and 0/255 JPEG ``Masks/<name>.jpg`` of the names in
    ``split_file`` -> ``Images/<name>.jpg`` (bytes copied) and ``Masks_cvt/<name>.png``
    (``mask >= threshold`` as 0/1; PNG, because a JPEG re-encoding of 0/1 values decodes
    to 0, 1 and 2)."""
    names = read_split_list(split_file)
    pairs = _pairs(src, r'(?:^|/)Images/([^/]+)\.jpg$', src, r'(?:^|/)Masks/([^/]+)\.jpg$',
                   'WBS-SI', names)
    for name, image_source, mask_source in tqdm(pairs, desc='WBS-SI', unit='image'):
        image = read_rgb(image_source)
        label = binarize(read_mask(mask_source), threshold)
        _check_same_size(image, label, image_source, mask_source)
        writer.write_bytes(out / 'Images' / f'{name}.jpg', image_source.read_bytes())
        writer.write_image(out / 'Masks_cvt' / f'{name}.png', label)
    return _report(writer, len(pairs), 'WBS-SI')


def convert_openearthmap(src: Path, out: Path, writer: OutputWriter,
                         split_file: Optional[Path] = None) -> str:
    """OpenEarthMap (the release without xBD tiles): the names in ``val.txt`` found under
    ``<region>/images`` and ``<region>/labels`` -> ``img_dir/val`` and ``ann_dir/val``
    (GeoTIFFs copied unchanged). Listed names absent from the release (its xBD part) are
    skipped and counted."""
    split_file = Path(split_file) if split_file else src / 'val.txt'
    names = read_split_list(split_file, ' (the OpenEarthMap release ships val.txt at its '
                                        'top level; pass --split-file)')
    images = {s.name: s for s in find_sources(src, r'(?:^|/)images/[^/]+\.tif$')}
    labels = {s.name: s for s in find_sources(src, r'(?:^|/)labels/[^/]+\.tif$')}
    present = [name for name in names if name in images]
    if not present:
        raise FileNotFoundError(f'none of the {len(names)} names in {split_file} is under '
                                f'{src}/<region>/images')
    unlabelled = [name for name in present if name not in labels]
    if unlabelled:
        raise FileNotFoundError(f'OpenEarthMap: image without a label: {unlabelled[:5]} '
                                f'(expected under <region>/labels in {src})')
    for name in tqdm(present, desc='OpenEarthMap val', unit='tile'):
        writer.write_bytes(out / 'img_dir' / 'val' / name, images[name].read_bytes())
        writer.write_bytes(out / 'ann_dir' / 'val' / name, labels[name].read_bytes())
    skipped = len(names) - len(present)
    return _report(writer, len(present), 'OpenEarthMap') + \
        (f'; {skipped} listed tiles not in the release (its xBD part) skipped' if skipped else '')


def convert_loveda(src: Path, out: Path, writer: OutputWriter, split: str = 'Val') -> str:
    """LoveDA ``<split>/{Rural,Urban}/images_png`` and ``masks_png`` (folders or the
    ``<split>.zip`` archive) -> ``img_dir/<split lower>`` and ``ann_dir/<split lower>``,
    copied unchanged (labels stay 0 no-data, 1..7; the config uses reduce_zero_label)."""
    pairs = _pairs(src, rf'(?:^|/){split}/(?:Rural|Urban)/images_png/(\d+)\.png$', src,
                   rf'(?:^|/){split}/(?:Rural|Urban)/masks_png/(\d+)\.png$', f'LoveDA {split}')
    for key, image_source, label_source in tqdm(pairs, desc=f'LoveDA {split}', unit='image'):
        writer.write_bytes(out / 'img_dir' / split.lower() / f'{key}.png',
                           image_source.read_bytes())
        writer.write_bytes(out / 'ann_dir' / split.lower() / f'{key}.png',
                           label_source.read_bytes())
    return _report(writer, len(pairs), 'LoveDA')
