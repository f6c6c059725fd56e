_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/water.txt', prob_thd=0.6, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='WaterDataset',
    data_root='WBS-SI',
    img_suffix='.jpg',
    seg_map_suffix='.png',  # lossless 0/1 masks (JPEG would alter label values)
    ann_file='test.txt',
    data_prefix=dict(img_path='Images', seg_map_path='Masks_cvt')))
