"""``segearth-ov explore``: the command line's options turned into a session and a server."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from ...fileio import writable_folder
from ...models import get_method, method_options
from ...models.methods import choose_method
from ..cli_parser import TILING_DEFAULTS
from .server import serve
from .session import ExploreSession

# the page's first words (any vocabulary can be typed there)
DEFAULT_CLASSES = 'building,roof;road;tree;grass;water;bare soil'
LOCAL_HOSTS = ('127.0.0.1', 'localhost', '::1')


def predict_words(args, given: dict) -> list:
    """The command line's settings that a ``segearth-ov predict`` of the page's result must
    repeat (the page's own menus are added by the session)."""
    flags = method_options()
    words = ['--config', args.config] if args.config else []
    for name, value in given.items():
        if flags[name].choices is None:
            words += [flags[name].cli_flag] + ([] if isinstance(value, bool) else [str(value)])
    for name, default in TILING_DEFAULTS.items():
        if getattr(args, name) != default:
            words += ['--' + name.replace('_', '-'), str(getattr(args, name))]
    return words


def explore(args) -> int:
    """Run the app until Ctrl-C; 0 when stopped, user errors raise before it starts."""
    from ..inference import OpenVocabSegmenter
    given = {name: getattr(args, name) for name in method_options() if hasattr(args, name)}
    method_class, _ = choose_method(args.method, args.config)
    inputs = [Path(p) for p in args.inputs]
    if args.host not in LOCAL_HOSTS:
        print(f'warning: listening on {args.host}: anyone who can reach this machine can use '
              f'the model and read the images given here', file=sys.stderr)

    def build(method: str, choices: dict):
        mine = {option.name for option in get_method(method).OPTIONS}
        options = {k: v for k, v in dict(given, **choices).items() if k in mine}
        return OpenVocabSegmenter(DEFAULT_CLASSES, config=args.config, method=method,
                                  device=args.device, tile=args.tile, overlap=args.overlap,
                                  batch_size=args.batch_size,
                                  prepared_bytes=int(args.prepared_gb * 2**30), **options)

    temporary = args.out is None
    out = Path(tempfile.mkdtemp(prefix='segearth-ov-explore-')) if temporary else \
        writable_folder(Path(args.out))
    try:
        choices = {o.name: given.get(o.name, o.default) for o in method_class.OPTIONS
                   if o.choices}
        session = ExploreSession(inputs, out, build, method_class.CLI_NAME, choices,
                                 predict_words(args, given))
        serve(session, args.host, args.port, int(args.max_upload_mb * 2**20))
    finally:
        if temporary:  # the folder this run made, with only what it wrote
            shutil.rmtree(out, ignore_errors=True)
    return 0
