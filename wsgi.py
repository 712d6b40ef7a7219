"""The standalone service for gunicorn:

    gunicorn -c python:flask_impulse.gunicorn_config -b 0.0.0.0:8080 wsgi:app

Configured from the environment (REALTIME_SECRET, CORS_ORIGIN, IMPULSE_*...).
"""

from flask_impulse.service import create_app

app = create_app()
