_base_ = ['./_base_/segearth_ov_sar.py']

model = dict(name_path='configs/names/yeseg_sar.txt', prob_thd=0.3, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='YESegOPTSARDataset',
    data_root='YESeg-OPT-SAR',
    ann_file='test.txt',
    data_prefix=dict(img_path='sar', seg_map_path='cvt_label')))
