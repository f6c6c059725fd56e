# Runtime shared by every benchmark config.
custom_imports = dict(imports=['segearth_ov'], allow_failed_imports=False)
default_scope = 'mmseg'
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, alpha=0.5)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False))
# no SegVisualizationHook: tools/eval.py --show-dir adds SavePredictionsHook instead
custom_hooks = [dict(type='TestProgressHook')]
test_cfg = dict(type='TestLoop')
test_evaluator = dict(type='BenchmarkIoUMetric', iou_metrics=['mIoU'])  # + per-class IoU
