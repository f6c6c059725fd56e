"""segearth-ov: an mmsegmentation plugin for training-free open-vocabulary segmentation."""
from setuptools import find_packages, setup


def read_requirements(path='requirements.txt'):
    with open(path) as f:
        return [line.split('#')[0].strip() for line in f
                if line.split('#')[0].strip() and not line.startswith(('setuptools', 'wheel'))]


setup(
    name='segearth-ov',
    version='0.1.0',
    description='Training-free open-vocabulary semantic segmentation of remote-sensing images '
                '(SegEarth-OV) as an mmsegmentation plugin',
    long_description=open('README.md').read() if __import__('os').path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['segearth_ov', 'segearth_ov.*']),
    install_requires=read_requirements(),
    extras_require={'tests': ['pytest==9.2.0']},
)
