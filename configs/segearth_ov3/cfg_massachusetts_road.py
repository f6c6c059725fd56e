_base_ = ['../cfg_massachusetts_road.py', './_base_/segearth_ov3.py']

model = dict(_delete_=True, type='SegEarthOV3',
             name_path='configs/names/road.txt',
             confidence_threshold=0.5, prob_thd=0.3, bg_idx=0)
test_dataloader = dict(dataset=dict(pipeline={{_base_.sam3_pipeline}}))
