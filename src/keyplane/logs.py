"""The server's log: its level and format (``KEYPLANE_LOG_LEVEL``, ``KEYPLANE_LOG_FORMAT``) and the refusal
lines, at most a few a second per reason.

Every refused request is logged once, at INFO on ``keyplane.refusals``, with its reason code, the API key
it named (never a secret, signature or passphrase: those headers are never read here), the client's
address, the method and the path. A flood of refusals must not cost the server its throughput, so each
reason gets at most ``per_second`` lines a second; the rest are counted, and one line a second says how
many were suppressed ("suppressed K refusals", with the count per reason). Every refusal, logged or not,
is also counted in ``/metrics`` (``keyplane.metrics``). Valid requests are never logged here.

``KEYPLANE_LOG_FORMAT=json``: one JSON object per line (``time``, ``level``, ``logger``, ``message``, and a
refusal's fields as keys of their own); otherwise plain text.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

refusal_log = logging.getLogger("keyplane.refusals")

DEFAULT_LINES_PER_SECOND = 10
# what a log line shows of a client-chosen value: enough to recognise it, never a megabyte of it
_MAX_SHOWN = 200

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def level_from_env() -> int:
    name = os.environ.get("KEYPLANE_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise ValueError(f"KEYPLANE_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {name!r}")
    return level


def json_from_env() -> bool:
    value = os.environ.get("KEYPLANE_LOG_FORMAT", "text").strip().lower() or "text"
    if value not in ("text", "json"):
        raise ValueError(f"KEYPLANE_LOG_FORMAT must be 'text' or 'json', not {value!r}")
    return value == "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per line. A record's ``fields`` (a dict, given as ``extra={"fields": ...}``) become
    keys of their own; an exception is its formatted traceback (logged without local variables)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=True, default=str)


def formatter(as_json: bool) -> logging.Formatter:
    return JsonFormatter() if as_json else logging.Formatter(_TEXT_FORMAT)


def configure() -> None:
    """The root logger of a server process (each worker calls it), from the environment."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(json_from_env()))
    logging.basicConfig(level=level_from_env(), handlers=[handler], force=True)


def line(message: str) -> str:
    """``message`` as a line of the configured format (for what is printed before logging is set up)."""
    if not json_from_env():
        return message
    return JsonFormatter().format(logging.LogRecord("keyplane", logging.INFO, "", 0, message, None, None))


def granian_log_config() -> dict[str, Any]:
    """granian's own loggers (its start-up and worker lines) in the same format, on stderr. Raises
    ``ValueError`` for a bad ``KEYPLANE_LOG_LEVEL`` or ``KEYPLANE_LOG_FORMAT``."""
    level_from_env()
    as_json = json_from_env()
    fmt: dict[str, Any] = (
        {"()": "keyplane.logs.JsonFormatter"} if as_json else {"()": "logging.Formatter", "fmt": _TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"generic": fmt, "access": fmt},
        "handlers": {
            "console": {"formatter": "generic", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
            "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "_granian": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


def shown(value: str) -> str:
    """A client-chosen value as a log line may carry it: cut to 200 characters, and in text lines with
    every character that could forge or break a line (control characters, quotes, spaces) escaped."""
    value = value[:_MAX_SHOWN]
    if value.isprintable() and " " not in value and '"' not in value and "=" not in value:
        return value
    return json.dumps(value)


class RefusalLog:
    """Writes refusal lines, at most ``per_second`` a second per reason, and one summary line a second for
    the rest. Thread-safe; the summary of a second is written by the next refusal after it, or by a timer."""

    def __init__(self, per_second: int = DEFAULT_LINES_PER_SECOND) -> None:
        self.per_second = per_second
        self.suppressed_total = 0  # lines not written, over the process's life (``/metrics``)
        self._window = 0
        self._lines: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._announced = False

    def announce(self) -> None:
        """The one line that says refusal lines are rate-limited (at start)."""
        if self._announced:
            return
        self._announced = True
        refusal_log.info(
            "refused requests are logged at INFO, at most %d lines a second per reason; the rest are counted "
            "in one 'suppressed K refusals' line a second (KEYPLANE_LOG_REFUSALS_PER_SECOND), and every "
            "refusal in /metrics", self.per_second,
            extra={"fields": {"refusal_lines_per_second": self.per_second}},
        )

    def refused(
        self, reason: str, *, api_key: str, client_ip: str, method: str, path: str, route: str, **extra: Any
    ) -> None:
        """Logs one refusal, unless this second's lines for ``reason`` are spent (then it is counted)."""
        if self.admit(reason):
            self.write(reason, api_key=api_key, client_ip=client_ip, method=method, path=path, route=route, **extra)

    def admit(self, reason: str) -> bool:
        """Whether a line for ``reason`` may be written now; a refusal that may not is counted for the summary.
        The cheap half of ``refused``: a suppressed refusal costs a clock read and a dict update."""
        if not refusal_log.isEnabledFor(logging.INFO):
            return False
        now = int(time.monotonic())
        with self._lock:
            if now != self._window:
                self._flush_locked(now)
            written = self._lines.get(reason, 0)
            if written < self.per_second:
                self._lines[reason] = written + 1
                return True
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            self.suppressed_total += 1
            if self._timer is None:
                self._arm_locked()
            return False

    def write(
        self, reason: str, *, api_key: str, client_ip: str, method: str, path: str, route: str, **extra: Any
    ) -> None:
        """One refusal line (``admit`` said yes)."""
        reason = str(reason)
        fields: dict[str, Any] = {
            "reason": reason,
            "api_key": api_key[:_MAX_SHOWN],
            "client_ip": client_ip[:_MAX_SHOWN],
            "method": method[:_MAX_SHOWN],
            "path": path[:_MAX_SHOWN],
            "route": route,
            **extra,
        }
        more = "".join(f" {name}={shown(str(value))}" for name, value in extra.items())
        refusal_log.info(
            "refused %s %s %s key=%s ip=%s route=%s%s",
            reason, shown(method), shown(path), shown(api_key) or "-", shown(client_ip) or "-", route, more,
            extra={"fields": fields},
        )

    def _arm_locked(self) -> None:
        """A timer for the end of the current second: its summary is written even if no refusal follows."""
        self._timer = threading.Timer(max(self._window + 1 - time.monotonic(), 0) + 0.01, self._flush_later)
        self._timer.daemon = True
        self._timer.start()

    def _flush_later(self) -> None:
        with self._lock:
            self._timer = None
            self._flush_locked(int(time.monotonic()))
            if self._suppressed:  # suppressed in a second that is still running: its own timer
                self._arm_locked()

    def _flush_locked(self, now: int) -> None:
        """Ends the current second: its summary line, if anything was suppressed (the caller holds the lock)."""
        if now == self._window:
            return
        suppressed, self._suppressed = self._suppressed, {}
        self._lines.clear()
        self._window = now
        if suppressed:
            counts = {str(reason): count for reason, count in suppressed.items()}
            total = sum(counts.values())
            by_reason = ", ".join(f"{reason}: {count}" for reason, count in sorted(counts.items()))
            refusal_log.info(
                "suppressed %d refusals (%s): at most %d lines a second per reason are written",
                total, by_reason, self.per_second,
                extra={"fields": {"suppressed": total, "by_reason": counts}},
            )
