"""Evaluate every benchmark config, resumably, into one results workbook.

    python tools/eval_all.py [--only NAMES] [--group optical|sar|semseg|building|road|water]
        [--force] [--results results.xlsx] [--launcher ...]
"""
import sys

from segearth_ov.evaluation.cli import eval_all_main

if __name__ == '__main__':
    sys.exit(eval_all_main())
