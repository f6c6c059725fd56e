"""``segearth-ov explore``: a local web app to try words on a scene (``session`` holds the
state, ``server`` the web side, ``static/`` the page)."""
from .server import create_app, serve
from .session import ExploreSession

__all__ = ['ExploreSession', 'create_app', 'serve']
