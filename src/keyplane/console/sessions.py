"""The console's session: a cookie sealed with the master key (AES-256-GCM), so that every worker and every
node reads it without a session table, and the client can neither read nor change it.

It holds the operator token's id (never the token), a CSRF token for the forms, when the session began and
when it was last used. Each request that passes re-seals it with a new ``seen`` (the idle timeout slides);
past the idle timeout or the session's lifetime it is refused. Signing out clears the cookie in the browser;
a copy taken before still works until its idle timeout or until the token is revoked (each request looks the
token up again), which is the price of a session no table holds.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cryptography.exceptions import InvalidTag

from keyplane.crypto import MasterKey

COOKIE = "keyplane_console"
COOKIE_PATH = "/console"
MAX_COOKIE_CHARS = 3072
MAX_FLASH_CHARS = 400
# the sealing's associated data: a session cookie opens as nothing else, and nothing else as a session
_SEAL_CONTEXT = "keyplane console session v1"


@dataclass(frozen=True, slots=True)
class Session:
    """``token_id`` is empty before sign-in: the sign-in form's CSRF token needs a session too."""

    token_id: str
    csrf: str = field(repr=False)
    started: int
    seen: int
    flash: tuple[str, str] | None = None  # (kind, text): what the last action did, shown by the next page

    @property
    def signed_in(self) -> bool:
        return bool(self.token_id)


class Sessions:
    def __init__(self, keys: Callable[[], MasterKey], *, idle_seconds: int, lifetime_seconds: int = 12 * 3600) -> None:
        self._keys = keys
        self.idle_seconds = idle_seconds
        self.lifetime_seconds = lifetime_seconds

    def new(self, now: int, token_id: str = "") -> Session:
        """A fresh session, with a CSRF token of its own (sign-in makes a new one: no fixation)."""
        return Session(token_id=token_id, csrf=secrets.token_urlsafe(32), started=now, seen=now)

    def touched(self, session: Session, now: int, flash: tuple[str, str] | None = None) -> Session:
        if flash is not None:
            flash = (flash[0], flash[1][:MAX_FLASH_CHARS])
        return replace(session, seen=now, flash=flash)

    def encode(self, session: Session) -> str:
        flash = list(session.flash) if session.flash else None
        payload = json.dumps([session.token_id, session.csrf, session.started, session.seen, flash]).encode()
        sealed = self._keys().seal(payload, _SEAL_CONTEXT)
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def decode(self, value: str, now: int) -> Session | None:
        """The session a cookie holds, or None: altered, sealed under a key no longer held, idle too long,
        too old, or from the future."""
        if not value or len(value) > MAX_COOKIE_CHARS:
            return None
        try:
            sealed = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            token_id, csrf, started, seen, flash = json.loads(self._keys().unseal(sealed, _SEAL_CONTEXT))
        except (ValueError, TypeError, InvalidTag, binascii.Error):
            return None
        if not (isinstance(token_id, str) and isinstance(csrf, str) and isinstance(started, int)
                and isinstance(seen, int)):
            return None
        if not (isinstance(flash, list) and len(flash) == 2 and all(isinstance(part, str) for part in flash)):
            flash = None
        if seen > now + 60 or now - seen > self.idle_seconds or now - started > self.lifetime_seconds:
            return None
        return Session(token_id=token_id, csrf=csrf, started=started, seen=seen,
                       flash=(flash[0], flash[1]) if flash else None)

    def cookie(self, session: Session, *, secure: bool) -> str:
        return _cookie(self.encode(session), secure=secure, max_age=self.idle_seconds)

    @staticmethod
    def cleared(*, secure: bool) -> str:
        return _cookie("", secure=secure, max_age=0)


def _cookie(value: str, *, secure: bool, max_age: int) -> str:
    # HttpOnly: no script reads it; SameSite=Strict: no other site's page sends it; Path: the console only
    parts = [f"{COOKIE}={value}", f"Path={COOKIE_PATH}", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def csrf_matches(session: Session, given: str) -> bool:
    return bool(given) and secrets.compare_digest(session.csrf.encode(), given.encode("utf-8", "replace"))
