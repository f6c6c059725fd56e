_base_ = ['./_base_/segearth_ov_sar.py']

model = dict(name_path='configs/names/openearthmap.txt', prob_thd=0.0, bg_idx=0, slide_crop=224,
             slide_stride=112)
test_pipeline = {{_base_.slide_pipeline}}
test_dataloader = dict(dataset=dict(
    type='OpenEarthMapSARDataset',
    data_root='OpenEarthMap_SAR/test',
    data_prefix=dict(img_path='sar_images', seg_map_path='labels'),
    pipeline=test_pipeline))
