"""One-command GPU self-check: every CUDA path against the CPU path, then the speed figures.

    python benchmarks/gpu_selfcheck.py            # on a machine with a CUDA GPU
    python benchmarks/gpu_selfcheck.py --device cpu --quick   # the same checks, CPU vs CPU

Checks (each prints its largest difference and passes or fails):
  1. adaptive_conv forward, input and filter gradients, and local_correlation, in float32,
     float16 and bfloat16, against the float64 CPU computation;
  2. both upsamplers' upsampled cosine logits (the segmentor's low-rank path) against the
     CPU feature path;
  3. SegEarthOV probabilities on the device in fp32 against the CPU, and the label agreement
     of fp16 / bf16 autocast with fp32.
Then it times a 448x448 image (no upsampler, jbu_one, jbu_stack; fp32, fp16, bf16) and the
224-step adaptive convolution. Random weights throughout: exactness and speed do not depend
on them. Exit code 0 when every check passes, 1 when one fails, 2 when there is no device.
"""
import argparse
import sys
import time

import torch
import torch.nn.functional as F

TOLERANCE = {torch.float32: 1e-4, torch.float16: 3e-2, torch.bfloat16: 2e-1}


def report(name, diff, limit):
    ok = diff <= limit
    print(f'| {name} | {diff:.2e} | {limit:.0e} | {"ok" if ok else "FAILED"} |', flush=True)
    return ok


def check_ops(device, quick):
    from segearth_ov.ops import adaptive_conv, local_correlation
    c, size, d = (16, 24, 7) if quick else (64, 112, 11)
    torch.manual_seed(0)
    x = torch.randn(2, c, size + d - 1, size + d - 1, dtype=torch.float64)
    k = torch.randn(2, size, size, d, d, dtype=torch.float64) / d
    q = torch.randn(2, c, size, size, dtype=torch.float64)
    x.requires_grad_(True)
    k.requires_grad_(True)
    ref = adaptive_conv(x, k, backend='torch')
    grad = torch.randn_like(ref)
    ref_gx, ref_gk = torch.autograd.grad(ref, (x, k), grad)
    ref_corr = local_correlation(x.detach(), q, backend='torch')
    ok = True
    for dtype, limit in TOLERANCE.items():
        xd = x.detach().to(device, dtype).requires_grad_(True)
        kd = k.detach().to(device, dtype).requires_grad_(True)
        out = adaptive_conv(xd, kd)
        gx, gk = torch.autograd.grad(out, (xd, kd), grad.to(device, dtype))
        corr = local_correlation(xd.detach(), q.to(device, dtype))
        for name, got, want in (('forward', out, ref), ('grad input', gx, ref_gx),
                                ('grad filters', gk, ref_gk), ('local_correlation', corr,
                                                                 ref_corr)):
            diff = (got.double().cpu() - want).abs().max().item() / \
                max(want.abs().max().item(), 1e-12)
            ok &= report(f'adaptive_conv {name}, {str(dtype)[6:]}', diff, limit)
    return ok


def check_upsamplers(device):
    from segearth_ov.models.upsamplers import JBUOne, JBUStack
    ok = True
    for cls in (JBUOne, JBUStack):
        torch.manual_seed(0)
        up = cls(512).eval()
        with torch.no_grad():
            for p in up.parameters():
                p.add_(0.05 * torch.randn_like(p))
        source, guidance = torch.randn(2, 512, 14, 14), torch.randn(2, 3, 224, 224)
        text = F.normalize(torch.randn(6, 512), dim=-1)
        with torch.no_grad():
            want = up.feature_cosine_logits(source, guidance, text)
            got = up.to(device).cosine_logits(source.to(device), guidance.to(device),
                                              text.to(device)).cpu()
        ok &= report(f'{cls.__name__} cosine logits, {device} vs CPU features',
                     (got - want).abs().max().item(), 1e-4)
    return ok


def segmentor(device, upsampler, quick, precision='fp32'):
    """ViT-B-16 with random weights; ViT-S-16 for a quick dry run (the same code paths)."""
    from segearth_ov.models import SegEarthOV
    torch.manual_seed(0)
    arch = 'ViT-S-16' if quick else 'ViT-B-16'
    return SegEarthOV(clip=dict(arch=arch, pretrained=None), precision=precision,
                      upsampler=dict(type=upsampler) if upsampler else None,
                      classes=['road', 'building,roof', 'tree', 'water', 'grass', 'barren'],
                      prompt_templates=['a satellite photo of {}.']).to(device).eval()


def check_segmentor(device, quick):
    side = 224 if quick else 448
    torch.manual_seed(1)
    image = torch.randn(1, 3, side, side)
    want = segmentor('cpu', 'jbu_one', quick).predict(image)[0]
    ok = True
    got = segmentor(device, 'jbu_one', quick).predict(image.to(device))[0]
    ok &= report(f'SegEarthOV jbu_one probabilities fp32, {device} vs CPU',
                 (got.seg_logits.data.cpu() - want.seg_logits.data).abs().max().item(), 1e-4)
    if device != 'cpu':
        for precision in ('fp16', 'bf16'):
            half = segmentor(device, 'jbu_one', quick, precision).predict(image.to(device))[0]
            agree = (half.pred_sem_seg.data.cpu() == want.pred_sem_seg.data).float().mean()
            ok &= report(f'SegEarthOV jbu_one {precision} labels disagreeing with fp32',
                         1 - agree.item(), 0.02)
    return ok


def timings(device, quick):
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    side = 224 if quick else 448  # quick: the same calls, for a dry run of the script
    image = torch.randn(1, 3, side, side, device=device)
    print(f'\n| {side}x{side} image | precision | s / image |\n|---|---|---|')
    precisions = ('fp32', 'fp16', 'bf16') if device == 'cuda' else ('fp32',)
    for upsampler in (None, 'jbu_one', 'jbu_stack'):
        for precision in precisions:
            model = segmentor(device, upsampler, quick, precision)
            model.predict(image)
            sync()
            start, runs = time.perf_counter(), 1 if quick else 5
            for _ in range(runs):
                model.predict(image)
            sync()
            print(f'| {upsampler or "no upsampler"} | {precision} | '
                  f'{(time.perf_counter() - start) / runs:.3f} |', flush=True)
    from segearth_ov.ops import adaptive_conv
    c, size, d = (64, 112, 11) if quick else (512, 224, 11)
    x = torch.randn(1, c, size + d - 1, size + d - 1, device=device)
    k = torch.randn(1, size, size, d, d, device=device)
    adaptive_conv(x, k)
    sync()
    start = time.perf_counter()
    runs = 1 if quick else 10
    for _ in range(runs):
        adaptive_conv(x, k)
    sync()
    print(f'\nadaptive_conv, the {size} step (C={c}, d={d}): '
          f'{(time.perf_counter() - start) / runs * 1e3:.1f} ms')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--quick', action='store_true',
                        help='ViT-S-16, small sizes, one timing run')
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('no CUDA device here: nothing to check (run it where a GPU is, or pass '
              '--device cpu for a dry run of the checks on the CPU)', file=sys.stderr)
        return 2
    import logging
    logging.disable(logging.WARNING)  # random weights are announced per model: known here
    import segearth_ov  # noqa: F401
    print(f'| check ({args.device}) | max difference | limit | result |\n|---|---|---|---|')
    ok = check_ops(args.device, args.quick)
    ok &= check_upsamplers(args.device)
    ok &= check_segmentor(args.device, args.quick)
    timings(args.device, args.quick)
    print('\nall checks passed' if ok else '\nSOME CHECKS FAILED')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
