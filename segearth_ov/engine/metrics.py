"""mmseg's ``IoUMetric`` that also returns each class's IoU."""
from __future__ import annotations

from typing import Dict

import numpy as np
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

PER_CLASS_PREFIX = 'IoU.'


@METRICS.register_module()
class BenchmarkIoUMetric(IoUMetric):
    """``IoUMetric`` (same arguments, same printed table) whose result also holds
    ``IoU.<class>`` in percent (NaN for a class absent from labels and predictions), so the
    results workbook can store the per-class table; mmengine broadcasts it to every rank."""

    def compute_metrics(self, results: list) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        if not results:
            return metrics
        intersect = sum(result[0] for result in results).double().cpu().numpy()
        union = sum(result[1] for result in results).double().cpu().numpy()
        with np.errstate(divide='ignore', invalid='ignore'):
            iou = np.where(union > 0, intersect / union, np.nan)
        for name, value in zip(self.dataset_meta['classes'], iou):
            metrics[f'{PER_CLASS_PREFIX}{name}'] = round(float(value) * 100, 2)
        return metrics
