"""The STAC index of a ``predict`` run: ``index.json``, an ItemCollection of one Item per
result, and ``collection.json``, the Collection they belong to, both in the output folder
with relative links and asset hrefs (the folder can be moved or served as it is).

Items are made by rio-stac from the label raster (footprint densified and reprojected to
WGS 84, projection extension) and pystac; labels carry the classification extension.
Their ``datetime`` is the acquisition time: ``--datetime`` when given, else the input's
metadata (GDAL's ``IMAGERY`` domain ``ACQUISITIONDATETIME``, else ``TIFFTAG_DATETIME``), else
the time the result was made, which the Item then says (``segearth_ov:datetime_source``).
"""
from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import List, Optional

from ..fileio import atomic_path

COG_TYPE = 'image/tiff; application=geotiff; profile=cloud-optimized'
MEDIA_TYPES = {'.tif': 'image/tiff; application=geotiff', '.png': 'image/png',
               '.json': 'application/json', '.gpkg': 'application/geopackage+sqlite3',
               '.geojson': 'application/geo+json', '.shp': 'application/vnd.shp',
               '.qml': 'application/xml'}
ROLES = dict(labels=['data'], confidence=['data'], vector=['data'], overlay=['overview'],
             summary=['metadata'], labels_style=['style'], vector_style=['style'])
CLASSIFICATION = 'https://stac-extensions.github.io/classification/v2.0.0/schema.json'
COLLECTION_FILE = 'collection.json'


def acquisition_time(dataset) -> Optional[str]:
    """The acquisition time an open raster declares (ISO 8601, UTC when no zone is given),
    or None."""
    text = dataset.tags(ns='IMAGERY').get('ACQUISITIONDATETIME') or \
        dataset.tags().get('TIFFTAG_DATETIME')
    return None if not text else parse_time(text, strict=False)


def parse_time(text: str, strict: bool = True) -> Optional[str]:
    """``text`` (ISO 8601, or TIFF's ``YYYY:MM:DD HH:MM:SS``) as ISO 8601 in UTC; a
    ``ValueError`` (or None unless ``strict``) when it is not a time."""
    text = text.strip()
    for parse in (dt.datetime.fromisoformat,
                  lambda t: dt.datetime.strptime(t, '%Y:%m:%d %H:%M:%S')):
        try:
            value = parse(text.replace('Z', '+00:00'))
        except ValueError:
            continue
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')
    if strict:
        raise ValueError(f'{text!r} is not a date and time (ISO 8601, e.g. '
                         f'2024-06-01T10:30:00Z)')
    return None


def _assets(summary: dict, folder: Path, root: Path) -> dict:
    import pystac
    classes = [dict(value=i, name=c['name'], description=c['synonyms'],
                    **({'color_hint': '%02X%02X%02X' % tuple(summary['palette'][i])}
                       if summary.get('palette') else {}))
               for i, c in enumerate(summary['classes'])]
    assets = {}
    for key, name in dict(summary['outputs'], summary=summary['json_name']).items():
        if key.startswith('vector_') and key != 'vector_style':
            continue  # a Shapefile's companions travel with the .shp
        path = folder / name
        cog = path.suffix == '.tif' and summary['settings']['outputs'].get('cog')
        extra = {}
        if key == 'labels':
            extra = {'classification:classes': classes, 'nodata': summary['nodata_label']}
        assets[key] = pystac.Asset(href=os.path.relpath(path, root),
                                   media_type=COG_TYPE if cog else MEDIA_TYPES.get(path.suffix),
                                   roles=ROLES.get(key, ['data']), extra_fields=extra)
    return assets


def stac_item(summary: dict, item_id: str, root: Path, when: Optional[str] = None) -> dict:
    """The STAC Item of one result (``summary`` with ``json_name`` and ``folder``); asset
    hrefs relative to ``root``; ``when`` overrides the acquisition time."""
    import pystac
    from rio_stac import create_stac_item
    folder = Path(summary['folder'])
    source = when or summary.get('acquired')
    time = dt.datetime.fromisoformat((source or summary['created']).replace('Z', '+00:00'))
    properties = {'created': summary['created'], 'segearth_ov:input': summary['input'],
                  'segearth_ov:method': summary['method'],
                  'segearth_ov:weights': summary['weights'],
                  'segearth_ov:datetime_source': ('--datetime' if when else 'input metadata'
                                                  if source else 'processing time')}
    assets = _assets(summary, folder, root)
    if summary.get('crs'):
        item = create_stac_item(str(folder / summary['labels']), input_datetime=time,
                                id=item_id, with_proj=True, geom_densify_pts=21,
                                properties=properties, assets=assets,
                                extensions=[CLASSIFICATION])
    else:  # a picture without a place: no footprint
        item = pystac.Item(id=item_id, geometry=None, bbox=None, datetime=time,
                           properties=properties, stac_extensions=[CLASSIFICATION])
        for key, asset in assets.items():
            item.add_asset(key, asset)
    item.collection_id = 'segearth-ov'
    item.links = [pystac.Link('collection', COLLECTION_FILE, media_type='application/json'),
                  pystac.Link('root', COLLECTION_FILE, media_type='application/json')]
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def collection(items: List[dict], title: str) -> dict:
    """The Collection of ``items``: their overall extent in space and time."""
    import pystac
    boxes = [i['bbox'] for i in items if i.get('bbox')]
    bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
            max(b[3] for b in boxes)] if boxes else [-180, -90, 180, 90]
    times = sorted(dt.datetime.fromisoformat(i['properties']['datetime'].replace('Z', '+00:00'))
                   for i in items)
    extent = pystac.Extent(pystac.SpatialExtent([bbox]),
                           pystac.TemporalExtent([[times[0], times[-1]] if times else
                                                  [None, None]]))
    result = pystac.Collection(id='segearth-ov', title=title, extent=extent, license='other',
                               description='Open-vocabulary segmentation results of '
                                           'segearth-ov predict: label rasters, confidence, '
                                           'polygons and summaries.')
    result.links = [pystac.Link('root', f'./{COLLECTION_FILE}', media_type='application/json'),
                    pystac.Link('items', './index.json', media_type='application/geo+json')]
    return result.to_dict(include_self_link=False, transform_hrefs=False)


def write_stac_index(out: Path, entries: List[dict], when: Optional[str] = None) -> Path:
    """``<out>/index.json`` (the Items of every finished input) and ``<out>/collection.json``;
    ``when`` (``--datetime``) sets every Item's acquisition time."""
    out = Path(out)
    items = []
    for entry in entries:
        if entry['status'] not in ('done', 'skipped'):
            continue
        summary_path = out / entry['summary']
        summary = dict(json.loads(summary_path.read_text()), json_name=summary_path.name,
                       folder=str(summary_path.parent), created=entry['ended'])
        items.append(stac_item(summary, entry['id'], out, when))
    with atomic_path(out / COLLECTION_FILE) as tmp:
        tmp.write_text(json.dumps(collection(items, out.resolve().name), indent=2,
                                  allow_nan=False))
    path = out / 'index.json'
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(dict(type='FeatureCollection', features=items), indent=2,
                                  allow_nan=False))
    return path
