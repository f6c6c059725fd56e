_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/building.txt', prob_thd=0.0, bg_idx=0, cls_token_lambda=0.0)
test_dataloader = dict(dataset=dict(
    type='BuildingDataset',
    data_root='xBD',
    data_prefix=dict(img_path='test/images_pre', seg_map_path='test/targets_cvt_pre')))
