"""Converters from the raw benchmark downloads to the layouts the configs read."""
from .cli import main
from .sets import (convert_binary_masks, convert_inria, convert_isaid, convert_isprs,
                   convert_loveda, convert_openearthmap, convert_uavid, convert_wbs_si, convert_xbd)
from .writer import OutputConflict, OutputWriter

__all__ = ['main', 'OutputWriter', 'OutputConflict', 'convert_isprs', 'convert_isaid',
           'convert_uavid', 'convert_binary_masks', 'convert_xbd', 'convert_inria',
           'convert_openearthmap', 'convert_loveda', 'convert_wbs_si']
