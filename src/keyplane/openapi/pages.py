"""``/docs``: the OpenAPI document in Swagger UI, from files shipped in the package (no CDN, works offline).

``static/`` holds swagger-ui-dist's ``swagger-ui-bundle.js`` and ``swagger-ui.css`` as published on npm
(version and checksums in ``static/VENDORED.md``, license in ``static/LICENSE``), and ``docs.js``, which
starts it on ``/openapi.json``. The page runs no inline script, so its Content-Security-Policy allows
scripts from this server only.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from keyplane.http import Response

DOCS = "/docs"
ASSET_PREFIX = "/docs/"

# every file /docs/ serves, with its content type: nothing else under /docs/ is answered
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "docs.js": "text/javascript; charset=utf-8",
    "LICENSE": "text/plain; charset=utf-8",
    "NOTICE": "text/plain; charset=utf-8",
}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keyplane API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/docs.js"></script>
</body>
</html>
"""

_PAGE_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-cache"),
]


def page() -> Response:
    return Response(200, PAGE, list(_PAGE_HEADERS))


@cache
def _read(name: str) -> bytes:
    return resources.files("keyplane.openapi").joinpath("static", name).read_bytes()


def asset(name: str) -> Response:
    """One of ``ASSETS`` (the caller routes only those names here)."""
    return Response(200, _read(name), [
        (b"content-type", ASSETS[name].encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"public, max-age=86400"),
    ])
