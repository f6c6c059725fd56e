_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/loveda.txt', prob_thd=0.3, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='RSLoveDADataset',
    data_root='LoveDA',
    reduce_zero_label=True,
    data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val')))
