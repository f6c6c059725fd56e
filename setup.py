"""segearth-ov: an mmsegmentation plugin for training-free open-vocabulary segmentation.

``pip install --no-build-isolation -e .`` also compiles the native adaptive_conv ops when it
can: the C++/OpenMP one when a C++ compiler is present, the CUDA one when torch is a CUDA
build and a CUDA toolkit (nvcc) is found. A failed or skipped build never fails the install:
the op JIT-builds on first use or falls back to PyTorch. Environment switches:
``SEGEARTH_OV_BUILD_EXT=0`` (build nothing), ``SEGEARTH_OV_BUILD_CUDA=0`` (skip CUDA),
``SEGEARTH_OV_CPU_ARCH_FLAGS`` (replaces ``-march=native``), ``TORCH_CUDA_ARCH_LIST``.
"""
import importlib.util
import os
import shutil
import sys

from setuptools import find_packages, setup


def read_requirements(path='requirements.txt'):
    with open(path) as f:
        lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line and not line.startswith(('setuptools', 'wheel'))]


def load_build_helpers():
    spec = importlib.util.spec_from_file_location('_segearth_build', 'segearth_ov/ops/build.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def native_extensions():
    """``(ext_modules, cmdclass)`` for the extensions this machine can build."""
    if os.environ.get('SEGEARTH_OV_BUILD_EXT', '1') == '0':
        return [], {}
    try:
        import torch  # noqa: F401
    except ImportError:
        print('segearth-ov: torch is not installed yet, native ops will JIT-build on first use')
        return [], {}
    helpers = load_build_helpers()
    cuda_home = helpers.find_cuda_home()
    if cuda_home:
        os.environ.setdefault('CUDA_HOME', cuda_home)
    from torch.utils import cpp_extension

    class SafeBuildExt(cpp_extension.BuildExtension):
        """Build each extension on its own; a failure is reported, not fatal."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as err:  # compiler, nvcc or linker failure
                print(f'segearth-ov: WARNING: could not build {ext.name} ({err}); it will be '
                      f'JIT-built on first use or the PyTorch fallback is used', file=sys.stderr)

    exts = []
    if shutil.which(os.environ.get('CXX', 'c++')):
        exts.append(cpp_extension.CppExtension(
            'segearth_ov._ext_cpu', [f'csrc/{name}' for name in helpers.SOURCES['cpu']],
            include_dirs=['csrc'],
            extra_compile_args=helpers.cpu_flags(), extra_link_args=['-fopenmp']))
    import torch
    if (os.environ.get('SEGEARTH_OV_BUILD_CUDA', '1') != '0' and torch.version.cuda
            and cuda_home):
        cpp_extension.CUDA_HOME = cuda_home
        os.environ.setdefault('TORCH_CUDA_ARCH_LIST', helpers.cuda_arch_list())
        exts.append(cpp_extension.CUDAExtension(
            'segearth_ov._ext_cuda', [f'csrc/{name}' for name in helpers.SOURCES['cuda']],
            include_dirs=['csrc'],
            extra_compile_args={'cxx': ['-O3'], 'nvcc': ['-O3']}))
    return exts, {'build_ext': SafeBuildExt.with_options(use_ninja=True)} if exts else {}


ext_modules, cmdclass = native_extensions()

setup(
    name='segearth-ov',
    version='0.1.0',
    description='Training-free open-vocabulary semantic segmentation of remote-sensing images '
                '(SegEarth-OV) as an mmsegmentation plugin',
    long_description=open('README.md').read() if os.path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['segearth_ov', 'segearth_ov.*']),
    package_data={'segearth_ov': ['splits/*.txt', 'apis/explore/static/*']},
    install_requires=read_requirements(),
    extras_require={'tests': read_requirements('requirements-test.txt'),
                    'sam3': read_requirements('requirements-sam3.txt'),
                    'app': read_requirements('requirements-app.txt')},
    entry_points={'console_scripts': ['segearth-ov=segearth_ov.apis.cli:main']},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
