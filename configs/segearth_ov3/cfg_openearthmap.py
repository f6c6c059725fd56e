_base_ = ['../cfg_openearthmap.py', './_base_/segearth_ov3.py']

model = dict(_delete_=True, type='SegEarthOV3',
             name_path='configs/names/openearthmap.txt',
             confidence_threshold=0.1, prob_thd=0.1, bg_idx=0,
             slide_crop=512, slide_stride=512)
test_dataloader = dict(dataset=dict(pipeline={{_base_.sam3_pipeline}}))
