_base_ = ['./_base_/segearth_ov_sar.py']

model = dict(name_path='configs/names/fusar_sar.txt', prob_thd=0.0, bg_idx=0, slide_crop=224,
             slide_stride=112)
test_pipeline = {{_base_.slide_pipeline}}
test_dataloader = dict(dataset=dict(
    type='FUSARMapDataset',
    data_root='FUSAR-Map',
    ann_file='test.txt',
    data_prefix=dict(img_path='sar', seg_map_path='label'),
    pipeline=test_pipeline))
