# SegEarth-OV3 (SAM 3) on the optical benchmarks. Each config here inherits a benchmark
# config of ../ for its dataset, replaces the model with SegEarthOV3 and this pipeline:
# images are read at native size (no Resize), the model resizes each view to 1008 x 1008.
# Model defaults (SegEarthOV3's arguments): checkpoint='checkpoints/sam3.pt' (Meta's
# sam3.pt, gated: https://huggingface.co/facebook/sam3; a transformers model.safetensors
# works too), slide_crop=0 (whole image), image_size=1008, prompt_batch_size=4,
# mask_chunk=16, precision='auto' (fp32 on CPU, bf16 on CUDA). Change them with
# --cfg-options model.checkpoint=PATH and so on.
sam3_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckLabelSize'),
    dict(type='PackSegInputs'),
]
