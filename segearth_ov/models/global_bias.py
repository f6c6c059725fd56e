"""Global bias alleviation (GBA): remove the image-global [CLS] bias from patch logits."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def alleviate_global_bias(patch_logits: Tensor, cls_feature: Tensor, text_embeddings: Tensor,
                          cls_token_lambda: float) -> Tensor:
    """Add ``lambda * (c_hat . T_hat^T)`` to every pixel's logits.

    Args:
        patch_logits: ``[B, Q, H, W]`` cosine logits of the L2-normalised patch features.
        cls_feature: ``[B, D]`` [CLS] feature of the same modified block (not normalised).
        text_embeddings: ``[Q, D]`` L2-normalised query embeddings.
        cls_token_lambda: the scale (published default -0.3); 0 returns the input.

    Equivalent to scoring ``p_hat + lambda * c_hat`` without renormalising.
    """
    if cls_token_lambda == 0:
        return patch_logits
    cls_logits = F.normalize(cls_feature, dim=-1) @ text_embeddings.t()
    return patch_logits + cls_token_lambda * cls_logits[:, :, None, None]
