_base_ = ['./_base_/segearth_ov_sar.py']

model = dict(name_path='configs/names/openearthmap.txt', prob_thd=0.0, bg_idx=0, slide_crop=224, slide_stride=112)
test_dataloader = dict(dataset=dict(
    type='OpenEarthMapSARDataset',
    data_root='OpenEarthMap-SAR',
    data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test'),
    pipeline={{_base_.test_pipeline}}))
