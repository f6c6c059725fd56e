"""Using SegEarth-OV on your own imagery: arrays, files, large GeoTIFF scenes, overlays."""
from .inference import OpenVocabSegmenter, parse_classes
from .visualize import class_palette, colorize, overlay_with_legend

__all__ = ['OpenVocabSegmenter', 'parse_classes', 'class_palette', 'colorize',
           'overlay_with_legend']
