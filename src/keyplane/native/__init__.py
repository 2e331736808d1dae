"""The native management API (``/v1/accounts``, ``/v1/sub-accounts``, ``/v1/keys``, ``/v1/audit-events``):
JSON over HTTP for the venue's own services, authenticated by operator tokens (``keyplane tokens``).

``api.py`` is the HTTP edge (tokens, routing, scopes, bodies, idempotent creates), ``routes.py`` the route
table, ``schemas.py`` the bodies, ``errors.py`` the one error shape, ``paging.py`` the lists' cursors and
query parameters; ``accounts.py``, ``keys.py`` and ``audit.py`` turn calls into the services' use-cases.
``/v1/verify`` and ``/v1/noop`` (the gateway's API) stay in ``keyplane.dialects.native``.
"""
