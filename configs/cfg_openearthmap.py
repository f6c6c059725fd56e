_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/openearthmap.txt', prob_thd=0.1, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='OpenEarthMapDataset',
    data_root='OpenEarthMap',
    data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val')))
