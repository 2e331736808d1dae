"""The console's HTTP side: a form post or a query parsed from the raw ASGI request, and HTML responses
with the headers every console page carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl

from keyplane.http import Response

MAX_FIELDS = 64

# Nothing but the console's own files: no inline script or style, no frame, no form sent elsewhere
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", _CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin")  # a failed action goes back to the page it came from,
]
# a page may show a secret once, and a signed-in page is nobody else's: never stored by a browser or proxy
NO_STORE = (b"cache-control", b"no-store")


class BadForm(ValueError):
    pass


@dataclass(slots=True)
class WebRequest:
    method: str
    path: str  # after /console, "" for /console itself
    query: dict[str, str]
    form: dict[str, list[str]]
    headers: dict[str, str]
    client_ip: str
    secure: bool  # https, or the console told to treat it so
    cookies: dict[str, str] = field(default_factory=dict)

    def arg(self, name: str) -> str:
        return self.query.get(name, "").strip()

    def field(self, name: str) -> str:
        values = self.form.get(name)
        return values[-1].strip() if values else ""

    def fields(self, name: str) -> list[str]:
        return [value.strip() for value in self.form.get(name, []) if value.strip()]


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """``a=1&b=2`` as pairs; text that is not UTF-8 after percent-decoding, or too many fields, is BadForm."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors="strict",
                          max_num_fields=MAX_FIELDS)
    except (ValueError, UnicodeDecodeError):
        raise BadForm("the form could not be read") from None
    if any("\x00" in name or "\x00" in value for name, value in pairs):
        raise BadForm("the form could not be read")
    return pairs


def parse_query(raw: bytes) -> dict[str, str]:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise BadForm("the address could not be read") from None
    return dict(parse_pairs(text))


def parse_form(content_type: str, body: bytes) -> dict[str, list[str]]:
    if not body:
        return {}
    if content_type.split(";", 1)[0].strip().lower() != "application/x-www-form-urlencoded":
        raise BadForm("the console takes form posts only")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise BadForm("the form could not be read") from None
    form: dict[str, list[str]] = {}
    for name, value in parse_pairs(text):
        form.setdefault(name, []).append(value)
    return form


def parse_cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def html(status: int, body: str, *, cookie: str | None = None) -> Response:
    headers = [(b"content-type", b"text/html; charset=utf-8"), NO_STORE, *SECURITY_HEADERS]
    if cookie is not None:
        headers.append((b"set-cookie", cookie.encode("latin-1")))
    return Response(status, body.encode(), headers)


def redirect(location: str, *, cookie: str | None = None) -> Response:
    """303: a form's answer is a GET of the page it changed (a reload never posts twice)."""
    headers = [(b"location", location.encode("latin-1")), NO_STORE, *SECURITY_HEADERS]
    if cookie is not None:
        headers.append((b"set-cookie", cookie.encode("latin-1")))
    return Response(303, b"", headers)
