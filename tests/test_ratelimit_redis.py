"""Rate limits shared through Redis: leased quotas decided locally, exact small limits, and Redis outages.

Two real processes hammer the same caller's limit through the machine's Redis (each test its own caller,
so parallel runs never share a counter); outages stop and start a private ``redis-server`` on its own
port and data directory, never the machine's.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from keyplane.ratelimit import RateLimiter
from keyplane.ratelimit_redis import SMALL, share_of
from outage_helpers import PrivateRedis

REDIS_URL = "redis://127.0.0.1:6379/0"

pytestmark = pytest.mark.redis

# Says it is ready, reads when to start (epoch s), hammers one caller's limit for ``seconds``; prints
# {window end ms: admitted} and the refusals.
HAMMER = """
import json, sys, time
from keyplane.ratelimit import RateLimiter
url, spec, caller, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
limiter = RateLimiter(url)
prepared = limiter.prepare(spec, "hammer", caller)
admitted, refused = {}, 0
print("ready", flush=True)
start = float(sys.stdin.readline())
until = start + seconds
while time.time() < start:
    time.sleep(0.001)
while time.time() < until:
    allowed, state = limiter.hit_prepared(prepared)
    if allowed:
        admitted[state.reset_ms] = admitted.get(state.reset_ms, 0) + 1
    else:
        refused += 1
