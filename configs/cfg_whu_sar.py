_base_ = ['./_base_/segearth_ov_sar.py']

model = dict(name_path='configs/names/whu_sar.txt', prob_thd=0.0, bg_idx=6)
test_dataloader = dict(dataset=dict(
    type='WHUOPTSARDataset',
    data_root='whu-opt-sar/crop512/test',
    reduce_zero_label=True,
    data_prefix=dict(img_path='sar_dir', seg_map_path='ann_dir')))
