"""Rate limits shared through Redis, decided locally: no network round trip per request in the common case.

Every process that verifies (each worker of each node) has one ``LeasedLimiter``. Two regimes, by the
limit's amount N (``SMALL`` = 40):

* **N >= 40: leased slices of a fixed window.** Windows are aligned to Redis's clock (window number
  ``floor(t / T)``; each process learns its offset to Redis's ``TIME`` from every reply), so every process
  counts the same windows. Redis holds one counter per (limit, caller, window): the units *granted*. A
  process takes a slice (``chunk`` = N/20) with one atomic script (``LEASE``) and then decides locally,
  spending its slice under a lock (~1 µs). When its slice runs low (half a chunk left) a background thread
  leases the next one (one pipeline for every limit due), so the hot path keeps deciding from memory. The
  first request of a window in a process, or a burst that outruns the refill, is admitted on *credit*: up
  to ``share`` = N/40 units Redis has not granted yet, and only while the process's last answer from Redis
  left room for them; the next lease carries that debt, which Redis counts even if it no longer fits. Once
  Redis says the window is used up the process refuses locally until the window ends.

  Error bound: Redis never grants more than N, so the only excess is credit taken after the window filled,
  at most ``share`` = floor(N/40) per process and window. A global limit of N admits at most
  N·(1 + P/40) in a window across P processes: **<= 110% across two nodes of up to two workers each**
  (105% with one worker each). The other way, a process may end a window holding up to 1.5 slices it never
  spent (7.5% of N), which no other process can spend: a caller whose traffic leaves a node mid-window may
  get that much less than N. Unspent slices expire with their window (the counter's TTL) and are given back
  when the limiter closes. Like the in-memory fixed windows (``ratelimit.LocalWindows``) and the exchanges'
  own, up to 2N may pass across a window's edge; a client pacing itself to N per window is never refused.

* **N < 40: exact moving window in Redis, one unit at a time.** Credit of N/40 would be less than one
  request, so nothing is decided on credit: every admission is one ``MOVING`` script call (a list of the
  last N admission times, as ``limits``' moving window keeps it; one round trip instead of ``limits``'
  two), and never more than N pass in any T seconds across all processes. A refusal tells the process when
  the oldest of those N admissions leaves the window; until then it refuses locally without asking.

The hot path never waits for Redis except where a decision needs it: an N < 40 admission, or a leased
limit whose slice and credit are both spent before the refill answered. ``would_block`` tells which,
without changing anything, so the non-blocking verification leaves that one to a thread; ``hit_prepared``
then makes the call itself (socket timeout 0.5 s).

Redis down: the first failed call logs one warning and every process counts its own fixed windows of the
full N (``LocalWindows``): no exception, no refusal caused by the outage; the limit then holds per
process, not globally. The background thread pings Redis twice a second; when it answers, the process
logs it and goes back to leases (counting afresh: what was admitted during the outage is not reported).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis

from keyplane.auth.request import RateLimitState
from keyplane.ratelimit import LocalWindows, Prepared

log = logging.getLogger("keyplane.ratelimit")
_time = time.time

SMALL = 40  # below this amount a limit is exact (moving window, one Redis call per admission)
CHUNK_DIVISOR = 20  # a slice is N/20
SHARE_DIVISOR = 40  # credit per process and window: floor(N/40), 2.5% of N (four processes: 10%)
PREFIX = "kp:rl:"
PROBE_EVERY = 0.5  # seconds between pings while Redis is down
TIMEOUT = 0.5  # socket (connect and read) timeout of every Redis call

# KEYS[1]: the window's counter. ARGV: amount, want, debt, ttl in ms.
# Grants what fits (never past the amount), counts the debt even when it does not fit.
LEASE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount, want, debt = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local room = amount - used - debt
if room < 0 then room = 0 end
local granted = math.min(want, room)
if granted + debt > 0 then
  used = redis.call('INCRBY', KEYS[1], granted + debt)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local t = redis.call('TIME')
return {granted, used, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}
"""

# KEYS[1]: the caller's last admission times in ms, newest first. ARGV: amount, window in ms.
# Returns {admitted, admissions in the window, when the oldest of them leaves it (ms), now (ms)}.
MOVING = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local amount, span = tonumber(ARGV[1]), tonumber(ARGV[2])
if amount <= 0 then return {0, 0, now + span, now} end
local nth = redis.call('LINDEX', KEYS[1], amount - 1)
if nth and tonumber(nth) > now - span then
  return {0, amount, tonumber(nth) + span, now}
