"""The rules of a key's lifecycle beyond the exchanges': a rotation's grace period and an explicit expiry."""

from __future__ import annotations

import math
import time

from keyplane.errors import InvalidInput

MAX_GRACE_S = 7 * 86_400
# an expiry further ahead than this is a typo, not an intent
MAX_EXPIRY_AHEAD_MS = 10 * 366 * 86_400 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def check_grace(grace_s: float) -> int:
    """The grace period in ms; InvalidInput unless it is a number of seconds from 0 to 7 days."""
    if isinstance(grace_s, bool) or not isinstance(grace_s, int | float) or not math.isfinite(grace_s):
        raise InvalidInput("the grace period must be a number of seconds", field="grace")
    if grace_s < 0 or grace_s > MAX_GRACE_S:
        raise InvalidInput("the grace period must be from 0 to 7 days", field="grace")
    return int(grace_s * 1000)


def check_expiry(expires_at: int | None, at_ms: int | None = None) -> int | None:
    """``expires_at`` (Unix ms) if it is in the future and at most ten years ahead; None stays None."""
    if expires_at is None:
        return None
    if isinstance(expires_at, bool) or not isinstance(expires_at, int):
        raise InvalidInput("the expiry must be a time (Unix ms)", field="expiresAt")
    now = now_ms() if at_ms is None else at_ms
    if expires_at <= now:
        raise InvalidInput("the expiry must be in the future", field="expiresAt")
    if expires_at - now > MAX_EXPIRY_AHEAD_MS:
        raise InvalidInput("the expiry must be at most ten years ahead", field="expiresAt")
    return expires_at
