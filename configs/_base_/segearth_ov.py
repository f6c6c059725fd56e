# The SegEarth-OV model with the published defaults and the optical test pipeline.
# Benchmark configs give data_root relative to the benchmark data folder: data/ by default,
# $SEGEARTH_OV_DATA overrides it, and an absolute data_root (--cfg-options) is used as is.
_base_ = ['./default_runtime.py']

model = dict(
    type='SegEarthOV',
    # OpenAI's CLIP ViT-B/16. OpenAI-format weights (this tag, OpenAI's own ViT-B-16.pt or a
    # saved OpenAI state dict) always build with QuickGELU, as they were trained; any other
    # file follows its arch name, and quick_gelu=True/False forces the activation.
    # pretrained=None gives random weights.
    clip=dict(arch='ViT-B-16', pretrained='openai'),
    attention='SegEarth',        # SegEarth | SCLIP | ClearCLIP | MaskCLIP | NACLIP | vanilla
    attention_layers=1,          # modified attention on the last n blocks, outputs summed
    cls_token_lambda=-0.3,       # global-bias alleviation; 0 disables
    # SimFeatUp weights: see README "Weights"; upsampler=None disables feature upsampling.
    upsampler=dict(type='jbu_one', checkpoint='checkpoints/xclip_jbu_one_million_aid.ckpt'),
    name_path=None,              # set by each benchmark config
    prob_thd=0.0,
    bg_idx=0,
    logit_scale=50,
    slide_crop=224,              # 0: whole image in one pass
    slide_stride=112,
    window_batch_size=8,
    precision='fp32',            # fp16 / bf16 on CUDA only
)

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(448, 448), keep_ratio=True),
    dict(type='LoadAnnotations'),  # after Resize: labels stay at the original size
    dict(type='CheckLabelSize'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(pipeline=test_pipeline))
