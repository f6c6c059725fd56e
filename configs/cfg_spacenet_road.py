_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/road.txt', prob_thd=0.7, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='RoadDataset',
    data_root='GlobalRoadSet_Val/SpaceNet_test_567',
    data_prefix=dict(img_path='img', seg_map_path='label_cvt')))
