"""Evaluate one benchmark config and store its row in the results workbook.

    python tools/eval.py --config configs/cfg_potsdam.py [--work-dir DIR] [--show-dir DIR]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi] [--results results.xlsx]
"""
import sys

from segearth_ov.evaluation.cli import eval_main

if __name__ == '__main__':
    sys.exit(eval_main())
