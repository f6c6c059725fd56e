from .data_preprocessor import RSDataPreProcessor, select_bands
from .dense_clip import DenseCLIP
from .segearth_ov3 import SegEarthOV3
from .segmentor import SegEarthOV
from .upsamplers import JBU, JBUOne, JBUStack, build_upsampler

__all__ = ['SegEarthOV', 'SegEarthOV3', 'DenseCLIP', 'RSDataPreProcessor', 'select_bands',
           'JBU', 'JBUOne', 'JBUStack', 'build_upsampler']
