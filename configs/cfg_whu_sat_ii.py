_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/building.txt', prob_thd=0.7, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='BuildingDataset',
    data_root='WHU_Sat_II',
    img_suffix='.tif',
    seg_map_suffix='.tif',
    data_prefix=dict(img_path='test/image', seg_map_path='test/label_cvt')))
