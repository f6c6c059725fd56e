_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/potsdam.txt', prob_thd=0.1, bg_idx=5)
test_dataloader = dict(dataset=dict(
    type='RSPotsdamDataset',
    data_root='potsdam',
    reduce_zero_label=True,
    data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val')))
