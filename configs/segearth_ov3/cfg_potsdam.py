_base_ = ['../cfg_potsdam.py', './_base_/segearth_ov3.py']

model = dict(_delete_=True, type='SegEarthOV3',
             name_path='configs/names/segearth_ov3/potsdam.txt',
             confidence_threshold=0.2, prob_thd=0.1, bg_idx=5)
test_dataloader = dict(dataset=dict(pipeline={{_base_.sam3_pipeline}}))
