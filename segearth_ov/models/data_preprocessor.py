"""Data preprocessor that applies the band rule before CLIP normalisation."""
from __future__ import annotations

from typing import Optional, Sequence

from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from torch import Tensor

CLIP_MEAN = (122.771, 116.746, 104.094)
CLIP_STD = (68.501, 66.632, 70.323)


def select_bands(image: Tensor, bands: Optional[Sequence[int]] = None) -> Tensor:
    """Return a 3-band ``[3, H, W]`` view of ``image`` ``[C, H, W]``.

    The rule: ``bands`` (1-based band numbers, e.g. ``(4, 3, 2)`` for Sentinel-2 RGB) picks
    bands explicitly; otherwise a 1-band image (SAR, greyscale) is replicated to 3 bands, a
    3-band image is used as is, and any other band count is an error, because which bands
    form an RGB-like image cannot be guessed.
    """
    if image.dim() != 3:
        raise ValueError(f'expected an image [C, H, W], got shape {tuple(image.shape)}')
    count = image.shape[0]
    if bands is not None:
        bands = list(bands)
        if len(bands) not in (1, 3) or any(not 1 <= b <= count for b in bands):
            raise ValueError(f'bands={bands} is not 1 or 3 band numbers in 1..{count} '
                             f'(the image has {count} bands)')
        image = image[[b - 1 for b in bands]]
        count = image.shape[0]
    if count == 1:
        return image.expand(3, -1, -1)
    if count == 3:
        return image
    raise ValueError(f'the image has {count} bands but the model needs 3: choose them '
                     f'explicitly with bands=(r, g, b), 1-based (e.g. (4, 3, 2) for '
                     f'Sentinel-2); 1-band images are replicated automatically')


@MODELS.register_module()
class RSDataPreProcessor(SegDataPreProcessor):
    """``SegDataPreProcessor`` with CLIP's mean/std by default and the band rule of
    :func:`select_bands` applied to every input first.

    Args:
        bands: optional 1-based band numbers of the loaded array, given in R, G, B order
            (see :func:`select_bands`); with bands set no BGR-to-RGB swap is applied.
        **kwargs: everything ``SegDataPreProcessor`` takes.
    """

    def __init__(self, mean=CLIP_MEAN, std=CLIP_STD, bgr_to_rgb: bool = True,
                 bands: Optional[Sequence[int]] = None, **kwargs):
        super().__init__(mean=mean, std=std, bgr_to_rgb=bgr_to_rgb, **kwargs)
        self.bands = tuple(bands) if bands is not None else None
        if self.bands is not None:
            self.channel_conversion = False

    def forward(self, data: dict, training: bool = False) -> dict:
        data = dict(data)
        data['inputs'] = [select_bands(img, self.bands) for img in data['inputs']]
        return super().forward(data, training)
