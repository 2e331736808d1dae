"""The console's parts without a browser: the sealed session cookie, the per-minute history of the
verification counters, and the chart drawn from it."""

from __future__ import annotations

import os
import re

from keyplane.auth.request import Reason, SignedRequest, VerifyResult
from keyplane.console import chart
from keyplane.console.sessions import Sessions
from keyplane.crypto import MasterKey
from keyplane.metrics import Metrics, merge_history

KEY = MasterKey(os.urandom(32))


def sessions(key: MasterKey = KEY, idle: int = 900) -> Sessions:
    return Sessions(lambda: key, idle_seconds=idle, lifetime_seconds=3600)


def test_a_session_round_trips_and_its_cookie_is_http_only_strict_and_opaque() -> None:
    codec = sessions()
    session = codec.new(1_000, "tok_abc")
    assert codec.decode(codec.encode(session), 1_000) == session
    cookie = codec.cookie(session, secure=False)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie and "Max-Age=900" in cookie
    assert "Secure" in codec.cookie(session, secure=True)
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert "tok_abc" not in value and session.csrf not in value  # sealed, not signed: nothing readable
    assert repr(session).count(session.csrf) == 0


def test_an_altered_foreign_idle_or_old_session_is_refused() -> None:
    codec = sessions()
    session = codec.new(1_000, "tok_abc")
    value = codec.encode(session)
    flipped = value[:20] + ("A" if value[20] != "A" else "B") + value[21:]
    assert codec.decode(flipped, 1_000) is None
    assert codec.decode(value[:-2], 1_000) is None
    assert codec.decode("", 1_000) is None and codec.decode("%%%", 1_000) is None
    assert codec.decode("x" * 5000, 1_000) is None
    assert sessions(MasterKey(os.urandom(32))).decode(value, 1_000) is None  # another master key
    assert codec.decode(value, 1_000 + 900) is not None
    assert codec.decode(value, 1_000 + 901) is None  # idle too long
    touched = codec.touched(session, 1_800)
    assert codec.decode(codec.encode(touched), 2_600) is not None  # each use slides the idle timeout
    assert codec.decode(codec.encode(codec.touched(session, 4_500)), 4_601) is None  # past the lifetime
    assert codec.decode(value, 1_000 - 120) is None  # seen in the future


def test_a_rotated_master_key_still_opens_a_session_sealed_under_the_old_one() -> None:
    old = os.urandom(32)
    value = sessions(MasterKey(old)).encode(sessions(MasterKey(old)).new(1_000, "tok_abc"))
    assert sessions(MasterKey(os.urandom(32), old)).decode(value, 1_000) is not None


def test_a_flash_rides_the_session_once() -> None:
    codec = sessions()
    session = codec.touched(codec.new(1_000, "tok_abc"), 1_001, ("ok", "x" * 1000))
    decoded = codec.decode(codec.encode(session), 1_001)
    assert decoded is not None and decoded.flash == ("ok", "x" * 400)
    assert codec.touched(decoded, 1_002).flash is None


def _request() -> SignedRequest:
    return SignedRequest(method="GET", path="/api/v2/x", query="", headers={}, body=b"", client_ip="127.0.0.1")


def test_the_history_counts_each_minute_by_reason_from_the_counters() -> None:
    metrics = Metrics()
    history = metrics.history
    history.tick(600.0)  # minute 10 begins
    for reason in (Reason.VALID, Reason.VALID, Reason.BAD_SIGNATURE):
        metrics.verified(_request(), VerifyResult(reason), "management")
    metrics.refused("NOT_FOUND", "other", method="GET", path="/x", client_ip="")
    history.tick(659.0)  # same minute: nothing closes
    assert list(history.minutes) == []
    assert history.recent() == [[600, {"VALID": 2, "BAD_SIGNATURE": 1, "NOT_FOUND": 1}]]
    history.tick(661.0)
    metrics.verified(_request(), VerifyResult(Reason.VALID), "verify")
    assert history.recent() == [[600, {"VALID": 2, "BAD_SIGNATURE": 1, "NOT_FOUND": 1}], [660, {"VALID": 1}]]
    for minute in range(12, 80):
        history.tick(minute * 60.0)
    assert len(history.minutes) == 60 and history.minutes[-1][0] == 78 * 60  # an hour, no more
    assert metrics.snapshot()["history"][-1] == [79 * 60, {}]


def test_workers_histories_add_up_by_minute() -> None:
    merged = merge_history([
        {"history": [[600, {"VALID": 2}], [660, {"VALID": 1, "UNKNOWN_KEY": 3}]]},
        {"history": [[660, {"VALID": 4}], ["bad", {}], [720, "bad"]]},
        {},
    ], since=660)
    assert merged == {660: {"VALID": 5, "UNKNOWN_KEY": 3}}


def test_the_chart_draws_a_stacked_bar_a_minute_with_its_numbers_in_titles() -> None:
    minutes = [(i * 60, {}) for i in range(58)] + [
        (58 * 60, {"VALID": 7, "BAD_SIGNATURE": 2}), (59 * 60, {"VALID": 1, "<script>": 1}),
    ]
    series = chart.Series(minutes)
    assert series.totals() == {"VALID": 8, "BAD_SIGNATURE": 2, "<script>": 1}
    svg = chart.render(series)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert len(re.findall("<rect ", svg)) == 4
    assert "00:58 UTC: 7 VALID" in svg and "00:58 UTC: 2 BAD_SIGNATURE" in svg
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert chart.colours(series)["VALID"] == chart.PALETTE[0]


def test_the_chart_groups_the_smallest_refusals_past_its_palette() -> None:
    counts = {f"R{i}": i + 1 for i in range(12)} | {"VALID": 50}
    series = chart.Series([(0, counts)])
    reasons = series.reasons()
    assert reasons[0] == "VALID" and reasons[-1] == chart.OTHER and len(reasons) == chart.MAX_SERIES
    svg = chart.render(series)
    assert f"{chart.OTHER}" in svg and "R11" in svg and "R0<" not in svg
