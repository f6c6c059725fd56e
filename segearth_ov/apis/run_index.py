"""What a ``predict`` run wrote: the manifest (every input's status, settings and outputs,
appended as each input ends, one part per process) and a STAC-style index of the results
(an ItemCollection of one Item per input: footprint, CRS, assets and class table).

An interrupted run resumes from the per-input JSON summaries (finished inputs are
skipped); the manifest parts show how far each process got.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import List, Optional

from ..fileio import atomic_path, open_no_follow
from .run_folder import run_folder
COG_TYPE = 'image/tiff; application=geotiff; profile=cloud-optimized'
MEDIA_TYPES = {'.tif': 'image/tiff; application=geotiff', '.png': 'image/png',
               '.json': 'application/json', '.gpkg': 'application/geopackage+sqlite3',
               '.geojson': 'application/geo+json'}
ROLES = dict(labels=['data'], confidence=['data'], vector=['data'], overlay=['overview'],
             summary=['metadata'])


def utc_now() -> str:
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())


class ManifestPart:
    """One process's manifest lines: a JSON object per input, appended and flushed to disk
    as soon as the input ends, so a killed run's progress stays readable."""

    def __init__(self, out: Path, rank: int):
        self.path = run_folder(out) / f'manifest.rank{rank}.jsonl'
        self.rank = rank
        self._file = open_no_follow(self.path, 'w')

    def record(self, **entry) -> None:
        self._file.write(json.dumps(dict(entry, rank=self.rank, ended=utc_now()),
                                    allow_nan=False) + '\n')
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_parts(out: Path, world_size: int) -> List[dict]:
    """The entries of every process's manifest part, sorted by input."""
    entries = []
    for rank in range(world_size):
        path = run_folder(out) / f'manifest.rank{rank}.jsonl'
        if path.is_file() and not path.is_symlink():
            entries += [json.loads(line) for line in path.read_text().splitlines() if line]
    return sorted(entries, key=lambda e: e['input'])


def write_manifest(out: Path, entries: List[dict], settings: dict, world_size: int) -> Path:
    """``<out>/manifest.json``: the run's settings and every input's entry."""
    path = Path(out) / 'manifest.json'
    counts = {status: sum(e['status'] == status for e in entries)
              for status in ('done', 'skipped', 'failed', 'outside-aoi')}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(dict(created=utc_now(), processes=world_size, **counts,
                                       settings=settings, inputs=entries), indent=2,
                                  allow_nan=False))
    return path


def _footprint(summary: dict):
    """WGS 84 ``(bbox, polygon)`` of a georeferenced result, else ``(None, None)``."""
    if not summary.get('bounds'):
        return None, None
    from rasterio.warp import transform_bounds
    west, south, east, north = transform_bounds(summary['crs'], 'EPSG:4326',
                                                *summary['bounds'], densify_pts=21)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return [west, south, east, north], dict(type='Polygon', coordinates=[ring])


def stac_item(summary: dict, item_id: str, root: Path) -> dict:
    """A STAC Item (projection and classification extensions) for one result; asset paths
    are relative to ``root``. ``datetime`` is null: the acquisition time is not known."""
    bbox, geometry = _footprint(summary)
    classes = [dict(value=i, name=c['name'], description=c['synonyms'],
                    **({'color_hint': '%02X%02X%02X' % tuple(summary['palette'][i])}
                       if summary.get('palette') else {}))
               for i, c in enumerate(summary['classes'])]
    assets = {}
    folder = Path(summary['json']).parent  # outputs are named beside their summary
    paths = dict(summary['outputs'], summary=Path(summary['json']).name)
    for key, path in paths.items():
        path = folder / path
        cog = path.suffix == '.tif' and summary['settings']['outputs'].get('cog')
        asset = dict(href=os.path.relpath(path, root),
                     type=COG_TYPE if cog else MEDIA_TYPES.get(path.suffix),
                     roles=ROLES.get(key, ['data']))
        if key == 'labels':
            asset['classification:classes'] = classes
            asset['nodata'] = summary['nodata_label']
        assets[key] = asset
    properties = dict(datetime=None, created=summary.get('created'),
                      **{'proj:code': summary['crs'], 'proj:shape': [summary['height'],
                                                                     summary['width']],
                         'proj:transform': summary.get('transform'),
                         'proj:bbox': summary.get('bounds')},
                      **{'segearth_ov:input': summary['input'],
                         'segearth_ov:method': summary['method'],
                         'segearth_ov:weights': summary['weights']})
    return dict(type='Feature', stac_version='1.0.0', stac_extensions=[
        'https://stac-extensions.github.io/projection/v2.0.0/schema.json',
        'https://stac-extensions.github.io/classification/v2.0.0/schema.json'],
        id=item_id, bbox=bbox, geometry=geometry, properties=properties, assets=assets,
        links=[])


def write_stac_index(out: Path, entries: List[dict]) -> Optional[Path]:
    """``<out>/index.json``: a STAC ItemCollection of every finished input's result."""
    out = Path(out)
    items = []
    for entry in entries:
        if entry['status'] not in ('done', 'skipped'):
            continue
        summary_path = out / entry['summary']
        summary = dict(json.loads(summary_path.read_text()), json=str(summary_path),
                       created=entry['ended'])
        items.append(stac_item(summary, entry['id'], out))
    path = out / 'index.json'
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(dict(type='FeatureCollection', features=items), indent=2,
                                  allow_nan=False))
    return path
