_base_ = ['./_base_/segearth_ov_sar.py']

model = dict(name_path='configs/names/ddhrnet_korea_sar.txt', prob_thd=0.0, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='DDHRNetKoreaDataset',
    data_root='DDHRNet_DATA/korea/no_cloud',
    ann_file='val.txt',
    data_prefix=dict(img_path='sar', seg_map_path='label')))
