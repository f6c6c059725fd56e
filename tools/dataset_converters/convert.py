"""Convert a raw benchmark download into the layout its config reads.

    python tools/dataset_converters/convert.py potsdam /downloads/Potsdam
    python tools/dataset_converters/convert.py --help

Every set and its options: dataset_prepare.md.
"""
import sys

from segearth_ov.dataset_converters import main

if __name__ == '__main__':
    sys.exit(main())
