"""Benchmark datasets, registered in mmseg's ``DATASETS`` from one table.

Every benchmark dataset resolves a relative ``data_root`` against the benchmark data folder
(``data/`` by default, ``$SEGEARTH_OV_DATA`` overrides it; an absolute ``data_root``, e.g.
from ``--cfg-options``, is used as is), and fails early with a message naming the missing
folder or label file and the section of ``dataset_prepare.md`` to read.

Sets mmseg already defines (LoveDA, Potsdam, Vaihingen, iSAID) are mmseg's own classes,
subclassed only to add that behaviour; the binary building / road / water sets share one
definition.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

from mmcv.transforms import BaseTransform
from mmseg.datasets import BaseSegDataset, ISPRSDataset, LoveDADataset, PotsdamDataset, iSAIDDataset
from mmseg.registry import DATASETS, TRANSFORMS

DATA_ROOT_ENV = 'SEGEARTH_OV_DATA'


def benchmark_data_root() -> str:
    """The folder that holds every benchmark (``$SEGEARTH_OV_DATA`` or ``data``)."""
    return os.environ.get(DATA_ROOT_ENV) or 'data'


def read_split_list(path, hint: str = '') -> List[str]:
    """Image names of a split list: one per line, without suffix, blank lines skipped."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'split file {path} not found{hint}')
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def resolve_data_root(data_root: str) -> str:
    """A config's relative ``data_root`` under :func:`benchmark_data_root`."""
    if not data_root or osp.isabs(data_root):
        return data_root
    return osp.join(benchmark_data_root(), data_root)


class BenchmarkDataset:
    """Mixin: data-root resolution and early, named errors for missing data."""
    PREPARE_SECTION = ''

    def __init__(self, data_root: str = '', **kwargs):
        super().__init__(data_root=resolve_data_root(data_root), **kwargs)

    def _missing(self, what: str, path: str) -> FileNotFoundError:
        return FileNotFoundError(
            f'{type(self).__name__}: {what} {path} not found. Prepare the data as described in '
            f'dataset_prepare.md, section "{self.PREPARE_SECTION}". Benchmarks are looked up '
            f'under {benchmark_data_root()!r} (set ${DATA_ROOT_ENV} or pass '
            f'--cfg-options test_dataloader.dataset.data_root=/path/to/set).')

    def _find(self, folder: str, stem: str, suffixes: Tuple[str, ...]) -> Optional[str]:
        for suffix in suffixes:
            path = osp.join(folder, stem + suffix)
            if osp.isfile(path):
                return path
        return None

    def _image_stems(self, img_dir: str, suffixes: Tuple[str, ...]) -> List[Tuple[str, str]]:
        """``(stem, image path)`` for every image under ``img_dir`` (recursively) or, with a
        split file, for every name it lists (one per line, without suffix)."""
        if self.ann_file:
            found = []
            for name in read_split_list(self.ann_file):
                path = self._find(img_dir, name, suffixes)
                if path is None:
                    raise FileNotFoundError(
                        f'{type(self).__name__}: image {name!r} listed in split file '
                        f'{self.ann_file} not found in {img_dir} (suffixes '
                        f'{", ".join(suffixes)}); see dataset_prepare.md, section '
                        f'"{self.PREPARE_SECTION}"')
                found.append((name, path))
            return found
        found: Dict[str, str] = {}
        for root, _, files in os.walk(img_dir):
            for file in files:
                suffix = next((s for s in suffixes if file.endswith(s)), None)
                if suffix is None:
                    continue
                path = osp.join(root, file)
                stem = osp.relpath(path, img_dir)[:-len(suffix)]
                if stem in found:
                    raise ValueError(f'{type(self).__name__}: {found[stem]} and {path} are '
                                     f'the same image in two formats; keep one')
                found[stem] = path
        return sorted(found.items(), key=lambda item: item[1])

    def load_data_list(self) -> List[dict]:
        """mmseg's listing, plus: several accepted suffixes (``img_suffix`` /
        ``seg_map_suffix`` may be tuples; the first that exists is taken), split files
        resolved the same way, and errors that name the missing file."""
        img_dir = self.data_prefix.get('img_path')
        ann_dir = self.data_prefix.get('seg_map_path')
        for folder, what in ((img_dir, 'image folder'), (ann_dir, 'label folder')):
            if folder and not osp.isdir(folder):
                raise self._missing(what, folder)
        if self.ann_file and not osp.isfile(self.ann_file):
            raise self._missing('split file', self.ann_file)
        img_suffixes, seg_suffixes = _suffixes(self.img_suffix), _suffixes(self.seg_map_suffix)
        stems = self._image_stems(img_dir, img_suffixes)
        if not stems:
            raise FileNotFoundError(f'{type(self).__name__}: no images ending in '
                                    f'{" or ".join(img_suffixes)} in {img_dir}')
        data_list = []
        for stem, img_path in stems:
            info = dict(img_path=img_path, label_map=self.label_map,
                        reduce_zero_label=self.reduce_zero_label, seg_fields=[])
            if ann_dir is not None:
                seg = self._find(ann_dir, stem, seg_suffixes)
                if seg is None:
                    raise FileNotFoundError(
                        f'{type(self).__name__}: label {osp.join(ann_dir, stem + seg_suffixes[0])}'
                        f' is missing for image {img_path}')
                info['seg_map_path'] = seg
            data_list.append(info)
        return data_list


def _suffixes(suffix) -> Tuple[str, ...]:
    return (suffix,) if isinstance(suffix, str) else tuple(suffix)


