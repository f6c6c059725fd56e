_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/water.txt', prob_thd=0.6, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='WaterDataset',
    data_root='WBS-SI',
    # the 499 images of the published evaluation, shipped with the project
    ann_file='{{ fileDirname }}/../segearth_ov/splits/wbs-si_val.txt',
    data_prefix=dict(img_path='Images', seg_map_path='Masks_cvt')))
