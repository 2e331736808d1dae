"""A key's lifecycle beyond what the exchanges offer: rotation with an overlap, and explicit expiry.

**Rotation** issues a new secret while the one it replaces keeps verifying for a grace period the caller
chooses (0 to 7 days). The replaced secret stays sealed at rest like the current one (same master key,
same key id as associated data) with the passphrase hash it was used with, and its deadline
(``previous_until``, Unix ms). Every node's cache entry carries that deadline and compares it with the
clock on each request that signs with the old secret, so the old secret stops everywhere at the deadline
without waiting for a change to propagate. Decisions:

- a Bitget key keeps its passphrase unless a new one is given; during the grace period each secret goes
  with its own passphrase (a client that has not switched yet sends the old pair);
- a second rotation during a grace period ends the first one's old secret at once: only the secret just
  replaced overlaps with the new one;
- an RSA key is not rotated: keyplane holds no secret of it (the caller holds the private key), and a new
  key pair is a new key (``keys create --rsa-public-key``), with its own overlap by running both;
- an expired key is not rotated (set a new expiry first); a disabled key only with a grace of 0, so that
  a secret disabled because it leaked cannot come back when the key is enabled again;
- WhiteBIT's own ``api-key/reset`` keeps its semantics: the old secret, and any rotated one, die at once.

**Expiry** (``expires_at``, Unix ms) may be set at creation or later, and cleared. An expired key verifies
nothing and is refused with its dialect's answer for an invalid key (Bitget 40037, WhiteBIT 401 code 10).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from keyplane.domain.lifecycle import check_expiry, check_grace, now_ms
from keyplane.domain.model import Account, ApiKey, Scheme, SignType
from keyplane.errors import ApiKeyNotFound, InvalidInput, KeyNotUsable
from keyplane.services._context import ServiceContext
from keyplane.services._minting import hash_passphrase, new_secret
from keyplane.services.types import Operator
from keyplane.store import Transaction


@dataclass(frozen=True, slots=True)
class RotatedKey:
    """A key just rotated: the only time its new secret is shown."""

    key: ApiKey
    secret: str = field(repr=False)  # shown to its owner once; never in a repr or traceback
    passphrase: str | None = field(default=None, repr=False)  # the new one, when one was given
    previous_until: int | None = None  # Unix ms until which the replaced secret still verifies


class KeyLifecycleService:
    """Rotation and expiry of any key, by the operator (the command line, the native API)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def rotate(
        self,
        *,
        api_key: str | None = None,
        key_id: str | None = None,
        grace_s: float,
        passphrase: str | None = None,
        by: Operator | None = None,
    ) -> RotatedKey:
        """A new secret for the key; the replaced one verifies until ``grace_s`` seconds from now (0: it stops
        now). ``passphrase`` (Bitget): a new passphrase for the new secret; otherwise the key keeps its own."""
        grace_ms = check_grace(grace_s)
        passphrase_hash = hash_passphrase(passphrase)  # slow: before the write transaction
        ctx = self._ctx
        with ctx.store.transaction() as tx:
            key, account = self._key(tx, api_key, key_id)
            if key.sign_type is SignType.RSA:
                raise InvalidInput(
                    "an RSA key is not rotated: keyplane holds none of its secret; register a new key", field="key"
                )
            if passphrase is not None and key.scheme is not Scheme.BITGET:
                raise InvalidInput("only a Bitget key has a passphrase", field="passphrase")
            now = now_ms()
            if key.expired(now):
                raise KeyNotUsable("the key has expired: set a new expiry before rotating it")
            if not key.enabled and grace_ms:
                raise KeyNotUsable("a disabled key is rotated with a grace period of 0 only")
            current = tx.credentials(key.id)
            secret = new_secret(key.scheme)
            until = now + grace_ms if grace_ms and current.sealed_secret is not None else None
            changes: dict[str, object] = {
                "sealed_secret": ctx.sealing_key(tx).seal(secret.encode(), key.id),
                "previous_sealed_secret": current.sealed_secret if until else None,
                "previous_passphrase_hash": current.passphrase_hash if until else None,
                "previous_until": until,
            }
            if passphrase_hash is not None:
                changes["passphrase_hash"] = passphrase_hash
            updated = tx.update_api_key(key.id, **changes)
            ctx.operator_audit(
                tx, by, "apikey.rotate", key.api_key, account_uid=account.main_uid,
                detail={"graceSeconds": grace_ms / 1000, "previousUntil": until,
                        "passphraseChanged": passphrase is not None},
            )
        return RotatedKey(key=updated, secret=secret, passphrase=passphrase, previous_until=until)

    def set_expiry(
        self,
        *,
        api_key: str | None = None,
        key_id: str | None = None,
        expires_at: int | None,
        by: Operator | None = None,
    ) -> ApiKey:
        """Sets (a future Unix ms) or clears (None) the key's expiry; running servers follow at once."""
        expires_at = check_expiry(expires_at)
        with self._ctx.store.transaction() as tx:
            key, account = self._key(tx, api_key, key_id)
            updated = tx.update_api_key(key.id, expires_at=expires_at)
            self._ctx.operator_audit(
                tx, by, "apikey.expiry", key.api_key, account_uid=account.main_uid, detail={"expiresAt": expires_at},
            )
        return updated

    def expiring(self, within_s: float, *, include_expired: bool = False) -> list[ApiKey]:
        """Keys that expire within ``within_s`` seconds from now, soonest first (with ``include_expired``,
        also those already past their expiry)."""
        now = now_ms()
        with self._ctx.store.reading() as tx:
            return tx.keys_expiring(now + int(within_s * 1000), after_ms=None if include_expired else now)

    def count_expiring(self, within_s: float) -> tuple[int, int]:
        """(keys expired now, keys that expire within ``within_s`` seconds): /metrics' gauges."""
        now = now_ms()
        with self._ctx.store.reading() as tx:
            return tx.count_expiring(now, now + int(within_s * 1000))

    def _key(self, tx: Transaction, api_key: str | None, key_id: str | None) -> tuple[ApiKey, Account]:
        if api_key is not None:
            key = tx.find_api_key(api_key, lock=True)
        else:
            key = tx.get_api_key(key_id, lock=True) if key_id else None
        account = tx.get_account(key.account_uid) if key is not None else None
        if key is None or account is None:
            raise ApiKeyNotFound("API key not found")
        return key, account
