"""Who may push and subscribe, how much, and what never reaches a log or a browser unguarded.

- ``auth``: the publisher's shared secret, compared in constant time;
- ``tokens``: signed subscriber tokens (issuing, verifying, key rotation);
- ``access``: the gatekeeper that admits a subscription or a push (tokens, hooks, quotas);
- ``quotas``: streams per client address and per subscriber;
- ``ratelimit``: the push rate limit per publisher;
- ``cors``: the blueprint's CORS options from the settings;
- ``headers``: the security headers every answer carries;
- ``redaction``: secrets and tokens masked in every log record.

May import ``config``, ``errors``, ``validation``, ``_json``, ``broker`` (the connection a
quota counts) and the libraries Flask brings; never ``views``, ``extension`` or ``server``,
which build on it.
"""