end
redis.call('LPUSH', KEYS[1], now)
redis.call('LTRIM', KEYS[1], 0, amount - 1)
redis.call('PEXPIRE', KEYS[1], span)
local times = redis.call('LRANGE', KEYS[1], 0, -1)
local inside, oldest = 0, now
for i = 1, #times do
  local at = tonumber(times[i])
  if at > now - span then inside = inside + 1; oldest = at end
end
return {1, inside, oldest + span, now}
"""

# KEYS[1]: a window's counter. ARGV: units given back. Never below zero; nothing if the window expired.
GIVE_BACK = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used <= 0 then return 0 end
local back = math.min(used, tonumber(ARGV[1]))
redis.call('DECRBY', KEYS[1], back)
return back
"""


@dataclass(slots=True)
class _Window:
    """One (limit, caller)'s state on this node, for one window (leased) or until ``blocked_until``."""

    window: int
    end_ms: int  # the window's end on the local clock
    end_s: float  # the same in seconds, as time.time() gives it
    low: int  # a lease is asked for when this node holds no more than this (half a slice)
    left: int = 0  # leased units not spent yet
    debt: int = 0  # units admitted without a lease, not yet sent to Redis
    debt_out: int = 0  # debt sent with a lease still unanswered
    seen: int = 0  # the window's count in Redis at the last answer (every node's grants and debt)
    exhausted: bool = False  # Redis said the window is used up
    pending: bool = False  # a lease is queued or on its way


