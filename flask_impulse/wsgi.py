"""The standalone service as a WSGI module, shipped in the package so that a pip install
serves it from any directory:

    gunicorn -c python:flask_impulse.gunicorn_config -b 0.0.0.0:8080 flask_impulse.wsgi:app

Configured from the environment (REALTIME_SECRET, CORS_ORIGIN, IMPULSE_*...).
"""

from .server.service import create_app

app = create_app()
