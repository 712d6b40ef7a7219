"""The standalone service: what runs flask-impulse as a program rather than as an extension.

- ``service``: ``create_app``, the app configured from the environment;
- ``cli``: the ``flask-impulse`` command (and ``python -m flask_impulse``), gunicorn embedded;
- ``commands``: ``flask impulse ...``, the Flask CLI group (TypeScript types of the channels);
- ``worker``: gunicorn's gevent worker, answering the requests gunicorn refuses in JSON.

``flask_impulse.gunicorn_config`` (the settings users name to gunicorn) and
``flask_impulse.wsgi`` (the packaged WSGI module) stay at the top of the package, at the paths
the documentation gives. May import anything in the package; nothing in it imports ``server``
except ``wsgi`` and ``__main__``.
"""
