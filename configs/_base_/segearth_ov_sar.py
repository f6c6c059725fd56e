# SegEarth-OV-2 on SAR: the AlignEarth backbone (an open_clip ViT-B-16 distilled to SAR),
# SCLIP attention over the last 2 blocks, whole-image inference at 224 by default. The
# SimFeatUp jbu_one weights of the optical model are applied to AlignEarth's features as
# published: in whole-image mode the 14x14 features are upsampled x16 to 224, then resized.
# Each SAR config reads the authors' released archive through its split list.
_base_ = ['./segearth_ov.py']

model = dict(
    clip=dict(arch='ViT-B-16', pretrained='checkpoints/AlignEarth-SAR-ViT-B-16.pt'),
    attention='SCLIP',
    attention_layers=2,
    prob_thd=0.0,
    slide_crop=0,
)

# FUSAR-Map and OpenEarthMap-SAR resize to 448 and slide 224/112 windows, as optical sets do
slide_pipeline = {{_base_.test_pipeline}}
test_pipeline = [
    dict(type='LoadImageFromFile'),  # 1-band SAR is read as 3 identical bands
    dict(type='Resize', scale=(224, 224), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='CheckLabelSize'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
