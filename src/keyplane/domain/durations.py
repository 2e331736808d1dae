"""Durations as people write them: ``90s``, ``15m``, ``1h``, ``30d``, ``2w`` (or a bare number of seconds)."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_DURATION = re.compile(r"(\d{1,9}(?:\.\d{1,6})?)([smhdw]?)")
# no duration keyplane takes is longer (ten years): a larger one is a typo, not an intent
MAX_SECONDS = 10 * 366 * 86_400


def parse_duration(text: str) -> float:
    """Seconds; ValueError (with a message fit for the user) for anything else, a negative value included."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration: a number and a unit, e.g. 90s, 15m, 1h, 30d, 2w")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds > MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than ten years")
    return seconds


def format_duration(seconds: float) -> str:
    """The largest whole unit that fits exactly (``7d``, ``1h``, ``90s``)."""
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
