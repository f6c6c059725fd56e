"""Every benchmark config: loads, its dataset builds on a generated miniature of its layout,
labels come out as the config implies, and bad data fails with named files."""
import glob
import inspect
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmseg.registry import DATASETS

from conftest import REPO, shared_path
from segearth_ov.models.text import read_class_names

CONFIGS = sorted(Path(p).name for p in glob.glob(str(REPO / 'configs' / 'cfg_*.py')))


def load(name):
    return Config.fromfile(str(REPO / 'configs' / name))


def suffix(ds_cfg, key):
    if key in ds_cfg:
        return ds_cfg[key]
    for klass in DATASETS.get(ds_cfg.type).__mro__:
        params = inspect.signature(klass.__init__).parameters
        if key in params and params[key].default is not inspect.Parameter.empty:
            return params[key].default
    raise AssertionError(f'no default {key} for {ds_cfg.type}')


def first_suffix(ds_cfg, key):
    value = suffix(ds_cfg, key)
    return value if isinstance(value, str) else value[0]


def make_miniature(root, ds_cfg, label, stems=('tile_0',)):
    """One labelled image per stem in the config's layout; a split file of the data root
    lists them (a split list shipped with the project is read as it is)."""
    base = root / ds_cfg.data_root
    img_dir = base / ds_cfg.data_prefix.img_path
    ann_dir = base / ds_cfg.data_prefix.seg_map_path
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(0).integers(0, 255, (*label.shape, 3), dtype=np.uint8)
    for stem in stems:
        assert cv2.imwrite(str(img_dir / (stem + first_suffix(ds_cfg, 'img_suffix'))), image)
        assert cv2.imwrite(str(ann_dir / (stem + first_suffix(ds_cfg, 'seg_map_suffix'))),
                           label)
    if ds_cfg.get('ann_file') and not os.path.isabs(ds_cfg.ann_file):
        (base / ds_cfg.ann_file).write_text(''.join(f'{stem}\n' for stem in stems))
    return img_dir, ann_dir


def listed_stems(ds_cfg):
    """The names of a split list shipped with the project, else one made-up stem."""
    if ds_cfg.get('ann_file') and os.path.isabs(ds_cfg.ann_file):
        return Path(ds_cfg.ann_file).read_text().split()
    return ['tile_0']


def test_all_25_benchmarks_have_a_config():
    assert len(CONFIGS) == 25
    assert sum(name.endswith('_sar.py') for name in CONFIGS) == 8


@pytest.mark.parametrize('name', CONFIGS)
def test_names_file_matches_dataset_classes(name):
    cfg = load(name)
    names = read_class_names(str(REPO / cfg.model.name_path))
    classes = DATASETS.get(cfg.test_dataloader.dataset.type).METAINFO['classes']
    assert names.num_classes == len(classes)
    assert 0 <= cfg.model.bg_idx < len(classes)


