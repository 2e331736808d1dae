"""``/console``: pages rendered on the server from the service layer, forms posted back to it.

Every request runs in a thread (the service waits on the store and hashes passphrases), passes the
session, the token's scopes and, for a form, its CSRF token, before any page or action runs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2

from keyplane.console import operators
from keyplane.console.operators import Operator
from keyplane.console.sessions import COOKIE, Session, Sessions, csrf_matches
from keyplane.console.web import BadForm, WebRequest, html, parse_cookies, parse_form, parse_query, redirect
from keyplane.errors import KeyplaneError, NotFound, Unavailable
from keyplane.http import BodyTooLarge, Receive, Response, Scope, read_body
from keyplane.outages import unavailable

log = logging.getLogger("keyplane.console")

PREFIX = "/console"
MAX_FORM_BYTES = 16 * 1024
_STATIC_TYPES = {".css": b"text/css; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
                 ".svg": b"image/svg+xml"}


@dataclass(slots=True)
class Context:
    """One request as a page or an action sees it."""

    request: WebRequest
    session: Session
    operator: Operator
    flash: tuple[str, str] | None = None  # (kind, text) to show on the next page

    def done(self, location: str, text: str, kind: str = "ok") -> Response:
        self.flash = (kind, text)
        return redirect(location)


View = Callable[..., Response]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    view: View
    needs: tuple[str, ...]  # the operator's token must grant one of these (``operators``)


class Console:
    def __init__(self, *, sessions: Sessions, tokens: Any, secure_cookie: bool = False) -> None:
        self.sessions = sessions
        self.tokens = tokens  # sign_in(text) -> Operator | None; operator(token_id) -> Operator | None
        self.secure_cookie = secure_cookie
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("keyplane.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.routes: list[Route] = []
        self.static = {
            entry.name: entry.read_bytes()
            for entry in resources.files("keyplane.console").joinpath("static").iterdir()
            if entry.name[entry.name.rfind("."):] in _STATIC_TYPES
        }

    def route(self, method: str, pattern: str, *needs: str) -> Callable[[View], View]:
        def add(view: View) -> View:
            self.routes.append(Route(method, re.compile(pattern + r"\Z"), view, needs))
            return view
        return add

    # the ASGI side ------------------------------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, path: str, client_ip: str) -> Response:
        rest = path[len(PREFIX):]
        if rest.startswith("/static/") and scope["method"] in ("GET", "HEAD"):
            return self._static(rest.removeprefix("/static/"))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        secure = self.secure_cookie or scope.get("scheme") == "https"
        try:
            body = await read_body(receive, MAX_FORM_BYTES)
            request = WebRequest(
                method=scope["method"], path=rest.split("?", 1)[0], query=parse_query(scope.get("query_string", b"")),
                form=parse_form(headers.get("content-type", ""), body) if scope["method"] == "POST" else {},
                headers=headers, client_ip=client_ip, secure=secure,
                cookies=parse_cookies(headers.get("cookie", "")),
            )
        except BodyTooLarge:
            return self.page(413, "error.html", title="Too large", message="The form is too large.")
        except BadForm as error:
            return self.page(400, "error.html", title="Bad request", message=str(error))
        try:
            return await asyncio.to_thread(self._respond, request)
        except Exception as error:
            if unavailable(error) is None and not isinstance(error, Unavailable):
                # a bug: logged (tracebacks carry no local variables, so no secret a frame held), and a page
                log.exception("console: unhandled error on %s %s", request.method, path)
                return self.page(500, "error.html", title="Error",
                                 message="Something went wrong on keyplane's side; it is logged.")
            log.warning("console: the store is unavailable (%s)", type(error).__name__)
            return self.page(503, "error.html", title="Unavailable",
                             message="The store cannot be reached now; nothing was changed. Try again shortly.")

    def _static(self, name: str) -> Response:
        content = self.static.get(name)
        if content is None:
            return self.page(404, "error.html", title="Not found", message="No such file.")
        kind = _STATIC_TYPES[name[name.rfind("."):]]
        return Response(200, content, [(b"content-type", kind), (b"cache-control", b"max-age=3600"),
                                       (b"x-content-type-options", b"nosniff")])

    # one request, in a thread ------------------------------------------------------------------------

    def _respond(self, request: WebRequest) -> Response:
        now = int(time.time())
        session = self.sessions.decode(request.cookies.get(COOKIE, ""), now)
        if request.path in ("", "/"):
            operator = self.tokens.operator(session.token_id) if session and session.signed_in else None
            return redirect(PREFIX + (_home(operator) if operator is not None else "/signin"))
        if request.path == "/signin":
            return self._signin(request, session, now)
        if request.path == "/signout" and request.method == "POST":
            return self._signout(request, session)
        route, params = self._match(request)
        if route is None:
            return self.page(404 if params is None else 405, "error.html", title="Not found",
                             message="There is no such page.")
        operator = self.tokens.operator(session.token_id) if session and session.signed_in else None
        if session is None or operator is None:
            if request.method == "GET":
                # a cookie that no longer opens a session: idle too long, too old, or its token revoked
                ended = "?ended=1" if (session.signed_in if session else request.cookies.get(COOKIE)) else ""
                return redirect(PREFIX + "/signin" + ended, cookie=self.sessions.cleared(secure=request.secure))
            return self.page(401, "error.html", title="Signed out",
                             message="Your session has ended: sign in again.",
                             cookie=self.sessions.cleared(secure=request.secure))
        if request.method == "POST" and not self._form_is_ours(request, session):
            return self.page(403, "error.html", title="Refused", message="This form was not sent from this "
                             "console session (its CSRF token is missing or wrong); nothing was changed.")
        if not any(operator.may(need) for need in route.needs):
            scopes = operators.scopes_granting(route.needs)
            return self.page(403, "error.html", title="Not allowed", operator=operator, csrf=session.csrf,
                             message=f"Your token ({operator.name or operator.token_id}) may not do this: it "
                                     f"needs the scope {scopes}.")
        context = Context(request, session, operator, flash=None)
        try:
            response = route.view(self, context, **(params or {}))
        except KeyplaneError as error:
            if isinstance(error, Unavailable):
                raise
            if request.method != "POST":
                missing = isinstance(error, NotFound)
                return self.page(404 if missing else 400, "error.html", title="Not found" if missing else "Not shown",
                                 operator=operator, csrf=session.csrf, message=_message(error))
            referer = _own_page(request.headers.get("referer", ""), request.headers.get("host", ""))
            response = context.done(referer or PREFIX + "/accounts", _message(error), "error")
        touched = self.sessions.touched(session, now, context.flash)
        cookie = self.sessions.cookie(touched, secure=request.secure)
        response.headers.append((b"set-cookie", cookie.encode("latin-1")))
        return response

    def _match(self, request: WebRequest) -> tuple[Route | None, dict[str, str] | None]:
        allowed = False
        for route in self.routes:
            found = route.pattern.match(request.path)
            if found is None:
                continue
            if route.method == request.method:
                return route, found.groupdict()
            allowed = True
        return None, ({} if allowed else None)

    def _form_is_ours(self, request: WebRequest, session: Session) -> bool:
        """The form's CSRF token is the session's, and the browser (if it says) sent it from this origin."""
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            host = request.headers.get("host", "")
            if origin not in (f"http://{host}", f"https://{host}"):
                return False
        return csrf_matches(session, request.field("csrf"))

    def _signin(self, request: WebRequest, session: Session | None, now: int) -> Response:
        if request.method == "GET":
            operator = self.tokens.operator(session.token_id) if session is not None and session.signed_in else None
            if operator is not None:
                return redirect(PREFIX + _home(operator))
            session = session if session is not None and not session.signed_in else self.sessions.new(now)
            ended = request.arg("ended") == "1"
            return self.page(200, "signin.html", csrf=session.csrf, error=None, ended=ended,
                             cookie=self.sessions.cookie(session, secure=request.secure))
        if request.method != "POST":
            return self.page(405, "error.html", title="Not found", message="There is no such page.")
        if session is None or not self._form_is_ours(request, session):
            fresh = self.sessions.new(now)
            return self.page(403, "signin.html", csrf=fresh.csrf,
                             error="The sign-in form had expired or was not this console's: try again.", ended=False,
                             cookie=self.sessions.cookie(fresh, secure=request.secure))
        operator = self.tokens.sign_in(request.field("token"))
        if operator is None:
            fresh = self.sessions.new(now)
            log.info("console: sign-in refused from %s", request.client_ip)
            return self.page(401, "signin.html", csrf=fresh.csrf, error="That token is not valid.", ended=False,
                             cookie=self.sessions.cookie(fresh, secure=request.secure))
        signed_in = self.sessions.new(now, operator.token_id)  # a new CSRF token: nothing from before sign-in
        self.tokens.record("console.signin", operator, request.client_ip)
        return redirect(PREFIX + _home(operator), cookie=self.sessions.cookie(signed_in, secure=request.secure))

    def _signout(self, request: WebRequest, session: Session | None) -> Response:
        if session is not None and not self._form_is_ours(request, session):
            return self.page(403, "error.html", title="Refused", message="This form was not sent from this "
                             "console session (its CSRF token is missing or wrong).")
        operator = self.tokens.operator(session.token_id) if session is not None and session.signed_in else None
        if operator is not None:
            self.tokens.record("console.signout", operator, request.client_ip)
        return redirect(PREFIX + "/signin", cookie=self.sessions.cleared(secure=request.secure))

    # rendering --------------------------------------------------------------------------------------

    def render(self, context: Context, template: str, status: int = 200, **values: Any) -> Response:
        return self.page(status, template, operator=context.operator, csrf=context.session.csrf,
                         flash=context.session.flash, **values)

    def page(self, status: int, template: str, *, cookie: str | None = None, **values: Any) -> Response:
        values.setdefault("operator", None)
        values.setdefault("csrf", "")
        values.setdefault("flash", None)
        values.setdefault("section", "")
        return html(status, self.templates.get_template(template).render(prefix=PREFIX, ops=operators, **values),
                    cookie=cookie)


def _home(operator: Operator) -> str:
    """The first page the operator's token may open: the accounts, or (an audit-only token) the audit log."""
    may_accounts = operator.may(operators.READ_ACCOUNTS) or operator.may(operators.READ_KEYS)
    return "/accounts" if may_accounts else "/audit"


def _message(error: KeyplaneError) -> str:
    return str(error) or type(error).__name__


def _own_page(referer: str, host: str) -> str | None:
    """The console page a form was posted from, to go back to (never another site's address)."""
    for scheme in ("http://", "https://"):
        base = f"{scheme}{host}{PREFIX}/"
        if host and referer.startswith(base):
            return referer[len(scheme) + len(host):]
    return None
