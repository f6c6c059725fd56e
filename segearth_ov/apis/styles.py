"""QGIS layer styles (QML) for the results, so a layer opens coloured and labelled as the
overlay is: the label raster as a paletted raster (class names as labels; its declared
no-data value is transparent), the polygons categorised on ``class_name`` with the same
colours. QGIS loads ``<layer file stem>.qml`` beside a file-based layer by itself, and a
GeoPackage's default style from its ``layer_styles`` table.
"""
from __future__ import annotations

import sqlite3
import time
from typing import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

QGIS_HEADER = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"


def _hex(colour) -> str:
    return '#%02x%02x%02x' % tuple(int(c) for c in colour[:3])


def raster_style(class_names: Sequence[str], palette: np.ndarray) -> str:
    """QML of a paletted label raster: one entry per class value, named."""
    entries = '\n'.join(
        f'        <paletteEntry value="{value}" color="{_hex(colour)}" alpha="255" '
        f'label={quoteattr(name)}/>' for value, (name, colour) in
        enumerate(zip(class_names, palette)))
    return (f'{QGIS_HEADER}\n<qgis version="3.34.0" styleCategories="AllStyleCategories">\n'
            f'  <pipe>\n    <rasterrenderer type="paletted" band="1" opacity="1" '
            f'alphaBand="-1" nodataColor="">\n      <colorPalette>\n{entries}\n'
            f'      </colorPalette>\n    </rasterrenderer>\n  </pipe>\n'
            f'  <blendMode>0</blendMode>\n</qgis>\n')


def vector_style(class_names: Sequence[str], palette: np.ndarray,
                 field: str = 'class_name') -> str:
    """QML of a polygon layer categorised on ``field`` (the class name), one fill colour per
    class."""
    categories = '\n'.join(
        f'      <category value={quoteattr(name)} symbol="{i}" label={quoteattr(name)} '
        f'render="true"/>' for i, name in enumerate(class_names))
    symbols = '\n'.join(
        f'      <symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        f'        <layer class="SimpleFill" enabled="1" pass="0" locked="0">\n'
        f'          <Option type="Map">\n'
        f'            <Option name="color" type="QString" value="{",".join(map(str, map(int, colour[:3])))},255"/>\n'  # noqa: E501
        f'            <Option name="outline_color" type="QString" value="35,35,35,255"/>\n'
        f'            <Option name="outline_width" type="QString" value="0.26"/>\n'
        f'            <Option name="style" type="QString" value="solid"/>\n'
        f'          </Option>\n        </layer>\n      </symbol>'
        for i, colour in enumerate(palette[:len(class_names)]))
    return (f'{QGIS_HEADER}\n<qgis version="3.34.0" styleCategories="Symbology">\n'
            f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} '
            f'symbollevels="0" enableorderby="0" forceraster="0">\n'
            f'    <categories>\n{categories}\n    </categories>\n'
            f'    <symbols>\n{symbols}\n    </symbols>\n  </renderer-v2>\n</qgis>\n')


def store_gpkg_style(path, layer: str, qml: str, name: str = 'segearth-ov') -> None:
    """Store ``qml`` as the default style of ``layer`` in the GeoPackage at ``path`` (the
    ``layer_styles`` table QGIS reads, created when missing)."""
    with sqlite3.connect(str(path)) as db:
        db.execute(
            'CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, '
            'f_table_catalog TEXT, f_table_schema TEXT, f_table_name TEXT, '
            'f_geometry_column TEXT, styleName TEXT, styleQML TEXT, styleSLD TEXT, '
            'useAsDefault BOOLEAN, description TEXT, owner TEXT, ui TEXT, '
            'update_time DATETIME DEFAULT CURRENT_TIMESTAMP)')
        column = db.execute('SELECT column_name FROM gpkg_geometry_columns WHERE '
                            'table_name = ?', (layer,)).fetchone()
        db.execute('INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, '
                   'f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, '
                   'description, owner, ui, update_time) VALUES '
                   "('', '', ?, ?, ?, ?, '', 1, 'written by segearth-ov', '', '', ?)",
                   (layer, column[0] if column else 'geom', name, qml,
                    time.strftime('%Y-%m-%dT%H:%M:%S.000Z', time.gmtime())))
        # GeoPackage readers list the tables they may meet; QGIS writes this row too
        db.execute("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier) "
                   "VALUES ('layer_styles', 'attributes', 'layer_styles')")
