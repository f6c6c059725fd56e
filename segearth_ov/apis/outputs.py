"""What ``predict`` writes per input, and where: the options that choose the outputs and the
file names they get."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

from .vectorize import check_shaping, vector_companions, vector_format


@dataclass(frozen=True)
class OutputOptions:
    """Which outputs to write besides the label map, overlay and JSON summary.

    Args:
        vector: ``'gpkg'``, ``'geojson'`` (RFC 7946, WGS 84), ``'geojson-crs'`` (the
            scene's CRS) or ``'shp'``: a polygon layer of the label map.
        min_area: polygons smaller than this are dropped (m^2 in a metric CRS, else pixels).
        simplify: outline simplification tolerance in map units (0: exact pixel outlines).
        cog: label (and confidence) GeoTIFFs are Cloud-Optimized; False writes plain tiled
            GeoTIFFs.
        confidence: also write the winning class's probability, uint8 ``round(p * 254)``
            with 255 as no data.
        aoi: a vector file; only tiles touching it are computed, pixels outside are no data.
    """

    vector: Optional[str] = None
    min_area: float = 0.0
    simplify: float = 0.0
    cog: bool = True
    confidence: bool = False
    aoi: Optional[str] = None

    def __post_init__(self):
        if self.vector is not None:
            vector_format(self.vector)
        check_shaping(self.min_area, self.simplify)
        if (self.min_area or self.simplify) and self.vector is None:
            raise ValueError('--min-area and --simplify shape the polygon layer: add --vector '
                             'gpkg (or geojson, geojson-crs, shp)')

    def settings(self, aoi_hash: Optional[str] = None) -> dict:
        """The options as recorded with each result: the area of interest by its file name
        and content, so the same file reached by another path counts as the same."""
        return dict(asdict(self), aoi=None if self.aoi is None else
                    dict(name=Path(self.aoi).name, hash=aoi_hash))


def output_paths(out_dir, name: str, options: OutputOptions = OutputOptions()
                 ) -> Dict[str, Path]:
    """Where the outputs of an input named ``name`` (a file name with its suffix, so ``t.png``
    and ``t.tif`` do not collide) go: ``<name>.labels.tif`` (georeferenced inputs) or
    ``<name>.labels.png`` with its QGIS style ``<name>.labels.qml``, ``<name>.overlay.png``,
    ``<name>.json``, and when asked ``<name>.confidence.tif|png`` and
    ``<name>.polygons.gpkg|geojson|shp`` (a Shapefile's companion files included) with
    ``<name>.polygons.qml``."""
    out_dir = Path(out_dir)
    paths = dict(labels_tif=out_dir / f'{name}.labels.tif',
                 labels_png=out_dir / f'{name}.labels.png',
                 labels_style=out_dir / f'{name}.labels.qml',
                 overlay=out_dir / f'{name}.overlay.png', json=out_dir / f'{name}.json')
    if options.confidence:
        paths.update(confidence_tif=out_dir / f'{name}.confidence.tif',
                     confidence_png=out_dir / f'{name}.confidence.png')
    if options.vector:
        paths['vector'] = out_dir / f'{name}.polygons{vector_format(options.vector)[1]}'
        paths['vector_style'] = out_dir / f'{name}.polygons.qml'
        for companion in vector_companions(paths['vector'], options.vector):
            paths[f'vector_{companion.suffix[1:]}'] = companion
    return paths
