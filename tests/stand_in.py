"""A deterministic stand-in segmentor for the benchmark-tool tests: it predicts
``channel0 % num_classes`` of the image as loaded (BGR, not resized), optionally slowly."""
import time

import torch
from mmengine.structures import PixelData
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS


@MODELS.register_module()
class StandInSegmentor(BaseSegmentor):
    METHOD = 'SegEarth-OV'  # it stands in for SegEarthOV in the results rows

    def __init__(self, num_classes: int, delay: float = 0.0, prob_thd: float = 0.0,
                 data_preprocessor=None):
        # prob_thd is accepted (and ignored) as SegEarthOV accepts it, so that results rows
        # keyed by it can be tested
        super().__init__(data_preprocessor=data_preprocessor)
        self.num_classes = num_classes
        self.delay = delay

    def predict(self, inputs, data_samples):
        time.sleep(self.delay)
        for image, sample in zip(inputs, data_samples):
            pred = image[0].round().long() % self.num_classes
            sample.set_data(dict(pred_sem_seg=PixelData(data=pred[None]),
                                 seg_logits=PixelData(data=torch.zeros(1, *pred.shape))))
        return data_samples

    def extract_feat(self, inputs):
        raise NotImplementedError

    def encode_decode(self, inputs, batch_data_samples):
        raise NotImplementedError

    def loss(self, inputs, data_samples):
        raise NotImplementedError

    def _forward(self, inputs, data_samples=None):
        raise NotImplementedError
