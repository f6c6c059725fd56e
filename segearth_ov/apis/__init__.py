"""Using SegEarth-OV on your own imagery: arrays, files, large GeoTIFF scenes, overlays."""
from ..models.text import ClassQueries, parse_classes, read_class_names
from .inference import OpenVocabSegmenter
from ..visualize import class_palette, colorize, overlay_with_legend

__all__ = ['OpenVocabSegmenter', 'ClassQueries', 'parse_classes', 'read_class_names',
           'class_palette', 'colorize',
           'overlay_with_legend']
