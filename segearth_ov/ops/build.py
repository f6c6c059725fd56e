"""Find or build the compiled adaptive_conv extensions.

Order for a backend (``'cpu'`` or ``'cuda'``), tried once per process:

1. the module built by ``pip install`` (``segearth_ov._ext_cpu`` / ``segearth_ov._ext_cuda``);
2. a JIT build with ninja from ``csrc/`` of the source checkout into a cache folder
   (``$SEGEARTH_OV_EXT_CACHE``, default ``~/.cache/segearth_ov/ext/<torch>-<python>``), reused
   by later processes;
3. ``None``: the caller falls back to the next backend. A failed build logs why, once.
"""
from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, Optional

logger = logging.getLogger(__name__)

CSRC = Path(__file__).resolve().parents[2] / 'csrc'
# cpu_module.cpp holds the Python bindings, apart from the kernels (see its header)
SOURCES = {
    'cpu': ['cpu_module.cpp', 'adaptive_conv_cpu.cpp', 'bicubic_conv_cpu.cpp'],
    'cuda': ['adaptive_conv_cuda.cu'],
}
_loaded: Dict[str, Optional[object]] = {}


def cpu_flags() -> list:
    """C++ flags; ``SEGEARTH_OV_CPU_ARCH_FLAGS`` replaces ``-march=native`` (e.g. for builds
    that will run on other CPUs)."""
    arch = os.environ.get('SEGEARTH_OV_CPU_ARCH_FLAGS', '-march=native').split()
    return ['-O3', '-fopenmp', *arch]


def find_cuda_home() -> Optional[str]:
    """A CUDA root with ``bin/nvcc`` and ``libcudart``. ``nvcc`` on PATH may be a wrapper
    script, so its parent folder is tried last."""
    candidates = [os.environ.get('CUDA_HOME'), os.environ.get('CUDA_PATH'), '/usr/local/cuda']
    nvcc = shutil.which('nvcc')
    if nvcc:
        candidates.append(str(Path(os.path.realpath(nvcc)).parents[1]))
    for root in filter(None, candidates):
        libs = [Path(root, sub) for sub in ('lib64', 'lib')]
        libs += list(Path(root).glob('targets/*/lib'))
        if Path(root, 'bin', 'nvcc').exists() and any(p.glob('libcudart.so*') for p in libs):
            return root
    return None


def cuda_arch_list() -> str:
    """``TORCH_CUDA_ARCH_LIST`` if set; else the visible GPUs'; else Hopper (9.0)."""
    import torch
    if os.environ.get('TORCH_CUDA_ARCH_LIST'):
        return os.environ['TORCH_CUDA_ARCH_LIST']
    if torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ';'.join(f'{major}.{minor}' for major, minor in sorted(caps))
    return '9.0'


def cache_dir() -> Path:
    """Where JIT-built extensions go, per torch and Python version."""
    import torch
    default = Path.home() / '.cache' / 'segearth_ov' / 'ext' / (
        f'torch{torch.__version__.replace("+", "_")}-py{sys.version_info[0]}{sys.version_info[1]}')
    return Path(os.environ.get('SEGEARTH_OV_EXT_CACHE', default))


def jit_build(backend: str, build_dir: Optional[Path] = None, verbose: bool = False):
    """Compile ``backend`` from ``csrc/`` with ninja and import it; raises on failure."""
    cuda_home = find_cuda_home()
    if cuda_home:  # before cpp_extension's import-time guess (wrong for a wrapper nvcc)
        os.environ.setdefault('CUDA_HOME', cuda_home)
    from torch.utils import cpp_extension
    sources = [str(CSRC / name) for name in SOURCES[backend]]
    missing = [s for s in sources if not os.path.isfile(s)]
    if missing:
        raise FileNotFoundError(f'sources not found: {missing} (JIT builds need a source checkout)')
    build_dir = Path(build_dir or cache_dir() / backend)
    build_dir.mkdir(parents=True, exist_ok=True)
    kwargs = dict(name=f'segearth_ov_adaptive_conv_{backend}', sources=sources,
                  build_directory=str(build_dir), extra_include_paths=[str(CSRC)], verbose=verbose)
    if backend == 'cpu':
        return cpp_extension.load(extra_cflags=cpu_flags(), extra_ldflags=['-fopenmp'], **kwargs)
    if cuda_home is None:
        raise RuntimeError('no CUDA toolkit found (set CUDA_HOME to the folder with bin/nvcc)')
    os.environ['CUDA_HOME'] = cuda_home
    cpp_extension.CUDA_HOME = cuda_home
    os.environ['TORCH_CUDA_ARCH_LIST'] = cuda_arch_list()
    return cpp_extension.load(extra_cflags=['-O3'], extra_cuda_cflags=['-O3'], **kwargs)


def load_extension(backend: str):
    """The compiled module for ``backend`` ('cpu' or 'cuda'), or None when unavailable."""
    if backend in _loaded:
        return _loaded[backend]
    module = None
    try:
        module = importlib.import_module(f'segearth_ov._ext_{backend}')
    except ImportError:
        pass
    if module is None and _can_build(backend):
        logger.info('adaptive_conv: building the %s extension with ninja into %s (once)',
                    backend, cache_dir() / backend)
        try:
            module = jit_build(backend)
        except Exception as err:  # any compiler/linker problem: fall back, say why
            logger.warning('adaptive_conv: the %s extension could not be built (%s: %s); '
                           'falling back to the next backend', backend, type(err).__name__,
                           str(err).strip().splitlines()[-1] if str(err).strip() else '')
    _loaded[backend] = module
    return module


def _can_build(backend: str) -> bool:
    if os.environ.get('SEGEARTH_OV_NO_JIT') == '1':
        return False
    if backend == 'cuda':
        import torch
        return torch.version.cuda is not None and torch.cuda.is_available()
    return shutil.which(os.environ.get('CXX', 'c++')) is not None
