"""A method defined outside the package, used through the public method table only:
a view's feature is each pixel's brightness (the mean of its 0..255 RGB values, plus
``offset``), and query ``q`` of ``Q`` scores how close that is to the centre of the ``q``-th
of ``Q`` equal brightness bands. Configs import it with ``custom_imports``."""
from typing import Optional

import numpy as np
import torch
from mmseg.registry import MODELS

from segearth_ov.models import MethodOption, OpenVocabSegmentor
from segearth_ov.models.postprocess import SoftmaxProbabilities


def band_centres(count: int) -> np.ndarray:
    return (np.arange(count) + 0.5) * 255 / count


def expected_labels(rgb: np.ndarray, classes: int, offset: float = 0.0) -> np.ndarray:
    """The toy's labels computed independently, in float64: the nearest band centre."""
    brightness = rgb.astype(np.float64).mean(axis=-1) + offset
    return np.abs(brightness[..., None] - band_centres(classes)).argmin(axis=-1)


@MODELS.register_module()
class ToyBrightness(OpenVocabSegmentor):
    """Labels by brightness band. ``offset`` is added to every pixel's brightness."""

    METHOD = 'Toy brightness'
    CLI_NAME = 'toy-brightness'
    SUMMARY = 'a test method: brightness bands'
    WEIGHTS_ARGUMENT = 'offset'
    PIXEL_NORMALISATION = dict(mean=None, std=None)
    OPTIONS = (MethodOption('brightness_offset', 0.0, 'added to every pixel\'s brightness',
                            type=float),)
    CONFIG_SETTINGS = ('offset', 'slide_crop', 'slide_stride')
    WORKBOOK_COLUMNS = ('offset',)

    def __init__(self, name_path=None, classes=None, offset: float = 0.0,
                 prob_thd: float = 0.0, bg_idx: int = 0, slide_crop: int = 0,
                 slide_stride: int = 0, data_preprocessor: Optional[dict] = None,
                 init_cfg=None, pretrained=None, train_cfg=None, test_cfg=None):
        super().__init__(name_path, classes, prob_thd, bg_idx, slide_crop, slide_stride,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg,
                         pretrained=pretrained)
        self.offset = offset

    def window_features(self, crops):
        return crops.float().mean(dim=1, keepdim=True) + self.offset

    def features_maps(self, features, queries=None):
        count = len(self.class_queries.queries)
        centres = torch.as_tensor(band_centres(count), dtype=torch.float32)
        if queries is not None:
            centres = centres[queries.cpu()]
        return -(features - centres.view(1, -1, 1, 1)).abs()

    @property
    def probabilities(self):
        return SoftmaxProbabilities(0.1)

    @classmethod
    def build_for_predict(cls, classes, options, settings):
        if 'brightness_offset' in options:
            settings['offset'] = options['brightness_offset']
        return cls(classes=classes, **settings), 'brightness', None

    @classmethod
    def describe(cls, model):
        return {'backbone': 'brightness', 'weights': 'none', 'offset': model.get('offset')}
