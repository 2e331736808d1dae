"""The in-process key cache: everything verification needs about a key, ready for the hot path."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag

from keyplane import crypto
from keyplane.auth import bitget, whitebit
from keyplane.domain.ipnet import IpAllowlist
from keyplane.domain.model import Account, ApiKey, KeyCredentials, Scheme, SignType

log = logging.getLogger("keyplane.cache")

Checker = bitget.HmacChecker | bitget.RsaChecker | whitebit.HmacChecker

# Failed passphrases: after PASSPHRASE_FAILURES failures within PASSPHRASE_WINDOW_S seconds a key refuses
# every passphrase until the window ends, without running argon2id (~25 ms and 19 MiB each). Whoever
# tries passphrases already holds the secret (the signature is checked first); this keeps them from
# guessing the passphrase at argon2's speed, or at a digest compare's once it is known here.
PASSPHRASE_FAILURES = 10
PASSPHRASE_WINDOW_S = 60.0

# Unknown API keys: remembered for UNKNOWN_TTL_S so that a flood of them costs no store lookups, at most
# UNKNOWN_MAX of them (the oldest go first). A key made meanwhile is new and random, so it cannot be
# remembered as unknown; any change notification for a key also drops it. The TTL bounds the rest (a key
# that was unknown because its store row was not yet committed, or another process's import).
UNKNOWN_TTL_S = 1.0
_SLOW_LOCKS = tuple(threading.Lock() for _ in range(64))
UNKNOWN_MAX = 50_000
# No API key keyplane issues is longer; longer ones, or ones holding NUL (which PostgreSQL cannot
# compare), are unknown without a lookup.
API_KEY_MAX = 128


class CachedKey:
    """A key, its account, its prepared signature checker and its compiled IP allowlist."""

    __slots__ = (
        "account",
        "allowlist",
        "checker",
        "expires_s",
        "failures",
        "failures_since",
        "key",
        "last_verdict",
        "loaded_at",
        "passphrase_digest",
        "passphrase_hash",
        "previous",
        "until_s",
        "verdicts",
    )

    def __init__(self, key: ApiKey, account: Account, checker: Checker, passphrase_hash: str | None) -> None:
        self.key = key
        self.account = account
        self.checker = checker
        self.allowlist = IpAllowlist(key.ip_list)
        self.passphrase_hash = passphrase_hash
        # the key's expiry in Unix seconds, compared with time.time() on every request (None: never)
        self.expires_s: float | None = key.expires_at / 1000 if key.expires_at is not None else None
        # during a rotation's grace period: an entry of its own for the secret the rotation replaced (its
        # checker and passphrase), valid until ``until_s`` (Unix seconds), which the verifier compares with
        # the clock on every request that signs with it: the deadline holds on every node at once, whether
        # or not a change reached it
        self.previous: CachedKey | None = None
        self.until_s = 0.0
        # sha256 of a passphrase that already passed the slow hash once: later checks are one digest
        self.passphrase_digest: bytes | None = None
        # the verifier's decisions that depend only on this entry: (requirement id, ip, path) -> verdict
        self.verdicts: dict[tuple[int, str, str], tuple[Any, ...]] = {}
        self.last_verdict: tuple[Any, ...] | None = None  # the verdict of the last call: checked first
        # failed passphrases in the current throttle window (bounded memory: two numbers per cached key)
        self.failures = 0
        self.failures_since = 0.0
        self.loaded_at = time.monotonic()  # read from the store, or last re-validated against it

    def __repr__(self) -> str:  # never the checker (it holds the secret) nor the passphrase hash
        return f"CachedKey(key={self.key.api_key!r}, account={self.account.uid})"

    @property
    def passphrase_needs_slow_check(self) -> bool:
        """Whether ``passphrase_ok`` would run argon2id (a blocking step): no passphrase has passed here yet
        and the key is not throttled."""
        return self.passphrase_digest is None and self.passphrase_hash is not None and not self.throttled()

    def throttled(self) -> bool:
        if self.failures < PASSPHRASE_FAILURES:
            return False
        if time.monotonic() - self.failures_since >= PASSPHRASE_WINDOW_S:
            self.failures = 0
            return False
        return True

    def passphrase_ok(self, passphrase: str, *, slow_allowed: bool = True) -> bool:
        """Whether ``passphrase`` is the key's. ``slow_allowed=False`` (the event loop) never runs argon2id:
        the verifier asks only when ``passphrase_needs_slow_check`` said no, and should the throttle window
        end in between, the answer stays the throttled one."""
        if self.passphrase_hash is None:
            return True
        if self.throttled():
            return False
        given = hashlib.sha256(passphrase.encode()).digest()
        digest = self.passphrase_digest
        if digest is not None:
            if hmac.compare_digest(given, digest):
                return True
            self._failed()
            return False
        if not slow_allowed:
            return False
        # One argon2id run at a time per key: concurrent first attempts would all pass the throttle check
        # above before any failure is counted. A stripe of locks (no lock per cached key: memory).
        with _SLOW_LOCKS[hash(self.key.id) % len(_SLOW_LOCKS)]:
            if self.throttled():
                return False
            digest = self.passphrase_digest
            if digest is not None:  # another thread's attempt passed meanwhile
                ok = hmac.compare_digest(given, digest)
            else:
                ok = crypto.verify_passphrase(self.passphrase_hash, passphrase)
                if ok:
                    self.passphrase_digest = given
            if not ok:
                self._failed()
            return ok

    def _failed(self) -> None:
        now = time.monotonic()
        if self.failures == 0 or now - self.failures_since >= PASSPHRASE_WINDOW_S:
            self.failures, self.failures_since = 0, now
        self.failures += 1


Loader = Callable[[str], tuple[ApiKey, KeyCredentials, Account] | None]
MasterKeySource = Callable[[], crypto.MasterKey]
# api_keys -> each existing key's (key updated_at, account updated_at): Store's ``key_versions``
VersionReader = Callable[[Sequence[str]], dict[str, tuple[int, int]]]

# The backstop behind the change feed: an entry held this long is compared with the store again (in the
# feed's thread, never on the hot path). Unchanged, it stays with its verified-passphrase digest.
TTL_SECONDS = 30.0
_REVALIDATE_BATCH = 500
_VERIFIED_MAX = 100_000


class KeyCache:
    """api_key -> CachedKey. A miss is one indexed store lookup; changes invalidate at once.

    Every mutation of a key or its account reaches ``invalidate`` through the service's listener,
    right after its transaction commits, so the very next request sees the change.
    """

    def __init__(
        self, loader: Loader, master_key: crypto.MasterKey, reload_master_key: MasterKeySource | None = None
    ) -> None:
        self._loader = loader
        self._master_key = master_key
        self._reload_master_key = reload_master_key
        self._entries: dict[str, CachedKey] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()  # api_key -> when it stops being remembered
        self._lock = threading.Lock()
        self._generation = 0
        self._by_age: deque[CachedKey] = deque()  # entries in the order they were loaded or re-validated
        # api_key -> (passphrase hash, digest of the passphrase that passed it) of dropped entries: a change that
        # leaves the hash as it was (an IP list, a freeze) costs the next request no argon2id run
        self._verified: dict[str, tuple[str, bytes]] = {}
        # for /metrics (keyplane.metrics): plain ints, read at scrape time; under threads a rare increment
        # may be lost (no lock on the hot path)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, api_key: str) -> CachedKey | None:
        """The cached entry, never a store lookup (a hit is counted; a miss is counted by ``get``)."""
        entry = self._entries.get(api_key)
        if entry is not None:
            self.hits += 1
        return entry

    def known_unknown(self, api_key: str) -> bool:
        """Whether ``get`` would answer None without a store lookup (a malformed or recently unknown key)."""
        if len(api_key) > API_KEY_MAX or "\x00" in api_key:
            return True
        expires = self._unknown.get(api_key)
        return expires is not None and expires > time.monotonic()

    def get(self, api_key: str) -> CachedKey | None:
        entry = self._entries.get(api_key)
        if entry is not None:  # loaded by another thread since the caller's peek
            self.hits += 1
            return entry
        self.misses += 1
        if self.known_unknown(api_key):
            return None
        generation = self._generation
        loaded = self._loader(api_key)
        if loaded is None:
            self._remember_unknown(api_key, generation)
            return None
        entry = self._build_logged(*loaded)
        carried = self._verified.pop(api_key, None)
        if entry is not None and carried is not None and carried[0] == entry.passphrase_hash:
            entry.passphrase_digest = carried[1]
        with self._lock:
            # An invalidation that raced with this load wins: do not cache what may be stale.
            if generation == self._generation:
                if entry is None:
                    self._remember_unknown_locked(api_key)
                else:
                    self._entries[api_key] = entry
                    self._by_age.append(entry)
        return entry

    def revalidate(self, versions: VersionReader, ttl: float = TTL_SECONDS) -> int:
        """Compares each entry older than ``ttl`` with the store: unchanged, it is kept (with its verified
        passphrase) for another ``ttl``; changed or gone, it is dropped. Returns how many were dropped. A
        store error leaves the entries as they are, to be tried again."""
        cutoff = time.monotonic() - ttl
        dropped = 0
        while self._by_age and self._by_age[0].loaded_at <= cutoff:
            due: list[CachedKey] = []
            while self._by_age and self._by_age[0].loaded_at <= cutoff and len(due) < _REVALIDATE_BATCH:
                entry = self._by_age.popleft()
                if self._entries.get(entry.key.api_key) is entry:
                    due.append(entry)
            if not due:
                continue
            try:
                found = versions([entry.key.api_key for entry in due])
            except Exception:
                self._by_age.extendleft(reversed(due))
                raise
            now = time.monotonic()
            with self._lock:
                for entry in due:
                    api_key = entry.key.api_key
                    if self._entries.get(api_key) is not entry:
                        continue
                    if found.get(api_key) == (entry.key.updated_at, entry.account.updated_at):
                        entry.loaded_at = now
                        self._by_age.append(entry)
                    else:
                        self._forget_locked(api_key)
                        dropped += 1
                if dropped:
                    self._generation += 1
        return dropped

    def _remember_unknown(self, api_key: str, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._remember_unknown_locked(api_key)

    def _remember_unknown_locked(self, api_key: str) -> None:
        unknown = self._unknown
        unknown[api_key] = time.monotonic() + UNKNOWN_TTL_S
        unknown.move_to_end(api_key)
        while len(unknown) > UNKNOWN_MAX:
            unknown.popitem(last=False)

    def _build_logged(self, key: ApiKey, credentials: KeyCredentials, account: Account) -> CachedKey | None:
        """The entry, or None (logged) when the stored key cannot be used: then no request can verify
        against it, so the key is as good as unknown. Never raises."""
        try:
            return self._build(key, credentials, account)
        except InvalidTag:
            pass
        except Exception as error:  # a row that does not build must not fail verification
            # e.g. a stored public key that does not load (registered before keys were checked); the
            # error's type only: its text could quote key material
            log.error("the credentials of key %s do not load (%s)", key.id, type(error).__name__)
            return None
        # The master key was rotated since this process started: read it again, once.
        if self._reload_master_key is not None:
            try:
                self._master_key = self._reload_master_key()
                return self._build(key, credentials, account)
            except Exception as error:
                log.error("no master key opens the secret of key %s (%s)", key.id, type(error).__name__)
                return None
        log.error("no master key opens the secret of key %s", key.id)
        return None

    def invalidate(self, api_keys: Iterable[str]) -> None:
        with self._lock:
            self._generation += 1
            for api_key in api_keys:
                self._forget_locked(api_key)
                self._unknown.pop(api_key, None)

    def _forget_locked(self, api_key: str) -> None:
        entry = self._entries.pop(api_key, None)
        if entry is not None and entry.passphrase_digest is not None and entry.passphrase_hash is not None:
            self._verified[api_key] = (entry.passphrase_hash, entry.passphrase_digest)
            if len(self._verified) > _VERIFIED_MAX:
                del self._verified[next(iter(self._verified))]  # the oldest

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()
            self._unknown.clear()
            self._by_age.clear()

    def _build(self, key: ApiKey, credentials: KeyCredentials, account: Account) -> CachedKey:
        checker: Checker
        if key.sign_type is SignType.RSA:
            if credentials.public_key_pem is None:
                raise ValueError("an RSA key without its public key")
            checker = bitget.RsaChecker(credentials.public_key_pem)
        else:
            if credentials.sealed_secret is None:
                raise ValueError("an HMAC key without its secret")
            checker = self._hmac_checker(key, credentials.sealed_secret)
        entry = CachedKey(key, account, checker, credentials.passphrase_hash)
        previous = credentials.previous_sealed_secret
        if previous is not None and key.previous_until is not None and key.in_grace(int(time.time() * 1000)):
            checker = self._hmac_checker(key, previous)
            entry.previous = CachedKey(key, account, checker, credentials.previous_passphrase_hash)
            entry.previous.until_s = key.previous_until / 1000
        return entry

    def _hmac_checker(self, key: ApiKey, sealed_secret: bytes) -> Checker:
        secret = self._master_key.unseal(sealed_secret, key.id)
        return bitget.HmacChecker(secret) if key.scheme is Scheme.BITGET else whitebit.HmacChecker(secret)
