_base_ = ['./_base_/segearth_ov.py']

model = dict(name_path='configs/names/isaid.txt', prob_thd=0.4, bg_idx=0)
test_dataloader = dict(dataset=dict(
    type='RSiSAIDDataset',
    data_root='iSAID',
    data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val')))
