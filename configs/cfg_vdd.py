_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/vdd.txt', prob_thd=0.3, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='VDDDataset',
    data_root='VDD',
    data_prefix=dict(img_path='test/src', seg_map_path='test/gt')))
