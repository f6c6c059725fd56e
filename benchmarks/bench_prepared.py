"""Trying words on a prepared image: what a new vocabulary, an unseen one and a new
threshold cost against the first pass, measured in the same run, and what a prepared image
holds in memory.

SegEarth-OV with ViT-B-16 and jbu_one (random weights saved to files, so the text-embedding
cache works as with real ones; speed does not depend on the weights), CLIP's 80 templates,
through ``OpenVocabSegmenter.prepare``:

* first pass: the image side and the scoring of 6 classes whose text is cached (what a cold
  ``segmenter(image)`` costs; that is timed too);
* new vocabulary: 6 other classes whose text is cached (words tried before);
* unseen vocabulary: 6 classes never encoded (CLIP's text encoder runs on 6 x 80 prompts);
* new threshold: the last vocabulary with another ``prob_thd``.

    python benchmarks/bench_prepared.py [--threads 2] [--side 448] [--large 1024]
"""
import argparse
import os
import resource
import tempfile
import time

FIRST = ['road', 'building,roof', 'tree', 'water', 'grass', 'barren']
SECOND = ['car', 'parking lot', 'river', 'forest', 'farmland', 'bridge']
UNSEEN = ['greenhouse', 'solar panel', 'swimming pool', 'railway', 'pier', 'quarry']


def unseen(setting):
    """Words no earlier setting of this run encoded (the text cache is shared)."""
    return [f'{word} ({setting})' for word in UNSEEN]


def timed(fn, repeat=1):
    best, out = float('inf'), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def weights(folder):
    """Random ViT-B-16 and jbu_one weights as files (content-hashed like real ones)."""
    import torch

    from segearth_ov.models.upsamplers import JBUOne
    from segearth_ov.weights import build_clip
    torch.manual_seed(0)
    clip_path, up_path = os.path.join(folder, 'clip.pt'), os.path.join(folder, 'jbu_one.ckpt')
    torch.save(build_clip('ViT-B-16', None)[0].state_dict(), clip_path)
    torch.save({'state_dict': {f'upsampler.{k}': v for k, v in JBUOne().state_dict().items()}},
               up_path)
    return clip_path, up_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--side', type=int, default=448)
    parser.add_argument('--large', type=int, default=1024, help='0 skips the memory figure')
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix='bench_prepared_')
    os.environ['SEGEARTH_OV_TEXT_CACHE'] = os.path.join(folder, 'text')
    import numpy as np
    import torch
    torch.set_num_threads(args.threads)
    import segearth_ov  # noqa: F401
    from segearth_ov.apis import OpenVocabSegmenter

    clip_path, up_path = weights(folder)
    rows = []
    for upsampler in ('jbu_one', 'none'):
        seg = OpenVocabSegmenter(FIRST, clip='ViT-B-16', pretrained=clip_path,
                                 upsampler=upsampler, upsampler_checkpoint=up_path
                                 if upsampler != 'none' else None, device='cpu',
                                 batch_size=1)
        for vocabulary in (SECOND, FIRST):  # words tried before: their text is cached
            seg.set_classes(vocabulary)
            seg.model.query_embeddings
        image = np.random.default_rng(0).integers(0, 255, (args.side, args.side, 3), np.uint8)
        _, cold = timed(lambda: seg(image))
        prepared, prepare_s = timed(lambda: seg.prepare(image))
        _, first_score = timed(lambda: prepared.segment(FIRST))
        first = prepare_s + first_score
        second = float('inf')
        for _ in range(2):  # each time from the other vocabulary, so it is scored again
            prepared.segment(FIRST)
            second = min(second, timed(lambda: prepared.segment(SECOND))[1])
        words = unseen(upsampler)
        _, new_words = timed(lambda: prepared.segment(words))
        _, threshold = timed(lambda: prepared.segment(words, prob_thd=0.5), repeat=3)
        rows.append((upsampler, cold, first, second, new_words, threshold, prepared.nbytes))
    print(f'{args.side}x{args.side} image, {args.threads} threads, seconds (ratio to the '
          f'first pass)\n')
    print('| upsampler | cold segmenter(image) | first pass | new vocabulary (6, text cached) '
          '| unseen vocabulary (6, text encoded) | new threshold | prepared memory |')
    print('|---|---|---|---|---|---|---|')
    for upsampler, cold, first, second, new_words, threshold, nbytes in rows:
        print(f'| {upsampler} | {cold:.2f} | {first:.2f} | {second:.3f} ({second / first:.1%}) '
              f'| {new_words:.2f} ({new_words / first:.0%}) | {threshold:.3f} '
              f'| {nbytes / 2**20:.0f} MiB |')
    if args.large:
        seg = OpenVocabSegmenter(FIRST, clip='ViT-B-16', pretrained=clip_path,
                                 upsampler='jbu_one', upsampler_checkpoint=up_path,
                                 device='cpu', batch_size=1)
        image = np.random.default_rng(1).integers(0, 255, (args.large, args.large, 3),
                                                  np.uint8)
        prepared, seconds = timed(lambda: seg.prepare(image))
        print(f'\n{args.large}x{args.large} with jbu_one: prepared in {seconds:.1f} s, holds '
              f'{prepared.nbytes / 2**30:.2f} GiB (OpenVocabSegmenter(prepared_bytes=...) '
              f'bounds what the kept images hold; default 4 GiB)')
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f'peak RSS of this process: {peak:.2f} GiB')


if __name__ == '__main__':
    main()