limiter.close()
print(json.dumps({"admitted": admitted, "refused": refused}))
"""


def hammer_two(
    url: str, spec: str, seconds: float, span_s: float, processes: int = 2
) -> tuple[list[dict[str, int]], int]:
    """``processes`` processes (two unless told) hammer ``spec`` for one caller from a window's start."""
    caller = uuid.uuid4().hex
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, url, spec, caller, str(seconds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    start = (int(time.time() / span_s) + 1) * span_s + 0.001  # both hammer from a window's start
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()
    outs = [json.loads(p.communicate(timeout=seconds + 30)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all(o["admitted"] for o in outs)  # both took part
    return [{k: int(v) for k, v in o["admitted"].items()} for o in outs], sum(o["refused"] for o in outs)


def by_window(admitted: list[dict[str, int]], span_ms: int) -> Counter[int]:
    """Admissions per window, both processes together (a window is named by its end, rounded: the two
    processes' clock offsets to Redis differ by a millisecond or so)."""
    total: Counter[int] = Counter()
    for counts in admitted:
        for end_ms, count in counts.items():
            total[round(int(end_ms) / span_ms)] += count
    return total


def test_leased_limit_across_two_processes_stays_within_ten_percent() -> None:
    """200/second hammered by two processes for four windows: never more than N + 2·N/40 in a window
    (the documented bound: 105% for two processes), and a hammering client still gets nearly all of N."""
    amount = 200
    admitted, refused = hammer_two(REDIS_URL, f"{amount}/second", 4.0, 1.0)
    windows = by_window(admitted, 1000)
    assert len(windows) >= 4 and refused > 0
    bound = amount + 2 * share_of(amount)
    assert bound <= 1.1 * amount
    for count in windows.values():
        assert count <= bound, windows
    full = [windows[w] for w in sorted(windows)[:4]]  # the four whole windows hammered
    assert min(full) >= 0.9 * amount, windows
    assert sum(full) <= 4 * bound


def test_leased_limit_across_four_processes_stays_within_ten_percent() -> None:
    """Two nodes of two workers: four processes hammer 400/second for three windows; at most N·(1 + 4/40)."""
    amount = 400
    admitted, refused = hammer_two(REDIS_URL, f"{amount}/second", 3.0, 1.0, processes=4)
    windows = by_window(admitted, 1000)
    bound = amount + 4 * share_of(amount)
    assert bound <= 1.1 * amount and refused > 0
    assert max(windows.values()) <= bound, windows
    assert min(windows[w] for w in sorted(windows)[:3]) >= 0.85 * amount, windows


def test_small_limit_is_exact_across_two_processes() -> None:
    """5/second (under SMALL) is a moving window in Redis: hammered from two processes for 3 s, never more
    than 5 admissions in any second, so at most 5·ceil(3) + 5 in all, and at least 5·3 - 5."""
    amount = 5
    assert amount < SMALL
    admitted, refused = hammer_two(REDIS_URL, f"{amount}/second", 3.0, 1.0)
    total = sum(sum(c.values()) for c in admitted)
    assert refused > 1000  # refusals are decided locally: the loops spin
    assert 2 * amount <= total <= 4 * amount, admitted


def test_small_limit_alternating_between_limiters_is_exact_and_refuses_locally() -> None:
    first, second = RateLimiter(REDIS_URL), RateLimiter(REDIS_URL)
    try:
        caller = uuid.uuid4().hex
        prepared = first.prepare("3/second", "t", caller)
        assert first.blocking and first.would_block(prepared)  # an exact limit needs Redis to admit
        got = [limiter.hit_prepared(prepared) for limiter in (first, second, first, second, first)]
        assert [allowed for allowed, _ in got] == [True, True, True, False, False]
        assert [state.remaining for _, state in got] == [2, 1, 0, 0, 0]
        # once refused, a limiter knows until when and refuses without asking Redis
        assert not second.would_block(prepared) and not first.would_block(prepared)
        reset_ms = got[3][1].reset_ms
        assert 0 < reset_ms - time.time() * 1000 <= 1000
        time.sleep(max(0.0, reset_ms / 1000 - time.time()) + 0.01)
        assert second.would_block(prepared)
        assert second.hit_prepared(prepared)[0]  # the oldest admission left the window
    finally:
        first.close()
        second.close()


def test_leased_limit_decides_locally_after_the_first_lease() -> None:
    limiter = RateLimiter(REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        caller = uuid.uuid4().hex
        prepared = limiter.prepare("1000/minute", "t", caller)
        assert not limiter.would_block(prepared)  # the first hit of a window is admitted on debt
        assert limiter.hit_prepared(prepared)[0]
        deadline = time.monotonic() + 2
        while not client.keys(f"kp:rl:1000/minute:t:{caller}:*") and time.monotonic() < deadline:
            time.sleep(0.01)
        (counter,) = client.keys(f"kp:rl:1000/minute:t:{caller}:*")
        time.sleep(0.05)
        assert int(client.get(counter) or 0) == 1 + 50  # the debt and one slice (N/20)
        ttl = client.pttl(counter)
        assert 0 < ttl <= 120_000  # the counter expires after its window
        for _ in range(20):
            allowed, state = limiter.hit_prepared(prepared)
            assert allowed and state.limit == 1000
        assert int(client.get(counter) or 0) == 51  # no Redis call: the slice is spent locally
    finally:
        limiter.close()
    # closing gives back what the slice still held
    assert int(client.get(counter) or 0) == 21


def test_leased_limit_refuses_once_the_window_is_spent_and_holds_the_bound() -> None:
    first, second = RateLimiter(REDIS_URL), RateLimiter(REDIS_URL)
    try:
        caller = uuid.uuid4().hex
        prepared = first.prepare("40/minute", "t", caller)
        admitted = 0
        for i in range(200):
            admitted += (first if i % 2 else second).hit_prepared(prepared)[0]
            time.sleep(0.001)
        assert 40 - 2 * 3 <= admitted <= 40 + 2 * share_of(40)  # at most 1.5 slices left unspent per node
        allowed, state = first.hit_prepared(prepared)
        assert not allowed and state.remaining == 0 and not first.would_block(prepared)
    finally:
        first.close()
        second.close()


# --- Redis outages: a private redis-server (conftest's private_redis), stopped and started for real ------


def test_redis_outage_falls_back_to_local_counting_and_recovers(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="keyplane.ratelimit")
    limiter = RateLimiter(private_redis.url)
    client = redis.Redis.from_url(private_redis.url)
    try:
        large = limiter.prepare("1000/minute", "t", "large")
        small = limiter.prepare("3/minute", "t", "small")
        assert limiter.hit_prepared(large)[0] and limiter.hit_prepared(small)[0]
        assert client.keys("kp:rl:3/minute:t:small")
        private_redis.stop()
        # no exception, no refusal caused by the outage: each process counts N alone, one warning in all
        results = [limiter.hit_prepared(large)[0] for _ in range(500)]
        assert all(results)
        small_results = [limiter.hit_prepared(small)[0] for _ in range(5)]
        assert small_results == [True, True, True, False, False]  # the full N, per process, while down
        assert not limiter.would_block(small)  # decided locally: nothing waits for a dead Redis
        warnings = [r for r in caplog.records if r.name == "keyplane.ratelimit"]
        assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
        assert private_redis.url not in caplog.text
        private_redis.start()
        deadline = time.monotonic() + 5
        while limiter._shared is not None and limiter._shared.down and time.monotonic() < deadline:
            time.sleep(0.05)
        assert limiter._shared is not None and not limiter._shared.down
        assert "answers again" in caplog.records[-1].getMessage()
        # shared again: counted in the restarted Redis, no restart of the limiter
        assert limiter.hit_prepared(small)[0]
        assert client.llen("kp:rl:3/minute:t:small") == 1
        assert limiter.hit_prepared(large)[0]
        deadline = time.monotonic() + 2
        while not client.keys("kp:rl:1000/minute:t:large:*") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.keys("kp:rl:1000/minute:t:large:*")
    finally:
        limiter.close()


def test_redis_down_when_the_limiter_starts(private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="keyplane.ratelimit")
    private_redis.stop()
    limiter = RateLimiter(private_redis.url)
    try:
        prepared = limiter.prepare("2/second", "t", "early")
        assert [limiter.hit_prepared(prepared)[0] for _ in range(3)] == [True, True, False]
        private_redis.start()
        deadline = time.monotonic() + 5
        while limiter._shared is not None and limiter._shared.down and time.monotonic() < deadline:
            time.sleep(0.05)
        assert limiter._shared is not None and not limiter._shared.down
        assert limiter.hit_prepared(prepared)[0]
        assert redis.Redis.from_url(private_redis.url).llen("kp:rl:2/second:t:early") == 1
    finally:
        limiter.close()
        if not private_redis.running:
            private_redis.start()


def test_non_blocking_verification_asks_redis_only_when_a_hit_needs_it(tmp_path: Path) -> None:
    """``verify(may_block=False)`` decides a leased limit inline; an exact (small) limit's admission
    needs Redis, so it answers WOULD_BLOCK having spent nothing, and the blocking pass admits it."""
    from keyplane.auth import Requirement, SignedRequest
    from keyplane.auth.bitget import prehash, sign_hmac
    from keyplane.auth.request import WOULD_BLOCK, Reason
    from keyplane.config import Settings
    from keyplane.domain.model import Scheme
    from keyplane.runtime import build_runtime

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'k.db'}", master_key="ab" * 32, redis_url=REDIS_URL)
    runtime = build_runtime(settings)
    try:
        main = runtime.service.accounts.create_main_account("venue")
        issued = runtime.service.keys.issue_main_key(
            main.uid, Scheme.BITGET, passphrase="abcd1234", permissions=["read"]
        )
        assert issued.secret is not None
        timestamp = str(int(time.time() * 1000))
        signature = sign_hmac(issued.secret.encode(), prehash(timestamp, "GET", "/api/v2/x", "", b""))
        headers = {"access-key": issued.key.api_key, "access-sign": signature,
                   "access-timestamp": timestamp, "access-passphrase": "abcd1234"}  # fmt: skip
        request = SignedRequest("GET", "/api/v2/x", "", headers, b"", "127.0.0.1")
        verify = runtime.verifier.verify
        assert verify(request, Requirement()).valid  # warms the cache (passphrase checked once)
        caller = uuid.uuid4().hex
        large = Requirement(rate_limit="1000/minute", rate_name=caller)
        assert verify(request, large, may_block=False).reason is Reason.VALID  # on credit, a lease asked for
        time.sleep(0.3)  # the lease thread's answer: a slice of 50
        for _ in range(30):
            assert verify(request, large, may_block=False).reason is Reason.VALID
        small = Requirement(rate_limit="2/minute", rate_name=caller)
        assert verify(request, small, may_block=False) is WOULD_BLOCK
        assert verify(request, small, may_block=False) is WOULD_BLOCK  # nothing was spent
        assert [verify(request, small).reason for _ in range(3)] == [Reason.VALID, Reason.VALID, Reason.RATE_LIMITED]
        refused = verify(request, small, may_block=False)  # the refusal is known locally now
        assert refused is not WOULD_BLOCK and refused.reason is Reason.RATE_LIMITED
    finally:
        runtime.close()


@pytest.mark.parametrize("url", [None, REDIS_URL])
def test_a_zero_limit_admits_nothing(url: str | None) -> None:
    limiter = RateLimiter(url)
    try:
        caller = uuid.uuid4().hex
        assert [limiter.hit("0/second", "t", caller)[0] for _ in range(3)] == [False, False, False]
        assert [limiter.hit("0/minute", "t", caller)[0] for _ in range(3)] == [False, False, False]
    finally:
        limiter.close()


def test_a_hung_redis_costs_one_timeout_then_counts_locally(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis frozen (SIGSTOP: connections accepted, no answer): the first call that needs it waits out its
    0.5 s timeout, then the process counts alone; every hit is answered; SIGCONT and it shares again."""
    import signal

    caplog.set_level(logging.WARNING, logger="keyplane.ratelimit")
    limiter = RateLimiter(private_redis.url)
    assert private_redis.process is not None and limiter._shared is not None
    try:
        small = limiter.prepare("3/minute", "t", "hung")
        assert limiter.hit_prepared(small)[0]
        private_redis.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            answers = [limiter.hit_prepared(small)[0] for _ in range(5)]
            elapsed = time.monotonic() - started
        finally:
            private_redis.process.send_signal(signal.SIGCONT)
        assert answers == [True, True, True, False, False]  # the full N, locally, after the timeout
        assert elapsed < 2.0
        assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
        deadline = time.monotonic() + 5
        while limiter._shared.down and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not limiter._shared.down
        assert limiter.hit_prepared(small)[0]
        # the call that timed out was still in Redis's socket: it may have counted that admission on waking
        # (erring towards refusing later, never towards admitting more)
        assert redis.Redis.from_url(private_redis.url).llen("kp:rl:3/minute:t:hung") in (2, 3)
    finally:
        limiter.close()


def test_credit_covers_a_window_start_while_redis_is_slow_then_the_hit_would_block(
    private_redis: PrivateRedis,
) -> None:
    """Redis frozen before a window's first hits: a leased limit admits its credit (N/40) at once, without
    waiting; the next hit would need Redis, and ``would_block`` says so before anything is spent."""
    import signal

    limiter = RateLimiter(private_redis.url)
    assert private_redis.process is not None
    try:
        prepared = limiter.prepare("400/minute", "t", uuid.uuid4().hex)
        private_redis.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            credit = [limiter.hit_prepared(prepared)[0] for _ in range(share_of(400))]
            assert time.monotonic() - started < 0.2  # decided locally; the lease waits in its thread
            assert credit == [True] * 10
            assert limiter.would_block(prepared)
        finally:
            private_redis.process.send_signal(signal.SIGCONT)
        assert limiter.hit_prepared(prepared)[0]  # leased now (or counted locally if the lease timed out)
    finally:
        limiter.close()
