"""Benchmark runs (``tools/eval.py``, ``tools/eval_all.py``) and the results workbook."""
from .catalog import benchmark_task, model_settings
from .results import ResultsBook
from .run import EvalResult, evaluate, load_config

__all__ = ['ResultsBook', 'EvalResult', 'evaluate', 'load_config', 'benchmark_task',
           'model_settings']
