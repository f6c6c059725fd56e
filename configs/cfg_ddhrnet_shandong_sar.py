_base_ = ['./_base_/segearth_ov_sar.py']

model = dict(name_path='configs/names/ddhrnet_shandong_sar.txt', prob_thd=0.0, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='DDHRNetShandongDataset',
    data_root='DDHRNet/Shandong',
    data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test')))
