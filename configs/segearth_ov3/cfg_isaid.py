_base_ = ['../cfg_isaid.py', './_base_/segearth_ov3.py']

model = dict(_delete_=True, type='SegEarthOV3',
             name_path='configs/names/isaid.txt',
             confidence_threshold=0.4, prob_thd=0.5, bg_idx=0)
test_dataloader = dict(dataset=dict(pipeline={{_base_.sam3_pipeline}}))
