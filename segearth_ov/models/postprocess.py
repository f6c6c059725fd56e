"""From query logits to class probabilities and a label map: synonym max, background
threshold, the original size, and the running top class of a vocabulary scored in chunks."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmseg.structures import SegDataSample
from torch import Tensor


def queries_to_classes(probs: Tensor, query_to_class: Sequence[int], num_classes: int) -> Tensor:
    """Class probability = max over that class's queries.

    ``probs`` ``[Q, H, W]`` (softmax over queries) -> ``[num_classes, H, W]``.
    """
    if len(query_to_class) != probs.shape[0]:
        raise ValueError(f'{probs.shape[0]} query maps but {len(query_to_class)} query owners')
    owner = torch.as_tensor(query_to_class, device=probs.device)
    return torch.stack([probs[owner == c].amax(dim=0) for c in range(num_classes)])


def threshold_to_background(class_probs: Tensor, prob_thd: float, bg_idx: int) -> Tensor:
    """``argmax`` over classes; pixels whose top probability is below ``prob_thd`` get
    ``bg_idx``. ``[C, H, W]`` -> ``[H, W]`` int64."""
    top, pred = class_probs.max(dim=0)
    return torch.where(top < prob_thd, torch.full_like(pred, bg_idx), pred)


def bare_samples(shape) -> List[SegDataSample]:
    """Data samples for a batch of ``shape`` ``(B, C, H, W)`` passed without any: the
    original size is the input size."""
    size = tuple(shape[-2:])
    return [SegDataSample(metainfo=dict(img_shape=size, ori_shape=size))
            for _ in range(shape[0])]


def to_original_size(maps: Tensor, meta: dict) -> Tensor:
    """Maps ``[Q, H, W]`` cropped to the sample's ``img_shape`` (padding removed) and
    resized bilinearly to its ``ori_shape`` (a view when nothing changes)."""
    img_h, img_w = meta.get('img_shape', maps.shape[-2:])[:2]
    ori_shape = tuple(meta.get('ori_shape', (img_h, img_w))[:2])
    maps = maps[None, :, :img_h, :img_w]
    if tuple(maps.shape[-2:]) != ori_shape:
        maps = F.interpolate(maps, ori_shape, mode='bilinear', align_corners=False)
    return maps[0]


def class_chunks(query_to_class: Tensor, num_classes: int, chunk: int
                 ) -> List[Tuple[int, int, Tensor]]:
    """``(first, last, query indices)`` for classes ``[first, last)``, ``chunk`` classes at a
    time, with the indices of the queries (synonyms) those classes own."""
    if chunk < 1:
        raise ValueError(f'class_chunk must be >= 1, got {chunk}')
    return [(first, min(first + chunk, num_classes),
             ((query_to_class >= first) & (query_to_class < first + chunk)).nonzero().squeeze(1))
            for first in range(0, num_classes, chunk)]


def running_top(previous: Optional[Tuple[Tensor, Tensor]], best: Tensor, label: Tensor
                ) -> Tuple[Tensor, Tensor]:
    """The running ``(best score, class)`` per pixel after one more chunk of classes: the
    higher score wins, a tie keeps the earlier chunk's class (as ``argmax`` would)."""
    if previous is None:
        return best, label
    old_best, old_label = previous
    better = best > old_best
    return torch.where(better, best, old_best), torch.where(better, label, old_label)


class SoftmaxProbabilities:
    """Query maps to probabilities by a softmax over all queries of ``scale * maps``
    (SegEarth-OV's cosine logits at CLIP's temperature)."""

    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, maps: Tensor) -> Tensor:
        """``[Q, H, W]`` -> ``[Q, H, W]``, summing to 1 over queries."""
        return (self.scale * maps).softmax(dim=0)

    def running(self) -> 'RunningSoftmax':
        return RunningSoftmax(self.scale)


class RunningSoftmax:
    """The softmax of a vocabulary scored in chunks: each chunk's scores are the scaled
    maps, and the normaliser a running log-sum-exp, since
    ``max_q softmax(s)_q = exp(max_q s_q - logsumexp(s))``."""

    def __init__(self, scale: float):
        self.scale, self.log_sum = scale, None

    def scores(self, maps: Tensor) -> Tensor:
        """One chunk's maps ``[q, H, W]`` -> scores ordered as the probabilities."""
        scaled = maps * self.scale
        chunk = scaled.logsumexp(dim=0)
        self.log_sum = chunk if self.log_sum is None else torch.logaddexp(self.log_sum, chunk)
        return scaled

    def probability(self, best: Tensor) -> Tensor:
        """The probability of the best score ``[H, W]`` once every chunk was seen."""
        return (best - self.log_sum).exp()


class IdentityProbabilities:
    """Query maps that are scores already (SegEarth-OV3's fused maps): kept as they are,
    in one pass or in chunks."""

    def __call__(self, maps: Tensor) -> Tensor:
        return maps

    def running(self) -> 'IdentityProbabilities':
        return self

    def scores(self, maps: Tensor) -> Tensor:
        return maps

    def probability(self, best: Tensor) -> Tensor:
        return best
