"""The package's layers point one way: each module imports only from lower layers (or its
own subpackage), and no module imports another module's private names."""
import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / 'segearth_ov'
# lower number = lower layer; a module may import from strictly lower layers and from its
# own subpackage
LAYERS = {
    'compat': 0, 'fileio': 0, 'errors': 0, 'geometry': 0, 'distributed': 0,
    'ops': 1, 'weights': 1, 'visualize': 1,
    'models': 2, 'datasets': 2,
    'engine': 3, 'dataset_converters': 3, 'training': 3,
    'evaluation': 4, 'apis': 4,
}
MODULES = sorted(p for p in PACKAGE.rglob('*.py') if p.name != '__init__.py' or
                 p.parent != PACKAGE)


def unit(module_path: Path) -> str:
    """The top-level unit of ``segearth_ov`` a file belongs to (``models``, ``weights``)."""
    return module_path.relative_to(PACKAGE).parts[0].removesuffix('.py')


def imported_units(path: Path, root: Path = REPO):
    """``(unit, imported names)`` of every segearth_ov import in ``path`` (under ``root``)."""
    tree = ast.parse(path.read_text())
    package_parts = path.relative_to(root).with_suffix('').parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[:len(package_parts) - node.level + 1]
                target = list(base) + (node.module.split('.') if node.module else [])
            else:
                target = node.module.split('.')
            if target[0] != 'segearth_ov':
                continue
            names = [alias.name for alias in node.names]
            if len(target) == 1:  # from segearth_ov import models, ...
                for name in names:
                    yield name, []
            else:
                yield target[1], names
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split('.')
                if parts[0] == 'segearth_ov' and len(parts) > 1:
                    yield parts[1], []


def test_every_unit_has_a_layer():
    units = {unit(p) for p in MODULES}
    assert units <= set(LAYERS) | {'_ext_cpu', '_ext_cuda'}, units - set(LAYERS)


@pytest.mark.parametrize('path', MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_and_stay_public(path):
    own = unit(path)
    for target, names in imported_units(path):
        if target == own:
            continue
        assert target in LAYERS, f'{path}: imports unknown unit {target}'
        assert LAYERS[target] < LAYERS[own], \
            f'{path} ({own}, layer {LAYERS[own]}) imports {target} (layer {LAYERS[target]})'
        private = [n for n in names if n.startswith('_')]
        assert not private, f'{path} imports private names {private} from {target}'


def test_the_layering_check_can_fail(tmp_path):
    """A model module importing the API is caught (the check reads what it should)."""
    fake = PACKAGE / 'models' / 'segmentor.py'
    imports = dict((t, n) for t, n in imported_units(fake))
    assert 'weights' in imports and 'apis' not in imports
    probe = tmp_path / 'segearth_ov' / 'models' / 'probe.py'
    probe.parent.mkdir(parents=True)
    probe.write_text('from ..apis.inference import _helper\n')
    assert list(imported_units(probe, tmp_path)) == [('apis', ['_helper'])]
