"""Using SegEarth-OV (or SegEarth-OV3) on your own imagery: arrays, files, large GeoTIFF
scenes, overlays, polygons, prepared images and the ``explore`` web app."""
from ..models.text import ClassQueries, read_class_names
from ..visualize import class_palette, colorize, overlay_with_legend
from .inference import OpenVocabSegmenter
from .outputs import OutputOptions
from .prepared import PreparedImage, Segmentation

__all__ = ['OpenVocabSegmenter', 'OutputOptions', 'PreparedImage', 'Segmentation',
           'ClassQueries', 'read_class_names', 'class_palette', 'colorize',
           'overlay_with_legend']
