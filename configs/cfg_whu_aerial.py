_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/building.txt', prob_thd=0.6, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='BuildingDataset',
    data_root='WHU-BD',
    data_prefix=dict(img_path='val/image', seg_map_path='val/label_cvt')))
