"""The one verifier: keyplane's own routes, ``POST /v1/verify`` and the gateway all call it.

Order of checks (cheap checks that change nothing come before the ones that spend state, so a
wrong-IP request never burns a nonce or the key's rate limit):
headers → timestamp window (Bitget) → key lookup (cache, store on a miss) → signature → passphrase
(Bitget) → payload shape (WhiteBIT) → account and key state → IP allowlist → permission → nonce
(WhiteBIT) or replay record (Bitget, a replay-protected rule and a method other than GET) → rate limit.

The replay record is 64 bits of the signature's bytes, kept until twice the timestamp window past the
request's timestamp (other nodes' clocks may differ): with HMAC one signed message has one signature (its
encoding is compared exactly); with RSA PKCS#1 v1.5 one signature's bytes (however its base64 was
written). So every form of one signed request (ccxt's encoded query, a body of ``{}`` signed as ``''``)
is the same record, and a repeat is refused as ``REQUEST_REPLAYED``.

Never blocking the event loop: ``verify(..., may_block=False)`` answers ``WOULD_BLOCK`` instead of taking
a step that waits (a cache miss's store lookup, the argon2id passphrase check, a component that says
``blocking``, such as the nonce ledger on PostgreSQL), always before any state changes;
``verify_async`` then runs the whole verification again in a small thread pool of its own. One step
is awaited on the loop instead: a nonce or replay record on PostgreSQL, the last step before the rate
limit, joins the next batch of claims decided by one statement (``store/nonce_batch.py``), so requests in
flight share a round trip and a commit instead of each holding one of the pool's threads.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any

import msgspec

from keyplane import crypto
from keyplane.auth import bitget, whitebit
from keyplane.auth.cache import CachedKey, KeyCache
from keyplane.auth.nonces import NonceGuard
from keyplane.auth.request import WOULD_BLOCK, Reason, Requirement, SignedRequest, VerifyResult
from keyplane.auth.usage import FLUSH_INTERVAL_S, UsageRecorder
from keyplane.domain.model import Account, AccountStatus, ApiKey, Scheme
from keyplane.domain.scopes import bitget_grants, whitebit_grants
from keyplane.domain.target import clean_query
from keyplane.endpoints import EndpointTable, Refusal
from keyplane.outages import unavailable, warn
from keyplane.ratelimit import RateLimiter
from keyplane.store import Store

log = logging.getLogger("keyplane.verifier")

_JSON = msgspec.json.Decoder()

# Threads that run the verifications that would block (argon2id takes ~25 ms and 19 MiB; a store lookup
# waits on the database): few, so that a flood of new keys cannot exhaust memory or the default
# executor the management use-cases run in.
BLOCKING_WORKERS = 4

# On Python 3.11 reading an enum member goes through the enum's metaclass (~70 ns); the hot path reads
# these module constants instead.
_VALID = Reason.VALID
_BITGET = Scheme.BITGET
_WHITEBIT = Scheme.WHITEBIT
_UNKNOWN_KEY = Reason.UNKNOWN_KEY
_REQUEST_REPLAYED = Reason.REQUEST_REPLAYED
_JSON_OPENERS = (b"{", b"[")
_REPLAY_KEEP_MS = 2 * bitget.TIMESTAMP_WINDOW_MS  # past the timestamp; twice: slack for nodes' clocks
# A replay record's token: the first 8 of the signature's bytes (what its checker matched), big-endian,
# signed (as the store's BIGINT holds it); the value records have always held (bench/README.md)
_token = struct.Struct(">q").unpack_from
_PREVIOUS = "previous"
_time = time.time


def _now_ms() -> int:
    return int(time.time() * 1000)


def detect_scheme(headers: dict[str, str] | Any) -> Scheme | None:
    if bitget.HEADER_KEY in headers:
        return Scheme.BITGET
    if whitebit.HEADER_KEY in headers or whitebit.HEADER_PAYLOAD in headers:
        return Scheme.WHITEBIT
    return None


def _first_match(checker: bitget.Checker, messages: Iterable[bytes], signature: bytes) -> bytes | None:
    """The signature's bytes if it signs one of ``messages``, else None."""
    for message in messages:
        signed = checker.matches(message, signature)
        if signed is not None:
            return signed
    return None


