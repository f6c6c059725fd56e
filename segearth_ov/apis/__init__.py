from .visualize import class_palette, colorize, overlay_with_legend

__all__ = ['class_palette', 'colorize', 'overlay_with_legend']
