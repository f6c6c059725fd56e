from .data_preprocessor import RSDataPreProcessor, select_bands
from .dense_clip import DenseCLIP
from .segmentor import SegEarthOV
from .upsamplers import JBU, JBUOne, JBUStack, build_upsampler

__all__ = ['SegEarthOV', 'DenseCLIP', 'RSDataPreProcessor', 'select_bands', 'JBU', 'JBUOne',
           'JBUStack', 'build_upsampler']
