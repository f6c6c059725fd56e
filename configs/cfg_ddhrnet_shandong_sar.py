_base_ = ['./_base_/segearth_ov_sar.py']

model = dict(name_path='configs/names/ddhrnet_shandong_sar.txt', prob_thd=0.0, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='DDHRNetShandongDataset',
    data_root='DDHRNet_DATA/shandong',
    ann_file='val.txt',
    data_prefix=dict(img_path='sar', seg_map_path='label')))
