"""mmengine pieces for benchmark runs: the metric with per-class IoU, the inference-only
distributed wrapper and the hook that saves colour predictions."""
from .hooks import SavePredictionsHook, TestProgressHook
from .metrics import BenchmarkIoUMetric
from .wrappers import InferenceWrapper

__all__ = ['BenchmarkIoUMetric', 'InferenceWrapper', 'SavePredictionsHook',
           'TestProgressHook']