@pytest.mark.parametrize('name', CONFIGS)
def test_dataset_builds_on_its_layout_and_labels_follow_the_config(name, tmp_path, monkeypatch):
    cfg = load(name)
    ds_cfg = cfg.test_dataloader.dataset
    num_classes = len(DATASETS.get(ds_cfg.type).METAINFO['classes'])
    reduce = ds_cfg.get('reduce_zero_label', False)
    label = np.zeros((24, 40), dtype=np.uint8)
    values = range(1, num_classes + 1) if reduce else range(num_classes)
    for index, value in enumerate(values):      # vertical stripes, one per class value
        label[:, index * 40 // len(values):] = value
    stems = listed_stems(ds_cfg)
    make_miniature(tmp_path, ds_cfg, label, stems)
    monkeypatch.setenv('SEGEARTH_OV_DATA', str(tmp_path))
    dataset = DATASETS.build(ds_cfg)
    assert len(dataset) == len(stems)
    sample = dataset[0]
    gt = sample['data_samples'].gt_sem_seg.data[0].numpy()
    expected = label.astype(np.int64)
    if reduce:                                   # 0 -> ignore, k -> k - 1
        expected = np.where(expected == 0, 255, expected - 1)
    np.testing.assert_array_equal(gt, expected)
    assert sample['inputs'].shape[0] == 3
    scale = cfg.test_dataloader.dataset.pipeline[1]['scale'][0]
    assert max(sample['inputs'].shape[1:]) == scale


@pytest.mark.parametrize('name,folder,count', [('cfg_loveda.py', 'loveda', 3),
                                               ('cfg_potsdam.py', 'potsdam', 1),
                                               ('cfg_vaihingen.py', 'vaihingen', 1)])
def test_real_tiles_load_through_the_unchanged_configs(name, folder, count, tmp_path, monkeypatch):
    source = shared_path('rs_samples', folder)
    ds_cfg = load(name).test_dataloader.dataset
    for key, sub in (('img_path', 'img_dir'), ('seg_map_path', 'ann_dir')):
        link = tmp_path / ds_cfg.data_root / ds_cfg.data_prefix[key]
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source / sub, link)
    monkeypatch.setenv('SEGEARTH_OV_DATA', str(tmp_path))
    dataset = DATASETS.build(ds_cfg)
    assert len(dataset) == count
    gt = dataset[0]['data_samples'].gt_sem_seg.data.numpy()
    raw = cv2.imread(dataset.get_data_info(0)['seg_map_path'], cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(gt[0], np.where(raw == 0, 255, raw.astype(np.int64) - 1))


def test_missing_data_root_names_the_folder_and_the_guide(tmp_path, monkeypatch):
    monkeypatch.setenv('SEGEARTH_OV_DATA', str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        DATASETS.build(load('cfg_uavid.py').test_dataloader.dataset)
    message = str(info.value)
    assert str(tmp_path / 'UAVid' / 'img_dir' / 'test') in message
    assert 'dataset_prepare.md, section "UAVid"' in message and 'SEGEARTH_OV_DATA' in message


def test_absolute_data_root_overrides_the_benchmark_folder(tmp_path, monkeypatch):
    ds_cfg = load('cfg_uavid.py').test_dataloader.dataset
    make_miniature(tmp_path, ds_cfg, np.zeros((8, 8), np.uint8))
    monkeypatch.setenv('SEGEARTH_OV_DATA', '/nonexistent')
    ds_cfg.data_root = str(tmp_path / 'UAVid')
    assert len(DATASETS.build(ds_cfg)) == 1


def test_image_without_label(tmp_path, monkeypatch):
    ds_cfg = load('cfg_uavid.py').test_dataloader.dataset
    img_dir, ann_dir = make_miniature(tmp_path, ds_cfg, np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(img_dir / 'tile_1.png'), np.zeros((8, 8, 3), np.uint8))
    monkeypatch.setenv('SEGEARTH_OV_DATA', str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f'label {ann_dir / "tile_1.png"} is missing for '
                                                f'image {img_dir / "tile_1.png"}'):
        DATASETS.build(ds_cfg)


def test_label_of_another_size(tmp_path, monkeypatch):
    ds_cfg = load('cfg_uavid.py').test_dataloader.dataset
    img_dir, ann_dir = make_miniature(tmp_path, ds_cfg, np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(ann_dir / 'tile_0.png'), np.zeros((8, 9), np.uint8))
    monkeypatch.setenv('SEGEARTH_OV_DATA', str(tmp_path))
    dataset = DATASETS.build(ds_cfg)
    with pytest.raises(ValueError, match=f'label {ann_dir / "tile_0.png"} is 9x8 but image '
                                         f'{img_dir / "tile_0.png"} is 8x8'):
        dataset[0]


def test_every_error_section_exists_in_dataset_prepare():
    from segearth_ov.datasets import MMSEG_DATASETS, NEW_DATASETS
    guide = (REPO / 'dataset_prepare.md').read_text()
    sections = {section for _, _, section in NEW_DATASETS.values()}
    sections |= {section for _, section in MMSEG_DATASETS.values()}
    for section in sections:
        assert f'\n### {section}\n' in guide, section
        body = guide.split(f'\n### {section}\n')[1].split('\n### ')[0].split('\n## ')[0]
        body = ' '.join(body.split())
        assert '**Evaluates:**' in body and 'as the published protocol' in body, section
    assert '## Differences from the published protocol' in guide


SPLIT_CONFIGS = [name for name in CONFIGS if load(name).test_dataloader.dataset.get('ann_file')]


def test_split_lists_are_the_published_ones():
    assert SPLIT_CONFIGS == ['cfg_ddhrnet_korea_sar.py', 'cfg_ddhrnet_shandong_sar.py',
                             'cfg_ddhrnet_xian_sar.py', 'cfg_fusar_sar.py', 'cfg_pie_sar.py',
                             'cfg_wbs_si.py', 'cfg_yeseg_sar.py']
    wbs = Path(load('cfg_wbs_si.py').test_dataloader.dataset.ann_file)
    names = wbs.read_text().split()
    assert wbs.is_relative_to(REPO / 'configs') and len(names) == len(set(names)) == 499


@pytest.mark.parametrize('name', SPLIT_CONFIGS)
def test_split_list_selects_exactly_the_listed_images(name, tmp_path, monkeypatch):
    """The released archives hold more images than the evaluation list (train images, other
    splits): only the listed ones are read, in list order."""
    ds_cfg = load(name).test_dataloader.dataset
    listed = listed_stems(ds_cfg)
    if listed == ['tile_0']:
        listed = ['val_3', 'val_1', 'val_2']
    label = np.zeros((8, 8), np.uint8)
    make_miniature(tmp_path, ds_cfg, label, listed)
    make_miniature(tmp_path, Config(dict(ds_cfg, ann_file=None)), label, ['train_1', 'train_2'])
    monkeypatch.setenv('SEGEARTH_OV_DATA', str(tmp_path))
    dataset = DATASETS.build(ds_cfg)
    got = [Path(dataset.get_data_info(i)['img_path']).name for i in range(len(dataset))]
    assert got == [stem + first_suffix(ds_cfg, 'img_suffix') for stem in listed]


def test_listed_image_missing_names_the_list(tmp_path, monkeypatch):
    ds_cfg = load('cfg_pie_sar.py').test_dataloader.dataset
    make_miniature(tmp_path, ds_cfg, np.zeros((8, 8), np.uint8), ['a'])
    (tmp_path / ds_cfg.data_root / 'val.txt').write_text('a\nb\n')
    monkeypatch.setenv('SEGEARTH_OV_DATA', str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"image 'b' listed in split file .*val.txt "
                                                r'not found.*section "PIE-RGB-SAR"'):
        DATASETS.build(ds_cfg)
    (tmp_path / ds_cfg.data_root / 'val.txt').unlink()
    with pytest.raises(FileNotFoundError, match=r'split file .*val.txt not found.*'
                                                r'"PIE-RGB-SAR"'):
        DATASETS.build(ds_cfg)


@pytest.mark.parametrize('name', ['cfg_massachusetts_road.py', 'cfg_spacenet_road.py',
                                  'cfg_whu_aerial.py'])
def test_either_image_format_is_found_but_not_both(name, tmp_path, monkeypatch):
    ds_cfg = load(name).test_dataloader.dataset
    accepted = suffix(ds_cfg, 'img_suffix')
    assert len(accepted) == 2
    img_dir, ann_dir = make_miniature(tmp_path, ds_cfg, np.zeros((8, 8), np.uint8), ['a'])
    cv2.imwrite(str(img_dir / ('b' + accepted[1])), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(ann_dir / ('b' + first_suffix(ds_cfg, 'seg_map_suffix'))),
                np.zeros((8, 8), np.uint8))
    monkeypatch.setenv('SEGEARTH_OV_DATA', str(tmp_path))
    dataset = DATASETS.build(ds_cfg)
    assert [Path(dataset.get_data_info(i)['img_path']).name for i in range(2)] == \
        ['a' + accepted[0], 'b' + accepted[1]]
    cv2.imwrite(str(img_dir / ('a' + accepted[1])), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match='the same image in two formats'):
        DATASETS.build(ds_cfg)


def test_published_image_formats():
    """The suffixes the published configs read."""
    def fmt(name, key):
        return suffix(load(name).test_dataloader.dataset, key)
    assert '.jpg' in fmt('cfg_massachusetts_road.py', 'img_suffix')
    assert '.jpg' in fmt('cfg_spacenet_road.py', 'img_suffix')
    assert '.png' in fmt('cfg_whu_aerial.py', 'img_suffix')
    assert fmt('cfg_fusar_sar.py', 'img_suffix') == '.tif'
    assert fmt('cfg_ddhrnet_korea_sar.py', 'img_suffix') == '.jpg'
    assert fmt('cfg_pie_sar.py', 'seg_map_suffix') == '.tif'


SAR_CONFIGS = [name for name in CONFIGS if name.endswith('_sar.py')]


@pytest.mark.parametrize('name', SAR_CONFIGS)
def test_sar_configs_use_the_simfeatup_upsampler(name):
    """SegEarth-OV-2 applies the optical jbu_one weights to AlignEarth features (the whole
    model of every config is built by test_mmseg_init_model_builds_every_config)."""
    from segearth_ov.models.upsamplers import JBUOne, build_upsampler
    model_cfg = load(name).model
    assert model_cfg.upsampler == dict(type='jbu_one',
                                       checkpoint='checkpoints/xclip_jbu_one_million_aid.ckpt')
    assert model_cfg.clip.arch == 'ViT-B-16'
    upsampler = build_upsampler(dict(model_cfg.upsampler, checkpoint=None), 512, 16,
                                warn_random=False)
    assert type(upsampler) is JBUOne and upsampler.num_steps == 4


def test_sar_whole_image_mode_upsamples_14_to_224():
    import torch

    from segearth_ov.models import SegEarthOV
    model_cfg = load('cfg_whu_sar.py').model
    model_cfg = dict(model_cfg, clip=dict(arch='ViT-B-16', pretrained=None),
                     upsampler=dict(type='jbu_one'), name_path=str(REPO / model_cfg.name_path),
                     prompt_templates=['{}'])
    model_cfg.pop('type')
    model = SegEarthOV(**model_cfg).eval()
    shapes, cosine_logits = [], model.upsampler.cosine_logits

    def spy(source, guidance, text):
        out = cosine_logits(source, guidance, text)
        shapes.append((tuple(source.shape), tuple(out.shape)))
        return out
    model.upsampler.cosine_logits = spy
    samples = model.predict(torch.randn(1, 3, 224, 224))
    classes = model.class_queries.num_classes  # no synonyms in whu_sar.txt: one query each
    assert shapes == [((1, 512, 14, 14), (1, classes, 224, 224))]
    assert samples[0].pred_sem_seg.data.shape == (1, 224, 224)


# --- mmsegmentation's own entry points on every config ------------------------------------------

def offline_options():
    """Random CLIP and upsampler weights and one template: the architecture, no downloads."""
    return {'model.clip.pretrained': None, 'model.upsampler.checkpoint': None,
            'model.prompt_templates': ['{}']}


@pytest.mark.slow
@pytest.mark.parametrize('name', CONFIGS)
def test_mmseg_init_model_builds_every_config(name):
    """Every config through mmseg's init_model. The build does not depend on CLIP's width,
    so ViT-S-16 stands in for the config's own arch (built in full by the inference test
    below), which must be one open_clip knows."""
    import open_clip
    from mmseg.apis import init_model

    from segearth_ov.weights.clip import base_arch
    assert base_arch(load(name).model.clip.arch) in open_clip.list_models()
    model = init_model(str(REPO / 'configs' / name), device='cpu',
                       cfg_options={**offline_options(), 'model.clip.arch': 'ViT-S-16'})
    assert type(model).__name__ == 'SegEarthOV' and model.cfg.model.name_path
    assert model.clip.visual.transformer.width == 384  # the stand-in was built


@pytest.mark.parametrize('name', ['cfg_potsdam.py', 'cfg_whu_sar.py'])
def test_mmseg_inference_model_segments_an_array(name):
    """``mmseg.apis.inference_model`` runs the config's own test pipeline."""
    from mmseg.apis import inference_model, init_model
    cfg = load(name)
    model = init_model(cfg, device='cpu', cfg_options=offline_options())
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    result = inference_model(model, image)
    labels = result.pred_sem_seg.data[0].numpy()
    classes = read_class_names(str(REPO / cfg.model.name_path)).num_classes
    assert labels.shape == (120, 160) and labels.max() < classes
    assert result.seg_logits.data.shape == (classes, 120, 160)
    scale = cfg.test_pipeline[1]['scale'][0]
    assert result.img_shape == (scale * 120 // 160, scale)  # the config's own Resize ran
