"""The in-process key cache: everything verification needs about a key, ready for the hot path."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from cryptography.exceptions import InvalidTag

from keyplane import crypto
from keyplane.auth import bitget, whitebit
from keyplane.domain.ipnet import IpAllowlist
from keyplane.domain.model import Account, ApiKey, KeyCredentials, Scheme, SignType

log = logging.getLogger("keyplane.cache")

Checker = bitget.HmacChecker | bitget.RsaChecker | whitebit.HmacChecker


class CachedKey:
    """A key, its account, its prepared signature checker and its compiled IP allowlist."""

    __slots__ = (
        "account",
        "allowlist",
        "checker",
        "key",
        "last_verdict",
        "passphrase_digest",
        "passphrase_hash",
        "verdicts",
    )

    def __init__(self, key: ApiKey, account: Account, checker: Checker, passphrase_hash: str | None) -> None:
        self.key = key
        self.account = account
        self.checker = checker
        self.allowlist = IpAllowlist(key.ip_list)
        self.passphrase_hash = passphrase_hash
        # sha256 of a passphrase that already passed the slow hash once: later checks are one digest
        self.passphrase_digest: bytes | None = None
        # the verifier's decisions that depend only on this entry: (requirement id, ip, path) -> verdict
        self.verdicts: dict[tuple[int, str, str], tuple[Any, ...]] = {}
        self.last_verdict: tuple[Any, ...] | None = None  # the verdict of the last call: checked first

    def passphrase_ok(self, passphrase: str) -> bool:
        if self.passphrase_hash is None:
            return True
        given = hashlib.sha256(passphrase.encode()).digest()
        if self.passphrase_digest is not None:
            return hmac.compare_digest(given, self.passphrase_digest)
        if crypto.verify_passphrase(self.passphrase_hash, passphrase):
            self.passphrase_digest = given
            return True
        return False


Loader = Callable[[str], tuple[ApiKey, KeyCredentials, Account] | None]
MasterKeySource = Callable[[], crypto.MasterKey]


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
        self._lock = threading.Lock()
        self._generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, api_key: str) -> CachedKey | None:
        entry = self._entries.get(api_key)
        if entry is not None:
            return entry
        generation = self._generation
        loaded = self._loader(api_key)
        if loaded is None:
            return None
        try:
            entry = self._build(*loaded)
        except ValueError:
            # a stored public key that does not load (registered before keys were checked): no request
            # can verify against it, so the key is as good as unknown
            log.error("the credentials of key %s do not load", loaded[0].id)
            return None
        except InvalidTag:
            # The master key was rotated since this process started: read it again, once.
            if self._reload_master_key is None:
                log.error("no master key opens the secret of key %s", loaded[0].id)
                return None
            self._master_key = self._reload_master_key()
            try:
                entry = self._build(*loaded)
            except InvalidTag:
                log.error("no master key opens the secret of key %s", loaded[0].id)
                return None
        with self._lock:
            # An invalidation that raced with this load wins: do not cache what may be stale.
            if generation == self._generation:
                self._entries[api_key] = entry
        return entry

    def invalidate(self, api_keys: Iterable[str]) -> None:
        with self._lock:
            self._generation += 1
            for api_key in api_keys:
                self._entries.pop(api_key, None)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def _build(self, key: ApiKey, credentials: KeyCredentials, account: Account) -> CachedKey:
        checker: Checker
        if key.sign_type is SignType.RSA:
            assert credentials.public_key_pem is not None
            checker = bitget.RsaChecker(credentials.public_key_pem)
        else:
            assert credentials.sealed_secret is not None
            secret = self._master_key.unseal(credentials.sealed_secret, key.id)
            checker = bitget.HmacChecker(secret) if key.scheme is Scheme.BITGET else whitebit.HmacChecker(secret)
        return CachedKey(key, account, checker, credentials.passphrase_hash)
