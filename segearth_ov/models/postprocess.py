"""From query logits to class probabilities and a label map."""
from __future__ import annotations

from typing import Sequence

import torch
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
