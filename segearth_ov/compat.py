"""The one mmcv-lite compatibility module of this package.

mmsegmentation 1.2.2 imports ``mmcv.ops.point_sample`` and ``mmcv.ops.sigmoid_focal_loss``
at module level, and ``mmcv/ops/__init__.py`` loads every compiled op from ``mmcv._ext``.
mmcv-lite ships no ``mmcv._ext``, so ``import mmseg.models`` fails there.

:func:`apply` installs, only when ``mmcv._ext`` is missing, a light ``mmcv.ops`` package that

* exposes the pure-PyTorch ``point_sample`` and ``bilinear_grid_sample`` that mmcv-lite ships
  in ``mmcv/ops/point_sample.py``;
* exposes a ``sigmoid_focal_loss`` that raises when called (mmseg only binds the name at
  import; this package never trains with focal loss);
* raises ``ModuleNotFoundError`` for any other name, which is what mmseg's optional heads
  (``cc_head``, ``psa_head``, ...) catch to disable themselves.

With full mmcv installed it does nothing. It must run before anything imports mmseg; the
package ``__init__`` calls it first.
"""
from __future__ import annotations

import importlib.util
import sys
import types
import warnings

_SHIM_FLAG = '__segearth_ov_shim__'


def _has_compiled_mmcv() -> bool:
    try:
        return importlib.util.find_spec('mmcv._ext') is not None
    except (ImportError, ValueError):
        return False


def _focal_loss_unavailable(*args, **kwargs):
    raise RuntimeError(
        'mmcv.ops.sigmoid_focal_loss needs the compiled mmcv ops; mmcv-lite is installed. '
        'Use FocalLoss(use_sigmoid=False) or install full mmcv (not both).')


def apply() -> bool:
    """Install the light ``mmcv.ops`` when needed; return True if it is (or was) installed."""
    current = sys.modules.get('mmcv.ops')
    if current is not None:
        return getattr(current, _SHIM_FLAG, False)
    if _has_compiled_mmcv():
        return False
    mmcv_spec = importlib.util.find_spec('mmcv')
    if mmcv_spec is None or not mmcv_spec.submodule_search_locations:
        return False  # no mmcv at all: mmseg will report that itself
    ops_dir = f'{list(mmcv_spec.submodule_search_locations)[0]}/ops'

    spec = importlib.util.spec_from_file_location('mmcv.ops.point_sample',
                                                  f'{ops_dir}/point_sample.py')
    point_sample_mod = importlib.util.module_from_spec(spec)

    ops = types.ModuleType('mmcv.ops', doc='mmcv-lite stand-in installed by segearth_ov.compat')
    ops.__file__ = __file__
    ops.__path__ = []  # a package, so `import mmcv.ops.point_sample` resolves from sys.modules
    setattr(ops, _SHIM_FLAG, True)

    def __getattr__(name: str):
        if name.startswith('__'):
            raise AttributeError(name)
        raise ModuleNotFoundError(
            f'mmcv.ops.{name} needs the compiled mmcv ops (mmcv._ext), which mmcv-lite lacks',
            name=f'mmcv.ops.{name}')

    ops.__getattr__ = __getattr__
    sys.modules['mmcv.ops'] = ops
    sys.modules['mmcv.ops.point_sample'] = point_sample_mod
    spec.loader.exec_module(point_sample_mod)
    ops.point_sample = point_sample_mod.point_sample
    ops.bilinear_grid_sample = point_sample_mod.bilinear_grid_sample
    ops.sigmoid_focal_loss = _focal_loss_unavailable
    import mmcv
    mmcv.ops = ops
    # mmcv.cnn warns on import that MultiScaleDeformableAttention is missing; expected here.
    warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformableAttention``')
    return True
