"""The standalone service for gunicorn, from a checkout:

    gunicorn -c python:flask_impulse.gunicorn_config -b 0.0.0.0:8080 wsgi:app

The same app as ``flask_impulse.wsgi:app``, which a pip install serves from any directory.
"""

from flask_impulse.wsgi import app

__all__ = ["app"]
