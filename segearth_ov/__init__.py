"""segearth-ov: training-free open-vocabulary segmentation of remote-sensing images.

Importing the package registers ``SegEarthOV``, ``SegEarthOV3`` and ``RSDataPreProcessor``
in mmseg's ``MODELS`` (use ``custom_imports=dict(imports=['segearth_ov'])`` in configs).
The mmcv-lite compatibility module runs first, before anything imports mmseg.
"""
from . import compat

compat.apply()

from . import datasets, engine  # noqa: E402,F401  (registration needs the shim first)
from .apis import OpenVocabSegmenter  # noqa: E402
from .models import SegEarthOV, SegEarthOV3  # noqa: E402

__version__ = '0.1.0'
__all__ = ['SegEarthOV', 'SegEarthOV3', 'OpenVocabSegmenter', '__version__']
