"""Distributed inference without DistributedDataParallel."""
from __future__ import annotations

from mmengine.registry import MODEL_WRAPPERS
from torch import nn


@MODEL_WRAPPERS.register_module()
class InferenceWrapper(nn.Module):
    """Model wrapper for multi-process evaluation (``model_wrapper_cfg=dict(type=
    'InferenceWrapper')``).

    Each rank runs its shard of the test set and the evaluator gathers the results; nothing
    needs gradient synchronisation. DDP would refuse a SegEarthOV model (it has no trainable
    parameter) and would pin a CUDA device even on CPU runs.
    """

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def test_step(self, data):
        return self.module.test_step(data)

    def val_step(self, data):
        return self.module.val_step(data)

    def train_step(self, data, optim_wrapper):
        raise RuntimeError('InferenceWrapper is for evaluation; train with '
                           'MMDistributedDataParallel')