OEM_CLASSES = ('background', 'bareland', 'grass', 'pavement', 'road', 'tree', 'water',
               'cropland', 'building')

# Where a public download's format is not certain, every suffix it is known in is accepted
# (the first that exists is read); a stem present in two formats is refused.
RASTER = ('.png', '.tif')
PHOTO = ('.jpg', '.png')

# name: (classes, defaults, dataset_prepare.md section)
NEW_DATASETS: Dict[str, Tuple[tuple, dict, str]] = {
    'OpenEarthMapDataset': (OEM_CLASSES, dict(img_suffix='.tif', seg_map_suffix='.tif'),
                            'OpenEarthMap'),
    'UAVidDataset': (('background', 'building', 'road', 'car', 'tree', 'vegetation', 'human'),
                     dict(), 'UAVid'),
    'UDD5Dataset': (('vegetation', 'building', 'road', 'vehicle', 'other'),
                    dict(img_suffix='.JPG'), 'UDD5'),
    'VDDDataset': (('other', 'wall', 'road', 'vegetation', 'vehicle', 'roof', 'water'),
                   dict(img_suffix='.JPG'), 'VDD'),
    # one binary-set definition for the building, road and water/flood benchmarks
    'BuildingDataset': (('background', 'building'),
                        dict(img_suffix=RASTER, seg_map_suffix=RASTER), 'Building sets'),
    'RoadDataset': (('background', 'road'), dict(img_suffix=PHOTO), 'Road sets'),
    # WBS-SI: our converter writes PNG labels, the published ones are JPEG
    'WaterDataset': (('background', 'water'),
                     dict(img_suffix='.jpg', seg_map_suffix=('.png', '.jpg')), 'WBS-SI'),
    # SAR (SegEarth-OV-2), suffixes as in the authors' released archives
    'OpenEarthMapSARDataset': (OEM_CLASSES, dict(img_suffix='.tif', seg_map_suffix='.tif'),
                               'OpenEarthMap-SAR'),
    'DDHRNetKoreaDataset': (('building', 'road', 'greenery', 'water', 'farmland'),
                            dict(img_suffix='.jpg'), 'DDHRNet'),
    'DDHRNetShandongDataset': (('farmland', 'greenery', 'road', 'building', 'water'),
                               dict(img_suffix='.jpg'), 'DDHRNet'),
    'DDHRNetXianDataset': (('building', 'road', 'farmland', 'greenery', 'water'),
                           dict(img_suffix='.jpg'), 'DDHRNet'),
    'FUSARMapDataset': (('others', 'water', 'road', 'building', 'grass'),
                        dict(img_suffix='.tif'), 'FUSAR-Map'),
    'WHUOPTSARDataset': (('farmland', 'city', 'village', 'water', 'forest', 'road', 'others'),
                         dict(img_suffix='.tif', seg_map_suffix='.tif'), 'WHU-OPT-SAR'),
    'YESegOPTSARDataset': (('bareground', 'grass', 'dense tree cover', 'city', 'water',
                            'roadway'), dict(), 'YESeg-OPT-SAR'),
    'PIERGBSARDataset': (('background', 'city', 'road', 'water', 'forest', 'cropland'),
                         dict(img_suffix='.tif', seg_map_suffix='.tif'), 'PIE-RGB-SAR'),
}

# registered name: (mmseg class, dataset_prepare.md section)
MMSEG_DATASETS = {
    'RSLoveDADataset': (LoveDADataset, 'LoveDA'),
    'RSPotsdamDataset': (PotsdamDataset, 'ISPRS Potsdam'),
    'RSVaihingenDataset': (ISPRSDataset, 'ISPRS Vaihingen'),
    'RSiSAIDDataset': (iSAIDDataset, 'iSAID'),
}


def _new_dataset(name: str, classes: tuple, defaults: dict, section: str) -> type:
    def __init__(self, img_suffix=defaults.get('img_suffix', '.png'),
                 seg_map_suffix=defaults.get('seg_map_suffix', '.png'), **kwargs):
        BenchmarkDataset.__init__(self, img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                                  **kwargs)

    return type(name, (BenchmarkDataset, BaseSegDataset), dict(
        METAINFO=dict(classes=classes), PREPARE_SECTION=section, __init__=__init__,
        __doc__=f'{name}: classes {", ".join(classes)}; see dataset_prepare.md "{section}".'))


def _register_all() -> None:
    for name, (classes, defaults, section) in NEW_DATASETS.items():
        DATASETS.register_module(name=name, module=_new_dataset(name, classes, defaults, section))
    for name, (base, section) in MMSEG_DATASETS.items():
        DATASETS.register_module(name=name, module=type(name, (BenchmarkDataset, base), dict(
            PREPARE_SECTION=section, __doc__=f'mmseg {base.__name__} with the benchmark data '
                                             f'root and early errors.')))


_register_all()


@TRANSFORMS.register_module()
class CheckLabelSize(BaseTransform):
    """Fail with the file names when a label map and its image differ in size.

    Place after ``LoadAnnotations``; compares against ``ori_shape`` (the image as read).
    """

    def transform(self, results: dict) -> dict:
        label = results.get('gt_seg_map')
        if label is not None and tuple(label.shape[:2]) != tuple(results['ori_shape'][:2]):
            raise ValueError(f'label {results.get("seg_map_path")} is {label.shape[1]}x'
                             f'{label.shape[0]} but image {results.get("img_path")} is '
                             f'{results["ori_shape"][1]}x{results["ori_shape"][0]}')
        return results
