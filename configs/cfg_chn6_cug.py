_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/road.txt', prob_thd=0.8, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='RoadDataset',
    data_root='CHN6-CUG',
    img_suffix='.jpg',
    data_prefix=dict(img_path='val/image_cvt', seg_map_path='val/label_cvt')))
