"""A process's own peak memory, for the tests that measure a script in a child process:
Linux's VmHWM (``ru_maxrss`` would include the peak of the pytest process it was forked
from), restarted from the current RSS with ``clear_refs``."""
import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def reset_peak() -> None:
    """Restart this process's peak from its current RSS."""
    with open('/proc/self/clear_refs', 'w') as refs:
        refs.write('5')


def peak_mib() -> float:
    """This process's peak RSS since it started or since :func:`reset_peak`, in MiB."""
    with open('/proc/self/status') as status:
        return int(next(line for line in status if line.startswith('VmHWM')).split()[1]) / 1024


def child_env() -> dict:
    """The environment of a child script that imports this module."""
    paths = [str(TESTS), *filter(None, [os.environ.get('PYTHONPATH')])]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
