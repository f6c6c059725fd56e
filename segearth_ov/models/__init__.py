from .data_preprocessor import RSDataPreProcessor, select_bands
from .dense_clip import DenseCLIP
from .methods import (DEFAULT_METHOD, MethodOption, get_method, method_names, method_of_model,
                      method_options, owners_of, register_method, unregister_method)
from .open_vocab import OpenVocabSegmentor
from .segearth_ov3 import SegEarthOV3
from .segmentor import SegEarthOV
from .upsamplers import JBU, JBUOne, JBUStack, build_upsampler

__all__ = ['SegEarthOV', 'SegEarthOV3', 'OpenVocabSegmentor', 'DenseCLIP',
           'RSDataPreProcessor', 'select_bands', 'JBU', 'JBUOne', 'JBUStack', 'build_upsampler',
           'DEFAULT_METHOD', 'MethodOption', 'get_method', 'method_names', 'method_of_model',
           'method_options', 'owners_of', 'register_method', 'unregister_method']
