"""SegEarth-OV3 per-view cost on the full-size SAM 3 (random weights: speed does not depend
on them), and where it goes: the image pass, the text encoding (once per prompt per model),
the prompt passes (DETR encoder/decoder and mask decoder) and the fusion.

    python benchmarks/bench_sam3.py [--prompts 3] [--side 1024] [--device cpu] [--threads 2]

ours: SegEarthOV3 on one whole-image view (vision features once, text features cached,
--prompt-batch prompts decoded together, fused in 16-mask chunks); baseline: Sam3Model's
plain call per prompt (``model(pixel_values=..., input_ids=...)``: the image and the text
encoded again for every prompt), plus the same fusion. Both in the same run.
"""
import argparse
import time


def timed(fn, device):
    import torch
    if device == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device == 'cuda':
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--prompts', type=int, default=3)
    parser.add_argument('--prompt-batch', type=int, default=3)
    parser.add_argument('--side', type=int, default=1024)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from segearth_ov.models import SegEarthOV3
    from segearth_ov.models.precision import autocast
    from segearth_ov.models.sam3_fusion import fuse_prompt_maps, resize_views
    from segearth_ov.models.segearth_ov3 import tokenize_prompts
    names = ['building', 'road', 'water', 'tree', 'grass', 'car', 'bare soil', 'cropland']
    names = names[:args.prompts]
    torch.manual_seed(0)
    model, build = timed(lambda: SegEarthOV3(checkpoint=None, classes=names,
                                             prompt_batch_size=args.prompt_batch,
                                             confidence_threshold=0.0).to(args.device).eval(),
                         args.device)
    image = torch.rand(1, 3, args.side, args.side, device=args.device) * 255
    prompts = torch.arange(len(names), device=args.device)
    with torch.inference_mode(), autocast(model.precision, image.device):
        (text, _), text_s = timed(lambda: model.prompt_embeddings, args.device)
        features, vision_s = timed(lambda: model.window_features(image), args.device)
        maps, prompt_s = timed(lambda: model.features_maps(features, prompts), args.device)
        _, ours_s = timed(lambda: model.encode_decode(image), args.device)

        def baseline():
            ids, mask = tokenize_prompts(names)
            pixels = resize_views(image, model.image_size)
            out = []
            for p in range(len(names)):
                o = model.sam3(pixel_values=pixels, input_ids=ids[p:p + 1].to(args.device),
                               attention_mask=mask[p:p + 1].to(args.device))
                out.append(fuse_prompt_maps(o.pred_logits, o.presence_logits, o.pred_masks,
                                            o.semantic_seg, (args.side, args.side), 0.0))
            return out
        _, baseline_s = timed(baseline, args.device)
    print(f'SegEarth-OV3, full-size SAM 3 (random weights), one {args.side} x {args.side} '
          f'view -> 1008 x 1008, {len(names)} prompts ({args.prompt_batch} per pass, all 200 '
          f'queries kept), {args.device}, {args.threads} threads; model built in {build:.1f} s')
    print('| step | seconds | share of a view |\n|---|---|---|')
    view = vision_s + prompt_s
    for name, seconds in (('image pass (vision features, once per view)', vision_s),
                          (f'prompt passes + fusion ({len(names)} prompts)', prompt_s),
                          ('text encoding (once per model, not per view)', text_s)):
        share = f'{100 * seconds / view:.0f}%' if 'once per model' not in name else '-'
        print(f'| {name} | {seconds:.2f} | {share} |')
    print(f'| per prompt | {prompt_s / len(names):.2f} | |')
    print(f'| whole view through encode_decode (ours) | {ours_s:.2f} | |')
    print(f'| baseline: plain Sam3Model call per prompt | {baseline_s:.2f} | |')
    print(f'ratio baseline / ours: {baseline_s / ours_s:.2f}x')


if __name__ == '__main__':
    main()
