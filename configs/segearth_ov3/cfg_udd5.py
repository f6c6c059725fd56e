_base_ = ['../cfg_udd5.py', './_base_/segearth_ov3.py']

model = dict(_delete_=True, type='SegEarthOV3',
             name_path='configs/names/udd5.txt',
             confidence_threshold=0.5, prob_thd=0.1, bg_idx=4)
test_dataloader = dict(dataset=dict(pipeline={{_base_.sam3_pipeline}}))
