_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/building.txt', prob_thd=0.6, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='BuildingDataset',
    data_root='Inria',
    data_prefix=dict(img_path='img_dir/split_test', seg_map_path='ann_dir/split_test')))
