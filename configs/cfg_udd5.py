_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/udd5.txt', prob_thd=0.4, bg_idx=4)
test_dataloader = dict(dataset=dict(
    type='UDD5Dataset',
    data_root='UDD5',
    data_prefix=dict(img_path='val/src', seg_map_path='val/gt')))
