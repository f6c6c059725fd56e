"""Train a SimFeatUp upsampler on unlabeled images (see README "Training an upsampler").

    python tools/train_upsampler.py --images /data/million_aid --clip ViT-B-16 \
        --pretrained openai --steps 20000 --work-dir work_dirs/simfeatup
    torchrun --nproc_per_node 2 tools/train_upsampler.py --images ... --launcher pytorch
"""
import sys

import segearth_ov  # noqa: F401  (applies the mmcv-lite shim before mmseg is imported)
from segearth_ov.training.cli import main

if __name__ == '__main__':
    sys.exit(main())
