"""How the command-line tools report a user's error: one paragraph and a nonzero exit, the
traceback only when asked for (``--debug`` or ``SEGEARTH_OV_DEBUG=1``)."""
from __future__ import annotations

import os
import sys
import traceback

# Bad input or environment (a missing or unreadable file, a wrong value, a full disk): the
# message names the problem, a traceback adds nothing for the user.
USER_ERRORS = (OSError, ValueError)
DEBUG_ENV = 'SEGEARTH_OV_DEBUG'


def debug_enabled(flag: bool = False) -> bool:
    """Whether errors show tracebacks: ``--debug`` or the environment variable."""
    return flag or os.environ.get(DEBUG_ENV, '') not in ('', '0')


def report(error: BaseException, debug: bool = False, prefix: str = 'error') -> None:
    """Print ``error`` as one paragraph on stderr (with its traceback in debug mode)."""
    if debug_enabled(debug):
        traceback.print_exception(error)
    message = ' '.join(str(error).split()) or type(error).__name__
    print(f'{prefix}: {message}', file=sys.stderr, flush=True)