def _refused(refusal: Refusal, scheme: Scheme | None) -> VerifyResult:
    if refusal is Refusal.BAD_TARGET:
        return VerifyResult(Reason.BAD_TARGET, scheme)
    # no rule: of the key's dialect, or, unsigned, of any (then the missing key is what to say)
    return VerifyResult(Reason.UNKNOWN_ENDPOINT if scheme is not None else Reason.MISSING_KEY, scheme)


@dataclass(slots=True)
class _Deferred(VerifyResult):
    """What ``verify(may_block=False)`` answers when all that is left is a claim the store decides (a nonce
    or replay record on PostgreSQL) and the rate limit: ``verify_async`` awaits the claim on the loop.
    ``claim``: (nonce, once, rate-limit key) as ``_authorize`` got them. Never handed to a client."""

    claim: tuple[Any, Any, Any] = (None, None, None)


class Verifier:
    """Verifies signed requests of both schemes against the store, through an in-process cache."""

    def __init__(
        self,
        store: Store,
        master_key: crypto.MasterKey,
        rate_limiter: RateLimiter | None = None,
        clock_ms: Callable[[], int] = _now_ms,
        reload_master_key: Callable[[], crypto.MasterKey] | None = None,
        endpoints: EndpointTable | None = None,
        usage_flush_s: float = FLUSH_INTERVAL_S,
        record_usage: bool = True,
    ) -> None:
        self.store = store
        self.cache = KeyCache(self._load, master_key, reload_master_key)
        self.nonces = NonceGuard(store)
        # a replay record on SQLite: the ledger's ``record`` itself, nothing between (a POST's hot path)
        self._record_once: Callable[[str, int, int, int], bool] | None = self.nonces.record_once_inline
        self.rate_limiter = rate_limiter or RateLimiter()
        self._clock_ms = clock_ms
        # what each private endpoint needs, for callers that give no Requirement (gateway, /v1/verify)
        self.endpoints = endpoints if endpoints is not None else EndpointTable.defaults()
        # each key's last use, gathered here and written every ``usage_flush_s`` (``record_usage=False``: not
        # recorded at all, for bench/inprocess.py's comparison)
        self.usage = UsageRecorder(store, usage_flush_s)
        self._usage: dict[str, str] | None = self.usage.pending if record_usage else None
        self.usage.start()
        self._closers: list[Callable[[], None]] = [self.nonces.close, self.usage.close, self._shutdown_executor]
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def close(self) -> None:
        """Stops what ``keyplane.open_verifier`` started for this verifier (the change feed, the store)."""
        while self._closers:
            self._closers.pop()()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def invalidate(self, api_keys: list[str] | tuple[str, ...] | Any) -> None:
        self.cache.invalidate(api_keys)

    def verify(
        self,
        request: SignedRequest,
        requirement: Requirement | None = None,
        scheme: Scheme | None = None,
        *,
        may_block: bool = True,
    ) -> VerifyResult:
        """Valid, or the first reason it is not. Never raises: a store that fails is ``UNAVAILABLE``.

        Without ``requirement`` the endpoint table (``self.endpoints``) says what the request's method
        and path need, among the rules of the key's dialect only; without ``scheme`` the signing headers
        say which scheme it is. With or without, a target an upstream could read otherwise than verified
        (``domain/target.py``) is ``BAD_TARGET``, and a path the table gives to another dialect is
        ``UNKNOWN_ENDPOINT``. With ``may_block=False`` a step that would wait answers ``WOULD_BLOCK``
        (the very object), before anything changed, or, where only a claim the PostgreSQL store decides
        and the rate limit are left, a ``_Deferred`` (reason ``WOULD_BLOCK`` too) that ``verify_async``
        completes on the loop; ``verify_async`` is how the event loop calls this.
        """
        try:
            scheme = scheme or detect_scheme(request.headers)
            # one path, one meaning: a target an upstream could read otherwise is refused before anything
            # else (domain/target.py); the table checks the method and path once per distinct request line
            query = request.query
            if query and not clean_query(query):
                return VerifyResult(Reason.BAD_TARGET, scheme)
            if requirement is None:
                found = self.endpoints.requirement_for(scheme, request.method, request.path)
                if isinstance(found, Refusal):
                    return _refused(found, scheme)
                requirement = found
            else:
                refusal = self.endpoints.check_target(scheme, request.method, request.path)
                if refusal is not None:
                    return _refused(refusal, scheme)
            if scheme is _BITGET:
                return self._verify_bitget(request, requirement, may_block)
            if scheme is _WHITEBIT:
                return self._verify_whitebit(request, requirement, may_block)
            return VerifyResult(Reason.MISSING_KEY)
        except Exception as error:  # the one place a failure becomes an answer
            return self._failed(request, scheme, error)

    async def verify_async(
        self, request: SignedRequest, requirement: Requirement | None = None, scheme: Scheme | None = None
    ) -> VerifyResult:
        """``verify`` for the event loop: inline when nothing would block (a cached key, its passphrase
        already checked here); a nonce or replay record on PostgreSQL awaited in its batch (the loop goes
        on meanwhile); otherwise the whole verification again in the verifier's thread pool."""
        result = self.verify(request, requirement, scheme, may_block=False)
        if type(result) is _Deferred:
            return await self._claim_async(request, result)
        if result is WOULD_BLOCK:
            loop = asyncio.get_running_loop()
            blocking = partial(self.verify, request, requirement, scheme)
            result = await loop.run_in_executor(self._blocking_executor(), blocking)
        return result

    async def _claim_async(self, request: SignedRequest, deferred: _Deferred) -> VerifyResult:
        """The rest of a verification whose nonce or replay record waits for the store (PostgreSQL)."""
        nonce, once, rate_key = deferred.claim
        key, account, scheme = deferred.key, deferred.account, deferred.scheme
        assert key is not None and account is not None and scheme is not None
        try:
            if nonce is not None:
                verdict = await self.nonces.accept_async(key.id, nonce[0], nonce[1], self._clock_ms())
            else:
                assert once is not None
                verdict = await self.nonces.accept_once_async(key.id, once[0], once[1], self._clock_ms())
            if verdict is not _VALID:
                result = self._claim_refused(verdict, scheme, key, account)
            else:
                result = self._rate_limited(scheme, key, account, rate_key, request.client_ip)
        except Exception as error:
            return self._failed(request, scheme, error)
        result.payload, result.secret = deferred.payload, deferred.secret  # as the dialect paths set them
        return result

    def _blocking_executor(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is None:
            with self._executor_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(BLOCKING_WORKERS, thread_name_prefix="keyplane-verify")
                executor = self._executor
        return executor

    def _shutdown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def _failed(self, request: SignedRequest, scheme: Scheme | None, error: Exception) -> VerifyResult:
        # An outage of the store or Redis (a cache miss's lookup, a nonce that cannot be recorded): refused,
        # one warning a second (keyplane.outages), not a line per request.
        if unavailable(error) is not None:
            warn("verification refused as UNAVAILABLE", error)
            return VerifyResult(Reason.UNAVAILABLE, scheme)
        # Only the error's type, method and path: its text or a traceback's values could carry what the
        # client sent (a signature, a passphrase).
        log.error(
            "verification could not complete (%s) for %s %s", type(error).__name__,
            request.method[:16], request.path[:200],
        )
        return VerifyResult(Reason.UNAVAILABLE, scheme)

    # Bitget -------------------------------------------------------------------------------------

    def _verify_bitget(self, request: SignedRequest, requirement: Requirement, may_block: bool) -> VerifyResult:
        headers = request.headers
        api_key = headers.get(bitget.HEADER_KEY, "")
        signature = headers.get(bitget.HEADER_SIGN, "")
        timestamp = headers.get(bitget.HEADER_TIMESTAMP, "")
        passphrase = headers.get(bitget.HEADER_PASSPHRASE, "")
        scheme = _BITGET
        if not api_key:
            return VerifyResult(Reason.MISSING_KEY, scheme)
        if not signature:
            return VerifyResult(Reason.MISSING_SIGNATURE, scheme)
        if not timestamp:
            return VerifyResult(Reason.MISSING_TIMESTAMP, scheme)
        # isdigit() alone accepts '²' and other digits int() refuses
        if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 16:
            return VerifyResult(Reason.INVALID_TIMESTAMP, scheme)
        sent, now = int(timestamp), self._clock_ms()
        if abs(now - sent) > bitget.TIMESTAMP_WINDOW_MS:
            return VerifyResult(Reason.EXPIRED_TIMESTAMP, scheme)
        body = request.body
        if body and (request.query or body[:1] not in _JSON_OPENERS):
            # the prehash joins path, query and body with nothing between them: a body beside a query, or
            # one that does not open a JSON value, could be read as part of the query or path (auth/bitget.py)
            return VerifyResult(Reason.BAD_TARGET, scheme)

        cached = self.cache.peek(api_key)
        if cached is None:
            if not may_block and not self.cache.known_unknown(api_key):
                return WOULD_BLOCK
            cached = self.cache.get(api_key)
        if cached is None or cached.key.scheme is not scheme:
            return VerifyResult(Reason.UNKNOWN_KEY, scheme)
        signature_bytes = signature.encode()
        checker: bitget.Checker = cached.checker  # type: ignore[assignment]  # a Bitget key's (its scheme: above)
        # the exact reading first, without a generator: a valid request costs one HMAC and nothing else.
        # ``signed``: the signature's bytes, from which a replay record's token comes.
        signed = checker.matches(
            bitget.prehash(timestamp, request.method, request.path, request.query, request.body), signature_bytes
        )
        if signed is None:
            candidates = bitget.prehash_candidates(timestamp, request.method, request.path, request.query, request.body)
            signed = _first_match(checker, islice(candidates, 1, None), signature_bytes)
        if signed is None:
            # during a rotation's grace period the replaced secret, until its deadline (checked here, per request)
            previous = cached.previous
            if previous is None or _time() >= previous.until_s:
                return VerifyResult(Reason.BAD_SIGNATURE, scheme)
            candidates = bitget.prehash_candidates(timestamp, request.method, request.path, request.query, request.body)
            previous_checker: bitget.Checker = previous.checker  # type: ignore[assignment]  # one key's, as above
            signed = _first_match(previous_checker, candidates, signature_bytes)
            if signed is None:
                return VerifyResult(Reason.BAD_SIGNATURE, scheme)
            cached = previous
        if cached.passphrase_hash is not None:
            if not passphrase:
                return VerifyResult(Reason.MISSING_PASSPHRASE, scheme)
            # argon2id runs once per key per process; later checks compare a digest
            if not may_block and cached.passphrase_digest is None and cached.passphrase_needs_slow_check:
                return WOULD_BLOCK
            if not cached.passphrase_ok(passphrase, slow_allowed=may_block):
                return VerifyResult(Reason.BAD_PASSPHRASE, scheme)
        if requirement.replay_protect and request.method != "GET":
            # the signature's first 8 bytes (32 or more: an HMAC-SHA256 digest or RSA bytes), the same in every
            # spelling of one signature's base64
            once = (_token(signed)[0], sent + _REPLAY_KEEP_MS, now)
            result = self._authorize(cached, request, requirement, scheme, may_block, None, once)
        else:
            result = self._authorize(cached, request, requirement, scheme, may_block)
        if cached.until_s and result is not WOULD_BLOCK:
            result.secret = _PREVIOUS
        return result

    # WhiteBIT -----------------------------------------------------------------------------------

    def _verify_whitebit(self, request: SignedRequest, requirement: Requirement, may_block: bool) -> VerifyResult:
        headers = request.headers
        scheme = _WHITEBIT
        if request.query:
            # WhiteBIT signs the body alone: a query would be unsigned parameters beside the verified ones
            # (an upstream that merges query and body would act on them). No client sends one: every
            # private call is a POST with its parameters in the body [clients.md, ccxt whitebit.sign].
            return VerifyResult(Reason.BAD_TARGET, scheme)
        payload = headers.get(whitebit.HEADER_PAYLOAD, "")
        if not payload:
            return VerifyResult(Reason.MISSING_PAYLOAD, scheme)
        api_key = headers.get(whitebit.HEADER_KEY, "")
        signature = headers.get(whitebit.HEADER_SIGNATURE, "")
        if not api_key:
            return VerifyResult(Reason.MISSING_KEY, scheme)
        if not signature:
            return VerifyResult(Reason.MISSING_SIGNATURE, scheme)
        cached = self.cache.peek(api_key)
        if cached is None:
            if not may_block and not self.cache.known_unknown(api_key):
                return WOULD_BLOCK
            cached = self.cache.get(api_key)
        if cached is None or cached.key.scheme is not scheme:
            return VerifyResult(Reason.UNKNOWN_KEY, scheme)
        if not cached.checker.matches(payload.encode(), signature.encode()):
            # during a rotation's grace period the replaced secret, until its deadline (checked here, per request)
            previous = cached.previous
            if (
                previous is None
                or _time() >= previous.until_s
                or not previous.checker.matches(payload.encode(), signature.encode())
            ):
                return VerifyResult(Reason.BAD_SIGNATURE, scheme)
            cached = previous
        if not whitebit.payload_matches_body(payload, request.body) or whitebit.is_spaced_json(request.body):
            return VerifyResult(Reason.PAYLOAD_MISMATCH, scheme)
        try:
            body = _JSON.decode(request.body)
        except (msgspec.DecodeError, RecursionError):  # msgspec's depth limit is a RecursionError
            return VerifyResult(Reason.PAYLOAD_MISMATCH, scheme)
        if not isinstance(body, dict):
            return VerifyResult(Reason.PAYLOAD_MISMATCH, scheme)
        path = body.get("request")
        if not path:
            return VerifyResult(Reason.MISSING_REQUEST, scheme)
        if path != request.path:
            return VerifyResult(Reason.REQUEST_MISMATCH, scheme)
        given_nonce = body.get("nonce")
        if given_nonce is None or given_nonce == "":
            return VerifyResult(Reason.MISSING_NONCE, scheme)
        nonce = whitebit.parse_nonce(given_nonce)
        if nonce is None:
            return VerifyResult(Reason.MISSING_NONCE, scheme)
        windowed = body.get("nonceWindow", False)
        if not isinstance(windowed, bool):
            return VerifyResult(Reason.INVALID_NONCE_WINDOW, scheme)
        result = self._authorize(cached, request, requirement, scheme, may_block, nonce=(nonce, windowed))
        if result is not WOULD_BLOCK:
            result.payload = body
            if cached.until_s:
                result.secret = _PREVIOUS
        return result

    # shared -------------------------------------------------------------------------------------

    def _authorize(
        self,
        cached: CachedKey,
        request: SignedRequest,
        requirement: Requirement,
        scheme: Scheme,
        may_block: bool = True,
        nonce: tuple[int, bool] | None = None,
        once: tuple[int, int, int] | None = None,
    ) -> VerifyResult:
        key, account = cached.key, cached.account
        expires = cached.expires_s
        if expires is not None and _time() >= expires:  # the clock moves: never part of the memoized verdict
            return VerifyResult(Reason.KEY_EXPIRED, scheme, key, account)
        # The state, IP, role and permission checks depend only on the cached key (replaced whenever the
        # key or its account changes), the requirement, the client IP and the path: decide once, remember.
        # The entry's last verdict first: a key is mostly used from one address on one endpoint, and this
        # reads less of the entry's memory than the dict does (with hundreds of keys in use, memory reads
        # are what a verification waits for: bench/README.md).
        decided = cached.last_verdict
        client_ip, path = request.client_ip, request.path
        if decided is None or decided[0] is not requirement or decided[1] != client_ip or decided[2] != path:
            memo_key = (id(requirement), client_ip, path)
            decided = cached.verdicts.get(memo_key)
            if decided is None or decided[0] is not requirement:
                decided = (requirement, client_ip, path, *self._decide(cached, request, requirement, scheme))
                if len(cached.verdicts) >= 32:  # a key used from many IPs or paths: keep it bounded
                    cached.verdicts.clear()
                cached.verdicts[memo_key] = decided
            cached.last_verdict = decided
        reason, detail, rate_key = decided[3], decided[4], decided[5]
        if reason is not _VALID:
            return VerifyResult(reason, scheme, key, account, detail=detail)
        # the first steps that change state: a blocking one is left to the thread pool, untouched. The rate
        # limiter blocks only when this hit needs Redis (ratelimit_redis: a limit under 40, or a slice and
        # its credit both spent); a worker thread may take the last leased unit between this check and the
        # hit, and then that one hit waits for its lease on the loop (rare, bounded by the 0.5 s timeout).
        if not may_block:
            if rate_key is not None and self.rate_limiter.would_block(rate_key):
                return WOULD_BLOCK
            if (nonce is not None or once is not None) and self.nonces.blocking:
                # PostgreSQL: the claim joins the next batch, awaited by verify_async (nonce_batch.py)
                return _Deferred(Reason.WOULD_BLOCK, scheme, key, account, claim=(nonce, once, rate_key))
            if once is not None and self.nonces.once_would_wait():
                return WOULD_BLOCK  # SQLite: the first record may wait for another process's hand-over
        if once is not None:
            record = self._record_once
            if record is not None:  # SQLite: the replay ledger's own check-and-set, called directly
                if not record(key.id, *once):
                    return VerifyResult(_REQUEST_REPLAYED, scheme, key, account)
            else:
                verdict = self.nonces.accept_once(key.id, *once)
                if verdict is not _VALID:
                    return self._claim_refused(verdict, scheme, key, account)
        elif nonce is not None:
            verdict = self.nonces.accept(key.id, nonce[0], nonce[1], self._clock_ms())
            if verdict is not _VALID:
                return self._claim_refused(verdict, scheme, key, account)
        return self._rate_limited(scheme, key, account, rate_key, client_ip)

    def _claim_refused(self, verdict: Reason, scheme: Scheme, key: ApiKey, account: Account) -> VerifyResult:
        if verdict is _UNKNOWN_KEY:  # deleted meanwhile (another node): as if never found
            return VerifyResult(verdict, scheme)
        return VerifyResult(verdict, scheme, key, account)

    def _rate_limited(
        self,
        scheme: Scheme,
        key: ApiKey,
        account: Account,
        rate_key: tuple[tuple[str, ...], int, float] | None,
        client_ip: str,
    ) -> VerifyResult:
        if rate_key is None:
            pending = self._usage
            if pending is not None:  # last use: stamped and written in batches (auth/usage.py)
                pending[key.id] = client_ip
            return VerifyResult(_VALID, scheme, key, account)
        allowed, state = self.rate_limiter.hit_prepared(rate_key)
        if allowed:
            pending = self._usage
            if pending is not None:
                pending[key.id] = client_ip
            return VerifyResult(_VALID, scheme, key, account, "", state)
        return VerifyResult(Reason.RATE_LIMITED, scheme, key, account, "", state)

    def _decide(
        self, cached: CachedKey, request: SignedRequest, requirement: Requirement, scheme: Scheme
    ) -> tuple[Reason, str, tuple[tuple[str, ...], int, float] | None]:
        """(reason, detail, rate-limit key) of the checks that change no state."""
        key, account = cached.key, cached.account
        if account.status is AccountStatus.FREEZE:
            return Reason.ACCOUNT_FROZEN, "", None
        if not key.enabled:
            return Reason.KEY_DISABLED, "", None
        if not cached.allowlist.empty and not cached.allowlist.allows(request.client_ip):
            return Reason.IP_NOT_ALLOWED, request.client_ip, None
        if requirement.main_only and not account.is_main:
            return Reason.NOT_MAIN_ACCOUNT, "", None
        if requirement.main_needs_ip and cached.allowlist.empty:
            return Reason.MAIN_KEY_NEEDS_IP, "", None
        if scheme is Scheme.BITGET:
            need = requirement.permission
            if need is not None and not bitget_grants(key, account, need):
                return Reason.PERMISSION_DENIED, need, None
        elif not whitebit_grants(key, requirement.key_type, request.path):
            return Reason.PERMISSION_DENIED, request.path, None
        if requirement.rate_limit is None:
            return Reason.VALID, "", None
        rate = self.rate_limiter.prepare(requirement.rate_limit, scheme.value, requirement.rate_name, str(account.uid))
        return Reason.VALID, "", rate

    def _load(self, api_key: str) -> Any:
        with self.store.reading() as tx:
            return tx.load_key_for_verification(api_key)
