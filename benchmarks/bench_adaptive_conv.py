"""adaptive_conv speed and memory: native kernels against the pure-PyTorch formulations.

Sizes: the four SimFeatUp (jbu_one, d=11) steps of one 224 crop, C=512, output sides
28, 56, 112, 224, and the same sides for jbu_stack (d=7). Methods:

* native      the compiled kernel (C++/OpenMP on CPU, CUDA on GPU) through adaptive_conv()
* shifted     shifted multiply-add over the d^2 offsets (the entry point's PyTorch fallback)
* unfold      F.unfold + einsum, chunked over channels (FeatUp's fallback)

Each measurement runs in its own subprocess so its peak memory (RSS growth on CPU, CUDA
peak allocation on GPU) is its own. A large fp32 matmul timed in the same run gives the
machine's reference GFLOP/s. One multiply-add counts as 2 FLOP.

    python benchmarks/bench_adaptive_conv.py [--device cpu|cuda] [--threads 2]
        [--skip-unfold-above 112]
"""
import argparse
import json
import resource
import subprocess
import sys
import time

SIDES = (28, 56, 112, 224)
CHANNELS = 512
UNFOLD_CHUNK = 32


def unfold_einsum(x, k):
    import torch
    import torch.nn.functional as F
    b, c = x.shape[:2]
    _, h, w, d, _ = k.shape
    out = x.new_empty(b, c, h, w)
    kk = k.reshape(b, h, w, d * d)
    for c0 in range(0, c, UNFOLD_CHUNK):
        chunk = x[:, c0:c0 + UNFOLD_CHUNK]
        cols = F.unfold(chunk, d).view(b, chunk.shape[1], d * d, h, w)
        out[:, c0:c0 + UNFOLD_CHUNK] = torch.einsum('bcphw,bhwp->bchw', cols, kk)
    return out


def current_rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(method, side, d, device, threads, repeats):
    import torch
    torch.set_num_threads(threads)
    from segearth_ov.ops import adaptive_conv
    from segearth_ov.ops.adaptive_conv import torch_forward
    fn = {'native': lambda x, k: adaptive_conv(x, k, backend='cuda' if device == 'cuda' else 'cpu'),
          'shifted': torch_forward, 'unfold': unfold_einsum}[method]
    torch.manual_seed(0)
    x = torch.randn(1, CHANNELS, side + d - 1, side + d - 1, device=device)
    k = torch.randn(1, side, side, d, d, device=device)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    # Memory beyond the inputs: the output plus whatever the method allocates on top.
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = current_rss()
    with torch.no_grad():
        fn(x, k)  # warm-up: allocator, extension load
        sync()
        start = time.perf_counter()
        for _ in range(repeats):
            fn(x, k)
        sync()
        seconds = (time.perf_counter() - start) / repeats
    if device == 'cuda':
        extra = torch.cuda.max_memory_allocated() - base
    else:
        extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return dict(seconds=seconds, extra_mib=max(extra, 0) / 2 ** 20)


def matmul_gflops(device, threads, n=4096, reps=8):
    """Best of ``reps`` timed fp32 matmuls: the machine's attainable GFLOP/s."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    a @ b
    sync()
    best = float('inf')
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def child(args):
    if args.method == 'matmul':
        return dict(gflops=matmul_gflops(args.device, args.threads))
    # mean of several calls after a warm-up (one for unfold: it takes up to a minute)
    repeats = 1 if args.method == 'unfold' else (3 if args.side >= 112 else 10)
    if args.device == 'cuda':
        repeats = 20
    return measure(args.method, args.side, args.d, args.device, args.threads, repeats)


def run_child(method, side, d, args):
    cmd = [sys.executable, __file__, '--_child', method, '--side', str(side), '--d', str(d),
           '--device', args.device, '--threads', str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f'{method} side {side} d {d} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--skip-unfold-above', type=int, default=224,
                        help='skip the (slow) unfold method for output sides above this')
    parser.add_argument('--_child', dest='method', help=argparse.SUPPRESS)
    parser.add_argument('--side', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--d', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(child(args)))
        return

    peak = run_child('matmul', 0, 0, args)['gflops']
    print(f'adaptive_conv, C={CHANNELS}, B=1, fp32, {args.device}, {args.threads} threads; '
          f'reference fp32 matmul (4096^2, best of 8): {peak:.1f} GFLOP/s\n')
    print('| kernel | out side | G mult-adds | native s | native GFLOP/s | % of matmul | '
          'shifted s | x vs shifted | unfold s | x vs unfold | '
          'peak MiB above inputs: native / shifted / unfold | output MiB |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    for name, d in (('jbu_one', 11), ('jbu_stack', 7)):
        for side in SIDES:
            macs = CHANNELS * side * side * d * d
            native = run_child('native', side, d, args)
            shifted = run_child('shifted', side, d, args)
            unfold = (run_child('unfold', side, d, args) if side <= args.skip_unfold_above
                      else None)
            gflops = 2 * macs / native['seconds'] / 1e9
            unfold_s = f'{unfold["seconds"]:.3f}' if unfold else 'skipped'
            unfold_x = f'{unfold["seconds"] / native["seconds"]:.0f}' if unfold else '-'
            unfold_m = f'{unfold["extra_mib"]:.0f}' if unfold else '-'
            print(f'| {name} d={d} | {side} | {macs / 1e9:.2f} | {native["seconds"]:.4f} | '
                  f'{gflops:.1f} | {100 * gflops / peak:.0f}% | {shifted["seconds"]:.3f} | '
                  f'{shifted["seconds"] / native["seconds"]:.1f} | {unfold_s} | {unfold_x} | '
                  f'{native["extra_mib"]:.0f} / {shifted["extra_mib"]:.0f} / {unfold_m} | '
                  f'{CHANNELS * side * side * 4 / 2 ** 20:.0f} |', flush=True)


if __name__ == '__main__':
    main()