def chunk_of(amount: int) -> int:
    return max(1, amount // CHUNK_DIVISOR)


def share_of(amount: int) -> int:
    return amount // SHARE_DIVISOR


class LeasedLimiter:
    """The Redis-backed half of ``RateLimiter``; see the module docstring for what it guarantees."""

    def __init__(self, redis_url: str) -> None:
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        self._lease = self._redis.register_script(LEASE)
        self._moving = self._redis.register_script(MOVING)
        self._give_back = self._redis.register_script(GIVE_BACK)
        self._windows: dict[tuple[str, ...], _Window] = {}
        self._blocked: dict[tuple[str, ...], tuple[int, int]] = {}  # N < 20: (local ms until refused, amount)
        self._lock = threading.Lock()
        self._offset_ms = 0  # Redis's clock minus ours, from the last answer
        self._local = LocalWindows()  # while Redis is down
        self.down = False
        self._queue: queue.SimpleQueue[tuple[Prepared, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._closed = threading.Event()
        self._hits = 0

    # the hot path -----------------------------------------------------------------------------------

    def hit_prepared(self, prepared: Prepared) -> tuple[bool, RateLimitState]:
        if self.down:
            return self._local.hit_prepared(prepared)
        key, amount, seconds = prepared
        if amount < SMALL:
            return self._hit_moving(key, amount, seconds, int(_time() * 1000))
        now = _time()
        with self._lock:
            state = self._windows.get(key)
            if state is None or now >= state.end_s:
                state = self._current(key, amount, seconds, now)
            left = state.left
            if left > 0:
                state.left = left = left - 1
                if left <= state.low and not state.pending and not state.exhausted:
                    self._schedule(prepared, state)
                # what this process holds, and what Redis had not granted to anyone when it last answered
                room = 0 if state.exhausted else amount - state.seen - state.debt - state.debt_out
                return True, RateLimitState(amount, left + room if room > 0 else left, state.end_ms)
            if state.exhausted:
                return False, RateLimitState(amount, 0, state.end_ms)
            owed = state.debt + state.debt_out
            # on credit only while this process's last word from Redis left room for it
            if owed < share_of(amount) and state.seen + owed < amount:
                state.debt += 1
                if not state.pending:
                    self._schedule(prepared, state)
                return True, RateLimitState(amount, amount - state.seen - owed - 1, state.end_ms)
            window = state.window
        return self._lease_now(prepared, window)

    def would_block(self, prepared: Prepared) -> bool:
        """Whether ``hit_prepared`` would need Redis now (changes nothing)."""
        if self.down:
            return False
        key, amount, _ = prepared
        if amount < SMALL:
            blocked = self._blocked.get(key)
            return blocked is None or blocked[0] <= _time() * 1000
        state = self._windows.get(key)
        if state is None or _time() >= state.end_s:
            return share_of(amount) == 0  # a new window starts on credit
        if state.left > 0 or state.exhausted:
            return False
        owed = state.debt + state.debt_out
        return owed >= share_of(amount) or state.seen + owed >= amount

    # Redis calls -----------------------------------------------------------------------------------

    def _hit_moving(
        self, key: tuple[str, ...], amount: int, seconds: float, now_ms: int
    ) -> tuple[bool, RateLimitState]:
        blocked = self._blocked.get(key)
        if blocked is not None and blocked[0] > now_ms:
            return False, RateLimitState(amount, 0, blocked[0])
        span = int(seconds * 1000)
        if amount <= 0:  # "0/second": nothing passes (Redis's LINDEX -1 would read the newest entry)
            return False, RateLimitState(amount, 0, now_ms + span)
        try:
            admitted, inside, reset_ms, redis_now = self._moving(keys=[PREFIX + ":".join(key)], args=[amount, span])
        except redis.RedisError as error:
            self._went_down(error)
            return self._local.hit_prepared((key, amount, seconds))
        local_now = int(time.time() * 1000)
        self._offset_ms = int(redis_now) - local_now
        reset_local = int(reset_ms) - self._offset_ms
        if not admitted:
            with self._lock:
                self._blocked[key] = (reset_local, amount)
                self._sweep(local_now)
            return False, RateLimitState(amount, 0, reset_local)
        return True, RateLimitState(amount, max(0, amount - int(inside)), reset_local)

    def _lease_now(self, prepared: Prepared, window: int) -> tuple[bool, RateLimitState]:
        """A slice and credit both spent: lease in the caller's thread, then decide this hit from it."""
        key, amount, seconds = prepared
        with self._lock:
            state = self._windows.get(key)
            if state is None or state.window != window:  # the window ended meanwhile: decide in the next
                state = None
            else:
                debt, state.debt = state.debt, 0
                state.debt_out += debt
        if state is None:
            return self.hit_prepared(prepared)
        span = int(seconds * 1000)
        try:
            answer = self._lease(keys=[self._counter(key, window)], args=[amount, chunk_of(amount), debt, 2 * span])
        except redis.RedisError as error:
            self._went_down(error)
            return self._local.hit_prepared(prepared)
        with self._lock:
            state = self._settle(key, amount, window, debt, answer)
            if state is None:
                return self.hit_prepared(prepared)
            if state.left > 0:
                state.left -= 1
                return True, self._state(state, amount)
            return False, RateLimitState(amount, 0, state.end_ms)

    def _refill(self, batch: list[tuple[Prepared, int]]) -> None:
        """Leases what ``batch`` asks for, in one pipeline (one round trip)."""
        calls = []
        with self._lock:
            for prepared, window in batch:
                key, amount, seconds = prepared
                state = self._windows.get(key)
                if state is None or state.window != window:
                    continue
                debt, state.debt = state.debt, 0
                state.debt_out += debt
                calls.append((prepared, window, debt))
        if not calls:
            return
        pipe = self._redis.pipeline(transaction=False)
        for (key, amount, seconds), window, debt in calls:
            span = int(seconds * 1000)
            self._lease(keys=[self._counter(key, window)], args=[amount, chunk_of(amount), debt, 2 * span], client=pipe)
        try:
            answers = pipe.execute()
        except redis.RedisError as error:
            self._went_down(error)
            return
        with self._lock:
            for (prepared, window, debt), answer in zip(calls, answers, strict=True):
                state = self._settle(prepared[0], prepared[1], window, debt, answer)
                if state is not None:
                    state.pending = False
                    if state.debt:  # admitted while this lease was on its way: report it too
                        self._schedule(prepared, state)

    def _settle(self, key: tuple[str, ...], amount: int, window: int, debt: int, answer: list[Any]) -> _Window | None:
        """Books a lease's answer (under the lock); the window's state, or None if it has ended here."""
        granted, used, redis_now = int(answer[0]), int(answer[1]), int(answer[2])
        self._offset_ms = redis_now - int(time.time() * 1000)
        state = self._windows.get(key)
        if state is None or state.window != window:
            return None
        state.debt_out -= debt
        state.left += granted
        state.seen = used
        if used >= amount:
            state.exhausted = True
        return state

    # the background thread -------------------------------------------------------------------------

    def _schedule(self, prepared: Prepared, state: _Window) -> None:
        state.pending = True
        self._queue.put((prepared, state.window))
        if self._thread is None:
            self._start_thread()

    def _start_thread(self) -> None:
        """Started at the first lease or outage (a CLI process that never verifies starts none)."""
        with self._thread_lock:
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._run, name="keyplane-ratelimit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                if not self._run_once():
                    return
            except Exception:  # a bug must not end the leases: hits would then wait for Redis themselves
                log.exception("rate-limit lease thread")
                self._closed.wait(PROBE_EVERY)

    def _run_once(self) -> bool:
        """One batch of leases (or one probe while Redis is down); False once the limiter closes."""
        if self.down:
            self._probe()
            return True
        try:
            first = self._queue.get(timeout=1.0)
        except queue.Empty:
            return True
        if first is None:
            return False
        batch = [first]
        while len(batch) < 512:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return False
            batch.append(item)
        self._refill(batch)
        return True

    def _probe(self) -> None:
        if self._closed.wait(PROBE_EVERY):
            return
        try:
            self._redis.ping()
        except redis.RedisError:
            return
        with self._lock:
            self._windows.clear()
            self._blocked.clear()
            self._local.reset()
            self.down = False
        log.warning("Redis answers again: rate limits are shared through it again")

    def _went_down(self, error: Exception) -> None:
        with self._lock:
            if self.down:
                return
            self.down = True
            self._windows.clear()
            self._blocked.clear()
        # the error's class only: a message could carry the Redis URL and its password
        log.warning(
            "Redis unreachable (%s): each process now counts rate limits alone (N per process) until it answers",
            type(error).__name__,
        )
        self._start_thread()  # it pings Redis until it answers (queued leases find their windows dropped)

    # helpers ---------------------------------------------------------------------------------------

    def _current(self, key: tuple[str, ...], amount: int, seconds: float, now: float) -> _Window:
        """This window's state for ``key`` (under the lock), made when the last one has ended."""
        span = int(seconds * 1000)
        offset = self._offset_ms
        window = (int(now * 1000) + offset) // span
        end_ms = (window + 1) * span - offset
        state = self._windows.get(key)
        if state is not None and state.window == window:  # the offset to Redis's clock moved a little
            state.end_ms, state.end_s = end_ms, end_ms / 1000
            return state
        state = self._windows[key] = _Window(window, end_ms, end_ms / 1000, chunk_of(amount) // 2)
        self._hits += 1
        if self._hits >= 10_000:
            self._hits = 0
            self._sweep(int(now * 1000))
        return state

    def _sweep(self, now_ms: int) -> None:
        """Forgets windows that ended (under the lock); called now and then, not per hit."""
        if len(self._windows) > 1000:
            self._windows = {k: w for k, w in self._windows.items() if w.end_ms > now_ms or w.pending}
        if len(self._blocked) > 1000:
            self._blocked = {k: b for k, b in self._blocked.items() if b[0] > now_ms}

    @staticmethod
    def _counter(key: tuple[str, ...], window: int) -> str:
        return f"{PREFIX}{':'.join(key)}:{window}"

    @staticmethod
    def _state(state: _Window, amount: int) -> RateLimitState:
        remaining = state.left + (0 if state.exhausted else max(0, amount - state.seen - state.debt - state.debt_out))
        return RateLimitState(amount, remaining, state.end_ms)

    def reset(self) -> None:
        """Forgets this process's leases (Redis keeps its counters until they expire)."""
        with self._lock:
            self._windows.clear()
            self._blocked.clear()
            self._local.reset()

    def close(self) -> None:
        """Stops the background thread and gives back the unspent units of current windows."""
        self._closed.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout=2)
        if not self.down:
            now_ms = int(time.time() * 1000)
            with self._lock:
                unspent = [(k, w.window, w.left) for k, w in self._windows.items() if w.left > 0 and w.end_ms > now_ms]
                self._windows.clear()
            if unspent:
                pipe = self._redis.pipeline(transaction=False)
                for key, window, left in unspent:
                    self._give_back(keys=[self._counter(key, window)], args=[left], client=pipe)
                with contextlib.suppress(redis.RedisError):  # else they expire with their window
                    pipe.execute()
        self._redis.close()
