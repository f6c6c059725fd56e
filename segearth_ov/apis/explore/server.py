"""The web side of ``segearth-ov explore``: a Flask app over an :class:`ExploreSession`,
served on 127.0.0.1 by werkzeug. The page is three static files of this package; every
other route answers JSON or a file the session wrote, named by id."""
from __future__ import annotations

import logging
import math
import signal
import threading
from pathlib import Path

from flask import Flask, jsonify, request, send_file
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ...errors import USER_ERRORS
from ...models import get_method, method_names
from .session import ExploreSession, default_region

STATIC = Path(__file__).resolve().parent / 'static'
PAGE_FILES = {'app.js': 'text/javascript', 'app.css': 'text/css'}
MIME = {'.png': 'image/png', '.tif': 'image/tiff', '.gpkg': 'application/geopackage+sqlite3',
        '.txt': 'text/plain'}
logger = logging.getLogger(__name__)


def _message(error: BaseException) -> str:
    return ' '.join(str(error).split()) or type(error).__name__


def _number(value, name: str):
    """A finite float from the page, or None for an empty field."""
    if value in (None, ''):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f'{name} must be a finite number, got {value!r}')
    return number


def method_choices() -> list:
    """Each registered method with its options that have a fixed set of choices (the page
    shows them as menus)."""
    return [dict(name=name, title=get_method(name).METHOD, summary=get_method(name).SUMMARY,
                 options=[dict(name=o.name, choices=list(o.choices), default=o.default)
                          for o in get_method(name).OPTIONS if o.choices])
            for name in method_names()]


def create_app(session: ExploreSession, max_upload: int) -> Flask:
    """The app; uploads larger than ``max_upload`` bytes are refused."""
    app = Flask(__name__, static_folder=None)
    app.config['MAX_CONTENT_LENGTH'] = max_upload

    @app.errorhandler(Exception)
    def error(err):
        if isinstance(err, RequestEntityTooLarge):
            limit = f'{max_upload / 2**20:.1f} MiB' if max_upload >= 2**20 else \
                f'{max_upload / 1024:.0f} KiB'
            return jsonify(error=f'the file is larger than the upload limit of {limit} '
                                 f'(segearth-ov explore --max-upload-mb)'), 413
        if isinstance(err, HTTPException):
            return jsonify(error=err.description), err.code
        if isinstance(err, FileNotFoundError):
            return jsonify(error=_message(err)), 404
        if isinstance(err, USER_ERRORS):
            return jsonify(error=_message(err)), 400
        logger.exception('explore: an unexpected error')
        return jsonify(error=f'internal error ({type(err).__name__}); the terminal running '
                             f'segearth-ov explore shows the details'), 500

    @app.get('/')
    def page():
        return send_file(STATIC / 'index.html', mimetype='text/html')

    @app.get('/static/<name>')
    def page_file(name):
        if name not in PAGE_FILES:
            raise FileNotFoundError(f'no page file {name!r}')
        return send_file(STATIC / name, mimetype=PAGE_FILES[name])

    @app.get('/api/info')
    def info():
        method, choices = session.settings
        return jsonify(inputs=[dict(id=key, name=image.name, width=image.width,
                                    height=image.height, georeferenced=image.georeferenced,
                                    region=list(default_region(image)))
                               for key, image in session.inputs.items()],
                       methods=method_choices(), method=method, choices=choices,
                       max_upload=max_upload)

    @app.post('/api/upload')
    def upload():
        file = request.files.get('image')
        if file is None:
            raise ValueError('no file in the upload')
        key = session.upload(file.filename, file.read())
        image = session.image(key)
        return jsonify(id=key, name=image.name, width=image.width, height=image.height,
                       georeferenced=image.georeferenced, region=list(default_region(image)))

    @app.get('/api/preview/<key>')
    def preview(key):
        return app.response_class(session.preview(key), mimetype='image/png')

    @app.post('/api/segment')
    def segment():
        body = request.get_json(silent=True) or {}
        region = body.get('region')
        if region is not None and (not isinstance(region, list) or len(region) != 4):
            raise ValueError('region must be [top, bottom, left, right] in image pixels')
        return jsonify(session.segment(
            str(body.get('input', '')), str(body.get('classes', '')),
            _number(body.get('prob_thd'), 'the threshold'),
            [int(_number(v, 'the region')) for v in region] if region else None,
            body.get('method') or None, body.get('choices')))

    @app.get('/api/progress')
    def progress():
        return jsonify(session.status())

    @app.get('/api/result/<rid>/<name>')
    def result_file(rid, name):
        path = session.download(rid, name)
        return send_file(path, mimetype=MIME[path.suffix],
                         as_attachment=name not in ('overlay.png', 'confidence.png',
                                                    'classes.png'),
                         download_name=name, max_age=0)

    return app


def serve(session: ExploreSession, host: str, port: int, max_upload: int) -> None:
    """Serve until Ctrl-C; prints the address once listening."""
    from werkzeug.serving import make_server
    server = make_server(host, port, create_app(session, max_upload), threaded=True)
    print(f'segearth-ov explore: open http://{host}:{server.port}/ (Ctrl-C stops it)',
          flush=True)
    logging.getLogger('werkzeug').setLevel(logging.WARNING)  # no line per request

    def stop(signum, frame):
        # shutdown() waits for the serving loop, so it runs beside it; the loop then ends
        # between requests, never inside one as a KeyboardInterrupt could
        threading.Thread(target=server.shutdown, daemon=True).start()
    handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve_forever()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        server.server_close()
        session.close()
    print('segearth-ov explore: stopped', flush=True)

